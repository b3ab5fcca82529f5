"""progression_import through Airflow itself, as a person runs it: `bin/airflow dags test` with a registry,
connections and storage of the test's own, then the platform database, the storage and the ledger checked."""

from __future__ import annotations

import email
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from dags_support import ROOT, asset_events, engine_of, run_dag, summary_line, target_of
from demo_platform import describe, seed_platform, workbook_bytes
from progression import ledger, pipeline
from support import (
    SMALL,
    count_completions,
    drop,
    slack_connection,
    smtp_connection,
    update_customer,
    write_registry,
)

pytestmark = pytest.mark.airflow


def activities_file(world, slug: str, count: int = 3, bad: int = 0) -> bytes:
    found = describe(engine_of(world, slug), slug)
    rows = [[found.emails[i], found.uuids["activity"][i], "2024-03-31"] for i in range(count)]
    rows += [[f"ghost{i}@nowhere.example", found.uuids["activity"][0], "2024-03-31"] for i in range(bad)]
    return workbook_bytes(["Email", "Content uuid", "Completion date"], rows)


def dags_test(world, conf: dict | None = None) -> subprocess.CompletedProcess:
    return run_dag(world, "progression_import", conf)


def summary_of(done: subprocess.CompletedProcess) -> dict:
    return summary_line(done, "progression_import")


def completions_of(world, slug: str) -> int:
    return count_completions(engine_of(world, slug))


def map_indexes(world, run_summary: dict) -> set[str]:
    with sqlite3.connect(world["home"] / "airflow.db") as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT rendered_map_index FROM task_instance WHERE dag_id = 'progression_import' "
                "AND rendered_map_index IS NOT NULL"
            )
        }


def test_the_nightly_run_imports_every_active_customers_inbox_and_announces_what_changed(world):
    before = len(asset_events(world))
    drop(world["dir"] / "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world["dir"] / "globex", "inbox/activities/may.xlsx", activities_file(world, "globex", 2))
    drop(world["dir"] / "initech", "inbox/activities/ignored.xlsx", activities_file(world, "initech", 2))
    done = dags_test(world)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["files"] == 2 and summary["imported"] == 5 and summary["failed"] == []
    assert set(summary["runs"]) == {"acme/activities/q3.xlsx", "globex/activities/may.xlsx"}
    assert completions_of(world, "acme") == 3 and completions_of(world, "globex") == 2
    assert completions_of(world, "initech") == 0  # not active
    assert (world["dir"] / "acme/processed/activities/q3.xlsx").exists()
    assert (world["dir"] / "initech/inbox/activities/ignored.xlsx").exists()
    report = world["dir"] / "acme" / summary["reports"]["acme/activities/q3.xlsx"]
    assert report.exists()
    assert {"acme/activities/q3.xlsx", "globex/activities/may.xlsx"} <= map_indexes(world, summary)
    # One asset event per customer whose completions changed, for the DAGs that follow them.
    assert sorted((uri, extra["dag"], extra["imported"]) for uri, extra in asset_events(world)[before:]) == [
        ("progression://acme/completions", "progression_import", 3),
        ("progression://globex/completions", "progression_import", 2),
    ]


def test_one_file_of_one_customer_as_a_dry_run_writes_and_announces_nothing(world):
    before = len(asset_events(world))
    drop(world["dir"] / "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world["dir"] / "acme", "inbox/activities/other.xlsx", activities_file(world, "acme", 4))
    done = dags_test(world, {"customer": "acme", "path": "inbox/activities/q3.xlsx", "dry_run": True})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["dry_run"] and summary["files"] == 1 and summary["imported"] == 3
    assert completions_of(world, "acme") == 0
    assert (world["dir"] / "acme/inbox/activities/q3.xlsx").exists()
    assert (world["dir"] / "acme" / summary["reports"]["acme/activities/q3.xlsx"]).exists()
    assert asset_events(world)[before:] == []


def test_check_true_checks_the_check_folder_writes_nothing_and_leaves_the_inbox(world):
    drop(world["dir"] / "acme", "check/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world["dir"] / "acme", "check/journeys/wrong.xlsx", activities_file(world, "acme", 1, bad=3))
    drop(world["dir"] / "acme", "inbox/activities/waiting.xlsx", activities_file(world, "acme", 2))
    done = dags_test(world, {"customer": "acme", "check": True})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # a check that finds faults is no failure
    summary = summary_of(done)
    assert summary["checked"] == {
        "acme/check/activities/q3.xlsx": "succeeded",
        "acme/check/journeys/wrong.xlsx": "failed",
    }
    assert summary["files"] == 0 and summary["imported"] == 0 and summary["failed"] == []
    assert completions_of(world, "acme") == 0
    acme = world["dir"] / "acme"
    assert (acme / "checked/activities/q3.xlsx").exists() and (acme / "checked/journeys/wrong.xlsx").exists()
    assert (acme / "inbox/activities/waiting.xlsx").exists()
    report = summary["reports"]["acme/check/activities/q3.xlsx"]
    assert report.endswith(f"q3.check.{summary['runs']['acme/check/activities/q3.xlsx']}.xlsx")
    assert (acme / report).exists()
    with engine_of(world, "acme").connect() as conn:
        checks = ledger.list_runs(conn, customer="acme")
    assert sorted((run["run_id"].split("-")[0], run["dry_run"], run["rows_read"]) for run in checks) == [
        ("check", True, 3),
        ("check", True, 4),
    ]


def test_a_failed_file_is_reported_archived_visible_and_told_to_the_customer(world, mailbox, webhook):
    """The run is red in Airflow, summarised all the same, and the customer's notify hears of it by e-mail and on
    Slack (what each message says for other runs, and that a clean run tells nobody: tests/plugins)."""
    (port, mails), (url, posts) = mailbox, webhook
    update_customer(
        Path(world["env"]["PROGRESSION_CUSTOMERS"]),
        "acme",
        notify={
            "email": ["data-team@acme.example"],
            "smtp_conn_id": "test_smtp",
            "slack_webhook_conn_id": "team_slack",
        },
    )
    world["env"].update(AIRFLOW_CONN_TEST_SMTP=smtp_connection(port), AIRFLOW_CONN_TEAM_SLACK=slack_connection(url))
    drop(world["dir"] / "acme", "inbox/activities/good.xlsx", activities_file(world, "acme", 3))
    drop(world["dir"] / "acme", "inbox/activities/bad.xlsx", activities_file(world, "acme", 1, bad=3))
    done = dags_test(world, {"customer": "acme"})
    summary = summary_of(done)
    assert done.returncode != 0  # the run is failed in Airflow, and summarised all the same
    assert summary["failed"] == ["acme/activities/bad.xlsx"]
    assert summary["succeeded"] == ["acme/activities/good.xlsx"]
    assert "max_error_rate" in done.stdout + done.stderr
    assert (world["dir"] / "acme/failed/activities/bad.xlsx").exists()
    assert completions_of(world, "acme") == 3
    assert len(mails) == 1 and mails[0]["to"] == ["data-team@acme.example"]
    assert email.message_from_string(mails[0]["data"])["Subject"] == (
        "Progression import for acme: 1 file(s) failed, 3 row(s) rejected"
    )
    assert len(posts) == 1
    assert posts[0]["text"].startswith("Progression import for acme: 1 file(s) failed, 3 row(s) rejected")
    assert "bad.xlsx: failed, unknown user: 3" in posts[0]["text"]


def test_a_bad_conf_is_refused_by_the_first_task_and_still_summarised(world):
    """A path without a customer passes the params (each is valid alone) and is refused by `discover` before any
    work; the summary says why. Refusals by the params themselves: test_dag_files.py; by the stages (a path that
    leaves the storage root): tests/progression/test_pipeline.py."""
    drop(world["dir"] / "globex", "inbox/activities/may.xlsx", activities_file(world, "globex", 2))
    done = dags_test(world, {"path": "inbox/activities/may.xlsx"})
    assert done.returncode != 0
    summary = summary_of(done)
    assert "path needs a customer" in summary["refused"] and summary["files"] == 0
    assert completions_of(world, "globex") == 0
    assert (world["dir"] / "globex/inbox/activities/may.xlsx").exists()


def test_a_postgresql_platform_through_an_airflow_connection(world, postgres_database):
    """The platform database behind a postgres connection: bin/progression-db creates the tables, the DAG
    imports through the postgres provider's hook."""
    url = postgres_database
    env = {**world["env"], "AIRFLOW_CONN_HOOLI_DB": f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"}
    done = subprocess.run(
        [str(ROOT / "bin/progression-db"), "upgrade", "hooli_db", "--with-platform-tables"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'completions'"
                )
            ).all()
        )
    assert types["completed_at"] == "timestamp with time zone"
    seed_platform(engine, "hooli", sizes=SMALL)
    found = describe(engine, "hooli")
    env["PROGRESSION_CUSTOMERS"] = str(
        write_registry(
            world["dir"] / "hooli.yaml",
            {
                "hooli": {
                    "platform_conn_id": "hooli_db",
                    "platform": "hooli",
                    "storage": f"file://{world['dir'] / 'hooli'}",
                    "timezone": "Europe/Amsterdam",
                }
            },
        )
    )
    drop(
        world["dir"] / "hooli",
        "inbox/journeys/j.xlsx",
        workbook_bytes(["Email", "Content uuid"], [[found.emails[-1], found.uuids["journey"][0]]]),
    )
    summary = summary_of(run_dag(world, "progression_import", env=env))
    assert summary["succeeded"] == ["hooli/journeys/j.xlsx"] and summary["imported"] == 1
    with engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT source, run_id, count(*) FROM completions GROUP BY 1, 2")).all()
    assert sources == [("import", summary["runs"]["hooli/journeys/j.xlsx"], 1 + summary["derived_written"])]
    # Running the upgrade twice is harmless.
    again = subprocess.run(
        [str(ROOT / "bin/progression-db"), "upgrade", "hooli_db"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    engine.dispose()


def test_a_file_held_by_a_run_that_died_goes_back_and_is_imported(world):
    """A worker died after claiming the file: its Airflow run is over (here: one Airflow never had), so the next
    run closes the ledger row as abandoned, puts the file back and imports it."""
    drop(world["dir"] / "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    target = target_of(world, "acme")
    [job] = pipeline.plan(
        target,
        path=None,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id="scheduled__2026-11-27T02:00:00+00:00",
        started=datetime.now(timezone.utc),
    )
    died = pipeline.run_stage(target, job, "fetch")
    assert not (world["dir"] / "acme/inbox/activities/q3.xlsx").exists()

    done = dags_test(world, {"customer": "acme"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"recovered run {died.run_id}" in done.stdout + done.stderr
    assert summary_of(done)["succeeded"] == ["acme/activities/q3.xlsx"]
    assert completions_of(world, "acme") == 3
    with target.engine.connect() as conn:
        statuses = {row["run_id"]: row["status"] for row in ledger.list_runs(conn)}
    assert statuses[died.run_id] == "abandoned" and sorted(statuses.values()) == ["abandoned", "succeeded"]
    assert not list((world["dir"] / "acme").glob("staging/*"))
