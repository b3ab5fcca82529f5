"""Failure paths of a run: a stage that raises, a run that dies (killed at every stage), two runs at once, a file
replaced mid-run, files of one run interleaved as two workers run them. Each ends with every ledger row closed, the
file in exactly one place, and the completions an uninterrupted run would have written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from support import NOW, drop, refuse_inserts_of, stored
from progression import ledger, pipeline, read, runs, storage
from demo_platform import workbook_bytes
from progression.pipeline import FileJob, plan, run_file
from progression.read import ReaderStopped
from progression.runs import ConfError, recover
from progression.transfer import plan as plan_transfer, run_transfer
from progression.undo import plan as plan_undo, run_undo

HEADER = ["User email", "Content uuid", "Completion date"]
ROOT = Path(__file__).resolve().parents[2]


def dead(_dag_id: str, _run_id: str) -> bool:
    """Airflow's answer for a run whose worker was killed: it is no longer running."""
    return False


def activities(platform, count: int = 4) -> bytes:
    rows = [[platform.emails[i], platform.uuids["activity"][i], f"2024-03-{10 + i}"] for i in range(count)]
    return workbook_bytes(HEADER, rows)


def plan_one(target, rel, **options) -> FileJob:
    jobs = plan(
        target,
        path=rel,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id=options.pop("airflow_run_id", "manual__test"),
        started=options.pop("now", NOW),
        **options,
    )
    assert len(jobs) == 1
    return jobs[0]


def ledger_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return ledger.list_runs(conn)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def completions_as_written(engine) -> dict:
    """(email, uuid) -> (time, source): what an import leaves, whatever its run id."""
    return {key: value[:2] for key, value in stored(engine).items()}


def uninterrupted(target, data: bytes) -> dict:
    """What one clean run of the file writes, on a copy of the platform as it is now (then put back)."""
    before = stored(target.engine)
    rel = drop(target.root, "inbox/activities/clean.xlsx", data)
    job = run_file(target, plan_one(target, rel))
    assert job.status == "ok", job.message
    result = completions_as_written(target.engine)
    run_undo(target, plan_undo(target, run_id=job.run_id, dry_run=False, force=False, airflow_run_id=None, started=NOW))
    assert stored(target.engine).keys() == before.keys()
    return result


# --- a stage that raises --------------------------------------------------------------------------------------


def test_a_stage_that_raises_fails_the_file_with_its_report_and_closes_the_ledger(target, platform):
    """The platform refuses the third row half-way through the write: none of the file's rows stays."""
    refuse_inserts_of(target.engine, platform.uuids["activity"][2])
    rel = drop(target.root, "inbox/activities/locked.xlsx", activities(platform))
    job = run_file(target, plan_one(target, rel))
    assert job.failed
    assert job.message.startswith("inbox/activities/locked.xlsx: the write stage failed: ")
    assert "completions of this item are locked" in job.message
    [row] = ledger_rows(target.engine)
    assert row["status"] == "failed" and row["message"] == job.message and row["staging"] is None
    assert row["report_path"] == job.report and (target.root / job.report).exists()
    assert stored(target.engine) == {}  # one transaction: none of the file's rows, no journal row
    with target.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0
    assert files_under(target.root) == sorted(["failed/activities/locked.xlsx", job.report])


def test_a_staged_frame_that_cannot_be_stored_fails_the_file_in_the_task_that_put_it(target, platform, monkeypatch):
    """Staged frames are written beside the task's next stage: a write that fails still fails the file in that task,
    and the frames written beside it are in storage before the task ends."""
    real_write = storage.write_frame

    def disk_full_for_valid_rows(root, rel, frame):
        if rel.endswith("/valid.parquet"):
            raise OSError(28, "No space left on device")
        real_write(root, rel, frame)

    monkeypatch.setattr(storage, "write_frame", disk_full_for_valid_rows)
    rel = drop(target.root, "inbox/activities/full.xlsx", activities(platform))
    job, _ = pipeline.run_task(target, plan_one(target, rel), "fetch_validate")
    assert job.failed
    assert job.message.startswith("inbox/activities/full.xlsx: the validate stage failed: OSError: ")
    assert "No space left on device" in job.message
    assert (target.root / job.staging / "input.parquet").is_file()  # put by fetch, written while validate ran
    assert ledger_rows(target.engine)[0]["status"] == "failed"
    for task in ("resolve_expand", "write", "report_archive"):
        job, _ = pipeline.run_task(target, job, task)
    assert stored(target.engine) == {}
    assert files_under(target.root) == sorted(["failed/activities/full.xlsx", job.report])


def test_a_report_that_fails_half_way_leaves_no_workbook_and_the_run_stands(target, platform, monkeypatch):
    """The completions landed before the report: they stay, the file is processed, the ledger says why there is no
    report, and the reports folder holds no truncated workbook."""
    from progression import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "_fill_rows", disk_full)
    rel = drop(target.root, "inbox/activities/late.xlsx", activities(platform))
    job = run_file(target, plan_one(target, rel))
    assert not job.failed and job.message.startswith("inbox/activities/late.xlsx: the report stage failed: OSError: ")
    [row] = ledger_rows(target.engine)
    assert row["message"] == job.message and row["report_path"] is None
    assert len(stored(target.engine)) == 4
    assert files_under(target.root) == ["processed/activities/late.xlsx"]


def test_a_report_that_fails_and_cannot_be_removed_still_tells_its_own_error(target, platform, monkeypatch):
    from progression import report

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_remove_tree = storage.remove_tree

    def reports_folder_failing(root, rel):
        if rel.startswith(f"{storage.REPORTS}/"):
            raise OSError(5, "Input/output error")
        real_remove_tree(root, rel)

    monkeypatch.setattr(report, "_fill_rows", disk_full)
    monkeypatch.setattr(storage, "remove_tree", reports_folder_failing)
    rel = drop(target.root, "inbox/activities/late.xlsx", activities(platform))
    job = run_file(target, plan_one(target, rel))
    assert "No space left on device" in job.message and "Input/output error" not in job.message
    assert ledger_rows(target.engine)[0]["message"] == job.message


def test_a_reader_crash_fails_the_file_and_never_leaves_it_in_the_inbox(target, platform):
    # Bytes that look like a workbook (zip magic) but are not one: the reader raises while opening.
    rel = drop(target.root, "inbox/activities/broken.xlsx", b"PK\x03\x04" + b"\x00" * 64)
    job = run_file(target, plan_one(target, rel))
    assert job.failed and job.message.startswith("inbox/activities/broken.xlsx: ")
    assert ledger_rows(target.engine)[0]["status"] == "failed"
    assert (target.root / "failed/activities/broken.xlsx").exists() and not (target.root / rel).exists()


# --- runs that died ---------------------------------------------------------------------------------------------


def die_after(target, job: FileJob, last_stage: str) -> FileJob:
    """The stages up to `last_stage` run, then the worker is gone: nothing runs after it."""
    for name in pipeline.STAGES:
        job = pipeline.run_stage(target, job, name)
        if name == last_stage:
            return job
    raise AssertionError(last_stage)


@pytest.mark.parametrize("last_stage", ["fetch", "validate", "resolve", "expand"])
def test_a_run_that_died_before_writing_is_abandoned_and_its_file_imported_by_the_next(target, platform, last_stage):
    data = activities(platform)
    expected = uninterrupted(target, data)
    rel = drop(target.root, "inbox/activities/q3.xlsx", data)
    died = die_after(target, plan_one(target, rel), last_stage)
    assert not (target.root / rel).exists()  # claimed by the run that died
    assert recover(target, airflow_run_is_live=lambda *_: True) == []  # Airflow still runs it: hands off
    [line] = recover(target, airflow_run_is_live=dead)
    assert died.run_id in line and "abandoned" in line
    row = next(r for r in ledger_rows(target.engine) if r["run_id"] == died.run_id)
    assert row["status"] == "abandoned" and row["staging"] is None
    assert "went back to the inbox" in row["message"]
    assert (target.root / rel).read_bytes() == data
    assert not [f for f in files_under(target.root) if f.startswith("staging/")]
    job = run_file(target, plan_one(target, rel, now=NOW))
    assert job.status == "ok", job.message
    assert completions_as_written(target.engine) == expected
    assert all(r["status"] != "running" and r["staging"] is None for r in ledger_rows(target.engine))
    with pytest.raises(ConfError, match="abandoned without writing any completion: there is nothing to undo"):
        plan_undo(target, run_id=died.run_id, dry_run=True, force=False, airflow_run_id=None, started=NOW)


def test_a_run_that_died_after_writing_keeps_its_completions_and_archives_the_file(target, platform):
    rel = drop(target.root, "inbox/activities/q3.xlsx", activities(platform))
    died = die_after(target, plan_one(target, rel), "write")
    [line] = recover(target, airflow_run_is_live=dead)
    assert "processed/activities/q3.xlsx" in line
    row = next(r for r in ledger_rows(target.engine) if r["run_id"] == died.run_id)
    assert row["status"] == "succeeded" and row["staging"] is None and row["imported"] == 4
    assert (target.root / "processed/activities/q3.xlsx").exists() and not (target.root / rel).exists()
    assert len(stored(target.engine)) == 4


@pytest.mark.parametrize(
    "last_stage, status, back_to",
    [("validate", "abandoned", "check/activities/q3.xlsx"), ("report", "succeeded", "checked/activities/q3.xlsx")],
)
def test_a_check_that_died_puts_its_file_back_in_the_check_folder_or_in_checked(
    target, platform, last_stage, status, back_to
):
    rel = drop(target.root, "check/activities/q3.xlsx", activities(platform))
    died = die_after(target, plan_one(target, rel), last_stage)
    [line] = recover(target, airflow_run_is_live=dead)
    assert back_to in line
    row = next(r for r in ledger_rows(target.engine) if r["run_id"] == died.run_id)
    assert row["status"] == status and row["staging"] is None
    assert files_under(target.root / "check") + files_under(target.root / "checked") == [back_to.split("/", 1)[1]]
    assert stored(target.engine) == {}


def test_a_dry_run_that_died_leaves_the_inbox_as_it_was(target, platform):
    data = activities(platform)
    rel = drop(target.root, "inbox/activities/q3.xlsx", data)
    jobs = plan(
        target,
        path=rel,
        content_type=None,
        dry_run=True,
        on_existing=None,
        force=False,
        airflow_run_id="manual__dry",
        started=NOW,
    )
    die_after(target, jobs[0], "validate")
    [line] = recover(target, airflow_run_is_live=dead)
    assert "abandoned" in line
    assert files_under(target.root) == [rel]  # its copy went with its staging; no second file
    assert (target.root / rel).read_bytes() == data


def test_the_same_bytes_dying_three_times_go_to_failed(target, platform):
    data = activities(platform)
    rel = "inbox/activities/poison.xlsx"
    for attempt in range(1, 4):
        drop(target.root, rel, data) if attempt == 1 else None
        die_after(target, plan_one(target, rel), "validate")
        [line] = recover(target, airflow_run_is_live=dead)
        if attempt < 3:
            assert (target.root / rel).exists(), line
    assert not (target.root / rel).exists()
    assert (target.root / "failed/activities/poison.xlsx").read_bytes() == data
    last = ledger_rows(target.engine)[-1]
    assert last["status"] == "abandoned" and "failed 3 times in a row" in last["message"]
    assert "moved to failed/activities/" in last["message"]


# --- killed for real: SIGKILL of the task's process group, on PostgreSQL ----------------------------------------

CHILD = """
import json, sys
from pathlib import Path
import sqlalchemy as sa
from progression import pipeline
from progression.customers import Customer
from progression.runs import Target
spec = json.loads(sys.argv[1])
engine = sa.create_engine(spec["url"], connect_args={"options": spec["options"]})
target = Target(customer=Customer(**spec["customer"]), root=Path(spec["root"]), engine=engine)
job = pipeline.FileJob.from_dict(spec["job"])
job = pipeline.archive(target, job) if spec["stage"] == "archive" else pipeline.run_stage(target, job, spec["stage"])
print(json.dumps(job.as_dict()))
"""


def stage_in_a_process(target, job: FileJob, stage: str) -> subprocess.Popen:
    spec = {
        "url": target.engine.url.render_as_string(hide_password=False),
        "options": _search_path(target.engine),
        "root": str(target.root),
        "stage": stage,
        "customer": {
            k: getattr(target.customer, k)
            for k in (
                "slug",
                "platform_conn_id",
                "platform",
                "storage",
                "timezone",
                "date_order",
                "on_existing",
                "max_error_rate",
            )
        },
        "job": job.as_dict(),
    }
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _search_path(engine) -> str:
    with engine.connect() as conn:
        return f"-csearch_path={conn.execute(sa.text('SHOW search_path')).scalar()}"


def wait_until_blocked(engine, worker: subprocess.Popen | threading.Thread) -> None:
    """Until the worker's database session waits on a lock the test holds (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if isinstance(worker, threading.Thread):
            assert worker.is_alive(), "the worker ended before it reached the lock"
        else:
            assert worker.poll() is None, worker.communicate()
        with engine.connect() as conn:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            ).scalar()
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the stage never reached the lock")


def sessions(engine) -> set[int]:
    """The server processes of every session on the test's database but the one asking."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )


def hold(engine, stage: str, job: FileJob, slug: str):
    """A transaction that blocks the stage midway: the completions table for write, the claim lock for fetch
    (after the ledger row is open), the run's own lock for the stages in between."""
    conn = engine.connect()
    conn.begin()
    if stage == "write":
        conn.execute(sa.text("LOCK TABLE completions IN ACCESS EXCLUSIVE MODE"))
    elif stage == "fetch":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"), {"ns": runs._CLAIM_LOCKS, "key": slug}
        )  # noqa: SLF001
    else:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"), {"ns": runs._RUN_LOCKS, "key": job.run_id}
        )  # noqa: SLF001
    return conn


@pytest.mark.parametrize("stage", ["fetch", "validate", "resolve", "expand", "write", "report", "archive"])
def test_a_run_killed_during_each_stage_converges_on_the_next_run(db_kind, target, platform, stage):
    if db_kind != "postgresql":
        pytest.skip("killing a stage mid-way is shown on PostgreSQL (its advisory locks tell a dead run)")
    data = activities(platform)
    expected = uninterrupted(target, data)
    rel = drop(target.root, "inbox/activities/q3.xlsx", data)
    job = plan_one(target, rel, airflow_run_id=None)
    for name in pipeline.STAGES:  # the tasks before this one finished
        if name == stage:
            break
        job = pipeline.run_stage(target, job, name)
    blocker = hold(target.engine, stage, job, target.customer.slug)
    ours = sessions(target.engine)
    child = stage_in_a_process(target, job, stage)
    try:
        wait_until_blocked(target.engine, child)
        the_stages = sessions(target.engine) - ours
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    assert child.returncode == -signal.SIGKILL
    # The server ends a dead client's sessions once it notices: one that waited on a lock, when it gets the lock.
    deadline = time.monotonic() + 60
    while sessions(target.engine) & the_stages:
        assert time.monotonic() < deadline, "the killed stage's database sessions never ended"
        time.sleep(0.05)
    recover(target, airflow_run_is_live=None)
    assert all(r["status"] != "running" and r["staging"] is None for r in ledger_rows(target.engine))
    if (target.root / rel).exists():
        job = run_file(target, plan_one(target, rel))
        assert job.status == "ok", job.message
    assert completions_as_written(target.engine) == expected
    assert not (target.root / rel).exists()
    assert [f for f in files_under(target.root) if f.startswith(("processed/", "failed/", "inbox/"))] == [
        "processed/activities/clean.xlsx",
        "processed/activities/q3.xlsx",
    ]
    assert all(r["status"] != "running" and r["staging"] is None for r in ledger_rows(target.engine))


# --- two runs at once ---------------------------------------------------------------------------------------------


def at_once(*work):
    results: list = [None] * len(work)
    errors: list = []

    def run(index, fn):
        try:
            results[index] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(work)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_two_runs_of_one_file_import_it_once(target, platform):
    rel = drop(target.root, "inbox/activities/q3.xlsx", activities(platform))
    first, second = (
        plan_one(target, rel, airflow_run_id="scheduled__1"),
        plan_one(target, rel, airflow_run_id="manual__2"),
    )
    done = at_once(lambda: run_file(target, first), lambda: run_file(target, second))
    assert sorted(job.status for job in done) == ["ok", "skipped"]
    skipped = next(job for job in done if job.status == "skipped")
    assert "claimed by another run" in skipped.message
    assert sorted(r["status"] for r in ledger_rows(target.engine)) == ["skipped", "succeeded"]
    assert len(stored(target.engine)) == 4
    assert [f for f in files_under(target.root) if not f.startswith("reports/")] == ["processed/activities/q3.xlsx"]


def test_two_runs_of_different_files_and_a_transfer_at_once_all_land(target, platform):
    one = drop(target.root, "inbox/activities/one.xlsx", activities(platform, 2))
    two = drop(
        target.root,
        "inbox/activities/two.xlsx",
        workbook_bytes(HEADER, [[platform.emails[5], platform.uuids["activity"][5], "2024-01-05"]]),
    )
    old, new = platform.uuids["activity"][0], platform.uuids["activity"][6]
    transfer = plan_transfer(
        target,
        old_uuid=old,
        new_uuid=new,
        path=None,
        dry_run=False,
        completion_date="original",
        on_existing=None,
        airflow_run_id="manual__t",
        started=NOW,
    )
    done = at_once(
        lambda: run_file(target, plan_one(target, one, airflow_run_id="a")),
        lambda: run_file(target, plan_one(target, two, airflow_run_id="b")),
        lambda: run_transfer(target, transfer),
    )
    assert [done[0].status, done[1].status] == ["ok", "ok"]
    got = stored(target.engine)
    assert (platform.emails[5], platform.uuids["activity"][5]) in got
    # The transfer ran before or after import one: either way no row was lost or written twice.
    transferred = (platform.emails[0], new) in got
    assert len(got) == 3 + int(transferred)
    assert all(r["status"] == "succeeded" for r in ledger_rows(target.engine))


def test_a_file_replaced_mid_run_waits_for_the_next_run(target, platform):
    old_bytes, new_bytes = activities(platform, 2), activities(platform, 3)
    rel = drop(target.root, "inbox/activities/q3.xlsx", old_bytes)
    job = pipeline.run_stage(target, plan_one(target, rel), "fetch")
    drop(target.root, rel, new_bytes)  # the customer uploads a corrected file under the same name
    for name in list(pipeline.STAGES)[1:]:
        job = pipeline.run_stage(target, job, name)
    job = pipeline.archive(target, job)
    assert (target.root / rel).read_bytes() == new_bytes
    assert (target.root / job.archived_to).read_bytes() == old_bytes
    assert (
        ledger_rows(target.engine)[0]["checksum"] == job.checksum == __import__("hashlib").sha256(old_bytes).hexdigest()
    )
    later = run_file(target, plan_one(target, rel))
    assert later.status == "ok" and later.counts["imported"] == 1


# --- files of one run interleaved, as two workers run them, on every storage the DAGs use -------------------------

STEPS = len(pipeline.STAGES) + 1  # and the archive
ORDERS = {
    "one file finishes before the other starts": "A" * STEPS + "B" * STEPS,
    "in lockstep": "AB" * STEPS,
    "the first archived while the second is still at its first stage": "AB" + "A" * (STEPS - 1) + "B" * (STEPS - 1),
    "the second archived first": "A" + "B" * STEPS + "A" * (STEPS - 1),
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_two_files_of_one_run_interleaved(db_kind, target, platform, backend, order):
    if db_kind != "sqlite" and order != ORDERS["in lockstep"]:
        pytest.skip("the orders are about storage: every order on SQLite, one on PostgreSQL")
    on_storage = replace(target, root=backend.root)
    backend.put("inbox/activities/a.xlsx", activities(platform, 2))
    backend.put(
        "inbox/activities/b.xlsx",
        workbook_bytes(HEADER, [[platform.emails[7], platform.uuids["activity"][1], "2024-02-01"]]),
    )
    jobs = dict(
        zip(
            "AB",
            plan(
                on_storage,
                path=None,
                content_type=None,
                dry_run=False,
                on_existing=None,
                force=False,
                airflow_run_id="scheduled__n",
                started=NOW,
            ),
        )
    )
    steps = {key: [*pipeline.STAGES, "archive"] for key in jobs}
    for key in order:
        name = steps[key].pop(0)
        job = jobs[key]
        jobs[key] = (
            pipeline.archive(on_storage, job) if name == "archive" else pipeline.run_stage(on_storage, job, name)
        )
        assert jobs[key].status == "ok", jobs[key].message
    assert pipeline.close_run_staging(on_storage, list(jobs.values()))
    assert [f for f in backend.files() if not f.startswith("reports/")] == [
        "processed/activities/a.xlsx",
        "processed/activities/b.xlsx",
    ]
    assert len(stored(target.engine)) == 3


def test_a_lost_database_connection_leaves_the_file_for_the_next_run(db_kind, target, platform):
    if db_kind != "postgresql":
        pytest.skip("a connection cut by the server is shown on PostgreSQL")
    rel = drop(target.root, "inbox/activities/q3.xlsx", activities(platform))
    job = plan_one(target, rel)
    for name in ("fetch", "validate", "resolve", "expand"):
        job = pipeline.run_stage(target, job, name)
    blocker = target.engine.connect()
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE completions IN ACCESS EXCLUSIVE MODE"))
    raised: list[BaseException] = []

    def write():
        try:
            pipeline.run_stage(target, job, "write")
        except BaseException as exc:  # noqa: BLE001 - what the task would raise, for Airflow to retry
            raised.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until_blocked(target.engine, writer)
        with target.engine.connect() as conn:  # the server cuts the writer's connection, as a failover would
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_backend_pid() AND datname = current_database()"
                )
            )
        writer.join(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert raised and isinstance(raised[0], sa.exc.OperationalError)  # raised for Airflow, the file not failed
    row = ledger_rows(target.engine)[0]
    assert row["status"] == "running" and "the write stage was interrupted" in row["message"]
    assert stored(target.engine) == {}
    recover(target, airflow_run_is_live=dead)
    assert (target.root / rel).exists()
    assert run_file(target, plan_one(target, rel)).status == "ok"
    assert len(stored(target.engine)) == 4


def test_a_reader_stopped_from_outside_leaves_the_file_for_the_next_run(target, platform, monkeypatch):
    rel = drop(target.root, "inbox/activities/q3.xlsx", activities(platform))
    job = plan_one(target, rel)
    # The reader's process killed as it starts, as the kernel's OOM killer or a stopped task would.
    monkeypatch.setattr(read, "open_workbook", lambda path: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ReaderStopped, match="the workbook reader's process ended"):
        pipeline.run_stage(target, job, "fetch")
    row = ledger_rows(target.engine)[0]
    assert row["status"] == "running" and "the fetch stage was interrupted" in row["message"]
    assert not (target.root / "failed").exists()
    monkeypatch.undo()
    recover(target, airflow_run_is_live=dead)
    assert (target.root / rel).exists()
    assert run_file(target, plan_one(target, rel)).status == "ok"
