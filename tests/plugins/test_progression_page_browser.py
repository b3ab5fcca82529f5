"""The Progression page in a real browser (Playwright driving Debian's Chromium) against a real Airflow API server
with the simple auth manager, an admin and a viewer: the morning routine a data engineer follows, button by button.
One API server for the module; the actions' DAG runs are created through Airflow's REST API and not executed (no
scheduler): where a test needs a run's result, it runs the DAG's work in-process under the DAG run's id, as the worker
would, and ends the DAG run in Airflow's metadata database as the scheduler would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from progression import ledger, pipeline, undo
from progression.customers import Customer
from progression.db import engine_for
from demo_platform import drop_sample_files, seed_platform
from progression.platform import create_platform_tables
from progression.runs import Target
from support import SMALL

ROOT = Path(__file__).resolve().parents[2]
# README's screenshots are remade with PROGRESSION_SCREENSHOTS=docs/screenshots; otherwise they go to a temporary
# folder, so a test run leaves the tree as it was.
SCREENSHOTS = Path(os.environ.get("PROGRESSION_SCREENSHOTS") or tempfile.mkdtemp(prefix="progression-screens-"))
CHROMIUM = "/usr/bin/chromium"
USERS = {"admin": "admin-password", "viewer": "viewer-password"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """acme's platform with a night's imports in its ledger and a file that failed after them (so acme is failing),
    a file waiting, globex expected daily but never imported (late), and Airflow's API server serving the page."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required under CI=true (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    here = tmp_path_factory.mktemp("page")
    engine = engine_for(f"sqlite:///{here / 'acme.db'}")
    create_platform_tables(engine)
    ledger.upgrade(engine)
    seed_platform(engine, "acme", sizes=SMALL)
    root = here / "acme"
    customer = Customer(slug="acme", platform_conn_id="acme_db", platform="acme", storage=f"file://{root}")
    target = Target(customer=customer, root=root, engine=engine)

    def import_inbox(airflow_run_id: str) -> None:
        for job in pipeline.plan(
            target,
            path=None,
            content_type=None,
            dry_run=False,
            on_existing=None,
            force=False,
            airflow_run_id=airflow_run_id,
            started=datetime.now(timezone.utc),
        ):
            pipeline.run_file(target, job)

    drop_sample_files(engine, "acme", root)
    import_inbox("scheduled__night")
    (root / "inbox" / "activities" / "broken.csv").write_text("Name,Score\nann,3\n")  # no mandatory column
    import_inbox("manual__morning")
    (root / "inbox" / "journeys").mkdir(parents=True, exist_ok=True)
    (root / "inbox" / "journeys" / "week-12.csv").write_text("User email,Content uuid\n")
    registry = here / "customers.yaml"
    registry.write_text(
        "".join(
            f"{slug}:\n  platform_conn_id: acme_db\n  platform: {slug}\n  storage: file://{here / slug}\n"
            "  expect_files_every: 1d\n"
            for slug in ("acme", "globex")
        )
    )
    passwords = here / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(here / "home"),
        "PROGRESSION_CUSTOMERS": str(registry),
        "AIRFLOW_CONN_ACME_DB": json.dumps({"conn_type": "sqlite", "host": str(here / "acme.db")}),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
    }
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run([str(ROOT / "bin/airflow"), *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    log = (here / "api-server.log").open("w")
    server = subprocess.Popen(
        [str(ROOT / "bin/airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # polling until the server listens, not a timing assertion
            assert server.poll() is None and time.monotonic() < deadline, (here / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        tokens = {
            user: httpx.post(f"{api}/auth/token", json={"username": user, "password": password}).json()["access_token"]
            for user, password in USERS.items()
        }
        yield {
            "api": api,
            "tokens": tokens,
            "metadata": here / "home" / "airflow.db",
            "target": target,
            "root": root,
            "engine": engine,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(airflow):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def logged_in(browser, airflow, user: str):
    """A 1,366 px wide browser holding the user's session cookie, as the API server's login sets it."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.add_cookies([{"name": "_token", "value": airflow["tokens"][user], "url": airflow["api"]}])
    return context.new_page()


def dag_run(airflow, dag_id: str, dag_run_id: str) -> dict:
    return httpx.get(
        f"{airflow['api']}/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}",
        headers={"Authorization": f"Bearer {airflow['tokens']['admin']}"},
    ).json()


def runs_of(airflow, dag_id: str) -> list[dict]:
    with airflow["engine"].connect() as conn:
        return [r for r in ledger.list_runs(conn, customer="acme") if r["dag_id"] == dag_id]


def action_of(page) -> tuple[str, str]:
    """The DAG run the page follows after a button, from its address."""
    from urllib.parse import parse_qs, urlparse

    query = parse_qs(urlparse(page.url).query)
    return query["action_dag"][0], query["action_run"][0]


def test_the_overview_fits_1366_px_and_leads_to_a_failing_customers_failed_run(browser, airflow):
    failed = next(r for r in runs_of(airflow, "progression_import") if r["status"] == "failed")
    page = logged_in(browser, airflow, "admin")
    page.goto(f"{airflow['api']}/progression/")
    rows = page.locator("#overview tbody tr")
    assert [rows.nth(i).get_attribute("id") for i in range(rows.count())] == ["customer-acme", "customer-globex"]
    assert [rows.nth(i).locator("td").nth(1).locator("span").inner_text() for i in range(2)] == ["failing", "late"]
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.screenshot(path=SCREENSHOTS / "overview.png", full_page=True)
    page.click("#customer-acme a:has-text('broken.csv')")
    assert page.url == f"{airflow['api']}/progression/runs/acme/{failed['run_id']}"
    assert "failed/activities/broken.csv" in page.locator("code").all_inner_texts()


def test_the_runs_list_fits_1366_px_and_filters(browser, airflow):
    page = logged_in(browser, airflow, "admin")
    page.goto(f"{airflow['api']}/progression/runs")
    assert page.locator("#runs tbody tr").count() == len(runs_of(airflow, "progression_import"))
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.screenshot(path=SCREENSHOTS / "runs.png", full_page=True)
    page.select_option("select[name=status]", "failed")
    page.click("button[type=submit]")
    assert page.locator("#runs tbody tr").count() == 1 and "broken.csv" in page.locator("#runs tbody").inner_text()


def test_undo_a_run_with_a_preview_first(browser, airflow):
    imported = next(r for r in runs_of(airflow, "progression_import") if r["status"] == "succeeded" and r["imported"])
    page = logged_in(browser, airflow, "admin")
    page.goto(f"{airflow['api']}/progression/runs/acme/{imported['run_id']}")
    page.click("button[name=undo-preview]")
    dag_id, dag_run_id = action_of(page)
    made = dag_run(airflow, dag_id, dag_run_id)
    assert made["conf"] == {"customer": "acme", "run_id": imported["run_id"], "dry_run": True}
    assert made["triggering_user_name"] == "admin" and page.locator("#action-state").inner_text() == "queued"
    # The worker's part, under the DAG run's id; then the DAG run ends and the page, polling, shows the preview.
    target = airflow["target"]
    undo.run_undo(
        target,
        undo.plan(
            target,
            run_id=imported["run_id"],
            dry_run=True,
            force=False,
            airflow_run_id=dag_run_id,
            started=datetime.now(timezone.utc),
        ),
    )
    with sqlite3.connect(airflow["metadata"]) as metadata:  # as the scheduler ends a DAG run whose tasks succeeded
        metadata.execute("UPDATE dag_run SET state = 'success' WHERE dag_id = ? AND run_id = ?", (dag_id, dag_run_id))
    page.wait_for_selector("#undo-preview")  # the page reloads itself once the DAG run has ended
    assert page.locator("#action-state").inner_text() == "success"
    preview = page.locator("#undo-preview").inner_text()
    assert "would restore" in preview and "restored" in preview and "removed" in preview
    page.screenshot(path=SCREENSHOTS / "undo-preview.png", full_page=True)
    page.click("button[name=undo-confirm]")
    dag_id, dag_run_id = action_of(page)
    assert dag_run(airflow, dag_id, dag_run_id)["conf"] == {
        "customer": "acme",
        "run_id": imported["run_id"],
        "dry_run": False,
    }


def test_rerun_a_failed_file(browser, airflow):
    failed = next(r for r in runs_of(airflow, "progression_import") if r["status"] == "failed")
    page = logged_in(browser, airflow, "admin")
    page.goto(f"{airflow['api']}/progression/runs/acme/{failed['run_id']}")
    assert "failed/activities/broken.csv" in page.locator("code").all_inner_texts()
    page.screenshot(path=SCREENSHOTS / "failed-run.png", full_page=True)
    page.click("button[name=rerun]")
    dag_id, dag_run_id = action_of(page)
    assert dag_run(airflow, dag_id, dag_run_id)["conf"] == {"customer": "acme", "path": "inbox/activities/broken.csv"}
    assert (airflow["root"] / "inbox" / "activities" / "broken.csv").exists()
    assert not (airflow["root"] / "failed" / "activities" / "broken.csv").exists()


def test_a_dry_run_import_of_a_waiting_file(browser, airflow):
    page = logged_in(browser, airflow, "admin")
    page.goto(f"{airflow['api']}/progression/runs?customer=acme")
    page.click("text=files waiting in acme's inbox")
    page.click("tr:has-text('week-12.csv') button[name=dry-run-import]")
    dag_id, dag_run_id = action_of(page)
    made = dag_run(airflow, dag_id, dag_run_id)
    assert made["conf"] == {"customer": "acme", "path": "inbox/journeys/week-12.csv", "dry_run": True}
    assert made["triggering_user_name"] == "admin"
    assert page.get_by_role("link", name=dag_run_id).get_attribute("href") == f"/dags/{dag_id}/runs/{dag_run_id}"


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused(browser, airflow):
    page = logged_in(browser, airflow, "viewer")
    succeeded = next(r for r in runs_of(airflow, "progression_import") if r["status"] == "succeeded")
    for path in (f"runs/acme/{succeeded['run_id']}", "customers/acme/waiting"):
        page.goto(f"{airflow['api']}/progression/{path}")
        assert page.locator("button").count() == 0
    before = len(runs_of(airflow, "progression_undo"))
    forged = page.request.post(
        f"{airflow['api']}/progression/actions/undo/acme/{succeeded['run_id']}", form={"dry_run": "false"}
    )
    assert forged.status == 403 and "you may not trigger progression_undo" in forged.text()
    listed = httpx.get(
        f"{airflow['api']}/api/v2/dags/progression_undo/dagRuns",
        headers={"Authorization": f"Bearer {airflow['tokens']['admin']}"},
    ).json()
    assert all(run["triggering_user_name"] == "admin" for run in listed["dag_runs"])
    assert len(runs_of(airflow, "progression_undo")) == before
