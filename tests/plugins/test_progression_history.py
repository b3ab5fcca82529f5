"""The run history page: through FastAPI's test client, and once in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from progression import ledger
from progression.db import engine_for
from progression.platform import create_platform_tables


@pytest.fixture
def ledgers(tmp_path, monkeypatch):
    """Two customers on one platform database, a third on another, with runs in their ledgers."""
    databases = {"main": tmp_path / "main.db", "other": tmp_path / "other.db"}
    for name, path in databases.items():
        engine = engine_for(f"sqlite:///{path}")
        create_platform_tables(engine)
        ledger.upgrade(engine)
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    registry = tmp_path / "customers.yaml"
    registry.write_text("".join(
        f"{slug}:\n  platform_conn_id: {db}_db\n  platform: {slug}\n  storage: file://{tmp_path / slug}\n"
        for slug, db in (("acme", "main"), ("globex", "main"), ("initech", "other"))))
    monkeypatch.setenv("PROGRESSION_CUSTOMERS", str(registry))
    now = datetime.now(timezone.utc)

    def add(db, customer, run_id, minutes_ago, status="succeeded", **counts):
        engine = engine_for(f"sqlite:///{databases[db]}")
        with engine.begin() as conn:
            conn.execute(sa.insert(ledger.runs).values(
                run_id=run_id, customer=customer, dag_id=counts.pop("dag_id", "progression_import"),
                airflow_run_id=f"manual__{run_id}", subject=counts.pop("subject", f"inbox/activities/{run_id}.xlsx"),
                status=status, dry_run=False, started_at=now - timedelta(minutes=minutes_ago),
                finished_at=now - timedelta(minutes=minutes_ago) + timedelta(seconds=12),
                rejected_by_reason=json.dumps(counts.pop("reasons", {})), **counts))

    add("main", "acme", "import-acme-1", 300, imported=120, derived_written=40, rejected=3,
        reasons={"unknown user": 2, "unreadable date": 1}, rows_read=123, report_path="reports/r1.xlsx")
    add("main", "globex", "import-globex-1", 200, status="failed", rows_read=10, rejected=8, message="too many")
    add("other", "initech", "import-initech-1", 100, imported=5, rows_read=5)
    add("main", "acme", "transfer-acme-1", 50, dag_id="progression_transfer", subject="old -> new", imported=7,
        undone_by="undo-acme-1")
    report = tmp_path / "acme" / "reports" / "r1.xlsx"
    report.parent.mkdir(parents=True)
    report.write_bytes(b"PK\x03\x04 the workbook")
    return add


@pytest.fixture
def client(ledgers):
    from airflow.api_fastapi.core_api.security import get_user
    from progression_history import app

    app.dependency_overrides[get_user] = lambda: {"name": "data-team"}
    yield TestClient(app)
    app.dependency_overrides.clear()


def run_ids_on(page: str) -> list[str]:
    import re

    return re.findall(r'/runs/[a-z]+/([a-z0-9-]+)"', page)


def test_an_anonymous_request_is_refused(ledgers):
    from progression_history import app

    assert TestClient(app).get("/").status_code == 401


def test_runs_of_every_database_newest_first(client):
    page = client.get("/").text
    assert run_ids_on(page) == ["transfer-acme-1", "import-initech-1", "import-globex-1", "import-acme-1"]
    assert "undone by undo-acme-1" in page and 'href="/dags/progression_import/runs/manual__import-acme-1"' in page
    assert "4 runs" in page


@pytest.mark.parametrize("query, expected", [
    ("customer=acme", ["transfer-acme-1", "import-acme-1"]),
    ("dag_id=progression_transfer", ["transfer-acme-1"]),
    ("status=failed", ["import-globex-1"]),
    (f"since={datetime.now(timezone.utc).date()}&customer=initech", ["import-initech-1"]),
    ("until=2000-01-01", []),
])
def test_filters(client, query, expected):
    assert run_ids_on(client.get(f"/?{query}").text) == expected


def test_pages_of_fifty(client, ledgers):
    for i in range(60):
        ledgers("other", "initech", f"import-initech-bulk-{i:02d}", 1000 + i, rows_read=1)
    first, second = client.get("/").text, client.get("/?page=2").text
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


def test_the_page_renders_in_a_real_browser(client, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required under CI=true (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    import uvicorn

    from progression_history import app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
        for _ in range(50):
            if server.started:
                break
            threading.Event().wait(0.1)  # the server thread binding its port, not a timing assertion
        listing = subprocess.run([*flags, "--dump-dom", f"http://127.0.0.1:{port}/"], capture_output=True,
                                 text=True, timeout=120)
        assert run_ids_on(listing.stdout)[:2] == ["transfer-acme-1", "import-initech-1"], listing.stderr[-2000:]
        detail = subprocess.run([*flags, "--dump-dom", f"http://127.0.0.1:{port}/runs/acme/import-acme-1"],
                                capture_output=True, text=True, timeout=120)
        assert detail.stdout.count('class="bar"') == 30
        shot = tmp_path / "detail.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,900",
                        f"http://127.0.0.1:{port}/runs/acme/import-acme-1"], capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 5_000
    finally:
        server.should_exit = True
        thread.join(timeout=10)
