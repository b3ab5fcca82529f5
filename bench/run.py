"""`make bench`: the import against the hardware's limit and against the naive Airflow peer, on PostgreSQL.

For each file it prints: the limit (fastexcel read + raw COPY of as many completion rows into an empty copy of
the table), the project's import stage by stage with its peak memory, the naive peer (openpyxl read, the same GX
checks, pandas merges, PostgresHook.insert_rows(replace=True)), and a re-run of the same file (must write 0 rows).
Each task of the project (pipeline's IMPORT_TASKS: fetch+validate, resolve+expand, write, report+archive) runs in a
process of its own forked from one that imported `progression.preload`, as the Celery workers of `make e2e` and the
compose file run them (`--fresh`: a fresh interpreter per task instead, as `airflow tasks run` starts one); a
stage's peak memory is that of its task's process, the pages it shares with its parent included.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT / "bin")]

from database import benchmark_database  # noqa: E402 - after the path is set

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/progression_bench"
DATA = ROOT / "var" / "bench"


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024


def peak_mb() -> float:
    """The task's peak: its own, or its workbook reader's (a forked child whose figure counts the pages it shares
    with the task, so the larger of the two bounds what both held at once). Its own is VmHWM, not getrusage's:
    Linux carries the peak of the process that started this one across exec into ru_maxrss."""
    return max(status_mb("VmHWM"), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


# --- child processes ------------------------------------------------------------------------------------------


def project_target(url: str):
    from progression import runs
    from progression.customers import Customer
    from progression.db import engine_for

    customer = Customer(
        slug="bench",
        platform_conn_id="bench",
        platform="bench",
        storage=str(DATA / "storage"),
        timezone="Europe/Amsterdam",
        max_error_rate=0.1,
    )
    return runs.Target(customer=customer, root=DATA / "storage", engine=engine_for(url))


def child_task(url: str, name: str, job_file: Path) -> dict:
    """One task of the import in its own process, as Airflow runs it: each stage's time and the process's peak
    memory."""
    at_start = status_mb("VmRSS")  # in a forked task, the pages it shares with the preloaded parent
    from progression import pipeline

    target = project_target(url)
    job = pipeline.FileJob.from_dict(json.loads(job_file.read_text()))
    job, timings = pipeline.run_task(target, job, name)
    job_file.write_text(json.dumps(job.as_dict()))
    return {
        "timings": dict(timings),
        "peak_mb": peak_mb(),
        "at_start_mb": at_start,
        "status": job.status,
        "message": job.message,
    }


def run_project(url: str, file: Path, content_type: str, force: bool, with_report: bool = True) -> dict:
    """The import task by task, each in a process of its own (see task_in_child); without the report and archive
    task when with_report is off."""
    from datetime import datetime, timezone

    from progression import pipeline
    from progression.jobs import IMPORT_TASKS

    storage = DATA / "storage"
    shutil.rmtree(storage, ignore_errors=True)
    (storage / "inbox" / content_type).mkdir(parents=True)
    shutil.copy(file, storage / "inbox" / content_type / file.name)
    job = pipeline.plan(
        project_target(url),
        path=f"inbox/{content_type}/{file.name}",
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=force,
        airflow_run_id="bench",
        started=datetime.now(timezone.utc),
    )[0]
    job_file = DATA / "job.json"
    job_file.write_text(json.dumps(job.as_dict()))
    timings, peaks, at_start = {}, {}, []
    for name in [task for task in IMPORT_TASKS if with_report or task != "report_archive"]:
        result = task_in_child(url, name, job_file)
        if result["status"] != "ok":
            raise SystemExit(f"import did not succeed at {name}: {result['status']} {result['message']}")
        timings.update(result["timings"])
        peaks.update(dict.fromkeys(result["timings"], result["peak_mb"]))
        at_start.append(result["at_start_mb"])
    job = pipeline.FileJob.from_dict(json.loads(job_file.read_text()))
    return {
        "timings": timings,
        "peaks": peaks,
        "counts": job.counts,
        "peak_mb": max(v for k, v in peaks.items() if k not in ("report", "archive")),
        "at_start_mb": max(at_start),
    }


def child_peer(url: str, file: Path, content_type: str) -> dict:
    """What an Airflow user writes by default, with the same checks and the same rules."""
    import pandas as pd
    import sqlalchemy as sa
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from progression.platform import CONTENT_TYPE_OF
    from progression.validate import column_failures

    timings = {}
    started = time.perf_counter()
    frame = pd.read_excel(file, engine="openpyxl", dtype=str, usecols=[0, 1, 2])
    frame.columns = ["email", "uuid", "date"]
    timings["read"] = time.perf_counter() - started

    started = time.perf_counter()
    keys = pd.DataFrame(
        {"email_key": frame["email"].str.strip().str.lower(), "uuid_key": frame["uuid"].str.strip().str.lower()}
    )
    bad = set(column_failures(keys)["position"])
    dates = pd.to_datetime(frame["date"], errors="coerce", dayfirst=True, format="mixed")
    dates = dates.fillna(pd.Timestamp.now().normalize())
    keys["completed_at"] = dates.dt.tz_localize(
        "Europe/Amsterdam", ambiguous="NaT", nonexistent="shift_forward"
    ).dt.tz_convert("UTC")
    keys = keys[~keys.index.isin(bad) & keys["completed_at"].notna()]
    timings["validate"] = time.perf_counter() - started

    started = time.perf_counter()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        users = pd.read_sql("SELECT id AS user_id, lower(trim(email)) AS email_key FROM users", conn)
        content = pd.read_sql("SELECT id AS content_id, uuid::text AS uuid_key, type FROM content", conn)
        edges = pd.read_sql("SELECT parent_id, child_id FROM content_items", conn)
    rows = keys.merge(users, on="email_key").merge(content, on="uuid_key")
    rows = rows[rows["type"] == CONTENT_TYPE_OF[content_type]][["user_id", "content_id", "completed_at"]]
    timings["resolve"] = time.perf_counter() - started

    started = time.perf_counter()
    every, frontier = [rows], rows
    while not frontier.empty:
        frontier = frontier.merge(edges, left_on="content_id", right_on="parent_id")[
            ["user_id", "child_id", "completed_at"]
        ].rename(columns={"child_id": "content_id"})
        every.append(frontier)
    rows = pd.concat(every).groupby(["user_id", "content_id"], as_index=False)["completed_at"].min()
    timings["expand"] = time.perf_counter() - started

    started = time.perf_counter()
    hook = PostgresHook(postgres_conn_id="bench_pg")
    records = [
        (int(u), int(c), t.to_pydatetime(), "import", "peer")
        for u, c, t in zip(rows["user_id"], rows["content_id"], rows["completed_at"])
    ]
    hook.insert_rows(
        "completions",
        records,
        target_fields=["user_id", "content_id", "completed_at", "source", "run_id"],
        replace=True,
        replace_index=["user_id", "content_id"],
        commit_every=50_000,
    )
    timings["write"] = time.perf_counter() - started
    return {"timings": timings, "rows": len(rows), "peak_mb": peak_mb()}


def child_limit(url: str, file: Path, completions: int) -> dict:
    """fastexcel's read of the file plus a raw COPY of as many completion rows into an empty table."""
    import fastexcel
    import psycopg

    started = time.perf_counter()
    reader = fastexcel.read_excel(str(file))
    table = reader.load_sheet(0).to_arrow()
    read = time.perf_counter() - started
    buffer = io.BytesIO()
    for i in range(completions):
        buffer.write(b"%d\t%d\t2024-03-31 00:00:00+00\timport\tlimit\n" % (i, i % 2000))
    payload = buffer.getvalue()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("DROP TABLE IF EXISTS completions_limit")
        conn.execute("CREATE TABLE completions_limit (LIKE completions INCLUDING ALL)")
        started = time.perf_counter()
        with conn.cursor().copy("COPY completions_limit FROM STDIN") as copy:
            for start in range(0, len(payload), 8 << 20):
                copy.write(payload[start : start + (8 << 20)])
        conn.commit()
        copied = time.perf_counter() - started
        conn.execute("DROP TABLE completions_limit")
        conn.commit()
    return {"timings": {"read": read, "copy": copied}, "rows_read": table.num_rows, "peak_mb": peak_mb()}


def _task_in_fork(url: str, name: str, job_file: str, answer) -> None:
    if "progression.preload" not in sys.modules:  # the server swallows a failed preload
        raise SystemExit("the forkserver did not preload progression.preload")
    answer.send(child_task(url, name, Path(job_file)))


_FORKS = None  # the forkserver context whose server imported progression.preload (set by main unless --fresh)


def task_in_child(url: str, name: str, job_file: Path) -> dict:
    """One task in a process of its own: forked from the preloaded server, or a fresh interpreter (--fresh)."""
    if _FORKS is None:
        return in_child("task", name, str(job_file))
    receive, send = _FORKS.Pipe(duplex=False)
    process = _FORKS.Process(target=_task_in_fork, args=(url, name, str(job_file), send))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    process.join()
    if process.exitcode != 0 or result is None:
        raise SystemExit(f"task {name} failed (exit code {process.exitcode})")
    return result


def in_child(kind: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run --------------------------------------------------------------------------------------------------


def prepare(url: str, recreate: bool):
    from demo_platform import describe, seed_platform
    from workbooks import BENCHMARK_SIZES

    engine = benchmark_database(url, recreate)
    started = time.perf_counter()
    created = seed_platform(engine, "bench", "Benchmark", BENCHMARK_SIZES)
    if created:
        print(f"seeded platform: {BENCHMARK_SIZES.users:,} users in {time.perf_counter() - started:.1f} s")
    return engine, describe(engine, "bench")


def reset(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE completions, progression_journal, progression_runs")
        conn.exec_driver_sql("ANALYZE completions")
    # The previous file's pages go to disk now, not during the next run's stages.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")


def files(found, sizes: list[int], programme_rows: int, wide_rows: int) -> list[tuple[str, Path, str]]:
    from workbooks import large_workbook, wide_workbook

    DATA.mkdir(parents=True, exist_ok=True)
    if wide_rows:
        wide = DATA / f"activities-wide-{wide_rows}.xlsx"
        if not wide.exists():
            wide_workbook(found, wide_rows, wide.with_suffix(".tmp.xlsx"))
            wide.with_suffix(".tmp.xlsx").rename(wide)
            print(f"generated {wide.name}: {wide.stat().st_size / 1e6:.0f} MB")
    wanted = [(f"{n:,} activity rows", DATA / f"activities-{n}.xlsx", "activities", n, False) for n in sizes]
    if programme_rows:
        wanted.append(
            (
                f"{programme_rows:,} programme rows",
                DATA / f"programmes-{programme_rows}.xlsx",
                "programmes",
                programme_rows,
                True,
            )
        )
    out = []
    for label, path, content_type, rows, distinct in wanted:
        if not path.exists():
            started = time.perf_counter()
            kind = "activity" if content_type == "activities" else "programme"
            large_workbook(found, kind, rows, path.with_suffix(".tmp.xlsx"), distinct=distinct)
            path.with_suffix(".tmp.xlsx").rename(path)
            print(f"generated {path.name} in {time.perf_counter() - started:.0f} s")
        out.append((label, path, content_type))
    if wide_rows:
        out.append(
            (f"{wide_rows:,} activity rows x 7 columns ({wide.stat().st_size / 1e6:.0f} MB)", wide, "activities")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--pg", default=os.environ.get("PROGRESSION_BENCH_PG", DEFAULT_PG))
    parser.add_argument("--sizes", default="100000,1000000", help="activity workbook rows, comma-separated")
    parser.add_argument(
        "--programme-rows",
        type=int,
        default=120_000,
        help="rows of the programmes workbook (each expands to ~46 completions); 0 skips it",
    )
    parser.add_argument(
        "--wide-rows",
        type=int,
        default=1_048_575,
        help="rows of the 7-column activity workbook (about 100 MB at the default); 0 skips it",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the project and of the limit per file; the median is shown"
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out the naive peer (it is slow)")
    parser.add_argument("--skip-limit", action="store_true", help="leave out the limit (read + raw COPY)")
    parser.add_argument(
        "--skip-report",
        action="store_true",
        help="leave out the report workbook (it runs after the completions landed)",
    )
    parser.add_argument("--recreate", action="store_true", help="drop and re-seed the benchmark database")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start each task as a fresh interpreter instead of forking it from a preloaded process",
    )
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "task":
            result = child_task(args.pg, rest[0], Path(rest[1]))
        elif kind == "peer":
            result = child_peer(args.pg, Path(rest[0]), rest[1])
        else:
            result = child_limit(args.pg, Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    if not args.fresh:
        global _FORKS
        _FORKS = multiprocessing.get_context("forkserver")
        # The server starts as a new interpreter: it finds the package through PYTHONPATH, not this sys.path.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "include"), os.environ.get("PYTHONPATH")]))
        _FORKS.set_forkserver_preload(["progression.preload"])
    print(f"tasks: {'a fresh interpreter each' if args.fresh else 'forked from a process that preloaded them'}")
    os.environ.setdefault("AIRFLOW_CONN_BENCH_PG", args.pg.replace("postgresql+psycopg://", "postgresql://"))
    engine, found = prepare(args.pg, args.recreate)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = []
    for label, path, content_type in files(found, sizes, args.programme_rows, args.wide_rows):
        projects = []
        for _ in range(args.repeat):
            reset(engine)
            projects.append(run_project(args.pg, path, content_type, force=False, with_report=not args.skip_report))
        project = median_run(projects, "project", label, peaks=True)
        written = project["counts"]["imported"] + project["counts"]["updated"] + project["counts"]["derived_written"]
        rerun = run_project(args.pg, path, content_type, force=True, with_report=False)
        rerun_written = rerun["counts"]["imported"] + rerun["counts"]["updated"] + rerun["counts"]["derived_written"]
        limits = [] if args.skip_limit else [in_child("limit", str(path), str(written)) for _ in range(args.repeat)]
        limit = median_run(limits, "limit", label) if limits else None
        peer = None
        if not args.skip_peer:
            reset(engine)
            peer = in_child("peer", str(path), content_type)
        results.append((label, project, rerun, rerun_written, limit, peer, written))
        print_result(results[-1])
        print_table(results[-1:])  # as it comes, should a later file fail
    print_table(results)


def median_run(runs: list[dict], side: str, label: str, peaks: bool = False) -> dict:
    """The run whose time to data is the median of `runs` (the machine's own noise moves a single run by 10-20%);
    every run's figure is printed, and with `peaks` the chosen run carries the highest peak of them all."""
    stages = ("fetch", "validate", "resolve", "expand", "write") if side == "project" else ("read", "copy")
    totals = [sum(run["timings"][stage] for stage in stages) for run in runs]
    chosen = dict(runs[sorted(range(len(runs)), key=totals.__getitem__)[(len(runs) - 1) // 2]])  # the lower median
    if peaks:
        chosen["peaks"] = {task: max(run["peaks"][task] for run in runs) for task in chosen["peaks"]}
        chosen["peak_mb"] = max(run["peak_mb"] for run in runs)
    if len(runs) > 1:
        print(f"  {label}: {side} time to data in {len(runs)} runs: " + ", ".join(f"{t:.2f}" for t in totals) + " s")
    return chosen


def print_result(result) -> None:
    label, project, rerun, rerun_written, limit, peer, written = result
    print(f"\n== {label}: {project['counts']['rows_read']:,} rows read, {written:,} completions written")


def print_table(results) -> None:
    stages = ("fetch", "validate", "resolve", "expand", "write")
    print("\n| file | side | " + " | ".join(stages) + " | total | completions/s (write) | peak MB |")
    print("|---|---|" + "---|" * (len(stages) + 3))
    for label, project, rerun, rerun_written, limit, peer, written in results:
        total = sum(project["timings"][s] for s in stages)
        if limit:
            limit_total = sum(limit["timings"].values())
            print(
                f"| {label} | limit (read + COPY) | {limit['timings']['read']:.2f} | | | | "
                f"{limit['timings']['copy']:.2f} | {limit_total:.2f} | {written / limit['timings']['copy']:,.0f} | "
                f"{limit['peak_mb']:.0f} |"
            )
        print(
            f"| {label} | project | "
            + " | ".join(f"{project['timings'][s]:.2f}" for s in stages)
            + f" | {total:.2f} | {written / project['timings']['write']:,.0f} | {project['peak_mb']:.0f} |"
        )
        rerun_total = sum(rerun["timings"][s] for s in stages)
        print(
            f"| {label} | re-run ({rerun_written} rows written) | "
            + " | ".join(f"{rerun['timings'][s]:.2f}" for s in stages)
            + f" | {rerun_total:.2f} | | |"
        )
        if peer:
            peer_total = sum(peer["timings"].values())
            print(
                f"| {label} | naive peer | "
                + " | ".join(f"{peer['timings'][s]:.2f}" for s in ("read", "validate", "resolve", "expand", "write"))
                + f" | {peer_total:.2f} | {peer['rows'] / peer['timings']['write']:,.0f} | {peer['peak_mb']:.0f} |"
            )
        parts = []
        if limit:
            parts.append(f"project/limit {total / limit_total:.1f}x")
        if peer:
            parts.append(f"peer/project {sum(peer['timings'].values()) / total:.1f}x")
        if "report" in project["timings"]:
            after = {k: v for k, v in project["timings"].items() if k not in stages}  # outcomes, report, archive
            parts.append(
                "after the completions landed "
                + ", ".join(f"{k} {v:.1f} s" for k, v in after.items())
                + f" (report peak {project['peaks']['report']:.0f} MB); whole run {total + sum(after.values()):.1f} s"
            )
        parts.append(
            "peak MB per task "
            + ", ".join(f"{k} {v:.0f}" for k, v in project["peaks"].items() if k not in ("report", "archive"))
            + f" (each counts the {project['at_start_mb']:.0f} MB it was resident with at its start: in a forked task, "
            "the pages it shares with its parent)"
        )
        print(f"  {label}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
