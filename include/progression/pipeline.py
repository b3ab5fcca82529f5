"""The import's stages in order. Each stage takes and returns a small FileJob; the data itself lives as Parquet in
a run-scoped staging folder of the customer's storage. The DAG, the tests and the benchmark all run these."""

from __future__ import annotations

import functools
import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from progression import ledger, runs, storage
from progression.customers import CONTENT_TYPES, ON_EXISTING
from progression.expand import expand_completions, without_access
from progression.jobs import IMPORT_TASKS, Job
from progression.ledger import Status
from progression.platform import load_assignments, snapshot
from progression.read import ROW, InputError, read_input, read_pairs
from progression.report import write_import_report
from progression.resolve import CROSSWALK_HEADERS, Crosswalk, repeated_rows, resolve_rows
from progression.runs import ConfError, Target
from progression.validate import prepare_column_checks, validate_rows
from progression.write import write_completions

log = logging.getLogger(__name__)
DAG_ID = runs.IMPORT_DAG


@dataclass
class FileJob(Job):
    customer: str
    path: str  # relative to the storage root, e.g. inbox/activities/q3.xlsx or check/...
    content_type: str | None
    dry_run: bool = False  # always for a check: a check writes nothing
    on_existing: str = "keep"
    force: bool = False
    airflow_run_id: str | None = None
    started: str = ""  # ISO time the run began: fixes "today" for blank dates and future checks
    run_id: str = ""
    staging: str = ""
    status: Status = Status.PENDING  # pending, ok (stages go on), skipped, failed
    message: str = ""
    checksum: str = ""
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    original_columns: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    archived_to: str = ""

    @property
    def label(self) -> str:
        return f"{self.customer}/{self.path.removeprefix('inbox/')}"

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED

    @property
    def is_check(self) -> bool:
        """A file from the check folder: decided as an import is, written never, moved to checked/."""
        return storage.is_check(self.path)

    @property
    def claims_file(self) -> bool:
        return runs.claims_file(self.dry_run, self.path)


def plan(
    target: Target,
    *,
    path: str | None,
    content_type: str | None,
    dry_run: bool,
    on_existing: str | None,
    force: bool,
    airflow_run_id: str | None,
    started: datetime,
    check: bool = False,
) -> list[FileJob]:
    """The files this run will import or check for one customer: one file when `path` is given, else every file of
    the inbox and the check folder; with `check`, only the check folder (or the path, which must be in it)."""
    customer = target.customer
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise ConfError(f"content_type {content_type!r} must be one of {', '.join(CONTENT_TYPES)}")
    on_existing = on_existing or customer.on_existing
    if on_existing not in ON_EXISTING:
        raise ConfError(f"on_existing {on_existing!r} must be one of {', '.join(ON_EXISTING)}")
    if path:
        rel = runs.customer_file(target, path)
        if check and not storage.is_check(rel):
            raise ConfError(
                f"check takes a path in the check folder ({storage.CHECK}/activities/, ...), not "
                f"{rel!r}; to see what an import of it would do, trigger with dry_run"
            )
        files = [(rel, storage.type_from_folder(rel))]
    else:
        inbox = storage.inbox_files(
            target.root, content_type, (storage.CHECK,) if check else (storage.INBOX, storage.CHECK)
        )
        files = inbox.files
        for refusal in inbox.refused:
            log.warning("customer %s: %s", customer.slug, refusal)
    stamp = started.astimezone(timezone.utc)
    return [
        FileJob(
            customer=customer.slug,
            path=rel,
            content_type=content_type or folder_type,
            dry_run=dry_run or storage.is_check(rel),
            on_existing=on_existing,
            force=force,
            airflow_run_id=airflow_run_id,
            started=stamp.isoformat(),
            run_id=ledger.new_run_id("check" if storage.is_check(rel) else "import", customer.slug, stamp),
            staging=f"{run_staging(stamp, airflow_run_id)}/{index:04d}",
        )
        for index, (rel, folder_type) in enumerate(files)
    ]


def run_staging(started: datetime, airflow_run_id: str | None) -> str:
    """The staging folder of one run of a customer; each file works in a folder of its own inside it."""
    return f"{storage.STAGING}/{started:%Y%m%dT%H%M%S}-{_safe(airflow_run_id or 'local')}"


def close_run_staging(target: Target, jobs: list[FileJob]) -> bool:
    """Remove the run's staging folder once none of its files holds data there (the last task does this: a file's
    own tasks never touch another file's folder). A file left there by a failed task stays for recovery."""
    if not jobs:
        return False
    folder = jobs[0].staging.rsplit("/", 1)[0]
    with target.engine.connect() as conn:
        if any(
            (run["staging"] or "").startswith(f"{folder}/")
            for run in ledger.unfinished_runs(conn, target.customer.slug)
        ):
            return False
    storage.remove_tree(target.root, folder)
    return True


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


# --- staging ------------------------------------------------------------------------------------------------------

# The frames a task's stages put, for its later stages (validate takes fetch's rows, expand resolve's, outcomes the
# write's): read back from storage only by another task. Emptied as each task ends (run_task).
_this_task = threading.local()  # per thread: tests and the benchmark run several files' tasks at once


def _put_by_this_task() -> dict[str, pd.DataFrame]:
    if not hasattr(_this_task, "frames"):
        _this_task.frames = {}
    return _this_task.frames


def _put(target: Target, job: FileJob, name: str, frame: pd.DataFrame, *, stored: bool = True) -> None:
    """Hand a frame to the later stages: stored in staging for other tasks, held in memory for this one's (a frame
    only this task reads is not stored: a retry of the task makes it again). The write goes on beside the stage
    and the next one; see _wait_for_writes."""
    rel = f"{job.staging}/{name}.parquet"
    if stored:
        _writes_of_this_task().append(_writer().submit(storage.write_frame, target.root, rel, frame))
    _put_by_this_task()[rel] = frame


# One thread writes the staged frames of the process, in the order they were put (a frame put twice ends as the
# second). Parquet encodes without the GIL, so a million rows' write costs the stage next to it little.
_WRITER: list[ThreadPoolExecutor] = []
os.register_at_fork(after_in_child=_WRITER.clear)  # a forked task process has no thread of its parent's


def _writer() -> ThreadPoolExecutor:
    if not _WRITER:
        _WRITER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-writer"))
    return _WRITER[0]


def _writes_of_this_task() -> list[Future[None]]:
    if not hasattr(_this_task, "writes"):
        _this_task.writes = []
    return _this_task.writes


def _wait_for_writes(*, quietly: bool = False) -> None:
    """Block until every frame this task put is in storage; the first write that failed raises here, unless
    `quietly` (an error of the task's is on its way up already)."""
    writes, _this_task.writes = _writes_of_this_task(), []
    for write in writes:
        write.exception()  # all of them done before any error goes up
    for write in writes if not quietly else ():
        write.result()


def _get(target: Target, job: FileJob, name: str) -> pd.DataFrame:
    rel = f"{job.staging}/{name}.parquet"
    held = _put_by_this_task().get(rel)
    return held.copy(deep=False) if held is not None else storage.read_frame(target.root, rel)


def _fail(target: Target, job: FileJob, message: str) -> FileJob:
    job.status, job.message = Status.FAILED, message
    with target.engine.begin() as conn:
        ledger.finish_run(conn, job.run_id, Status.FAILED, message=message)
    return job


# --- stages -------------------------------------------------------------------------------------------------------


def fetch(target: Target, job: FileJob) -> FileJob:
    """Claim the file into this run's staging (a dry run of an inbox file copies it), open its ledger run, skip
    bytes that were imported before (a check says so and goes on), and read it."""
    with target.engine.begin() as conn:  # opened first: a run that dies holding the file is found by its row
        ledger.start_run(
            conn,
            run_id=job.run_id,
            customer=job.customer,
            dag_id=DAG_ID,
            subject=job.path,
            airflow_run_id=job.airflow_run_id,
            content_type=job.content_type,
            dry_run=job.dry_run,
            staging=job.staging,
        )
    try:
        with runs.claiming(target):
            take = storage.claim if job.claims_file else storage.copy_in
            data = take(target.root, job.path, runs.claimed_file(job.staging, job.path))
    except storage.Gone:
        job.status, job.message = Status.SKIPPED, f"{job.path}: claimed by another run meanwhile; nothing to do here"
        with target.engine.begin() as conn:
            ledger.finish_run(conn, job.run_id, Status.SKIPPED, message=job.message)
        return job
    job.checksum = storage.checksum(data)
    with target.engine.begin() as conn:
        ledger.update_run(conn, job.run_id, checksum=job.checksum)
        earlier = None if job.force else ledger.earlier_import_of(conn, job.customer, job.checksum)
    if earlier and job.is_check:
        job.message = (
            f"{job.path}: these bytes were imported by run {earlier['run_id']} ({earlier['subject']}) "
            "already; an import of them would be skipped unless forced"
        )
    elif earlier:
        job.status = Status.SKIPPED
        job.message = (
            f"{job.path}: already imported by run {earlier['run_id']} ({earlier['subject']}); "
            "trigger with force=true to import it again"
        )
        with target.engine.begin() as conn:
            ledger.finish_run(conn, job.run_id, Status.SKIPPED, message=job.message)
        return job
    if job.content_type is None:
        top = storage.CHECK if job.is_check else storage.INBOX
        return _fail(
            target,
            job,
            f"{job.path}: cannot tell whether it holds activities, journeys or programmes; "
            f"put it in {top}/activities/, {top}/journeys/ or {top}/programmes/, "
            "or set content_type in the run conf",
        )
    try:
        with tempfile.TemporaryDirectory(prefix="progression-fetch-") as folder:
            local = Path(folder, "file")
            local.write_bytes(data)
            del data  # the workbook's reader is forked from this process: it would count these bytes as its own
            # The column checks' set-up (importing Great Expectations takes seconds) while the workbook loads.
            table = read_input(
                local,
                job.path.rsplit("/", 1)[-1],
                max_rows=target.customer.max_rows,
                own_headers=target.customer.columns,
                meanwhile=prepare_column_checks,
            )
    except InputError as exc:
        return _fail(target, job, f"{job.path}: {exc}")
    job.sheet, job.columns = table.sheet, table.columns
    job.original_columns = [c for c in table.rows.columns if c != ROW]
    job.counts = {"rows_read": len(table.rows)}
    _put(target, job, "input", table.rows)
    job.status = Status.OK
    return job


def validate(target: Target, job: FileJob) -> FileJob:
    """Column rules (GX) and dates: the rows that pass, and a reason for each that does not."""
    if job.status != Status.OK:
        return job
    rows = _get(target, job, "input")
    canonical = pd.DataFrame({ROW: rows[ROW]})
    for name in ("email", "uuid", "completed_raw"):
        header = job.columns.get(name)
        canonical[name] = rows[header] if header else pd.Series(pd.NA, index=rows.index, dtype="string")
    customer = target.customer
    valid, rejected = validate_rows(canonical, job.columns, tz=customer.tz, date_order=customer.date_order, now=job.now)
    _put(target, job, "valid", valid)
    _put(target, job, "rows", _rejected(job, rejected))
    return job


def resolve(target: Target, job: FileJob) -> FileJob:
    """E-mails and content (uuids, titles, the customer's codes) to ids on the customer's platform; one completion
    per (user, content), earliest date."""
    if job.status != Status.OK:
        return job
    assert job.content_type is not None, "fetch fails a file whose content type is unknown"
    valid = _get(target, job, "valid")
    codes = crosswalk(target)
    with target.engine.connect() as conn:
        platform = snapshot(conn, target.customer.platform)
        resolved, rejected = resolve_rows(valid, platform, job.content_type, target.customer.platform, codes)
        assignments = load_assignments(conn, platform.platform_id)
    resolved["duplicate_of"] = repeated_rows(resolved)
    unique = resolved[resolved["duplicate_of"].isna()]
    resolved["without_access"] = False
    resolved.loc[unique.index, "without_access"] = without_access(unique, assignments, platform.edges).to_numpy()
    job.counts["duplicates"] = int(resolved["duplicate_of"].notna().sum())
    job.counts["saved_without_access"] = int(resolved["without_access"].sum())
    _put(target, job, "resolved", resolved)  # the rows to write join the outcome table after the write
    _put(target, job, "rows", pd.concat([_get(target, job, "rows"), _rejected(job, rejected)]))
    _put(target, job, "edges", platform.edges, stored=False)
    _put(target, job, "content", platform.content[["content_id", "uuid_key"]])  # the report shows each row's uuid
    return job


def _outcome_rows(
    rows: pd.Series,
    *,
    outcome: str | None = None,
    reason: pd.Series | None = None,
    content_id: pd.Series | None = None,
    duplicate_of: pd.Series | None = None,
    without_access: pd.Series | None = None,
) -> pd.DataFrame:
    """Rows of the outcome table: ROW, outcome (none for a row a failed write did not write), reason (a
    rejection's), the content id, the row a duplicate repeats, and whether the user has no access to the content."""
    index = rows.index
    missing = pd.Series(pd.NA, index=index, dtype="Int64")
    return pd.DataFrame(
        {
            ROW: rows.astype("int64"),
            "outcome": pd.Series(outcome, index=index, dtype="string"),
            "reason": (reason if reason is not None else pd.Series(pd.NA, index=index)).astype("string"),
            "content_id": (content_id if content_id is not None else missing).astype("Int64"),
            "duplicate_of": (duplicate_of if duplicate_of is not None else missing).astype("Int64"),
            "without_access": (without_access if without_access is not None else pd.Series(False, index=index)),
        }
    )


def _rejected(job: FileJob, rejected: pd.DataFrame) -> pd.DataFrame:
    """A stage's rejected rows (ROW, reason_code, reason) counted in the job, as rows of the outcome table."""
    job.counts["rejected"] = int(job.counts.get("rejected", 0)) + len(rejected)
    by_reason = dict(job.counts.get("rejected_by_reason") or {})
    for code, number in rejected["reason_code"].value_counts().items():
        by_reason[str(code)] = by_reason.get(str(code), 0) + int(number)
    job.counts["rejected_by_reason"] = by_reason
    return _outcome_rows(rejected[ROW], outcome="rejected", reason=rejected["reason"])


def crosswalk(target: Target) -> Crosswalk:
    """The customer's codes for its content (`mappings/content.xlsx`), none when it has no such file. A file that
    cannot be read fails no import: the rows that use a code are rejected with the reason."""
    try:
        if not storage.is_file(target.root, storage.CROSSWALK):
            return Crosswalk()
        return Crosswalk(
            read_pairs(storage.read_bytes(target.root, storage.CROSSWALK), storage.CROSSWALK, CROSSWALK_HEADERS)
        )
    except (InputError, storage.PathRefused) as exc:
        return Crosswalk(problem=f"{storage.CROSSWALK} cannot be read: {exc}")


def expand(target: Target, job: FileJob) -> FileJob:
    """Journeys and programmes complete what they contain, with the same date."""
    if job.status != Status.OK:
        return job
    resolved = _get(target, job, "resolved")
    unique = resolved[resolved["duplicate_of"].isna()]
    _put(target, job, "completions", expand_completions(unique, _get(target, job, "edges")))
    return job


def write(target: Target, job: FileJob) -> FileJob:
    """All valid rows in one transaction, or none when too many rows were rejected."""
    if job.status != Status.OK:
        return job
    carried = job.counts
    counts = ledger.RunCounts(
        rows_read=int(carried["rows_read"]),
        rejected=int(carried["rejected"]),
        duplicates=int(carried["duplicates"]),
        saved_without_access=int(carried["saved_without_access"]),
        rejected_by_reason=dict(carried["rejected_by_reason"]),
    )
    rate = counts.rejected / counts.rows_read if counts.rows_read else 0.0
    limit = target.customer.max_error_rate
    if rate > limit:
        job.counts = counts.as_dict()
        with target.engine.begin() as conn:
            ledger.record_counts(conn, job.run_id, counts)
        return _fail(
            target,
            job,
            f"{job.path}: {counts.rejected} of {counts.rows_read} rows rejected "
            f"({rate:.1%}), above the customer's max_error_rate of {limit:.1%}; "
            "nothing was written",
        )
    completions = _get(target, job, "completions")
    with runs.writing(target) as conn:
        result = write_completions(
            conn, completions, run_id=job.run_id, source="import", on_existing=job.on_existing, dry_run=job.dry_run
        )
        counts.imported, counts.updated, counts.kept = (result.count(o) for o in ("imported", "updated", "kept"))
        counts.derived_written = result.count("imported", direct=False) + result.count("updated", direct=False)
        ledger.record_counts(conn, job.run_id, counts)
        ledger.finish_run(conn, job.run_id, Status.SUCCEEDED)
    _put(target, job, "exceptions", result.exceptions, stored=False)
    job.counts = counts.as_dict()
    return job


def outcomes(target: Target, job: FileJob) -> FileJob:
    """After the write, in its task (the completions have landed): the resolved rows join the outcome table, each
    with its outcome; rows a failed write did not write wait there without one. The write lists only the
    completions it did not import (user_id, content_id, outcome); a duplicate row shares its completion with the
    row it repeats."""
    if "duplicates" not in job.counts:  # resolve did not finish: the table holds the rejected rows only
        return job
    resolved = _get(target, job, "resolved")
    written = _outcome_rows(
        resolved[ROW],
        content_id=resolved["content_id"],
        duplicate_of=resolved["duplicate_of"],
        without_access=resolved["without_access"],
    )
    if job.status == Status.OK:
        other = (
            resolved[["user_id", "content_id"]]
            .reset_index()
            .merge(_get(target, job, "exceptions"), on=["user_id", "content_id"])
            .set_index("index")["outcome"]
        )
        written["outcome"] = "imported"
        written.loc[other.index, "outcome"] = other.astype("string")
    _put(target, job, "rows", pd.concat([_get(target, job, "rows"), written]))
    return job


def row_outcomes(target: Target, job: FileJob) -> pd.DataFrame:
    """One outcome and reason per input row, for the report, and the uuid of the content each row resolved to: the
    outcome table the stages built, in words; rows still waiting when the file failed were not written."""
    rows = _get(target, job, "rows").sort_values(ROW).reset_index(drop=True)
    reason = rows["reason"].copy()
    reason[rows["outcome"].eq("kept")] = f"already completed; kept (on_existing: {job.on_existing})"
    reason[rows["without_access"].astype(bool)] = "saved; the user has no access to this content yet"
    duplicate = rows["duplicate_of"].notna()
    reason[duplicate] = (
        "same user and content as row " + rows.loc[duplicate, "duplicate_of"].astype(str) + "; counted once with "
        "the earliest date"
    )
    waiting = rows["outcome"].isna()
    reason[waiting] = job.message.split(": ", 1)[-1]
    uuid_of = _get(target, job, "content").set_index("content_id")["uuid_key"]
    return pd.DataFrame(
        {
            ROW: rows[ROW],
            "outcome": rows["outcome"].mask(waiting, "not written"),
            "reason": reason,
            "content_uuid": rows["content_id"].map(uuid_of).astype("string"),
        }
    )


def report(target: Target, job: FileJob) -> FileJob:
    """The report workbook in the customer's reports folder; the ledger points to it."""
    if job.status == Status.SKIPPED:
        return job
    have_rows = bool(job.original_columns)
    rows = _get(target, job, "input") if have_rows else pd.DataFrame({ROW: pd.Series(dtype="int64")})
    has_outcomes = "duplicates" in job.counts  # resolve finished, and the outcome table holds every row
    outcomes = (
        row_outcomes(target, job) if has_outcomes else pd.DataFrame(columns=[ROW, "outcome", "reason", "content_uuid"])
    )
    name = job.path.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] + (".check" if job.is_check else "")
    job.report = f"{storage.REPORTS}/{job.now:%Y-%m-%d}/{stem}.{job.run_id}.xlsx"
    runs.save_report(
        target,
        job.run_id,
        job.report,
        lambda file: write_import_report(
            file, summary=summary_lines(target, job), rows=rows, columns=job.original_columns, outcomes=outcomes
        ),
        Status.FAILED if job.failed else Status.SUCCEEDED,
    )
    return job


def summary_lines(target: Target, job: FileJob) -> list[tuple[str, object]]:
    counts = job.counts
    lines = runs.report_head(
        target,
        job,
        [("File", job.path), ("Sheet", job.sheet), ("Content type", job.content_type)],
        job.status,
        nothing_written="CHECK" if job.is_check else "DRY RUN",
    )
    lines += [
        ("On existing completions", job.on_existing),
        ("Rows read", counts.get("rows_read")),
        ("Completions imported", counts.get("imported")),
        ("Completions updated", counts.get("updated")),
        ("Already completed, kept", counts.get("kept")),
        ("Duplicate rows (counted once)", counts.get("duplicates")),
        ("Completed through the hierarchy", counts.get("derived_written")),
        ("Saved without access", counts.get("saved_without_access")),
        ("Rows rejected", counts.get("rejected")),
    ]
    for reason, number in sorted((counts.get("rejected_by_reason") or {}).items()):
        lines.append((f"  rejected: {reason}", number))
    return lines


def archive(target: Target, job: FileJob) -> FileJob:
    """Move the claimed file to processed/ or failed/ (a checked one to checked/; a dry run's copy just goes) and
    clear this file's staging."""
    held = runs.claimed_file(job.staging, job.path)
    with runs.executing(target.engine, job.run_id):
        if job.claims_file and storage.at(target.root, held).exists():
            folder = storage.archive_folder(job.path, job.failed, job.content_type)
            job.archived_to = storage.free_name(target.root, folder, job.path.rsplit("/", 1)[-1], job.now)
            storage.move(target.root, held, job.archived_to)
        runs.release_staging(target, job.run_id, job.staging)
    return job


STAGES = {stage.__name__: stage for stage in (fetch, validate, resolve, expand, write, outcomes, report)}


def run_stage(target: Target, job: FileJob, name: str, *, stored: bool = True) -> FileJob:
    """One stage as a task runs it: a failure fails the file (reported, moved to failed/), never the ledger open.
    With `stored` it ends once what it staged is in storage, as the last stage of a task must; without, the writes
    go on beside the task's next stage."""
    stage: Callable[[Target, FileJob], FileJob] = STAGES[name]
    if stored:
        stage = _then_wait_for_writes(stage)
    return runs.guarded(target, job, stage, _fail_stage)


def _then_wait_for_writes(stage: Callable[[Target, FileJob], FileJob]) -> Callable[[Target, FileJob], FileJob]:
    @functools.wraps(stage)
    def storing(target: Target, job: FileJob) -> FileJob:
        job = stage(target, job)
        _wait_for_writes()  # a write that failed fails the stage, as it would have written in it
        return job

    return storing


def _fail_stage(target: Target, job: FileJob, message: str) -> FileJob:
    if job.status == Status.OK and "imported" in job.counts:  # written already: the run stands, the message says more
        job.message = message
        with target.engine.begin() as conn:
            ledger.update_run(conn, job.run_id, message=message)
        return job
    return _fail(target, job, message)


def run_task(target: Target, job: FileJob, name: str) -> tuple[FileJob, list[tuple[str, float]]]:
    """The stages of one task (jobs.IMPORT_TASKS), in order; the job and how long each stage took."""
    timings: list[tuple[str, float]] = []
    stages = IMPORT_TASKS[name]
    try:
        for index, stage in enumerate(stages):
            if timings:  # the stage before is done with its frames: hand their memory back before the next one's
                _release_frames_but(IMPORT_INPUTS.get(stage, ()), job)
            started = time.perf_counter()
            if stage == "archive":
                job = archive(target, job)
            else:
                # The task's last stage waits for its writes (archive, after it, stages nothing).
                job = run_stage(target, job, stage, stored=all(later == "archive" for later in stages[index + 1 :]))
            timings.append((stage, time.perf_counter() - started))
    finally:
        _wait_for_writes(quietly=True)  # after an error: no write goes on into staging once the task has ended
        _put_by_this_task().clear()
    return job, timings


# What a stage takes from the stage before it in the same task (see _put_by_this_task).
IMPORT_INPUTS = {
    "validate": ("input",),
    "expand": ("resolved", "edges"),
    "outcomes": ("rows", "resolved", "exceptions"),
}


# Released frames smaller than this are left to reference counting: a full collection walks every object of the
# process (Airflow's and Great Expectations' too), about half a second, which a small file would mostly wait on.
COLLECT_ABOVE_BYTES = 64 << 20


def _release_frames_but(kept: tuple[str, ...], job: FileJob) -> None:
    keep = {f"{job.staging}/{name}.parquet" for name in kept}
    held = _put_by_this_task()
    released = [held.pop(rel) for rel in [rel for rel in held if rel not in keep]]
    if sum(int(frame.memory_usage(deep=False).sum()) for frame in released) > COLLECT_ABOVE_BYTES:
        del released
        gc.collect()
        pa.default_memory_pool().release_unused()


def run_file(target: Target, job: FileJob) -> FileJob:
    """Every stage of one file, in order, in this process (tests and the benchmark use this)."""
    for name in IMPORT_TASKS:
        job, _ = run_task(target, job, name)
    return job
