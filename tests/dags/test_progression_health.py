"""progression_health through Airflow itself (`bin/airflow dags test`), with the customer's e-mail and Slack webhook
on loopback: a late customer is told, then its recovery and an unusual file, and `bin/progression-db health` tells
the same story. That each is told once per episode, and again in the next: tests/progression/test_health.py."""

from __future__ import annotations

import email
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from dags_support import ROOT, run_dag, summary_line, target_of
from demo_platform import describe, workbook_bytes
from progression import ledger, pipeline
from support import drop, past_run, slack_connection, smtp_connection, update_customer

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


def test_lateness_then_a_recovery_with_an_unusual_file_are_told_and_the_command_agrees(world, mailbox, webhook):
    port, mails = mailbox
    url, posts = webhook
    update_customer(Path(world["env"]["PROGRESSION_CUSTOMERS"]), "acme", expect_files_every="1d", notify={
        "email": ["data-team@acme.example"], "smtp_conn_id": "test_smtp", "slack_webhook_conn_id": "team_slack"})
    world["env"].update(AIRFLOW_CONN_TEST_SMTP=smtp_connection(port), AIRFLOW_CONN_TEAM_SLACK=slack_connection(url))
    target = target_of(world, "acme")
    now = ledger.utcnow()
    last = [past_run(target, now - timedelta(days=days), rows_read=100) for days in (5, 4, 3)][-1]

    # Three days without a file, one expected every day: late, told by e-mail and on Slack.
    first = check(world)
    assert first["states"] == {"acme": "late", "globex": "no_expectation"}  # initech is not active
    assert first["told"] == {"acme": ["late"]} and first["recovered"] == []
    assert subjects(mails) == ["Progression health for acme: late"] and mails[0]["to"] == ["data-team@acme.example"]
    assert posts[0]["text"].startswith("Progression health for acme: late\nacme is late: files are expected every "
                                       f"1d, and the last successful import was inbox/activities/{last}.xlsx")
    lines = health_lines(world)
    assert set(lines) == {"acme"}  # globex's platform is another database
    told = lines["acme"]
    assert (told["late"], told["last_success"]["run_id"], told["expected_every"]) == (True, last, "1d")
    assert (told["waiting_files"], told["failing_streak"]) == (0, 0)

    # A file of 3 rows is imported (100 rows each before): acme is on time again, and the file is unusual.
    found = describe(target.engine, "acme")
    rows = [[found.emails[i], found.uuids["activity"][i], "2024-03-31"] for i in range(3)]
    drop(target.root, "inbox/activities/small.xlsx", workbook_bytes(["Email", "Content uuid", "Date"], rows))
    [job] = pipeline.plan(target, path=None, content_type=None, dry_run=False, on_existing=None, force=False,
                          airflow_run_id="manual__health", started=ledger.utcnow())
    assert pipeline.run_file(target, job).status == "ok"
    drop(target.root, "inbox/journeys/waiting.xlsx", b"not yet imported")
    second = check(world)
    assert second["recovered"] == ["acme"] and second["states"]["acme"] == "unusual"
    assert second["told"] == {"acme": ["unusual inbox/activities/small.xlsx"]}
    assert subjects(mails)[1:] == ["Progression health for acme: 1 unusual file(s)"] and len(posts) == 2
    assert "3 rows read, against a median of 100 over the 3 activities imports before it" in posts[1]["text"]
    assert "1 file(s) are waiting in the inbox." in posts[1]["text"]
    recovered = health_lines(world)["acme"]
    assert (recovered["late"], recovered["last_success"]["run_id"], recovered["waiting_files"]) == (
        False, job.run_id, 1)
    assert [f["file"] for f in recovered["unusual_files"]] == ["inbox/activities/small.xlsx"]
