"""Where the package meets Airflow: which customers an asset-triggered run is about, the asset event a run that
changed completions emits, and what the customer's notify hears after an import (by e-mail and on Slack, through
Airflow's own notifiers, against servers on loopback)."""

from __future__ import annotations

import email
from dataclasses import replace
from types import SimpleNamespace

from airflow.sdk.execution_time.context import OutletEventAccessors

from demo_platform import workbook_bytes
from progression.pipeline import plan, run_file
from progression.runs import IMPORT_DAG, rows_of, summarise
from progression_airflow import COMPLETIONS_CHANGED, announce_completions, customers_of_events, tell_customer
from support import NOW, drop, slack_connection, smtp_connection


def event(uri: str):
    return SimpleNamespace(asset=SimpleNamespace(uri=uri))


def test_an_asset_triggered_export_is_for_the_customers_the_events_name():
    events = {
        "alias": [
            event("progression://acme/completions"),
            event("progression://globex/completions"),
            event("progression://acme/completions"),
            event("s3://bucket/other"),
        ]
    }
    assert customers_of_events(events) == ["acme", "globex"]


def test_a_run_triggered_by_hand_has_no_event_customers():
    assert customers_of_events(None) == [] and customers_of_events({}) == []


def test_a_real_run_that_changed_completions_announces_them_and_a_dry_or_idle_run_does_not():
    events = OutletEventAccessors()
    changed = ("imported", "updated")
    assert announce_completions(events, "acme", "progression_import", {"imported": 3, "updated": 1}, changed)
    assert not announce_completions(events, "globex", "progression_import", {"dry_run": True, "imported": 2}, changed)
    assert not announce_completions(events, "initech", "progression_import", {"imported": 0, "updated": 0}, changed)
    [announced] = events[COMPLETIONS_CHANGED].asset_alias_events
    assert announced.dest_asset_key.uri == "progression://acme/completions"
    assert announced.extra == {"dag": "progression_import", "imported": 3, "updated": 1}


def test_rejected_rows_are_told_by_mail_and_on_slack_and_a_clean_or_dry_run_tells_nobody(
    target, platform, mailbox, webhook, monkeypatch
):
    (port, mails), (url, posts) = mailbox, webhook
    monkeypatch.setenv("AIRFLOW_CONN_TEST_SMTP", smtp_connection(port))
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_SLACK", slack_connection(url))
    customer = replace(
        target.customer,
        notify={
            "email": ["data-team@acme.example"],
            "smtp_conn_id": "test_smtp",
            "slack_webhook_conn_id": "team_slack",
        },
    )
    emails, activities = platform.emails, platform.uuids["activity"]

    def imported(name: str, bad: int, dry_run: bool = False) -> tuple[dict, list[dict]]:
        """One file imported as the DAG's tasks import it; the run's summary and ledger rows."""
        rows = [[emails[i], activities[i % len(activities)], "2024-03-31"] for i in range(10)]
        rows += [[f"ghost{i}@nowhere.example", activities[0], "2024-03-31"] for i in range(bad)]
        rel = drop(target.root, f"inbox/activities/{name}", workbook_bytes(["Email", "Content uuid", "Date"], rows))
        [job] = plan(
            target,
            path=rel,
            content_type=None,
            dry_run=dry_run,
            on_existing=None,
            force=False,
            airflow_run_id=f"manual__{name}",
            started=NOW,
        )
        run_file(target, job)
        runs = rows_of(target, f"manual__{name}")
        return summarise(IMPORT_DAG, "acme", runs), runs

    assert tell_customer(customer, *imported("clean.xlsx", bad=0), context={}) is False
    assert tell_customer(customer, *imported("dry.xlsx", bad=2, dry_run=True), context={}) is False
    assert mails == [] and posts == []

    assert tell_customer(customer, *imported("bad.xlsx", bad=1), context={}) is True
    assert len(mails) == 1 and mails[0]["to"] == ["data-team@acme.example"]
    mail = email.message_from_string(mails[0]["data"])
    body = "".join(
        part.get_payload(decode=True).decode() for part in mail.walk() if part.get_content_type() == "text/html"
    )
    assert mail["Subject"] == "Progression import for acme: 1 row(s) rejected"
    assert "bad.xlsx" in body and "unknown user: 1" in body
    assert len(posts) == 1 and posts[0]["text"].startswith("Progression import for acme: 1 row(s) rejected\n")
    assert "bad.xlsx" in posts[0]["text"] and "unknown user: 1" in posts[0]["text"]
