"""The run history page: through FastAPI's test client, and once in a real headless Chromium."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from progression import ledger, storage
from progression.db import engine_for
from progression.platform import create_platform_tables


@pytest.fixture
def ledgers(tmp_path, monkeypatch):
    """Two customers on one platform database, two more on another, with runs in their ledgers (the fourth has
    none and no expectation of files)."""
    databases = {"main": tmp_path / "main.db", "other": tmp_path / "other.db"}
    for name, path in databases.items():
        engine = engine_for(f"sqlite:///{path}")
        create_platform_tables(engine)
        ledger.upgrade(engine)
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    registry = tmp_path / "customers.yaml"
    registry.write_text(
        "".join(
            f"{slug}:\n  platform_conn_id: {db}_db\n  platform: {slug}\n  storage: file://{tmp_path / slug}\n"
            + (f"  expect_files_every: {every}\n" if every else "")
            for slug, db, every in (
                ("acme", "main", "1d"),
                ("globex", "main", "1d"),
                ("initech", "other", "1h"),
                ("umbrella", "other", None),
            )
        )
    )
    monkeypatch.setenv("PROGRESSION_CUSTOMERS", str(registry))
    now = datetime.now(timezone.utc)

    def add(db, customer, run_id, minutes_ago, status="succeeded", **counts):
        engine = engine_for(f"sqlite:///{databases[db]}")
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ledger.runs).values(
                    run_id=run_id,
                    customer=customer,
                    dag_id=counts.pop("dag_id", "progression_import"),
                    airflow_run_id=f"manual__{run_id}",
                    subject=counts.pop("subject", f"inbox/activities/{run_id}.xlsx"),
                    status=status,
                    dry_run=False,
                    started_at=now - timedelta(minutes=minutes_ago),
                    finished_at=now - timedelta(minutes=minutes_ago) + timedelta(seconds=12),
                    rejected_by_reason=json.dumps(counts.pop("reasons", {})),
                    **counts,
                )
            )

    add(
        "main",
        "acme",
        "import-acme-1",
        300,
        imported=120,
        derived_written=40,
        rejected=3,
        reasons={"unknown user": 2, "unreadable date": 1},
        rows_read=123,
        report_path="reports/r1.xlsx",
    )
    add("main", "globex", "import-globex-1", 200, status="failed", rows_read=10, rejected=8, message="too many")
    add("other", "initech", "import-initech-1", 100, imported=5, rows_read=5)
    add(
        "main",
        "acme",
        "transfer-acme-1",
        50,
        dag_id="progression_transfer",
        subject="old -> new",
        imported=7,
        undone_by="undo-acme-1",
    )
    report = tmp_path / "acme" / "reports" / "r1.xlsx"
    report.parent.mkdir(parents=True)
    report.write_bytes(b"PK\x03\x04 the workbook")
    return add


def as_user(role: str) -> TestClient:
    """The page as a user of Airflow's simple auth manager with this role sees it (the real auth manager decides)."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from progression_history_page import app

    create_auth_manager()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username=role, role=role)
    return TestClient(app)


@pytest.fixture
def client(ledgers):
    from progression_history_page import app

    yield as_user("admin")
    app.dependency_overrides.clear()


@pytest.fixture
def viewer(ledgers):
    from progression_history_page import app

    yield as_user("viewer")
    app.dependency_overrides.clear()


def run_ids_on(page: str) -> list[str]:
    import re

    return re.findall(r'/runs/[a-z]+/([a-z0-9-]+)"', page)


def test_an_anonymous_request_is_refused(ledgers):
    from progression_history_page import app

    assert TestClient(app).get("/").status_code == 401


def overview(page: str) -> dict[str, list[str]]:
    """The overview's rows, worst first: each customer's cells as text."""
    import re

    rows = re.findall(r'<tr id="customer-([a-z]+)">(.*?)</tr>', page, re.S)
    return {
        slug: [
            " ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for slug, row in rows
    }


def test_the_overview_lists_every_customer_worst_first(client, tmp_path):
    waiting = tmp_path / "globex" / "inbox" / "journeys" / "week-12.xlsx"
    waiting.parent.mkdir(parents=True)
    waiting.write_bytes(b"PK")
    page = client.get("/").text
    rows = overview(page)
    assert list(rows) == ["globex", "initech", "acme", "umbrella"]  # failing, late, ok, no expectation
    assert "4 customers: 1 failing · 1 late · 1 ok · 1 no expectation" in " ".join(
        __import__("re").sub(r"<[^>]+>", " ", page).split()
    )
    # state, last success, waiting, last failure, failed in a row, written in 7 and 30 days, unusual files
    globex, initech, acme, umbrella = rows.values()
    assert globex[1] == "failing expects files every 1d" and globex[2] == "never" and globex[3] == "1"
    assert globex[4].endswith("3 h ago inbox/activities/import-globex-1.xlsx too many")
    assert globex[5:] == ["1", "0", "0", ""]
    assert initech[1] == "late expects files every 1h" and initech[2].endswith("99 min ago 5 completions")
    assert initech[3:] == ["0", "", "0", "5", "5", ""]
    assert acme[1] == "ok expects files every 1d" and acme[2].endswith("4 h ago 160 completions")
    assert acme[5:] == ["0", "167", "167", ""]  # the import's 120 + 40 through the hierarchy, the transfer's 7
    assert umbrella[1:] == ["no expectation", "never", "0", "", "0", "0", "0", ""]
    for link in (
        'href="/progression/runs?customer=globex">globex</a>',
        'href="/progression/customers/globex/waiting">1</a>',
        'href="/progression/runs/globex/import-globex-1">inbox/activities/import-globex-1.xlsx</a>',
        'href="/progression/runs/acme/import-acme-1">',
        'href="/progression/runs?customer=umbrella"',
    ):
        assert link in page


def test_an_unusual_file_on_the_overview(client, ledgers):
    for day in (4, 3, 2):
        ledgers(
            "main",
            "acme",
            f"import-acme-day-{day}",
            day * 24 * 60,
            content_type="activities",
            rows_read=100,
            imported=100,
        )
    ledgers("main", "acme", "import-acme-huge", 30, content_type="activities", rows_read=5000, imported=5000)
    acme = overview(client.get("/").text)["acme"]
    assert acme[1] == "unusual expects files every 1d" and acme[2].endswith("29 min ago 5,000 completions")
    assert acme[-1] == "inbox/activities/import-acme-huge.xlsx : 5,000 rows read, usually 100"


def test_runs_of_every_database_newest_first(client):
    page = client.get("/runs").text
    assert run_ids_on(page) == ["transfer-acme-1", "import-initech-1", "import-globex-1", "import-acme-1"]
    assert "undone by undo-acme-1" in page and 'href="/dags/progression_import/runs/manual__import-acme-1"' in page
    assert "4 runs" in page


@pytest.mark.parametrize(
    "query, expected",
    [
        ("customer=acme", ["transfer-acme-1", "import-acme-1"]),
        ("dag_id=progression_transfer", ["transfer-acme-1"]),
        ("status=failed", ["import-globex-1"]),
        # the day of the initech run, made 100 minutes ago (yesterday, just after midnight)
        (
            f"since={(datetime.now(timezone.utc) - timedelta(minutes=100)).date()}&customer=initech",
            ["import-initech-1"],
        ),
        ("until=2000-01-01", []),
    ],
)
def test_filters(client, query, expected):
    assert run_ids_on(client.get(f"/runs?{query}").text) == expected


def test_pages_of_fifty(client, ledgers):
    for i in range(60):
        ledgers("other", "initech", f"import-initech-bulk-{i:02d}", 1000 + i, rows_read=1)
    first, second = client.get("/runs").text, client.get("/runs?page=2").text
    assert len(run_ids_on(first)) == 50 and len(run_ids_on(second)) == 14
    assert "page 2 of 2 (64 runs)" in second and set(run_ids_on(first)).isdisjoint(run_ids_on(second))


def test_a_runs_detail_with_reasons_and_thirty_days_of_completions(client):
    page = client.get("/runs/acme/import-acme-1").text
    assert "unknown user</td><td class='n'>2" in page and "unreadable date" in page
    assert page.count('<rect class="bar"') == 30
    per_day = [int(n.replace(",", "")) for n in __import__("re").findall(r": ([\d,]+)</title>", page)]
    assert sum(per_day) == 120 + 40 + 7  # the import (direct and through the hierarchy) and the transfer
    assert client.get("/runs/acme/import-globex-1").status_code == 404  # another customer's run


def test_the_report_downloads(client):
    response = client.get("/report/acme/import-acme-1")
    assert response.status_code == 200 and response.content == b"PK\x03\x04 the workbook"
    assert 'filename="r1.xlsx"' in response.headers["content-disposition"]
    assert client.get("/report/globex/import-globex-1").status_code == 404


def test_each_kind_of_run_in_its_own_words(client, ledgers):
    # An undo of an import that added 20 completions, 2 of which a later run changed since: undo.apply's ledger row.
    ledgers(
        "main",
        "acme",
        "undo-acme-1",
        10,
        dag_id="progression_undo",
        subject="import-acme-1",
        rows_read=20,
        restored=18,
        removed=18,
        conflicts=2,
    )
    ledgers(
        "main",
        "acme",
        "merge-acme-1",
        5,
        dag_id="progression_merge_users",
        subject="a@x -> b@x",
        rows_read=9,
        imported=6,
        kept=3,
        removed=9,
    )
    ledgers(
        "main",
        "acme",
        "transfer-acme-2",
        4,
        dag_id="progression_transfer",
        subject="old -> newer",
        rows_read=5,
        imported=3,
        skipped_without_access=2,
    )
    ledgers("main", "acme", "import-acme-2", 3, rows_read=4, imported=4, saved_without_access=1)
    listing = client.get("/runs?customer=acme").text
    assert "20 completions the run changed · 18 restored · 18 of which removed (the run added them)" in listing
    assert "9 completions of the source accounts · 6 copied · 3 kept (target had an earlier one)" in listing
    assert "5 completed the old item · 3 new item completed · 2 skipped without access" in listing
    assert "123 rows read · 120 written · 3 rejected" in listing
    undo = client.get("/runs/acme/undo-acme-1").text
    assert "<th>restored</th><td class='n'>18" in undo and "<th>conflicts left alone</th><td class='n'>2" in undo
    assert "Imported" not in undo and "rows read" not in undo and "Rejected by reason" not in undo
    merge = client.get("/runs/acme/merge-acme-1").text
    assert "<th>removed from the source accounts</th><td class='n'>9" in merge
    transfer = client.get("/runs/acme/transfer-acme-2").text
    assert "<th>skipped without access</th><td class='n'>2" in transfer and "saved without access" not in transfer
    imported = client.get("/runs/acme/import-acme-2").text
    assert "<th>saved without access</th><td class='n'>1" in imported and "skipped without access" not in imported
    # The undo restored 18 completions: the chart counts what imports, transfers and merges wrote, not restores.
    per_day = [int(n.replace(",", "")) for n in __import__("re").findall(r": ([\d,]+)</title>", undo)]
    assert sum(per_day) == 120 + 40 + 7 + 6 + 3 + 4


def failed_import(ledgers, tmp_path):
    """A failed import of acme whose file import.archive moved to failed/activities/."""
    ledgers(
        "main",
        "acme",
        "import-acme-bad",
        20,
        status="failed",
        subject="inbox/activities/bad.xlsx",
        content_type="activities",
        checksum=storage.checksum(b"bad bytes"),
    )
    failed = tmp_path / "acme" / "failed" / "activities" / "bad.xlsx"
    failed.parent.mkdir(parents=True)
    failed.write_bytes(b"bad bytes")
    return failed


def test_the_run_page_offers_what_the_user_may_do(client, ledgers, tmp_path):
    failed = failed_import(ledgers, tmp_path)
    (failed.parent / "bad.20260101T000000.xlsx").write_bytes(b"other bytes of the same name")
    assert 'name="undo-preview"' in client.get("/runs/acme/import-acme-1").text
    assert 'name="undo-preview"' not in client.get("/runs/acme/transfer-acme-1").text  # undone already
    page = client.get("/runs/acme/import-acme-bad").text
    assert "<code>failed/activities/bad.xlsx</code>" in page and 'name="rerun"' in page
    assert 'name="undo-preview"' not in page  # a failed run wrote nothing to undo
    viewer = as_user("viewer")  # the same app: from here on every request is the viewer's
    for path in ("/runs/acme/import-acme-1", "/runs/acme/import-acme-bad"):
        assert "<button" not in viewer.get(path).text


def test_a_forged_post_from_a_viewer_is_refused_before_anything_moves(viewer, ledgers, tmp_path):
    failed = failed_import(ledgers, tmp_path)
    refused = [
        viewer.post("/actions/rerun/acme/import-acme-bad"),
        viewer.post("/actions/undo/acme/import-acme-1", data={"dry_run": "false"}),
        viewer.post("/actions/dry-run-import/acme", data={"path": "inbox/activities/x.xlsx"}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert "you may not trigger progression_undo" in refused[1].text and failed.exists()


def test_the_waiting_files_of_a_customer(client, tmp_path):
    inbox = tmp_path / "globex" / "inbox" / "journeys"
    inbox.mkdir(parents=True)
    (inbox / "week-12.xlsx").write_bytes(b"PK")
    page = client.get("/customers/globex/waiting").text
    assert "<code>inbox/journeys/week-12.xlsx</code>" in page and 'name="dry-run-import"' in page
    assert client.get("/customers/nobody/waiting").status_code == 404
    assert "<button" not in as_user("viewer").get("/customers/globex/waiting").text


def test_upgrade_adds_the_history_indexes_to_an_existing_ledger(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'old.db'}")
    ledger.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_progression_runs_status_started_at")
    ledger.upgrade(engine)
    assert "ix_progression_runs_status_started_at" in {
        i["name"] for i in sa.inspect(engine).get_indexes("progression_runs")
    }
