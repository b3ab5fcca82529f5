"""progression_import through Airflow itself, as a person runs it: `bin/airflow dags test` with a registry,
connections and storage of the test's own, then the platform database, the storage and the ledger checked."""

from __future__ import annotations

import email
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from dags_support import ROOT, asset_events, drop, run_dag, smtp_connection, summary_line
from support import SMALL
from progression import ledger, pipeline
from progression.customers import load_registry
from progression.db import engine_for
from demo_platform import describe, seed_platform, workbook_bytes
from progression.platform import completions
from progression.runs import Target

pytestmark = pytest.mark.airflow


def activities_file(world, slug: str, count: int = 3, bad: int = 0) -> bytes:
    found = describe(engine_for(f"sqlite:///{world['dir'] / f'{slug}.db'}"), slug)
    rows = [[found.emails[i], found.uuids["activity"][i], "2024-03-31"] for i in range(count)]
    rows += [[f"ghost{i}@nowhere.example", found.uuids["activity"][0], "2024-03-31"] for i in range(bad)]
    return workbook_bytes(["Email", "Content uuid", "Completion date"], rows)


def dags_test(world, conf: dict | None = None) -> subprocess.CompletedProcess:
    return run_dag(world, "progression_import", conf)


def summary_of(done: subprocess.CompletedProcess) -> dict:
    return summary_line(done, "progression_import")


def count_completions(world, slug: str) -> int:
    engine = engine_for(f"sqlite:///{world['dir'] / f'{slug}.db'}")
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(completions)).scalar()


def map_indexes(world, run_summary: dict) -> set[str]:
    with sqlite3.connect(world["home"] / "airflow.db") as conn:
        return {row[0] for row in conn.execute(
            "SELECT rendered_map_index FROM task_instance WHERE dag_id = 'progression_import' "
            "AND rendered_map_index IS NOT NULL")}


def test_the_dag_file_parses_without_loading_the_heavy_libraries(world):
    code = ("import sys, runpy; runpy.run_path('dags/progression_import.py'); "
            "print(sorted(m for m in ('pandas', 'great_expectations', 'fastexcel', 'openpyxl') if m in sys.modules))")
    env = {**world["env"], "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_dag_imports_and_the_trigger_form_offers_every_param_with_a_description(world):
    code = ("import json; from airflow.dag_processing.dagbag import DagBag; bag = DagBag(dag_folder='dags'); "
            "assert not bag.import_errors, bag.import_errors; d = bag.get_dag('progression_import'); "
            "print(json.dumps({k: d.params.get_param(k).description for k in d.params}))")
    env = {**world["env"], "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    described = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(described) == {"customer", "path", "content_type", "dry_run", "on_existing", "force", "check"}
    assert all(described.values())


def test_the_nightly_run_imports_every_active_customers_inbox(world):
    drop(world, "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world, "globex", "inbox/activities/may.xlsx", activities_file(world, "globex", 2))
    drop(world, "initech", "inbox/activities/ignored.xlsx", activities_file(world, "initech", 2))
    done = dags_test(world)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["files"] == 2 and summary["imported"] == 5 and summary["failed"] == []
    assert set(summary["runs"]) == {"acme/activities/q3.xlsx", "globex/activities/may.xlsx"}
    assert count_completions(world, "acme") == 3 and count_completions(world, "globex") == 2
    assert count_completions(world, "initech") == 0  # not active
    assert (world["dir"] / "acme/processed/activities/q3.xlsx").exists()
    assert (world["dir"] / "initech/inbox/activities/ignored.xlsx").exists()
    report = world["dir"] / "acme" / summary["reports"]["acme/activities/q3.xlsx"]
    assert report.exists()
    assert {"acme/activities/q3.xlsx", "globex/activities/may.xlsx"} <= map_indexes(world, summary)


def test_one_file_of_one_customer_as_a_dry_run(world):
    drop(world, "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world, "acme", "inbox/activities/other.xlsx", activities_file(world, "acme", 4))
    done = dags_test(world, {"customer": "acme", "path": "inbox/activities/q3.xlsx", "dry_run": True})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["dry_run"] and summary["files"] == 1 and summary["imported"] == 3
    assert count_completions(world, "acme") == 0
    assert (world["dir"] / "acme/inbox/activities/q3.xlsx").exists()
    assert (world["dir"] / "acme" / summary["reports"]["acme/activities/q3.xlsx"]).exists()


def test_check_true_checks_the_check_folder_writes_nothing_and_leaves_the_inbox(world):
    drop(world, "acme", "check/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world, "acme", "check/journeys/wrong.xlsx", activities_file(world, "acme", 1, bad=3))
    drop(world, "acme", "inbox/activities/waiting.xlsx", activities_file(world, "acme", 2))
    done = dags_test(world, {"customer": "acme", "check": True})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # a check that finds faults is no failure
    summary = summary_of(done)
    assert summary["checked"] == {"acme/check/activities/q3.xlsx": "succeeded",
                                  "acme/check/journeys/wrong.xlsx": "failed"}
    assert summary["files"] == 0 and summary["imported"] == 0 and summary["failed"] == []
    assert count_completions(world, "acme") == 0
    acme = world["dir"] / "acme"
    assert (acme / "checked/activities/q3.xlsx").exists() and (acme / "checked/journeys/wrong.xlsx").exists()
    assert (acme / "inbox/activities/waiting.xlsx").exists()
    report = summary["reports"]["acme/check/activities/q3.xlsx"]
    assert report.endswith(f"q3.check.{summary['runs']['acme/check/activities/q3.xlsx']}.xlsx")
    assert (acme / report).exists()
    with engine_for(f"sqlite:///{world['dir'] / 'acme.db'}").connect() as conn:
        checks = ledger.list_runs(conn, customer="acme")
    assert sorted((run["run_id"].split("-")[0], run["dry_run"], run["rows_read"]) for run in checks) == [
        ("check", True, 3), ("check", True, 4)]


def test_a_failed_file_is_reported_archived_and_visible(world):
    drop(world, "acme", "inbox/activities/good.xlsx", activities_file(world, "acme", 3))
    drop(world, "acme", "inbox/activities/bad.xlsx", activities_file(world, "acme", 1, bad=3))
    done = dags_test(world, {"customer": "acme"})
    summary = summary_of(done)
    assert done.returncode != 0  # the run is failed in Airflow, and summarised all the same
    assert summary["failed"] == ["acme/activities/bad.xlsx"]
    assert summary["succeeded"] == ["acme/activities/good.xlsx"]
    assert "max_error_rate" in done.stdout + done.stderr
    assert (world["dir"] / "acme/failed/activities/bad.xlsx").exists()
    assert count_completions(world, "acme") == 3


@pytest.mark.parametrize("conf, message", [
    ({"customer": "nobody"}, "Invalid input for param customer"),
    ({"customer": "acme", "content_type": "courses"}, "Invalid input for param content_type"),
    ({"customer": "acme", "path": "../globex/inbox/activities/may.xlsx"}, "leaves the customer's storage root"),
    ({"path": "inbox/activities/may.xlsx"}, "path needs a customer"),
])
def test_a_bad_conf_is_refused_before_any_work(world, conf, message):
    drop(world, "globex", "inbox/activities/may.xlsx", activities_file(world, "globex", 2))
    done = dags_test(world, conf)
    assert message in done.stdout + done.stderr
    if "param" not in message:  # refused by the first task, not by the trigger form: the summary still comes
        summary = summary_of(done)
        assert message in summary["refused"] and summary["files"] == 0
    assert count_completions(world, "globex") == 0
    assert (world["dir"] / "globex/inbox/activities/may.xlsx").exists()


def test_a_postgresql_platform_through_an_airflow_connection(world, postgres_database):
    """The platform database behind a postgres connection: bin/progression-db creates the tables, the DAG
    imports through the postgres provider's hook."""
    url = postgres_database
    env = {**world["env"], "AIRFLOW_CONN_HOOLI_DB":
           f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"}
    done = subprocess.run([str(ROOT / "bin/progression-db"), "upgrade", "hooli_db", "--with-platform-tables"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        types = dict(conn.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'completions'")).all())
    assert types["completed_at"] == "timestamp with time zone"
    seed_platform(engine, "hooli", sizes=SMALL)
    found = describe(engine, "hooli")
    registry = world["dir"] / "hooli.yaml"
    registry.write_text(f"hooli:\n  platform_conn_id: hooli_db\n  platform: hooli\n"
                        f"  storage: file://{world['dir'] / 'hooli'}\n  timezone: Europe/Amsterdam\n")
    env["PROGRESSION_CUSTOMERS"] = str(registry)
    path = world["dir"] / "hooli/inbox/journeys/j.xlsx"
    path.parent.mkdir(parents=True)
    path.write_bytes(workbook_bytes(["Email", "Content uuid"], [[found.emails[-1], found.uuids["journey"][0]]]))
    done = subprocess.run([str(ROOT / "bin/airflow"), "dags", "test", "progression_import"], env=env,
                          capture_output=True, text=True, timeout=300)
    summary = summary_of(done)
    assert summary["succeeded"] == ["hooli/journeys/j.xlsx"] and summary["imported"] == 1
    with engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT source, run_id, count(*) FROM completions GROUP BY 1, 2")).all()
    assert sources == [("import", summary["runs"]["hooli/journeys/j.xlsx"], 1 + summary["derived_written"])]
    # Running the upgrade twice is harmless.
    again = subprocess.run([str(ROOT / "bin/progression-db"), "upgrade", "hooli_db"], env=env, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    engine.dispose()


def test_a_run_that_changed_completions_announces_them_as_an_asset_event(world):
    before = len(asset_events(world))
    drop(world, "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    drop(world, "globex", "inbox/activities/dry.xlsx", activities_file(world, "globex", 2))
    assert dags_test(world, {"customer": "acme"}).returncode == 0
    assert dags_test(world, {"customer": "globex", "dry_run": True}).returncode == 0
    new = asset_events(world)[before:]
    assert [uri for uri, _ in new] == ["progression://acme/completions"]  # the dry run announces nothing
    assert new[0][1]["dag"] == "progression_import" and new[0][1]["imported"] == 3


def test_rejections_are_mailed_to_the_customer_and_a_clean_run_stays_quiet(world, mailbox):
    port, received = mailbox
    registry = Path(world["env"]["PROGRESSION_CUSTOMERS"])
    registry.write_text(registry.read_text().replace(
        "globex:", "  notify:\n    email: [data-team@acme.example]\n    smtp_conn_id: test_smtp\nglobex:"))
    world["env"]["AIRFLOW_CONN_TEST_SMTP"] = smtp_connection(port)
    drop(world, "acme", "inbox/activities/clean.xlsx", activities_file(world, "acme", 3))
    assert dags_test(world, {"customer": "acme"}).returncode == 0
    assert received == []
    drop(world, "acme", "inbox/activities/bad.xlsx", activities_file(world, "acme", 10, bad=1))
    done = dags_test(world, {"customer": "acme"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(received) == 1 and received[0]["to"] == ["data-team@acme.example"]
    mail = email.message_from_string(received[0]["data"])
    body = "".join(part.get_payload(decode=True).decode() for part in mail.walk() if part.get_content_type() ==
                   "text/html")
    assert mail["Subject"] == "Progression import for acme: 1 row(s) rejected"
    assert "bad.xlsx" in body and "unknown user: 1" in body


def test_a_failed_file_is_posted_to_the_customers_slack_webhook(world, webhook):
    url, received = webhook
    registry = Path(world["env"]["PROGRESSION_CUSTOMERS"])
    registry.write_text(registry.read_text().replace("globex:", "  notify:\n    slack_webhook_conn_id: team_slack\nglobex:"))
    world["env"]["AIRFLOW_CONN_TEAM_SLACK"] = json.dumps({"conn_type": "slackwebhook", "password": url})
    drop(world, "acme", "inbox/activities/bad.xlsx", activities_file(world, "acme", 1, bad=3))
    dags_test(world, {"customer": "acme"})
    assert len(received) == 1
    assert received[0]["text"].startswith("Progression import for acme: 1 file(s) failed, 3 row(s) rejected")
    assert "bad.xlsx: failed, unknown user: 3" in received[0]["text"]


def test_a_file_held_by_a_run_that_died_goes_back_and_is_imported(world):
    """A worker died after claiming the file: its Airflow run is over (here: one Airflow never had), so the next
    run closes the ledger row as abandoned, puts the file back and imports it."""
    drop(world, "acme", "inbox/activities/q3.xlsx", activities_file(world, "acme", 3))
    customer = load_registry(world["dir"] / "customers.yaml").get("acme")
    target = Target(customer=customer, root=world["dir"] / "acme",
                    engine=engine_for(f"sqlite:///{world['dir'] / 'acme.db'}"))
    [job] = pipeline.plan(target, path=None, content_type=None, dry_run=False, on_existing=None, force=False,
                          airflow_run_id="scheduled__2026-11-27T02:00:00+00:00", started=datetime.now(timezone.utc))
    died = pipeline.run_stage(target, job, "fetch")
    assert not (world["dir"] / "acme/inbox/activities/q3.xlsx").exists()

    done = dags_test(world, {"customer": "acme"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"recovered run {died.run_id}" in done.stdout + done.stderr
    assert summary_of(done)["succeeded"] == ["acme/activities/q3.xlsx"]
    assert count_completions(world, "acme") == 3
    with target.engine.connect() as conn:
        statuses = {row["run_id"]: row["status"] for row in ledger.list_runs(conn)}
    assert statuses[died.run_id] == "abandoned" and sorted(statuses.values()) == ["abandoned", "succeeded"]
    assert not list((world["dir"] / "acme").glob("staging/*"))
