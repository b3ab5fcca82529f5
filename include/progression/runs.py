"""What every run shares, whatever it does: where it works (Target), refusing a conf (ConfError), the per-customer
writer lock, a stage that fails without losing the file or leaving the ledger open, and recovery of runs that died.

Liveness. A run is alive while one of its tasks executes (on PostgreSQL each stage holds a session advisory lock on
its run id: a killed process loses its connection, and with it the lock) or while Airflow says its DAG run is still
queued or running (between tasks). A ledger row that is `running`, or still holds data in staging, of a run that is
alive by neither test died outright: the next run of the customer closes it as `abandoned` and puts the file back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from progression import ledger, storage
from progression.customers import Customer
from progression.ledger import Status
from progression.read import ReaderStopped

log = logging.getLogger(__name__)

# Advisory lock namespaces (first key of the two-key form): customers that write, runs that are executing, and
# customers whose inbox is being claimed from.
_CUSTOMER_LOCKS, _RUN_LOCKS, _CLAIM_LOCKS = 1347571527, 1347571528, 1347571529
STRIKES = 3  # the same bytes failing this many times in a row are not tried again
IMPORT_DAG = "progression_import"

# Errors that say nothing about the file: the stage may succeed when tried again, so the file is not failed.
TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError, TimeoutError, ReaderStopped)

AirflowRunIsLive = Callable[[str, str], bool]  # (dag_id, airflow run id) -> still queued or running


@dataclass
class Target:
    """Where one customer's run reads and writes."""

    customer: Customer
    root: Any  # the customer's storage root (ObjectStoragePath in the DAGs, pathlib.Path in tests)
    engine: Engine  # the customer's platform database


class ConfError(ValueError):
    """A run conf that is refused before any work."""


def open_run(
    target: Target, kind: str, dag_id: str, subject: str, *, airflow_run_id: str | None, dry_run: bool, at: datetime
) -> tuple[str, str]:
    """A new run of the customer in the ledger, `running`, with the staging folder it may keep data in: (run id,
    staging). For runs of one job (a merge, an undo); an import opens a run per file as it fetches it."""
    run_id = ledger.new_run_id(kind, target.customer.slug, at)
    staging = f"{storage.STAGING}/{run_id}"
    with target.engine.begin() as conn:
        ledger.start_run(
            conn,
            run_id=run_id,
            customer=target.customer.slug,
            dag_id=dag_id,
            subject=subject,
            airflow_run_id=airflow_run_id,
            dry_run=dry_run,
            staging=staging,
        )
    return run_id, staging


def customer_file(target: Target, path: str) -> str:
    """A run conf's `path` as a path in the customer's storage that holds a regular file; ConfError otherwise."""
    try:
        rel = storage.relative(path)
        present = storage.is_file(target.root, rel)
    except storage.PathRefused as exc:
        raise ConfError(str(exc)) from None
    if not present:
        raise ConfError(f"path {rel!r} does not exist in the storage of customer {target.customer.slug}")
    return rel


@contextmanager
def _customer_lock(target: Target, namespace: int) -> Iterator[Connection]:
    with target.engine.begin() as conn:  # on SQLite BEGIN IMMEDIATE: one writer at a time anyway
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
                {"ns": namespace, "key": target.customer.slug},
            )
        yield conn


def writing(target: Target):
    """A transaction that holds the customer's writer lock: runs of one customer that write completions (import,
    transfer, merge, undo) take turns instead of racing."""
    return _customer_lock(target, _CUSTOMER_LOCKS)


def claiming(target: Target):
    """The customer's inbox lock, held while a file is claimed: on object storage a claim is a copy and a delete,
    not one atomic rename, so two runs must not claim at once. Separate from the writer lock, so claims do not
    wait for another file's long write."""
    return _customer_lock(target, _CLAIM_LOCKS)


@contextmanager
def executing(engine: Engine, run_id: str) -> Iterator[None]:
    """Mark the run alive while this block runs (PostgreSQL: a session advisory lock, released by the server when
    the process dies)."""
    if not run_id or engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:ns, hashtext(:run))"), {"ns": _RUN_LOCKS, "run": run_id})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, hashtext(:run))"), {"ns": _RUN_LOCKS, "run": run_id})
            conn.commit()


def _executing_now(conn: Connection, run_id: str) -> bool:
    """Whether a task of this run holds its lock right now (PostgreSQL; SQLite cannot tell: False)."""
    if conn.dialect.name != "postgresql":
        return False
    free = conn.execute(
        sa.text("SELECT pg_try_advisory_lock(:ns, hashtext(:run))"), {"ns": _RUN_LOCKS, "run": run_id}
    ).scalar()
    if free:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, hashtext(:run))"), {"ns": _RUN_LOCKS, "run": run_id})
    return not free


def is_alive(conn: Connection, run: dict, airflow_run_is_live: AirflowRunIsLive | None) -> bool:
    if _executing_now(conn, run["run_id"]):
        return True
    if run["airflow_run_id"]:
        # Without a way to ask Airflow (a run started outside it), a row of an Airflow run is taken as alive.
        return airflow_run_is_live is None or airflow_run_is_live(run["dag_id"], run["airflow_run_id"])
    # A run outside Airflow: on PostgreSQL its lock says it all; on SQLite nothing can tell, so it is left alone.
    return conn.dialect.name != "postgresql"


class StagedJob(Protocol):
    run_id: str
    path: str
    message: str
    status: Status


J = TypeVar("J", bound=StagedJob)


def guarded(target: Target, job: J, stage: Callable[[Target, J], J], fail: Callable[[Target, J, str], J]) -> J:
    """Run one stage while marked alive. An error that is the file's (a reader error, a constraint that refuses a
    row, a Rust panic in the reader) fails the file through `fail`, with one sentence naming the file and the
    stage; a transient one (a lost connection) is raised for Airflow to retry, and the ledger says so."""
    name = stage.__name__
    try:
        with executing(target.engine, job.run_id):
            return stage(target, job)
    except BaseException as exc:  # a Rust panic in the reader is a BaseException, and the file's fault
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if not _transient(exc):
            log.exception("stage %s of %s failed", name, job.path)
            return fail(target, job, f"{job.path}: the {name} stage failed: {_brief(exc)}")
        if job.run_id:
            try:
                with target.engine.begin() as conn:
                    ledger.update_run(
                        conn,
                        job.run_id,
                        message=f"{job.path}: the {name} stage was interrupted "
                        f"({_brief(exc)}); it is tried again, else the next run puts the file back",
                    )
            except Exception:  # noqa: BLE001 - the database may be what is gone; the task's own error says more
                log.warning("could not record the interruption of %s in the ledger", job.run_id)
        raise


def _transient(exc: BaseException) -> bool:
    """A lost connection or a busy database, wrapped by SQLAlchemy or straight from the driver (the bulk COPY paths
    talk to psycopg directly)."""
    return isinstance(exc, TRANSIENT) or type(exc).__name__ in ("OperationalError", "InterfaceError")


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:300]}" if text else exc.__class__.__name__


def recover(target: Target, airflow_run_is_live: AirflowRunIsLive | None) -> list[str]:
    """Close the customer's runs that died (`abandoned`), put each file they held back where it belongs, and remove
    their staging. Returns one line per run recovered."""
    lines = []
    with target.engine.connect() as conn:
        dead = [
            run
            for run in ledger.unfinished_runs(conn, target.customer.slug)
            if not is_alive(conn, run, airflow_run_is_live)
        ]
    for run in dead:
        lines.append(_recover_run(target, run))
    # A file's folder sits in its run's folder: once none of that run's files holds data there, it goes too.
    folders = {run["staging"].rsplit("/", 1)[0] for run in dead if run["staging"] and "/" in run["staging"]}
    with target.engine.connect() as conn:
        held = [run["staging"] or "" for run in ledger.unfinished_runs(conn, target.customer.slug)]
    for folder in folders - {storage.STAGING}:
        if not any(staging.startswith(f"{folder}/") for staging in held):
            storage.remove_tree(target.root, folder)
    return lines


def _recover_run(target: Target, run: dict) -> str:
    root, staging = target.root, run["staging"]
    claims = run["dag_id"] == IMPORT_DAG and claims_file(run["dry_run"], run["subject"])
    held = claimed_file(staging, run["subject"]) if staging and claims else None
    where = ""
    status, message = run["status"], run["message"]
    with writing(target) as conn:
        if held and storage.at(root, held).exists():
            checksum = run["checksum"] or storage.checksum(storage.read_bytes(root, held))
            if status == Status.RUNNING:
                status = Status.ABANDONED
                streak = [run["run_id"], *ledger.failure_streak(conn, run["customer"], checksum)]
                if len(streak) >= STRIKES:
                    folder = storage.archive_folder(run["subject"], True, run["content_type"])
                    message = (
                        f"{run['subject']}: these bytes failed {len(streak)} times in a row (runs "
                        f"{', '.join(reversed(streak))}); moved to {folder}/ instead of trying again"
                    )
                else:
                    folder = run["subject"].rsplit("/", 1)[0]
                    message = (
                        f"{run['subject']}: the run stopped before it finished (worker killed or lost); "
                        "nothing was written and the file went back to the inbox for the next run"
                    )
            else:  # it got as far as deciding; only the move out of staging was left undone
                folder = storage.archive_folder(run["subject"], status == Status.FAILED, run["content_type"])
            where = storage.free_name(root, folder, run["subject"].rsplit("/", 1)[-1], ledger.utcnow())
            storage.move(root, held, where)
            ledger.update_run(conn, run["run_id"], checksum=checksum)
        elif status == Status.RUNNING:
            status = Status.ABANDONED
            message = f"{run['subject']}: the run stopped before it finished (worker killed or lost)"
        if status != run["status"]:
            ledger.finish_run(conn, run["run_id"], Status(status), message=message)
        ledger.update_run(conn, run["run_id"], staging=None)
    if staging:
        storage.remove_tree(root, staging)
    return f"run {run['run_id']} ({run['subject']}): {status}" + (f", file now at {where}" if where else "")


def release_staging(target: Target, run_id: str, staging: str) -> None:
    """The run is done with its staging folder: remove it, and the ledger stops pointing at it."""
    storage.remove_tree(target.root, staging)
    with target.engine.begin() as conn:
        ledger.update_run(conn, run_id, staging=None)


def save_report(target: Target, run_id: str, rel: str, write: Callable[[BinaryIO], None], status: Status) -> None:
    """Write a run's report workbook into the customer's storage (`write` writes it to the file it is given), then
    close its ledger row with `status` and the report's path (the page links it). A report that fails half way is
    removed: the customer's reports folder never holds a truncated workbook."""
    opened = False
    try:
        with storage.writer(target.root, rel) as file:
            opened = True  # from here on the file is this run's own: refused paths are never touched
            write(file)
    except BaseException as exc:
        if opened:
            try:
                storage.remove_tree(target.root, rel)
            except Exception as removal:  # the report's own error stays the one raised
                exc.add_note(f"the unfinished report {rel} could not be removed: {removal}")
        raise
    with target.engine.begin() as conn:
        ledger.finish_run(conn, run_id, status, report_path=rel)


def claims_file(dry_run: bool, subject: str) -> bool:
    """Whether an import run moves its file into staging: an import or a check does; a dry run of an inbox file
    only copies it there, and leaves it where it is."""
    return not dry_run or storage.is_check(subject)


def claimed_file(staging: str, subject: str) -> str:
    """Where an import run keeps the file it claimed from the inbox or the check folder."""
    return f"{staging}/claimed/{subject.rsplit('/', 1)[-1]}"


def rows_of(target: Target, airflow_run_id: str) -> list[dict]:
    """The ledger rows one Airflow run left for a customer (an import: one per file)."""
    with target.engine.connect() as conn:
        return ledger.list_runs(conn, customer=target.customer.slug, airflow_run_id=airflow_run_id)


# --- What each kind of run did, in its own words ----------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    key: str  # its name in the run's summary
    label: str | None  # its words on the history page (None: the summary's alone)
    columns: tuple[str, ...]  # the ledger counts it adds up


@dataclass(frozen=True)
class Kind:
    subject: str  # what the summary calls the run's subject
    figures: tuple[Figure, ...]  # the first three labelled make the history list's compact cell


def _figures(*rows: tuple[str, str | None, tuple[str, ...]]) -> tuple[Figure, ...]:
    return tuple(Figure(*row) for row in rows)


KINDS: dict[str, Kind] = {
    IMPORT_DAG: Kind(
        "file",
        _figures(
            ("rows_read", "rows read", ("rows_read",)),
            ("written", "written", ("imported", "updated")),
            ("rejected", "rejected", ("rejected",)),
            ("imported", None, ("imported",)),
            ("updated", "of which updated", ("updated",)),
            ("derived_written", "through the hierarchy", ("derived_written",)),
            ("kept", "kept as they were", ("kept",)),
            ("duplicates", "duplicates in the file", ("duplicates",)),
            ("saved_without_access", "saved without access", ("saved_without_access",)),
        ),
    ),
    "progression_transfer": Kind(
        "transfer",
        _figures(
            ("completed_old", "completed the old item", ("rows_read",)),
            ("written_directly", "new item completed", ("imported", "updated")),
            ("skipped_without_access", "skipped without access", ("skipped_without_access",)),
            ("updated", "of which replaced a completion", ("updated",)),
            ("written_through_contents", "through the new item's contents", ("derived_written",)),
            ("already_had_it", "already had the new item", ("kept",)),
            ("refused", "pairs refused", ("rejected",)),
        ),
    ),
    "progression_merge_users": Kind(
        "merge",
        _figures(
            ("completions", "completions of the source accounts", ("rows_read",)),
            ("copied", "copied", ("imported",)),
            ("kept", "kept (target had an earlier one)", ("kept",)),
            ("replaced", "replaced by an earlier date", ("updated",)),
            ("removed", "removed from the source accounts", ("removed",)),
        ),
    ),
    "progression_undo": Kind(
        "undone_run_id",
        _figures(
            ("changes", "completions the run changed", ("rows_read",)),
            ("restored", "restored", ("restored",)),
            ("removed", "of which removed (the run added them)", ("removed",)),
            ("conflicts", "conflicts left alone", ("conflicts",)),
        ),
    ),
    "progression_export": Kind("export", _figures(("exported", "completions exported", ("rows_read",)))),
}


def figures(run: dict) -> dict[str, int]:
    """A ledger row's counts under its kind's own names."""
    return {
        figure.key: sum(int(run.get(column) or 0) for column in figure.columns)
        for figure in KINDS.get(run["dag_id"], KINDS[IMPORT_DAG]).figures
    }


def figure_lines(run: dict) -> list[tuple[str, int]]:
    """A ledger row's counts in its kind's own words, most telling first (the history page shows these)."""
    value = figures(run)
    return [
        (figure.label, value[figure.key])
        for figure in KINDS.get(run["dag_id"], KINDS[IMPORT_DAG]).figures
        if figure.label
    ]


def summarise(dag_id: str, customer: str | None, rows: list[dict], refused: str | None = None) -> dict:
    """The one-line summary every DAG's last task logs and returns, read back from the ledger rows of its Airflow
    run, so a run that failed or was refused half way is in it too. An import sums its files (a checked file is
    listed under `checked` with how its check ended); the other kinds have one row. `refused`: why the first task
    refused the conf, when it did."""
    if dag_id == IMPORT_DAG:
        return {**_files(rows), **({"refused": refused} if refused else {})}
    run = next((r for r in rows if r["dag_id"] == dag_id), None)
    if run is None:
        return {
            "dag": dag_id,
            "customer": customer,
            "status": (Status.REFUSED if refused else Status.FAILED).value,
            "message": refused or "the run stopped before it was recorded: the first task's log says why",
        }
    return {
        "dag": dag_id,
        "customer": run["customer"],
        KINDS[dag_id].subject: run["subject"],
        "run_id": run["run_id"],
        "status": run["status"],
        "dry_run": bool(run["dry_run"]),
        **figures(run),
        "message": run["message"],
        "report": run["report_path"],
    }


def _files(rows: list[dict]) -> dict:
    label = {r["run_id"]: f"{r['customer']}/{r['subject'].removeprefix('inbox/')}" for r in rows}
    checks = [r for r in rows if storage.is_check(r["subject"])]
    imports = [r for r in rows if not storage.is_check(r["subject"])]
    totals = {
        key: sum(found[key] for found in map(figures, imports))
        for key in (figure.key for figure in KINDS[IMPORT_DAG].figures)
    }
    by_status = {
        status: [label[r["run_id"]] for r in imports if r["status"] == status]
        for status in (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.RUNNING)
    }
    return {
        "dag": IMPORT_DAG,
        "files": len(imports),
        **totals,
        "succeeded": by_status[Status.SUCCEEDED],
        "failed": by_status[Status.FAILED],
        "skipped": by_status[Status.SKIPPED],
        "unfinished": by_status[Status.RUNNING],
        "dry_run": any(r["dry_run"] for r in imports),
        "checked": {label[r["run_id"]]: r["status"] for r in checks},
        "runs": {label[r["run_id"]]: r["run_id"] for r in rows},
        "reports": {label[r["run_id"]]: r["report_path"] for r in rows if r.get("report_path")},
    }


class ReportedJob(Protocol):
    customer: str
    run_id: str
    airflow_run_id: str | None
    started: str
    dry_run: bool
    message: str


def report_head(
    target: Target,
    job: ReportedJob,
    subject: list[tuple[str, object]],
    status: str,
    *,
    nothing_written: str = "DRY RUN",
) -> list[tuple[str, object]]:
    """The first lines of every report's Summary sheet: who, what, which run, and how it ended."""
    written = f"{nothing_written}, nothing written: " if job.dry_run else ""
    return [
        ("Customer", job.customer),
        ("Platform", target.customer.platform),
        *subject,
        ("Run id", job.run_id),
        ("Airflow run", job.airflow_run_id),
        ("Started (UTC)", job.started),
        ("Status", written + status),
        ("Message", job.message or None),
    ]
