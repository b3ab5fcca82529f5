"""What the tests share besides fixtures: the PostgreSQL under test, the platform sizes, a fixed now."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from progression import ledger
from demo_platform import DemoSizes
from progression.platform import completions, content, users
from progression.runs import IMPORT_DAG

PG_URL = os.environ.get("PROGRESSION_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/progression_test")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
SMALL = DemoSizes(users=40, programmes=2, journeys_per_programme=2, activities_per_journey=3, shared_items=1,
                  standalone_activities=2, groups=2, users_without_group=5)


def require_postgres() -> None:
    """Skip when PostgreSQL is not reachable, except under CI=true where that fails the test."""
    try:
        with sa.create_engine(PG_URL).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        problem = f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (required under CI=true)")
        pytest.skip(problem)


def drop(root: Path, rel: str, data: bytes) -> str:
    """Put a file in a customer's storage, as the customer would."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def past_run(target, at, *, status="succeeded", rows_read=100, written=None, content_type="activities",
             dag_id=IMPORT_DAG, dry_run=False, message=None) -> str:
    """A run in the ledger as the pipeline leaves it, started at `at` and finished a minute later."""
    run_id = ledger.new_run_id("import", target.customer.slug, at)
    with target.engine.begin() as conn:
        ledger.start_run(conn, run_id=run_id, customer=target.customer.slug, dag_id=dag_id, content_type=content_type,
                         subject=f"inbox/{content_type}/{run_id}.xlsx", dry_run=dry_run)
        ledger.record_counts(conn, run_id, ledger.RunCounts(rows_read=rows_read, imported=rows_read
                                                            if written is None else written))
        ledger.finish_run(conn, run_id, status, message=message)
        ledger.update_run(conn, run_id, started_at=at, finished_at=at + timedelta(minutes=1))
    return run_id


def stored(engine) -> dict:
    """(email, uuid) -> (UTC timestamp, source, run_id) for every completion."""
    query = (sa.select(users.c.email, content.c.uuid, completions.c.completed_at, completions.c.source,
                       completions.c.run_id)
             .join(users, users.c.id == completions.c.user_id).join(content, content.c.id == completions.c.content_id))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {(e, str(u)): (as_utc(at), source, run_id) for e, u, at, source, run_id in rows}


def as_utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@contextmanager
def loopback_s3() -> Iterator[str]:
    """A real S3 protocol server (moto in server mode) on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def recreate_database(admin_url: sa.URL, name: str) -> sa.URL:
    """A new empty database `name` on the server of `admin_url` (dropped first if there); its URL."""
    drop_database(admin_url, name)
    admin = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.set(database=name)


def drop_database(admin_url: sa.URL, name: str) -> None:
    """Drop `name`, even with sessions still connected."""
    admin = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
