"""Undo: every completion one earlier run inserted, changed or deleted put back as it was, from the change journal.

Any run that wrote completions can be undone (an import with what it completed through the hierarchy, a transfer,
a merge, an undo). A completion that a later run has changed since is a conflict: left alone unless `force`. The
undo is a run of its own, journaled like any other, so it can be undone too; a run is undone at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from progression import ledger, runs, storage
from progression.jobs import Job
from progression.ledger import Status
from progression.runs import ConfError, Target
from progression.platform import load_content, load_users, platform_id
from progression.report import Rows, write_sheets
from progression.restore import RESTORE_COLUMNS, restore_from_journal

DAG_ID = "progression_undo"
COUNTS = {
    "changes": "Completions the run changed",
    "restored": "Restored",
    "removed": "  removed (the run added them)",
    "put_back": "  earlier values put back",
    "reinserted": "  put back (the run deleted them)",
    "conflicts": "Changed by a later run (conflicts)",
    "left_alone": "Conflicts left alone",
}
DONE = {"delete": "removed", "update": "earlier values put back", "insert": "put back", "none": "nothing to do"}
TIMES = ("new_completed_at", "now_completed_at", "old_completed_at")


@dataclass
class UndoJob(Job):
    customer: str
    undone_run_id: str
    undone_dag_id: str = ""
    undone_subject: str = ""
    dry_run: bool = True
    force: bool = False
    airflow_run_id: str | None = None
    started: str = ""  # ISO time the run began
    run_id: str = ""  # the undo's own run id
    staging: str = ""  # where apply leaves the details for the report
    status: Status = Status.PENDING  # pending, succeeded, skipped (the run was undone already)
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    report: str = ""


def plan(
    target: Target, *, run_id: str, dry_run: bool, force: bool, airflow_run_id: str | None, started: datetime
) -> UndoJob:
    """The run to undo, from the customer's ledger; a run that is not there or wrote nothing is refused."""
    with target.engine.connect() as conn:
        run = ledger.get_run(conn, run_id)
    if run is None or run["customer"] != target.customer.slug:
        raise ConfError(f"run_id {run_id!r} is not in the ledger of customer {target.customer.slug}")
    if run["dry_run"]:
        raise ConfError(f"run_id {run_id!r} was a dry run: it wrote no completion, so there is nothing to undo")
    if run["status"] in (Status.FAILED, Status.ABANDONED, Status.SKIPPED):
        raise ConfError(f"run_id {run_id!r} {run['status']} without writing any completion: there is nothing to undo")
    if run["status"] == Status.RUNNING:
        raise ConfError(f"run_id {run_id!r} has not finished (status running): undo it once it has")
    return UndoJob(
        customer=target.customer.slug,
        undone_run_id=run_id,
        undone_dag_id=run["dag_id"],
        undone_subject=run["subject"],
        dry_run=dry_run,
        force=force,
        airflow_run_id=airflow_run_id,
        started=started.astimezone(timezone.utc).isoformat(),
    )


def apply(target: Target, job: UndoJob) -> UndoJob:
    """Restore from the journal in one transaction, and mark the run undone (a dry run only reports)."""
    job.run_id, job.staging = runs.open_run(
        target, "undo", DAG_ID, job.undone_run_id, airflow_run_id=job.airflow_run_id, dry_run=job.dry_run, at=job.now
    )
    with runs.writing(target) as conn:
        undone = ledger.lock_run(conn, job.undone_run_id)
        if undone["undone_by"]:
            job.status = Status.SKIPPED
            job.message = f"run {job.undone_run_id} was undone already, by run {undone['undone_by']}: nothing to do"
            rows = pd.DataFrame(columns=RESTORE_COLUMNS).astype({"conflict": bool, "applied": bool})
        else:
            rows = restore_from_journal(conn, job.undone_run_id, job.run_id, force=job.force, dry_run=job.dry_run)
            if not job.dry_run:
                ledger.mark_undone(conn, job.undone_run_id, job.run_id)
                if undone["dag_id"] == DAG_ID:  # undoing an undo puts the run it undid back in place
                    ledger.unmark_undone(conn, undone["subject"], job.undone_run_id)
            job.status = Status.SUCCEEDED
            job.counts = _counts(rows)
            job.message = _message(job)
        # An undo writes nothing of its own in the ledger's terms: it restores (so the completions written per day
        # are the other runs'), and what it leaves alone is a conflict, not a rejected row.
        ledger.record_counts(
            conn,
            job.run_id,
            ledger.RunCounts(
                rows_read=len(rows),
                restored=job.counts.get("restored", 0),
                removed=job.counts.get("removed", 0),
                conflicts=job.counts.get("left_alone", 0),
            ),
        )
        ledger.finish_run(conn, job.run_id, job.status, message=job.message)
    for column in TIMES:  # SQLite hands back text, PostgreSQL aware times
        rows[column] = pd.to_datetime(rows[column], utc=True, format="ISO8601")
    storage.write_frame(target.root, f"{job.staging}/details.parquet", rows)
    return job


def _counts(rows: pd.DataFrame) -> dict[str, int]:
    applied = rows[rows["applied"]]
    return {
        "changes": len(rows),
        "restored": len(applied),
        **{
            name: int(applied["restore"].eq(kind).sum())
            for name, kind in (("removed", "delete"), ("put_back", "update"), ("reinserted", "insert"))
        },
        "conflicts": int(rows["conflict"].sum()),
        "left_alone": int((rows["conflict"] & ~rows["applied"] & rows["restore"].ne("none")).sum()),
    }


def _message(job: UndoJob) -> str:
    counts = job.counts
    text = (
        f"{'would restore' if job.dry_run else 'restored'} {counts['restored']} of the {counts['changes']} "
        f"completion(s) run {job.undone_run_id} changed"
    )
    if counts["conflicts"]:
        text += f"; {counts['conflicts']} changed by a later run since" + (
            " (restored anyway: force)"
            if job.force
            else f", {counts['left_alone']} of them left alone (undo the later runs first, or use force)"
        )
    return text


def report(target: Target, job: UndoJob) -> UndoJob:
    """The undo's report workbook: a summary, every completion restored, and every conflict."""
    rows = storage.read_frame(target.root, f"{job.staging}/details.parquet")
    with target.engine.connect() as conn:
        pid = platform_id(conn, target.customer.platform)
        users, items = load_users(conn, pid), load_content(conn, pid)
    rows = rows.merge(users, on="user_id", how="left").merge(items, on="content_id", how="left")
    rows["done"] = rows["restore"].map(DONE).where(rows["applied"], "left alone")
    rows.loc[rows["restore"].eq("none"), "done"] = DONE["none"]
    job.report = f"{storage.REPORTS}/{job.now:%Y-%m-%d}/undo.{job.run_id}.xlsx"
    summary = [
        *runs.report_head(
            target,
            job,
            [("Undoes run", job.undone_run_id), ("Which was", f"{job.undone_dag_id}: {job.undone_subject}")],
            job.status,
        ),
        ("Force", job.force),
        *((label, job.counts.get(name, 0)) for name, label in COUNTS.items()),
    ]
    key = ["email_key", "uuid_key", "type"]
    restored = rows[rows["applied"]]
    conflicts = rows[rows["conflict"]]
    sheets: list[tuple[str, list[str], Rows]] = [
        ("Summary", ["Field", "Value"], summary),
        (
            "Restored",
            ["User email", "Content uuid", "Type", "Undo", *_sides("Before the undo"), *_sides("Restored")],
            restored[
                [
                    *key,
                    "done",
                    "now_completed_at",
                    "now_source",
                    "now_run_id",
                    "old_completed_at",
                    "old_source",
                    "old_run_id",
                ]
            ],
        ),
        (
            "Conflicts",
            ["User email", "Content uuid", "Type", "Undo", *_sides("The run left"), *_sides("Now")],
            conflicts[
                [
                    *key,
                    "done",
                    "new_completed_at",
                    "new_source",
                    "new_run_id",
                    "now_completed_at",
                    "now_source",
                    "now_run_id",
                ]
            ],
        ),
    ]
    runs.save_report(target, job.run_id, job.report, lambda file: write_sheets(file, sheets), job.status)
    runs.release_staging(target, job.run_id, job.staging)
    return job


def _sides(when: str) -> list[str]:
    return [f"{when}: completed at (UTC)", f"{when}: source", f"{when}: run id"]


def run_undo(target: Target, job: UndoJob) -> UndoJob:
    """Every stage after planning, in this process (the tests use this)."""
    return report(target, apply(target, job))
