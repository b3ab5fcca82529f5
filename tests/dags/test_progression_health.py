"""progression_health through Airflow itself (`bin/airflow dags test`), with the customer's e-mail and Slack webhook
on loopback: a late customer is told by e-mail and on Slack, and `bin/progression-db health` tells the same story.
That each is told once per episode and again in the next, recoveries and unusual files:
tests/progression/test_health.py."""

from __future__ import annotations

import email
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from dags_support import ROOT, run_dag, summary_line, target_of
from progression import ledger
from support import drop, past_run, slack_connection, smtp_connection, update_customer

pytestmark = pytest.mark.airflow


def check(world) -> dict:
    done = run_dag(world, "progression_health")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return summary_line(done, "progression_health")


def health_lines(world) -> dict[str, dict]:
    done = subprocess.run(
        [str(ROOT / "bin/progression-db"), "health", "acme_db"], env=world["env"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line["customer"]: line for line in map(json.loads, done.stdout.splitlines())}


def subjects(received: list[dict]) -> list[str]:
    return [email.message_from_string(mail["data"])["Subject"] for mail in received]


def test_a_late_customer_is_told_and_the_command_tells_the_same_story(world, mailbox, webhook):
    port, mails = mailbox
    url, posts = webhook
    update_customer(
        Path(world["env"]["PROGRESSION_CUSTOMERS"]),
        "acme",
        expect_files_every="1d",
        notify={
            "email": ["data-team@acme.example"],
            "smtp_conn_id": "test_smtp",
            "slack_webhook_conn_id": "team_slack",
        },
    )
    world["env"].update(AIRFLOW_CONN_TEST_SMTP=smtp_connection(port), AIRFLOW_CONN_TEAM_SLACK=slack_connection(url))
    target = target_of(world, "acme")
    now = ledger.utcnow()
    last = [past_run(target, now - timedelta(days=days), rows_read=100) for days in (5, 4, 3)][-1]

    # Three days without a file, one expected every day: late, told by e-mail and on Slack.
    drop(target.root, "inbox/journeys/waiting.xlsx", b"not yet imported")
    first = check(world)
    assert first["states"] == {"acme": "late", "globex": "no_expectation"}  # initech is not active
    assert first["told"] == {"acme": ["late"]} and first["recovered"] == []
    assert subjects(mails) == ["Progression health for acme: late"] and mails[0]["to"] == ["data-team@acme.example"]
    assert posts[0]["text"].startswith(
        "Progression health for acme: late\nacme is late: files are expected every "
        f"1d, and the last successful import was inbox/activities/{last}.xlsx"
    )
    assert "1 file(s) are waiting in the inbox." in posts[0]["text"]
    lines = health_lines(world)
    assert set(lines) == {"acme"}  # globex's platform is another database
    told = lines["acme"]
    assert (told["late"], told["last_success"]["run_id"], told["expected_every"]) == (True, last, "1d")
    assert (told["waiting_files"], told["failing_streak"], told["unusual_files"]) == (1, 0, [])
