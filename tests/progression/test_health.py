"""A customer's health from its ledger and storage, on SQLite and PostgreSQL: lateness and recovery, a failing
streak, waiting files, unusual volumes, and alerts told once per episode. Times are passed in, never waited for."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from support import NOW, drop, past_run
from progression import ledger
from demo_platform import workbook_bytes
from progression.health import customer_health, summarise, watch, worst_first
from progression.pipeline import plan, run_file
from progression.runs import Target


@pytest.fixture
def daily(target) -> Target:
    """The customer of `target`, expecting files every day."""
    return replace(target, customer=replace(target.customer, expect_files_every="1d"))


def test_a_customer_without_expectation_or_runs(target):
    health = customer_health(target, NOW)
    assert health.as_dict() == {
        "customer": "acme",
        "last_success": None,
        "late": False,
        "expected_every": None,
        "waiting_files": 0,
        "failing_streak": 0,
        "state": "no_expectation",
        "last_failure": None,
        "written_7d": 0,
        "written_30d": 0,
        "unusual_files": [],
    }


def test_late_when_the_last_success_is_older_than_expected_or_there_never_was_one(daily):
    assert customer_health(daily, NOW).late  # expected, and nothing ever imported
    old = past_run(daily, NOW - timedelta(days=3), written=12)
    past_run(daily, NOW - timedelta(hours=2), dry_run=True)  # a dry run imports nothing
    past_run(daily, NOW - timedelta(hours=2), dag_id="progression_transfer")  # nor does a transfer
    past_run(daily, NOW - timedelta(hours=1), status="skipped")  # nor bytes imported before
    health = customer_health(daily, NOW)
    assert (health.late, health.state, health.expected_every) == (True, "late", "1d")
    assert health.last_success == {
        "at": (NOW - timedelta(days=3, minutes=-1)).isoformat(),
        "file": f"inbox/activities/{old}.xlsx",
        "run_id": old,
        "completions": 12,
    }
    fresh = past_run(daily, NOW - timedelta(hours=23))
    health = customer_health(daily, NOW)
    assert (health.late, health.state, health.last_success["run_id"]) == (False, "ok", fresh)
    # A day and a minute after it finished, the customer is late again; the same ledger read a day earlier is not.
    assert customer_health(daily, NOW + timedelta(hours=1, minutes=2)).late
    assert customer_health(daily, NOW - timedelta(days=1)).last_success["run_id"] == old


def test_a_real_import_ends_the_lateness(daily, platform):
    past_run(daily, ledger.utcnow() - timedelta(days=2))
    assert customer_health(daily, ledger.utcnow()).late
    rows = [[platform.emails[i], platform.uuids["activity"][i], "2024-03-31"] for i in range(3)]
    rel = drop(daily.root, "inbox/activities/q3.xlsx", workbook_bytes(["Email", "Content uuid", "Date"], rows))
    [job] = plan(
        daily,
        path=rel,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id="manual__test",
        started=ledger.utcnow(),
    )
    assert run_file(daily, job).status == "ok"
    health = customer_health(daily, ledger.utcnow() + timedelta(hours=1))
    assert not health.late and health.state == "ok"
    assert health.last_success["file"] == rel and health.last_success["completions"] == 3
    assert health.written_7d == 3 + 100  # the import now and the one two days ago


def test_the_failing_streak_counts_failures_since_the_last_success(target):
    past_run(target, NOW - timedelta(hours=10), status="failed", message="old failure")
    past_run(target, NOW - timedelta(hours=9))
    past_run(target, NOW - timedelta(hours=8), status="failed", message="missing column")
    past_run(target, NOW - timedelta(hours=7), status="skipped")  # neither breaks nor lengthens the streak
    past_run(target, NOW - timedelta(hours=6), status="abandoned", message="the worker died")
    last = past_run(target, NOW - timedelta(hours=5), status="failed", message="too many bad rows")
    past_run(target, NOW - timedelta(hours=4), status="failed", dry_run=True, message="a dry run")
    health = customer_health(target, NOW)
    assert (health.failing_streak, health.state) == (3, "failing")
    assert health.last_failure == {
        "at": (NOW - timedelta(hours=5, minutes=-1)).isoformat(),
        "file": f"inbox/activities/{last}.xlsx",
        "run_id": last,
        "message": "too many bad rows",
    }
    past_run(target, NOW - timedelta(hours=1))
    health = customer_health(target, NOW)
    assert health.failing_streak == 0 and health.last_failure["run_id"] == last


def test_waiting_files_are_the_files_in_the_inbox(target):
    drop(target.root, "inbox/activities/a.xlsx", b"a")
    drop(target.root, "inbox/journeys/b.csv", b"b")
    drop(target.root, "inbox/activities/~$a.xlsx", b"an Excel lock file")
    drop(target.root, "processed/activities/old.xlsx", b"done")
    assert customer_health(target, NOW).waiting_files == 2


def test_completions_written_in_the_last_7_and_30_days(target):
    past_run(target, NOW - timedelta(days=2), written=5)
    past_run(target, NOW - timedelta(days=6), written=7, dag_id="progression_transfer")
    past_run(target, NOW - timedelta(days=10), written=11)
    past_run(target, NOW - timedelta(days=40), written=100)
    past_run(target, NOW - timedelta(days=1), written=1000, dry_run=True)
    past_run(target, NOW - timedelta(days=1), written=1000, status="failed")
    health = customer_health(target, NOW)
    assert (health.written_7d, health.written_30d) == (12, 23)


def test_a_file_far_below_or_above_the_median_of_the_imports_before_it_is_unusual(target):
    for days, rows in ((20, 90), (19, 100), (18, 120), (17, 30_000)):
        past_run(target, NOW - timedelta(days=days), rows_read=rows)
    past_run(target, NOW - timedelta(days=3), rows_read=2, content_type="programmes")  # nothing to judge it by
    small = past_run(target, NOW - timedelta(days=2), rows_read=10)  # median of 90, 100, 120, 30000: 110
    past_run(target, NOW - timedelta(days=1, hours=1), rows_read=1000)  # median of the 5 before 100: not above
    large = past_run(target, NOW - timedelta(days=1), rows_read=1300)  # median of the 6 before: 110
    health = customer_health(target, NOW)
    assert [(f["run_id"], f["rows_read"], f["median"]) for f in health.unusual_files] == [
        (small, 10, 110),
        (large, 1300, 110),
    ]
    assert health.state == "unusual"
    # The window is a week: a day later the first is still listed; ten days later neither is.
    assert len(customer_health(target, NOW + timedelta(days=1)).unusual_files) == 2
    assert customer_health(target, NOW + timedelta(days=10)).unusual_files == []


def test_with_fewer_than_three_imports_before_it_a_file_is_not_judged(target):
    past_run(target, NOW - timedelta(days=3), rows_read=100)
    past_run(target, NOW - timedelta(days=2), rows_read=100)
    past_run(target, NOW - timedelta(days=1), rows_read=1)
    assert customer_health(target, NOW).unusual_files == []


class Told(list):
    """The customer's notify as `watch` calls it: every (subject, html, text) it was given."""

    def __call__(self, subject: str, html: str, text: str) -> bool:
        self.append((subject, html, text))
        return True


def test_lateness_is_told_once_per_episode_and_again_after_a_recovery(daily):
    told = Told()
    past_run(daily, NOW - timedelta(days=2), written=12)
    first = watch(daily, NOW, told)
    assert first == {"customer": "acme", "state": "late", "new": ["late"], "told": True, "cleared": []}
    assert len(told) == 1 and told[0][0] == "Progression health for acme: late"
    assert "files are expected every 1d, and the last successful import was inbox/activities/" in told[0][2]
    assert watch(daily, NOW + timedelta(hours=1), told)["new"] == [] and len(told) == 1  # the same episode
    past_run(daily, NOW + timedelta(hours=2))
    recovered = watch(daily, NOW + timedelta(hours=3), told)
    assert (recovered["state"], recovered["cleared"], len(told)) == ("ok", ["late"], 1)
    assert summarise([recovered], dry_run=False)["recovered"] == ["acme"]
    again = watch(daily, NOW + timedelta(days=2), told)
    assert again["new"] == ["late"] and len(told) == 2
    with daily.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.alerts.c.kind, ledger.alerts.c.cleared_at.is_(None)).order_by(ledger.alerts.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [("late", False), ("late", True)]


def test_an_unusual_file_is_told_once(target):
    told = Told()
    for days in (5, 4, 3):
        past_run(target, NOW - timedelta(days=days), rows_read=100)
    odd = past_run(target, NOW - timedelta(hours=3), rows_read=3)
    assert watch(target, NOW, told)["new"] == [f"unusual inbox/activities/{odd}.xlsx"]
    assert told[0][0] == "Progression health for acme: 1 unusual file(s)"
    assert "3 rows read, against a median of 100 over the 3 activities imports before it" in told[0][2]
    assert watch(target, NOW + timedelta(hours=1), told)["new"] == [] and len(told) == 1


def test_a_dry_run_or_a_customer_nobody_hears_remembers_nothing(daily):
    told = Told()
    assert watch(daily, NOW, told, dry_run=True) == {
        "customer": "acme",
        "state": "late",
        "new": ["late"],
        "told": False,
        "cleared": [],
    }
    assert told == []
    assert watch(daily, NOW, lambda *message: False)["told"] is False  # no notify configured
    assert watch(daily, NOW, told)["told"] is True and len(told) == 1  # so the first real telling still comes


def test_worst_first(target):
    past_run(target, NOW - timedelta(hours=1), status="failed")

    def health_of(slug: str, **settings):
        return customer_health(replace(target, customer=replace(target.customer, slug=slug, **settings)), NOW)

    healths = [health_of("quiet"), health_of("globex", expect_files_every="1d"), health_of("acme")]
    assert [(h.customer, h.state) for h in worst_first(healths)] == [
        ("acme", "failing"),
        ("globex", "late"),
        ("quiet", "no_expectation"),
    ]
