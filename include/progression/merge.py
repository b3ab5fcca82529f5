"""Account merges: every completion of one account given to another account of the same platform.

The vendor's own tool refuses when both accounts have progress; here, where both hold the same item, the earliest
date wins. `copy` leaves the source account's completions, `move` deletes them (journaled, so undo brings them back).
Users themselves are never created, deleted or changed. One merge is one run and one transaction, however many
pairs it holds, so that one undo takes all of it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression import ledger, runs, storage
from progression.jobs import Job
from progression.ledger import Status
from progression.runs import ConfError, Target
from progression.platform import completions, content, load_users, normalise_email, platform_id
from progression.read import ROW, InputError, read_pairs
from progression.report import Rows, write_sheets
from progression.write import delete_completions, write_completions

DAG_ID = "progression_merge_users"
MODES = ("copy", "move")
PAIR_HEADERS = ("From email", "To email")
PAIR_COUNTS = {  # per pair, and in total
    "completions": "Completions of the source account",
    "copied": "Copied",
    "kept": "Kept (target had an earlier one)",
    "replaced": "Replaced by an earlier date",
    "removed": "Removed from the source account",
}
# write_completions' outcome (on_existing `earliest`) -> what it means for a merge.
OUTCOME_OF = {"imported": "copied", "updated": "replaced", "kept": "kept"}
REASON_OF = {
    "copied": "the target account did not have it",
    "replaced": "the target account had it at a later date",
    "kept": "the target account already had it at the same or an earlier date",
    "kept by another pair": "another account merged into the same target has it at the same or an earlier date",
}


@dataclass
class MergePair:
    """One account merged into another: the workbook's row it was asked on (None for a conf's pair), both accounts,
    and what became of the source's completions (apply sets the counts, PAIR_COUNTS)."""

    row: int | None
    from_email: str
    to_email: str
    from_user_id: int
    to_user_id: int
    completions: int = 0
    copied: int = 0
    kept: int = 0
    replaced: int = 0
    removed: int = 0


@dataclass
class MergeJob(Job):
    customer: str
    subject: str  # "a@x -> b@x", or the workbook of pairs
    mode: str = "copy"
    dry_run: bool = False
    airflow_run_id: str | None = None
    started: str = ""  # ISO time the run began
    pairs: list[MergePair] = field(default_factory=list)
    run_id: str = ""
    staging: str = ""  # where apply leaves the details for the report
    status: Status = Status.PENDING  # pending, succeeded
    message: str = ""
    report: str = ""

    def total(self, name: str) -> int:
        return sum(int(getattr(pair, name)) for pair in self.pairs)

    @classmethod
    def from_dict(cls, data: dict) -> MergeJob:
        job = super().from_dict(data)
        job.pairs = [MergePair(**p) if isinstance(p, dict) else p for p in job.pairs]
        return job


def plan(
    target: Target,
    *,
    from_email: str | None,
    to_email: str | None,
    path: str | None,
    mode: str,
    dry_run: bool,
    airflow_run_id: str | None,
    started: datetime,
) -> MergeJob:
    """The pairs of accounts to merge, resolved on the customer's platform; a bad conf is refused with ConfError."""
    if mode not in MODES:
        raise ConfError(f"mode {mode!r} must be one of {', '.join(MODES)}")
    if path and (from_email or to_email):
        raise ConfError("give either from_email and to_email, or path to a workbook of pairs, not both")
    if path:
        pairs, subject = _pairs_from_workbook(target, path), path
    elif from_email and to_email:
        pairs = pd.DataFrame({ROW: [pd.NA], "from_email": [from_email], "to_email": [to_email]})
        subject = f"{from_email.strip()} -> {to_email.strip()}"
    else:
        missing = [name for name, value in (("from_email", from_email), ("to_email", to_email)) if not value]
        raise ConfError(
            f"{' and '.join(missing)} missing: give from_email and to_email, or path to a workbook "
            f"with the columns {' and '.join(repr(h) for h in PAIR_HEADERS)}"
        )
    with target.engine.connect() as conn:
        known = load_users(conn, platform_id(conn, target.customer.platform))
    resolved = _resolve(pairs, known, target.customer.platform)
    return MergeJob(
        customer=target.customer.slug,
        subject=subject,
        mode=mode,
        dry_run=dry_run,
        airflow_run_id=airflow_run_id,
        started=started.astimezone(timezone.utc).isoformat(),
        pairs=resolved,
    )


def _pairs_from_workbook(target: Target, path: str) -> pd.DataFrame:
    rel = runs.customer_file(target, path)
    try:
        rows = read_pairs(storage.read_bytes(target.root, rel), rel, PAIR_HEADERS)
    except InputError as exc:
        raise ConfError(f"path {rel}: {exc}") from None
    if rows.empty:
        raise ConfError(f"path {rel}: the workbook has the headers but no pairs")
    return rows.rename(columns=dict(zip(PAIR_HEADERS, ("from_email", "to_email"))))


def _resolve(pairs: pd.DataFrame, known: pd.DataFrame, platform: str) -> list[MergePair]:
    """Pairs with their user ids; every problem of every pair refused at once, each saying where it is."""
    froms, tos = (normalise_email(pairs[column]).fillna("").tolist() for column in ("from_email", "to_email"))
    workbook = bool(pairs[ROW].notna().any())
    rows = [f"row {row}" for row in pairs[ROW]] if workbook else [""]
    names = PAIR_HEADERS if workbook else ("from_email", "to_email")
    ids = dict(zip(known["email_key"], known["user_id"]))
    problems = []
    for index, (where, from_key, to_key) in enumerate(zip(rows, froms, tos)):
        where = f"{where}: " if where else ""
        for name, key in zip(names, (from_key, to_key)):
            if not key:
                problems.append(f"{where}{name} is empty")
            elif key not in ids:
                problems.append(f"{where}{name} {key!r}: no user with this e-mail on platform {platform}")
        if from_key and from_key == to_key:
            problems.append(f"{where}the same e-mail twice ({from_key}): an account cannot be merged into itself")
        elif from_key and from_key in froms[:index]:
            problems.append(
                f"{where}{from_key} is already the source of {rows[froms.index(from_key)]}: an account "
                "is merged into one target"
            )
        into = [rows[other] for other, to in enumerate(tos) if from_key and to == from_key and other != index]
        if into:
            problems.append(
                f"{where}{from_key} is a source here and the target of {into[0]}: merge each account "
                "straight into the account it should end up in"
            )
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ConfError("merge refused: " + "; ".join(shown))
    return [
        MergePair(
            row=int(row) if workbook else None,
            from_email=from_key,
            to_email=to_key,
            from_user_id=int(ids[from_key]),
            to_user_id=int(ids[to_key]),
        )
        for row, from_key, to_key in zip(pairs[ROW], froms, tos)
    ]


def apply(target: Target, job: MergeJob) -> MergeJob:
    """Give every completion of each source account to its target, earliest date per item; with `move`, delete the
    source's completions. All pairs in one transaction, recorded in the ledger as one run."""
    job.run_id, job.staging = runs.open_run(
        target, "merge", DAG_ID, job.subject, airflow_run_id=job.airflow_run_id, dry_run=job.dry_run, at=job.now
    )
    pairs = pd.DataFrame([asdict(pair) for pair in job.pairs]).rename_axis("pair").reset_index()
    with runs.writing(target) as conn:
        pid = platform_id(conn, target.customer.platform)
        held = _completions_of(conn, pairs["from_user_id"].tolist(), pid).merge(
            pairs, left_on="user_id", right_on="from_user_id"
        )
        before = _completions_of(conn, pairs["to_user_id"].unique().tolist(), pid).rename(
            columns={"user_id": "to_user_id", "completed_at": "target_before"}
        )[["to_user_id", "content_id", "target_before"]]
        # Two sources into one target can hold the same item: one row per (target, item), the earliest date (the
        # first pair on a tie); the other pairs' rows are kept in favour of it.
        held = held.sort_values(["completed_at", "pair"], kind="stable")
        held["chosen"] = ~held.duplicated(["to_user_id", "content_id"])
        chosen = held[held["chosen"]]
        result = write_completions(
            conn,
            pd.DataFrame(
                {
                    "user_id": chosen["to_user_id"],
                    "content_id": chosen["content_id"],
                    "completed_at": chosen["completed_at"],
                    "direct": True,
                }
            ),
            run_id=job.run_id,
            source="merge",
            on_existing="earliest",
            dry_run=job.dry_run,
        )
        removed = 0
        if job.mode == "move":
            removed = delete_completions(conn, held[["user_id", "content_id"]], run_id=job.run_id, dry_run=job.dry_run)
        exceptions = result.exceptions.astype({"user_id": "int64", "content_id": "int64"})
        outcome = held.merge(
            exceptions.rename(columns={"user_id": "to_user_id"}), on=["to_user_id", "content_id"], how="left"
        )["outcome"].fillna("imported")
        held["outcome"] = outcome.map(OUTCOME_OF).where(held["chosen"].to_numpy(), "kept by another pair").to_numpy()
        held["removed"] = job.mode == "move"
        for pair in job.pairs:
            mine = held[held["from_user_id"] == pair.from_user_id]
            pair.completions, pair.copied = len(mine), int(mine["outcome"].eq("copied").sum())
            pair.kept, pair.replaced = (
                int(mine["outcome"].str.startswith("kept").sum()),
                int(mine["outcome"].eq("replaced").sum()),
            )
            pair.removed = int(mine["removed"].sum())
        if job.mode == "move":
            job.message = (
                f"{removed} completion(s) {'would be ' if job.dry_run else ''}removed from the source account(s)"
            )
        ledger.record_counts(
            conn,
            job.run_id,
            ledger.RunCounts(
                rows_read=job.total("completions"),
                imported=job.total("copied"),
                updated=job.total("replaced"),
                kept=job.total("kept"),
                removed=removed,
            ),
        )
        ledger.finish_run(conn, job.run_id, Status.SUCCEEDED, message=job.message or None)
    details = held.merge(before, on=["to_user_id", "content_id"], how="left")
    storage.write_frame(
        target.root,
        f"{job.staging}/details.parquet",
        details[
            ["row", "from_email", "to_email", "uuid", "type", "completed_at", "target_before", "outcome", "removed"]
        ],
    )
    job.status = Status.SUCCEEDED
    return job


def _completions_of(conn: Connection, user_ids: list[int], platform: int) -> pd.DataFrame:
    """The completions of these users on this platform: user_id, content_id, uuid, type, completed_at (UTC)."""
    query = (
        sa.select(
            completions.c.user_id, completions.c.content_id, content.c.uuid, content.c.type, completions.c.completed_at
        )
        .join(content, content.c.id == completions.c.content_id)
        .where(completions.c.user_id.in_(user_ids), content.c.platform_id == platform)
    )
    frame = pd.DataFrame(conn.execute(query).all(), columns=["user_id", "content_id", "uuid", "type", "completed_at"])
    # SQLite hands back naive UTC times, PostgreSQL aware ones.
    frame["completed_at"] = pd.to_datetime(frame["completed_at"], utc=True)
    frame["uuid"] = frame["uuid"].astype(str)
    return frame


def report(target: Target, job: MergeJob) -> MergeJob:
    """The merge's report workbook: a summary, the counts per pair, and every completion with what became of it."""
    details = storage.read_frame(target.root, f"{job.staging}/details.parquet")
    job.report = f"{storage.REPORTS}/{job.now:%Y-%m-%d}/merge.{job.run_id}.xlsx"
    summary = [
        *runs.report_head(target, job, [("Merge", job.subject)], job.status),
        ("Mode", job.mode),
        ("Pairs", len(job.pairs)),
        *((label, job.total(name)) for name, label in PAIR_COUNTS.items()),
    ]
    per_pair = [[p.row, p.from_email, p.to_email, *(getattr(p, name) for name in PAIR_COUNTS)] for p in job.pairs]
    items = [
        [row, source, to, uuid, kind, at, had, what, REASON_OF[what], "yes" if gone else "no"]
        for row, source, to, uuid, kind, at, had, what, gone in details.itertuples(index=False)
    ]
    sheets: list[tuple[str, list[str], Rows]] = [
        ("Summary", ["Field", "Value"], summary),
        ("Pairs", ["Row", "From email", "To email", *PAIR_COUNTS.values()], per_pair),
        (
            "Completions",
            [
                "Row",
                "From email",
                "To email",
                "Content uuid",
                "Type",
                "Completed at (UTC)",
                "Target had (UTC)",
                "Outcome",
                "Reason",
                "Removed from source",
            ],
            items,
        ),
    ]
    runs.save_report(target, job.run_id, job.report, lambda file: write_sheets(file, sheets), job.status)
    runs.release_staging(target, job.run_id, job.staging)
    return job


def run_merge(target: Target, job: MergeJob) -> MergeJob:
    """Every stage after planning, in this process (the tests use this)."""
    return report(target, apply(target, job))
