"""The project's own tables in the platform database: the run ledger and the change journal used by undo."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from progression.platform import Id, UtcTime

# 2: `staging`, where a running file sits, for recovery after a crash; 3: `progression_alerts`, what health told;
# 4: counts that say what each kind of run did (see COUNTS).
SCHEMA_VERSION = 4
metadata = sa.MetaData()


class Status(StrEnum):
    """Every status a run, or one of its jobs between tasks, can have: one vocabulary for the stages, the ledger,
    the history page and the summaries. The values are what the ledger stores and the page filters by."""

    RUNNING = "running"  # the ledger row is open
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a file that failed, a transfer whose pairs were refused
    SKIPPED = "skipped"  # nothing to do: bytes imported before, a run undone already
    ABANDONED = "abandoned"  # the run died; the next run of the customer closed it
    PENDING = "pending"  # a job planned, its stages not started (never in the ledger)
    OK = "ok"  # a job whose stages go on, no verdict yet (never in the ledger)
    REFUSED = "refused"  # a conf or the pairs refused before any work (the ledger says failed, if it has a row)


RECORDED = (Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.ABANDONED)  # the ledger's

# The counts of a run. Explicit columns rather than one JSON document per kind: the health check and the page add
# them up in SQL on both databases, and a column names one thing for every kind that has it (0 for the others):
#   rows_read               what the run went through: an import's rows, a transfer's completions of the old items,
#                           a merge's completions of the source accounts, an undo's changes of the run it undoes,
#                           an export's completions
#   imported, updated, kept completions written new, written over (another date), left as they were: imports,
#                           transfers (the new item itself), merges (copied, replaced by an earlier date, kept)
#   derived_written         completed through a journey's or programme's contents (imports, transfers)
#   rejected                an import's rows rejected (by reason in rejected_by_reason); a transfer's refused pairs
#   duplicates              an import's rows repeating an earlier row's user and content (counted once)
#   saved_without_access    an import's completions saved although the user cannot see the content yet
#   skipped_without_access  a transfer's users left out for lack of access to the new item
#   restored                an undo's completions put back as they were before the run (the removed ones included)
#   removed                 completions deleted: a merge's `move` from the source accounts; of an undo's restored,
#                           those the undone run had added
#   conflicts               an undo's completions changed by a later run since, left alone
# Imports, transfers and merges write (imported + updated + derived_written); an undo only restores, so the
# completions written per day are the writers' alone.
COUNTS = (
    "rows_read",
    "imported",
    "updated",
    "kept",
    "rejected",
    "duplicates",
    "derived_written",
    "saved_without_access",
    "skipped_without_access",
    "restored",
    "removed",
    "conflicts",
)

schema_version = sa.Table(
    "progression_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", UtcTime, nullable=False),
)
runs = sa.Table(
    "progression_runs",
    metadata,
    sa.Column("run_id", sa.String(80), primary_key=True),
    sa.Column("customer", sa.String(100), nullable=False, index=True),
    sa.Column("dag_id", sa.String(100), nullable=False),
    sa.Column("airflow_run_id", sa.String(250)),
    sa.Column("subject", sa.Text, nullable=False),  # the file, or the pair(s) of a transfer or merge
    sa.Column("content_type", sa.String(20)),
    sa.Column("checksum", sa.String(64), index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Column("started_at", UtcTime, nullable=False),
    sa.Column("finished_at", UtcTime),
    *(sa.Column(name, sa.Integer, nullable=False, default=0) for name in COUNTS),
    sa.Column("rejected_by_reason", sa.Text, nullable=False, default="{}"),
    sa.Column("report_path", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("undone_by", sa.String(80)),
    # The run's staging folder while it holds customer data there (an import: the claimed file); cleared once the
    # data is archived, so a run that died with data in staging is found and its file put back.
    sa.Column("staging", sa.Text),
)
# For the run history's filters, each in its newest-first order, and a run's undos (found by their subject).
for _columns in (
    ("customer", "started_at"),
    ("dag_id", "started_at"),
    ("status", "started_at"),
    ("started_at",),
    ("subject",),
):
    sa.Index(f"ix_progression_runs_{'_'.join(_columns)}", *(runs.c[name] for name in _columns))
# One row per completion a run changed or deleted, with what was there before; undo's own inserts too (they put
# back other runs' rows). write_completions' inserts are not journaled: they carry the run's id (undo finds them in
# completions). Read by run only, so a plain index on run_id (small: its values repeat) instead of a key that would
# be maintained per row; older ledgers also hold a row per insert, and undo takes those as they are.
journal = sa.Table(
    "progression_journal",
    metadata,
    sa.Column("run_id", sa.String(80), nullable=False, index=True),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("content_id", Id, nullable=False),
    sa.Column("action", sa.String(10), nullable=False),  # insert | update | delete
    sa.Column("old_completed_at", UtcTime),
    sa.Column("old_source", sa.String(20)),
    sa.Column("old_run_id", sa.String(100)),
    sa.Column("new_completed_at", UtcTime),  # what the run left behind (null after a delete): undo compares
    sa.Column("new_source", sa.String(20)),  # these with the row as it is now to spot later changes
    sa.Column("new_run_id", sa.String(100)),
)
# What the health checks told a customer, so each lateness episode and each unusual file is told once. An alert is
# open until what it told is no longer true (the customer imported again, the file left the window): then
# `cleared_at` is set, and the same condition arising later is a new alert.
alerts = sa.Table(
    "progression_alerts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("customer", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # late | unusual
    sa.Column(
        "key", sa.String(250), nullable=False
    ),  # late: the last success's run id (or "never"); unusual: the file's
    sa.Column("told_at", UtcTime, nullable=False),
    sa.Column("cleared_at", UtcTime),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_progression_alerts_open", "customer", "cleared_at"),
)

WRITTEN = ("imported", "updated", "derived_written")


def upgrade(engine: Engine) -> int:
    """Create or upgrade the project's tables in place, every row kept; touches nothing else. Returns the schema
    version."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        for index in runs.indexes:  # added since the table was made: create_all leaves an existing table alone
            index.create(conn, checkfirst=True)
        columns = {c["name"] for c in sa.inspect(conn).get_columns(runs.name)}
        if "staging" not in columns:  # a version 1 ledger
            conn.execute(sa.text(f"ALTER TABLE {runs.name} ADD COLUMN staging TEXT"))
        if "without_access" in columns:  # before version 4
            _count_each_kind(conn, columns)
        known = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        if known is None or known < SCHEMA_VERSION:
            conn.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION, applied_at=utcnow()))
    return SCHEMA_VERSION


_MERGE_REMOVED = re.compile(r"^(\d+) completion\(s\) (?:would be )?removed from the source")


def _count_each_kind(conn: Connection, columns: set[str]) -> None:
    """Version 4: the counts that earlier versions squeezed into the import's columns moved to their own. A
    transfer's `without_access` were skipped users; an undo kept `rows_read - kept` as restored, what it put back
    as `imported`/`updated` (so restored minus those was removed) and its conflicts left alone as `rejected`; a
    merge's removals were only in its message."""
    for name in COUNTS:
        if name not in columns:
            conn.execute(sa.text(f"ALTER TABLE {runs.name} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"))
    old = sa.column("without_access", sa.Integer)
    conn.execute(sa.update(runs).values(saved_without_access=old).where(runs.c.dag_id != "progression_transfer"))
    conn.execute(sa.update(runs).values(skipped_without_access=old).where(runs.c.dag_id == "progression_transfer"))
    restored = runs.c.rows_read - runs.c.kept
    conn.execute(
        sa.update(runs)
        .where(runs.c.dag_id == "progression_undo")
        .values(
            restored=restored,
            removed=restored - runs.c.imported - runs.c.updated,
            conflicts=runs.c.rejected,
            imported=0,
            updated=0,
            kept=0,
            rejected=0,
            rejected_by_reason="{}",
        )
    )
    merges = conn.execute(
        sa.select(runs.c.run_id, runs.c.message).where(
            runs.c.dag_id == "progression_merge_users", runs.c.message.is_not(None)
        )
    ).all()
    for run_id, message in merges:
        if found := _MERGE_REMOVED.match(message):
            conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(removed=int(found[1])))
    conn.execute(sa.text(f"ALTER TABLE {runs.name} DROP COLUMN without_access"))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | str) -> datetime:
    """A ledger time as an aware UTC datetime (SQLite hands them back without a zone)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def new_run_id(kind: str, customer: str, at: datetime | None = None) -> str:
    """Readable and unique: `import-demo-20261128T021500-3f9a1c`."""
    at = at or utcnow()
    return f"{kind}-{customer}-{at:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass
class RunCounts:
    rows_read: int = 0
    imported: int = 0
    updated: int = 0
    kept: int = 0
    rejected: int = 0
    duplicates: int = 0
    derived_written: int = 0
    saved_without_access: int = 0
    skipped_without_access: int = 0
    restored: int = 0
    removed: int = 0
    conflicts: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in COUNTS}, "rejected_by_reason": dict(self.rejected_by_reason)}


def start_run(
    conn: Connection,
    *,
    run_id: str,
    customer: str,
    dag_id: str,
    subject: str,
    airflow_run_id: str | None = None,
    content_type: str | None = None,
    checksum: str | None = None,
    dry_run: bool = False,
    staging: str | None = None,
) -> None:
    conn.execute(
        sa.insert(runs).values(
            run_id=run_id,
            customer=customer,
            dag_id=dag_id,
            airflow_run_id=airflow_run_id,
            subject=subject,
            content_type=content_type,
            checksum=checksum,
            status=Status.RUNNING,
            dry_run=dry_run,
            started_at=utcnow(),
            staging=staging,
        )
    )


def update_run(conn: Connection, run_id: str, **values) -> None:
    """Set columns of a run's row as the run learns them (its checksum, its staging folder emptied: None)."""
    conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(**values))


def unfinished_runs(conn: Connection, customer: str) -> list[dict]:
    """A customer's runs that are still running or still hold data in staging, oldest first."""
    query = (
        sa.select(runs)
        .where(runs.c.customer == customer, sa.or_(runs.c.status == Status.RUNNING, runs.c.staging.is_not(None)))
        .order_by(runs.c.started_at)
    )
    return [_decoded(row) for row in conn.execute(query).mappings()]


def failure_streak(conn: Connection, customer: str, checksum: str) -> list[str]:
    """The runs, newest first, that failed or died on these exact bytes since they last succeeded."""
    query = (
        sa.select(runs.c.run_id, runs.c.status)
        .where(
            runs.c.customer == customer,
            runs.c.checksum == checksum,
            runs.c.dag_id == "progression_import",
            runs.c.dry_run.is_(False),
            runs.c.status != Status.RUNNING,
        )
        .order_by(runs.c.started_at.desc())
        .limit(20)
    )
    streak = []
    for run_id, status in conn.execute(query):
        if status not in (Status.FAILED, Status.ABANDONED):
            break
        streak.append(run_id)
    return streak


def record_counts(conn: Connection, run_id: str, counts: RunCounts) -> None:
    values = {k: int(getattr(counts, k)) for k in COUNTS}
    conn.execute(
        sa.update(runs)
        .where(runs.c.run_id == run_id)
        .values(
            **values,
            rejected_by_reason=json.dumps(counts.rejected_by_reason, sort_keys=True),
        )
    )


def finish_run(
    conn: Connection,
    run_id: str,
    status: Status | str,
    *,
    message: str | None = None,
    report_path: str | None = None,
) -> None:
    values: dict = {"status": Status(status).value, "finished_at": utcnow()}
    if message is not None:
        values["message"] = message
    if report_path is not None:
        values["report_path"] = report_path
    conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(**values))


def get_run(conn: Connection, run_id: str) -> dict | None:
    row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
    return _decoded(row) if row else None


def list_runs(conn: Connection, *, customer: str | None = None, airflow_run_id: str | None = None) -> list[dict]:
    query = sa.select(runs).order_by(runs.c.started_at, runs.c.subject, runs.c.run_id)
    if customer:
        query = query.where(runs.c.customer == customer)
    if airflow_run_id:
        query = query.where(runs.c.airflow_run_id == airflow_run_id)
    return [_decoded(row) for row in conn.execute(query).mappings()]


def latest_runs(conn: Connection, customer: str, airflow_run_id: str | None = None) -> list[dict]:
    """The ledger rows of one Airflow run of a customer: the given one, else the most recent."""
    if airflow_run_id is None:
        airflow_run_id = conn.execute(
            sa.select(runs.c.airflow_run_id)
            .where(runs.c.customer == customer, runs.c.airflow_run_id.is_not(None))
            .order_by(runs.c.started_at.desc())
            .limit(1)
        ).scalar()
    return list_runs(conn, customer=customer, airflow_run_id=airflow_run_id) if airflow_run_id else []


def undos_of(conn: Connection, run_id: str) -> list[dict]:
    """The undo runs (previews and real) of one run, newest first."""
    query = (
        sa.select(runs)
        .where(runs.c.subject == run_id, runs.c.dag_id == "progression_undo")
        .order_by(runs.c.started_at.desc())
    )
    return [_decoded(row) for row in conn.execute(query).mappings()]


def earlier_import_of(conn: Connection, customer: str, checksum: str) -> dict | None:
    """The run that already imported a file with these exact bytes for this customer, if any."""
    row = (
        conn.execute(
            sa.select(runs)
            .where(
                runs.c.customer == customer,
                runs.c.checksum == checksum,
                runs.c.status == Status.SUCCEEDED,
                runs.c.dry_run.is_(False),
                runs.c.undone_by.is_(None),
                runs.c.dag_id == "progression_import",
            )
            .order_by(runs.c.started_at)
            .limit(1)
        )
        .mappings()
        .first()
    )
    return _decoded(row) if row else None


def _decoded(row) -> dict:
    out = dict(row)
    out["rejected_by_reason"] = json.loads(out.get("rejected_by_reason") or "{}")
    return out


def journal_changes(conn: Connection, changes: str, params: dict, *, leaves_a_row: bool = True) -> None:
    """Record a run's changes for undo, one journal row per changed completion. `changes` is a SELECT of the
    journal's columns in their order: run_id, user_id, content_id, action, the old side (completed_at, source,
    run_id) and, when the change leaves a row behind (not a delete), the new side."""
    names = [column.name for column in journal.c][: None if leaves_a_row else -3]
    rows = sa.text(changes).columns(*(sa.column(name) for name in names))
    conn.execute(journal.insert().from_select(names, rows), params)


def lock_run(conn: Connection, run_id: str) -> dict:
    """A run's ledger row, locked until the transaction ends, so that two undos of one run cannot both proceed."""
    row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id).with_for_update()).mappings().first()
    if row is None:
        raise LookupError(f"run {run_id} is not in the ledger")
    return _decoded(row)


def mark_undone(conn: Connection, run_id: str, undo_run_id: str) -> None:
    conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(undone_by=undo_run_id))


def unmark_undone(conn: Connection, run_id: str, undo_run_id: str) -> None:
    """`run_id` counts as not undone again: the undo `undo_run_id` that undid it has itself been undone."""
    conn.execute(sa.update(runs).where(runs.c.run_id == run_id, runs.c.undone_by == undo_run_id).values(undone_by=None))


def open_alerts(conn: Connection, customer: str) -> list[dict]:
    """The customer's alerts whose condition still held at the last check, oldest first."""
    query = (
        sa.select(alerts)
        .where(alerts.c.customer == customer, alerts.c.cleared_at.is_(None))
        .order_by(alerts.c.told_at, alerts.c.id)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def record_alert(conn: Connection, customer: str, kind: str, key: str, message: str, at: datetime) -> None:
    conn.execute(sa.insert(alerts).values(customer=customer, kind=kind, key=key, message=message, told_at=at))


def clear_alert(conn: Connection, alert_id: int, at: datetime) -> None:
    conn.execute(sa.update(alerts).where(alerts.c.id == alert_id, alerts.c.cleared_at.is_(None)).values(cleared_at=at))
