"""What a customer's data team is told after a run: nothing when all is clean, a summary when rows were
rejected or files failed."""

from __future__ import annotations

from html import escape


def worth_telling(summary: dict) -> bool:
    return bool(summary.get("rejected") or summary.get("failed"))


def message(customer: str, summary: dict, runs: list[dict]) -> tuple[str, str]:
    """(subject, HTML body) for one customer's part of a run."""
    failed, rejected = summary.get("failed") or [], int(summary.get("rejected") or 0)
    subject = (f"Progression import for {customer}: {len(failed)} file(s) failed, {rejected} row(s) rejected"
               if failed else f"Progression import for {customer}: {rejected} row(s) rejected")
    lines = [f"<p>{summary.get('files', 0)} file(s): {summary.get('imported', 0)} completions imported, "
             f"{summary.get('updated', 0)} updated, {summary.get('derived_written', 0)} through the hierarchy, "
             f"{rejected} row(s) rejected.</p>", "<ul>"]
    for run in runs:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(run["rejected_by_reason"].items()))
        lines.append(f"<li><b>{escape(run['subject'])}</b>: {escape(run['status'])}"
                     + (f", rejected {run['rejected']} ({escape(reasons)})" if run["rejected"] else "")
                     + (f"<br>{escape(run['message'])}" if run.get("message") else "")
                     + (f"<br>report: {escape(run['report_path'])}" if run.get("report_path") else "") + "</li>")
    lines.append("</ul>")
    return subject, "\n".join(lines)


def plain(customer: str, summary: dict, runs: list[dict]) -> str:
    """The same message as text, for chat."""
    subject, _html = message(customer, summary, runs)
    lines = [subject]
    for run in runs:
        if run["rejected"] or run["status"] == "failed":
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(run["rejected_by_reason"].items()))
            lines.append(f"- {run['subject']}: {run['status']}" + (f", {reasons}" if reasons else "")
                         + (f" ({run['message']})" if run.get("message") else ""))
    return "\n".join(lines)
