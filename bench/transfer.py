"""A transfer of a journey (or an activity) completed by 200,000 users, on PostgreSQL: a dry run, the real run
and a re-run.

    .venv/bin/python bench/transfer.py [--users 200000] [--item journey|activity] [--pg URL] [--recreate]

The platform (its own database, `progression_bench_transfer` by default) has two programmes, each given to one
group; the new journey sits in both, so every user in a group can see it and gets it with its eight activities
(the new activity is one of them). The old item's completions are made in SQL. Prints the time of each stage and
the completions written per second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT / "bin")]

from database import benchmark_database  # noqa: E402 - after the path is set

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/progression_bench_transfer"
STORAGE = ROOT / "var" / "bench" / "transfer-storage"
USERS_WITHOUT_GROUP = 5_000


def prepare(url: str, users: int, item: str, recreate: bool):
    """The platform and the old journey's completions; both kept between runs unless `recreate`."""
    import sqlalchemy as sa

    from demo_platform import DemoSizes, describe, seed_platform

    engine = benchmark_database(url, recreate)
    sizes = DemoSizes(
        users=users + USERS_WITHOUT_GROUP,
        programmes=2,
        journeys_per_programme=5,
        activities_per_journey=8,
        shared_items=1,
        standalone_activities=0,
        groups=2,
        users_without_group=USERS_WITHOUT_GROUP,
        seed=2026,
    )
    started = time.perf_counter()
    if seed_platform(engine, "bench", "Benchmark", sizes):
        print(f"seeded platform: {sizes.users:,} users in {time.perf_counter() - started:.1f} s")
    found = describe(engine, "bench")
    # journeys[0] is in both programmes (the generator shares it): everyone in a group can see it and what it holds.
    if item == "journey":
        old, new = found.uuids["journey"][-1], found.uuids["journey"][0]
    else:
        old, new = found.uuids["activity"][-1], found.uuids["activity"][1]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM completions WHERE source = 'transfer'"))
        conn.execute(sa.text("TRUNCATE progression_journal, progression_runs"))
        done = conn.execute(
            sa.text("SELECT count(*) FROM completions c JOIN content i ON i.id = c.content_id WHERE i.uuid = :old"),
            {"old": old},
        ).scalar()
        if done != users:
            conn.execute(sa.text("DELETE FROM completions"))
            conn.execute(
                sa.text(
                    "INSERT INTO completions (user_id, content_id, completed_at, source) "
                    "SELECT u.id, i.id, timestamptz '2025-01-01' + (u.id % 500) * interval '1 day', 'platform' "
                    "FROM users u JOIN platforms p ON p.id = u.platform_id AND p.slug = 'bench' "
                    "JOIN content i ON i.uuid = :old ORDER BY u.id LIMIT :users"
                ),
                {"old": old, "users": users},
            )
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return engine, old, new


def run(engine, old: str, new: str, dry_run: bool) -> tuple[dict, dict]:
    from progression import transfer
    from progression.customers import Customer
    from progression.runs import Target

    shutil.rmtree(STORAGE, ignore_errors=True)
    STORAGE.mkdir(parents=True)
    customer = Customer(
        slug="bench", platform_conn_id="bench", platform="bench", storage=str(STORAGE), timezone="Europe/Amsterdam"
    )
    target = Target(customer=customer, root=STORAGE, engine=engine)
    timings = {}
    started = time.perf_counter()
    job = transfer.plan(
        target,
        old_uuid=old,
        new_uuid=new,
        dry_run=dry_run,
        completion_date="original",
        on_existing=None,
        airflow_run_id="bench",
        started=datetime.now(timezone.utc),
    )
    timings["plan"] = time.perf_counter() - started
    for stage in (transfer.transfer, transfer.report, transfer.archive):
        started = time.perf_counter()
        job = stage(target, job)
        timings[stage.__name__] = time.perf_counter() - started
    if job.status != "ok":
        raise SystemExit(f"transfer did not succeed: {job.message}")
    return timings, job.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default=os.environ.get("PROGRESSION_BENCH_TRANSFER_PG", DEFAULT_PG))
    parser.add_argument("--users", type=int, default=200_000, help="users who completed the old item")
    parser.add_argument("--item", choices=("journey", "activity"), default="journey", help="what is transferred")
    parser.add_argument("--recreate", action="store_true", help="drop and re-seed the benchmark database")
    args = parser.parse_args()
    engine, old, new = prepare(args.pg, args.users, args.item, args.recreate)
    stages = ("plan", "transfer", "report", "archive")
    print(
        "\n| run | " + " | ".join(stages) + " | total (s) | completed old | written | skipped | kept | completions/s |"
    )
    print("|---|" + "---|" * (len(stages) + 6))
    for label, dry_run in (("dry run", True), ("real", False), ("re-run", False)):
        timings, counts = run(engine, old, new, dry_run)
        written = counts["imported"] + counts["updated"] + counts["derived_written"]
        total = sum(timings.values())
        print(
            f"| {label} | " + " | ".join(f"{timings[s]:.2f}" for s in stages) + f" | {total:.2f} | "
            f"{counts['rows_read']:,} | {written:,} | {counts['skipped_without_access']:,} | {counts['kept']:,} | "
            f"{written / timings['transfer']:,.0f} |"
        )


if __name__ == "__main__":
    main()
