"""What a customer's data team is told after a run: nothing when all is clean, a summary when rows were
rejected or files failed."""

from __future__ import annotations

from html import escape

from progression.ledger import Status


def worth_telling(summary: dict) -> bool:
    return bool(summary.get("rejected") or summary.get("failed"))


def message(customer: str, summary: dict, runs: list[dict]) -> tuple[str, str]:
    """(subject, HTML body) for one customer's part of a run."""
    failed, rejected = summary.get("failed") or [], int(summary.get("rejected") or 0)
    subject = (
        f"Progression import for {customer}: {len(failed)} file(s) failed, {rejected} row(s) rejected"
        if failed
        else f"Progression import for {customer}: {rejected} row(s) rejected"
    )
    lines = [
        f"<p>{summary.get('files', 0)} file(s): {summary.get('imported', 0)} completions imported, "
        f"{summary.get('updated', 0)} updated, {summary.get('derived_written', 0)} through the hierarchy, "
        f"{rejected} row(s) rejected.</p>",
        "<ul>",
    ]
    for run in runs:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(run["rejected_by_reason"].items()))
        lines.append(
            f"<li><b>{escape(run['subject'])}</b>: {escape(run['status'])}"
            + (f", rejected {run['rejected']} ({escape(reasons)})" if run["rejected"] else "")
            + (f"<br>{escape(run['message'])}" if run.get("message") else "")
            + (f"<br>report: {escape(run['report_path'])}" if run.get("report_path") else "")
            + "</li>"
        )
    lines.append("</ul>")
    return subject, "\n".join(lines)


def plain(customer: str, summary: dict, runs: list[dict]) -> str:
    """The same message as text, for chat."""
    subject, _html = message(customer, summary, runs)
    lines = [subject]
    for run in runs:
        if run["rejected"] or run["status"] == Status.FAILED:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(run["rejected_by_reason"].items()))
            lines.append(
                f"- {run['subject']}: {run['status']}"
                + (f", {reasons}" if reasons else "")
                + (f" ({run['message']})" if run.get("message") else "")
            )
    return "\n".join(lines)


def lateness_line(health: dict) -> str:
    """Why a customer counts as late, from its health (progression.health)."""
    last = health["last_success"]
    if last is None:
        return (
            f"{health['customer']} is late: no file has been imported successfully yet, and files are expected "
            f"every {health['expected_every']}."
        )
    return (
        f"{health['customer']} is late: files are expected every {health['expected_every']}, and the last "
        f"successful import was {last['file']} at {_when(last['at'])} ({last['completions']} completions)."
    )


def unusual_line(file: dict) -> str:
    return (
        f"{file['file']} (imported {_when(file['at'])}) looks unusual: {file['rows_read']} rows read, against a "
        f"median of {file['median']:g} over the {file['judged_by']} {file['content_type']} imports before it."
    )


def health_message(health: dict, alerts: list[tuple[str, str]]) -> tuple[str, str, str]:
    """(subject, HTML body, plain text) telling a customer's data team what its health check found new: alerts are
    (kind, line) with kind `late` or `unusual`; what waits in the inbox and recent failures are added for context."""
    late = any(kind == "late" for kind, _ in alerts)
    unusual = sum(kind == "unusual" for kind, _ in alerts)
    found = (["late"] if late else []) + ([f"{unusual} unusual file(s)"] if unusual else [])
    subject = f"Progression health for {health['customer']}: {', '.join(found)}"
    lines = [line for _, line in alerts]
    if health["waiting_files"]:
        lines.append(f"{health['waiting_files']} file(s) are waiting in the inbox.")
    failure = health["last_failure"]
    if health["failing_streak"] and failure:
        lines.append(
            f"The last {health['failing_streak']} import(s) failed; the latest, {failure['file']} at "
            f"{_when(failure['at'])}: {failure['message']}"
        )
    html = "\n".join(f"<p>{escape(line)}</p>" for line in lines)
    return subject, html, "\n".join([subject, *lines])


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ") + " UTC"
