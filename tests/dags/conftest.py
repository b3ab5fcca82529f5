"""Running DAGs as a person does: `bin/airflow` with an Airflow home, a registry and connections of the test's
own. The metadata database is migrated once per session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import pytest
import sqlalchemy as sa

from dags_support import ROOT
from progression import ledger
from progression.db import engine_for
from demo_platform import seed_platform
from progression.platform import create_platform_tables
from support import PG_URL, SMALL, drop_database, recreate_database, require_postgres


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    done = subprocess.run([str(ROOT / "bin/airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return home


@pytest.fixture
def world(airflow_home, tmp_path):
    """Two customers on their own SQLite platform databases, a third that is not active."""
    registry = tmp_path / "customers.yaml"
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "PROGRESSION_CUSTOMERS": str(registry)}
    lines = []
    for slug, active in (("acme", True), ("globex", True), ("initech", False)):
        db = tmp_path / f"{slug}.db"
        engine = engine_for(f"sqlite:///{db}")
        create_platform_tables(engine)
        ledger.upgrade(engine)
        seed_platform(engine, slug, sizes=SMALL)
        env[f"AIRFLOW_CONN_{slug.upper()}_DB"] = json.dumps({"conn_type": "sqlite", "host": str(db)})
        lines += [f"{slug}:", f"  platform_conn_id: {slug}_db", f"  platform: {slug}",
                  f"  storage: file://{tmp_path / slug}", "  timezone: Europe/Amsterdam",
                  f"  active: {str(active).lower()}"]
    registry.write_text("\n".join(lines) + "\n")
    return {"env": env, "dir": tmp_path, "home": airflow_home}


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    require_postgres()
    name = f"progression_dag_{os.getpid()}"
    admin = sa.make_url(PG_URL)
    yield recreate_database(admin, name)
    drop_database(admin, name)


@pytest.fixture
def mailbox():
    """A real SMTP server on loopback that keeps what it receives."""
    from aiosmtpd.controller import Controller

    received = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append({"to": envelope.rcpt_tos, "data": envelope.content.decode("utf-8", "replace")})
            return "250 OK"

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


@pytest.fixture
def webhook():
    """A Slack-style incoming webhook on loopback that keeps what is posted to it."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/hook", received
    server.shutdown()
