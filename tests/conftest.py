"""Shared fixtures: a platform database on SQLite and on the real PostgreSQL, a seeded demo platform, storage."""

from __future__ import annotations

import gc
import json
import socket
import sys
import threading
import uuid

import pytest
import sqlalchemy as sa

from progression import ledger
from progression.customers import Customer
from progression.db import engine_for
from demo_platform import DemoSizes, describe, seed_platform
from progression.runs import Target
from progression.platform import create_platform_tables
from support import PG_URL, SMALL, People, people, require_postgres


_modules_when_frozen = 0


@pytest.fixture(autouse=True)
def frozen_heap():
    """The import stages hand memory back between them with gc.collect(), which walks every live object: in a test
    process holding Airflow, Great Expectations and pandas that costs a third of a second each time, minutes over
    the suite. Modules live for the whole session anyway: once a test has loaded many new ones, they and everything
    else alive are frozen (gc.freeze), so the collections walk only what the tests themselves make."""
    global _modules_when_frozen
    yield
    if len(sys.modules) > _modules_when_frozen + 100:
        gc.collect()
        gc.freeze()
        _modules_when_frozen = len(sys.modules)


def pytest_addoption(parser):
    parser.addoption(
        "--db", default="sqlite,postgresql", help="platform databases to run the database tests on (comma-separated)"
    )


def pytest_generate_tests(metafunc):
    if "db_kind" in metafunc.fixturenames:
        kinds = [k.strip() for k in metafunc.config.getoption("--db").split(",") if k.strip()]
        metafunc.parametrize("db_kind", kinds)


@pytest.fixture
def engine(db_kind, tmp_path):
    """An empty platform database with the platform's and the project's tables."""
    if db_kind == "sqlite":
        engine = engine_for(f"sqlite:///{tmp_path / 'platform.db'}")
    else:
        require_postgres()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engine = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    create_platform_tables(engine)
    ledger.upgrade(engine)
    yield engine
    engine.dispose()
    if db_kind != "sqlite":
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def platform(engine):
    """A small demo platform `acme` and a second platform `other` whose content must never be written."""
    seed_platform(engine, "acme", sizes=SMALL)
    seed_platform(
        engine,
        "other",
        sizes=DemoSizes(
            users=5, programmes=1, journeys_per_programme=1, activities_per_journey=2, groups=1, users_without_group=0
        ),
    )
    return describe(engine, "acme")


@pytest.fixture
def who(engine, platform) -> People:
    """The users of `acme` by what they may see: in no group, in the group of its first or second programme."""
    return people(engine, "acme")


@pytest.fixture
def customer(tmp_path) -> Customer:
    return Customer(
        slug="acme",
        platform_conn_id="unused",
        platform="acme",
        storage=str(tmp_path / "storage"),
        timezone="Europe/Amsterdam",
        date_order="DMY",
        on_existing="keep",
        max_error_rate=1.0,
    )


@pytest.fixture
def target(customer, engine, platform, tmp_path) -> Target:
    root = tmp_path / "storage"
    root.mkdir()
    return Target(customer=customer, root=root, engine=engine)


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
