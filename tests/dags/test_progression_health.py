"""progression_health through Airflow itself (`bin/airflow dags test`), with the customer's e-mail and Slack webhook
on loopback: a late customer is told once per episode, an unusual file once, and `bin/progression-db health` tells
the same story."""

from __future__ import annotations

import email
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dags_support import ROOT, drop, run_dag, smtp_connection, summary_line
from support import past_run
from progression import ledger, pipeline
from progression.customers import load_registry
from progression.db import engine_for
from demo_platform import describe, workbook_bytes
from progression.runs import Target

pytestmark = pytest.mark.airflow


def check(world) -> dict:
    done = run_dag(world, "progression_health")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return summary_line(done, "progression_health")


def health_lines(world) -> dict[str, dict]:
    done = subprocess.run([str(ROOT / "bin/progression-db"), "health", "acme_db"], env=world["env"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line["customer"]: line for line in map(json.loads, done.stdout.splitlines())}


def subjects(received: list[dict]) -> list[str]:
    return [email.message_from_string(mail["data"])["Subject"] for mail in received]


def age_ledger(target: Target, by: timedelta) -> None:
    """Move every run of the ledger `by` into the past, as if that much time had gone by."""
    with target.engine.begin() as conn:
        for run in ledger.list_runs(conn):
            ledger.update_run(conn, run["run_id"], started_at=ledger.as_utc(run["started_at"]) - by,
                              finished_at=ledger.as_utc(run["finished_at"]) - by)


def test_lateness_is_told_once_per_episode_and_the_command_tells_the_same_story(world, mailbox, webhook):
    port, mails = mailbox
    url, posts = webhook
    registry = Path(world["env"]["PROGRESSION_CUSTOMERS"])
    registry.write_text(registry.read_text().replace("globex:", (
        "  expect_files_every: 1d\n  notify:\n    email: [data-team@acme.example]\n    smtp_conn_id: test_smtp\n"
        "    slack_webhook_conn_id: team_slack\nglobex:")))
    world["env"]["AIRFLOW_CONN_TEST_SMTP"] = smtp_connection(port)
    world["env"]["AIRFLOW_CONN_TEAM_SLACK"] = json.dumps({"conn_type": "slackwebhook", "password": url})
    target = Target(customer=load_registry(registry).get("acme"), root=world["dir"] / "acme",
                    engine=engine_for(f"sqlite:///{world['dir'] / 'acme.db'}"))
    now = ledger.utcnow()
    last = [past_run(target, now - timedelta(days=days), rows_read=100) for days in (5, 4, 3)][-1]

    # Three days without a file, one expected every day: late, told by e-mail and on Slack.
    first = check(world)
    assert first["states"] == {"acme": "late", "globex": "no_expectation"}  # initech is not active
    assert first["told"] == {"acme": ["late"]} and first["recovered"] == []
    assert subjects(mails) == ["Progression health for acme: late"] and mails[0]["to"] == ["data-team@acme.example"]
    assert posts[0]["text"].startswith("Progression health for acme: late\nacme is late: files are expected every "
                                       f"1d, and the last successful import was inbox/activities/{last}.xlsx")
    told = health_lines(world)["acme"]
    assert (told["late"], told["last_success"]["run_id"], told["expected_every"]) == (True, last, "1d")
    assert (told["waiting_files"], told["failing_streak"]) == (0, 0)
    assert set(health_lines(world)) == {"acme"}  # globex's platform is another database

    # An hour later nothing new: nobody is told again.
    second = check(world)
    assert second["told"] == {} and second["states"]["acme"] == "late"
    assert len(mails) == 1 and len(posts) == 1

    # A file of 3 rows is imported (100 rows each before): acme is on time again, and the file is unusual.
    found = describe(target.engine, "acme")
    rows = [[found.emails[i], found.uuids["activity"][i], "2024-03-31"] for i in range(3)]
    drop(world, "acme", "inbox/activities/small.xlsx", workbook_bytes(["Email", "Content uuid", "Date"], rows))
    [job] = pipeline.plan(target, path=None, content_type=None, dry_run=False, on_existing=None, force=False,
                          airflow_run_id="manual__health", started=ledger.utcnow())
    assert pipeline.run_file(target, job).status == "ok"
    drop(world, "acme", "inbox/journeys/waiting.xlsx", b"not yet imported")
    third = check(world)
    assert third["recovered"] == ["acme"] and third["states"]["acme"] == "unusual"
    assert third["told"] == {"acme": ["unusual inbox/activities/small.xlsx"]}
    assert subjects(mails)[1:] == ["Progression health for acme: 1 unusual file(s)"]
    assert "3 rows read, against a median of 100 over the 3 activities imports before it" in posts[1]["text"]
    assert "1 file(s) are waiting in the inbox." in posts[1]["text"]
    recovered = health_lines(world)["acme"]
    assert (recovered["late"], recovered["last_success"]["run_id"], recovered["waiting_files"]) == (
        False, job.run_id, 1)
    assert [f["file"] for f in recovered["unusual_files"]] == ["inbox/activities/small.xlsx"]

    # Two days later without another file: a new episode, told again; the unusual file is not told twice.
    age_ledger(target, timedelta(days=2))
    fourth = check(world)
    assert fourth["told"] == {"acme": ["late"]}
    assert subjects(mails)[2:] == ["Progression health for acme: late"] and len(posts) == 3
    again = health_lines(world)["acme"]
    assert again["late"] and again["last_success"]["run_id"] == job.run_id and again["state"] == "late"
    with target.engine.connect() as conn:
        alerts = conn.execute(sa.select(ledger.alerts.c.kind, ledger.alerts.c.cleared_at.is_not(None))
                              .order_by(ledger.alerts.c.id)).all()
    assert [tuple(alert) for alert in alerts] == [("late", True), ("unusual", False), ("late", False)]
