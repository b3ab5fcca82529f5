"""The nightly shape: many customers, each with a few small files, in one run of `progression_import`.

Seeds one PostgreSQL platform database holding N customers' platforms (one registry entry each, its own storage
folder), drops F workbooks of R activity rows in every inbox, and times one nightly run (every active customer):
through `bin/airflow dags test` (one process, tasks one after another) and/or through a Celery cluster on loopback
(api-server, scheduler, dag-processor and two workers, as `make e2e` starts them), triggered through the REST API.
Prints the wall time, the seconds per file, and a one-row file's whole run through `dags test` beside Airflow's own
floor: a DAG of the import's shape whose tasks do nothing, through `dags test` in the same environment.

    .venv/bin/python bench/small_files.py --customers 20 --files 10 --rows 1000 --mode both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "include"),
    str(ROOT / "plugins"),
    str(ROOT / "bin"),
    str(ROOT / "tests"),
    str(ROOT / "tests" / "e2e"),
]

from database import benchmark_database  # noqa: E402 - after the path is set

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/progression_bench_small"
DATA = ROOT / "var" / "bench" / "small"
HEADER = ["User email", "Content uuid", "Completion date"]


def prepare(url: str, customers: int, files: int, rows: int) -> dict[str, str]:
    """The platforms, the registry and the inboxes; the environment bin/airflow needs for them."""
    import sqlalchemy as sa

    from demo_platform import DemoSizes, describe, seed_platform, workbook_bytes

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    engine = benchmark_database(url, recreate=True)
    sizes = DemoSizes(users=max(50, rows // 4), programmes=2, journeys_per_programme=2, activities_per_journey=4)
    lines = ["schedule: null"]
    for number in range(1, customers + 1):
        slug = f"c{number:02d}"
        seed_platform(engine, slug, sizes=sizes)
        found = describe(engine, slug)
        lines += [
            f"{slug}:",
            "  platform_conn_id: bench_small",
            f"  platform: {slug}",
            f"  storage: file://{DATA / slug}",
            "  timezone: Europe/Amsterdam",
            "  max_error_rate: 1",
        ]
        for index in range(files):
            body = [
                [
                    found.emails[(index * rows + i) % len(found.emails)],
                    found.uuids["activity"][(index + i) % len(found.uuids["activity"])],
                    f"2024-0{1 + i % 9}-1{i % 9}",
                ]
                for i in range(rows)
            ]
            inbox = DATA / slug / "inbox" / "activities"
            inbox.mkdir(parents=True, exist_ok=True)
            (inbox / f"f{index:02d}.xlsx").write_bytes(workbook_bytes(HEADER, body))
    registry = DATA / "customers.yaml"
    registry.write_text("\n".join(lines) + "\n")
    parsed = sa.make_url(url)
    return {
        "PROGRESSION_CUSTOMERS": str(registry),
        "AIRFLOW_CONN_BENCH_SMALL": f"postgresql://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database}",
    }


def through_dags_test(env: dict[str, str], dag_id: str = "progression_import") -> float:
    home = DATA / "airflow"
    env = {**os.environ, **env, "AIRFLOW_HOME": str(home)}
    subprocess.run([str(ROOT / "bin/airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    done = subprocess.run([str(ROOT / "bin/airflow"), "dags", "test", dag_id], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


def through_cluster(env: dict[str, str], url: str) -> float:
    import sqlalchemy as sa
    from cluster import Cluster, cluster_environment, free_port

    from support import drop_database, recreate_database

    home = DATA / "cluster"
    home.mkdir()
    admin = sa.make_url(url)
    metadata = recreate_database(admin, "progression_bench_small_airflow")
    api_port = free_port()
    cluster_env = {
        **cluster_environment(
            home, metadata, os.environ.get("PROGRESSION_TEST_REDIS", "redis://127.0.0.1:6379/8"), api_port
        ),
        **env,
    }
    subprocess.run([str(ROOT / "bin/airflow"), "db", "migrate"], env=cluster_env, check=True, capture_output=True)
    running = Cluster(env=cluster_env, api=f"http://127.0.0.1:{api_port}", logs=home)
    running.start(api_port)
    try:
        running.wait_for("the API server", lambda: running.call("GET", "/monitor/health").status_code == 200)
        running.login()
        running.wait_for("the DAG", lambda: running.call("GET", "/dags/progression_import").status_code == 200)
        running.call("PATCH", "/dags/progression_import", json={"is_paused": False})
        started = time.perf_counter()
        run_id = running.call(
            "POST", "/dags/progression_import/dagRuns", json={"logical_date": None, "conf": {}}
        ).json()["dag_run_id"]
        state = running.wait_for(
            "the run",
            lambda: (lambda s: s if s in ("success", "failed") else None)(
                running.call("GET", f"/dags/progression_import/dagRuns/{run_id}").json()["state"]
            ),
            timeout=3600,
            every=1,
        )
        seconds = time.perf_counter() - started
        if state != "success":
            raise SystemExit(f"the run ended {state}\n{running.tail()}")
        return seconds
    finally:
        running.stop()
        drop_database(admin, "progression_bench_small_airflow")


def one_row_file(url: str) -> float:
    env = prepare(url, customers=1, files=1, rows=1)
    return through_dags_test(env)


# The import's shape (a list of files, one task per step of each file, mapped, and a teardown) doing nothing.
FLOOR_DAG = """
from airflow.sdk import dag, task, task_group


@dag(schedule=None)
def airflow_floor():
    @task(multiple_outputs=False)
    def discover() -> list[dict]:
        return [{{"file": 1}}]

    def step(name):
        @task(multiple_outputs=False, task_id=name)
        def run(job: dict) -> dict:
            return job

        return run

    @task_group
    def each_file(job: dict):
        for name in {steps!r}:
            job = step(name)(job)
        return job

    @task(multiple_outputs=False)
    def summarise(jobs: list[dict] | None, archived: list[dict] | None) -> dict:
        return {{}}

    jobs = discover()
    summarise(jobs, each_file.expand(job=jobs)).as_teardown()


airflow_floor()
"""


def airflow_floor(url: str) -> float:
    """`dags test` of FLOOR_DAG: what Airflow itself takes for a run of the import's shape on this machine."""
    from progression.jobs import IMPORT_TASKS

    env = prepare(url, customers=1, files=1, rows=1)
    folder = DATA / "floor_dags"
    folder.mkdir()
    (folder / "airflow_floor.py").write_text(FLOOR_DAG.format(steps=tuple(IMPORT_TASKS)))
    return through_dags_test({**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)}, "airflow_floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default=os.environ.get("PROGRESSION_BENCH_SMALL_PG", DEFAULT_PG))
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--files", type=int, default=10, help="files per customer")
    parser.add_argument("--rows", type=int, default=1000, help="rows per file")
    parser.add_argument(
        "--mode",
        choices=("dags-test", "cluster", "both", "one-row"),
        default="both",
        help="one-row: only the one-row file and Airflow's floor",
    )
    args = parser.parse_args()
    count = args.customers * args.files
    results = {
        "airflow_floor_dags_test_s": round(airflow_floor(args.pg), 1),
        "one_row_file_dags_test_s": round(one_row_file(args.pg), 1),
    }
    print(
        f"a one-row file, whole run through dags test: {results['one_row_file_dags_test_s']} s; Airflow's floor (the "
        f"same shape of DAG, tasks doing nothing): {results['airflow_floor_dags_test_s']} s",
        flush=True,
    )
    for mode, run in (("dags-test", through_dags_test), ("cluster", lambda env: through_cluster(env, args.pg))):
        if args.mode in (mode, "both"):
            seconds = run(prepare(args.pg, args.customers, args.files, args.rows))
            results[f"{mode}_s"] = round(seconds, 1)
            results[f"{mode}_s_per_file"] = round(seconds / count, 2)
            print(
                f"{mode}: {args.customers} customers x {args.files} files x {args.rows} rows = {count} files in "
                f"{seconds:.1f} s, {seconds / count:.2f} s per file",
                flush=True,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
