"""What the tests share besides fixtures: the PostgreSQL under test, the platform sizes, a fixed now, and the ways
tests put things in a platform, a storage or a registry and read them back."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from demo_platform import DemoSizes
from progression import ledger
from progression.platform import (
    completions,
    content,
    content_groups,
    content_items,
    group_members,
    groups,
    platforms,
    users,
)
from progression.runs import IMPORT_DAG

PG_URL = os.environ.get("PROGRESSION_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/progression_test")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
SMALL = DemoSizes(
    users=40,
    programmes=2,
    journeys_per_programme=2,
    activities_per_journey=3,
    shared_items=1,
    standalone_activities=2,
    groups=2,
    users_without_group=5,
)


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


def past_run(
    target,
    at,
    *,
    status="succeeded",
    rows_read=100,
    written=None,
    content_type="activities",
    dag_id=IMPORT_DAG,
    dry_run=False,
    message=None,
) -> str:
    """A run in the ledger as the pipeline leaves it, started at `at` and finished a minute later."""
    run_id = ledger.new_run_id("import", target.customer.slug, at)
    with target.engine.begin() as conn:
        ledger.start_run(
            conn,
            run_id=run_id,
            customer=target.customer.slug,
            dag_id=dag_id,
            content_type=content_type,
            subject=f"inbox/{content_type}/{run_id}.xlsx",
            dry_run=dry_run,
        )
        ledger.record_counts(
            conn, run_id, ledger.RunCounts(rows_read=rows_read, imported=rows_read if written is None else written)
        )
        ledger.finish_run(conn, run_id, status, message=message)
        ledger.update_run(conn, run_id, started_at=at, finished_at=at + timedelta(minutes=1))
    return run_id


def stored(engine) -> dict:
    """(email, uuid) -> (UTC timestamp, source, run_id) for every completion."""
    query = (
        sa.select(users.c.email, content.c.uuid, completions.c.completed_at, completions.c.source, completions.c.run_id)
        .join(users, users.c.id == completions.c.user_id)
        .join(content, content.c.id == completions.c.content_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {(e, str(u)): (as_utc(at), source, run_id) for e, u, at, source, run_id in rows}


def as_utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc(text: str) -> pd.Timestamp:
    """A time as text, in UTC: naive text is taken as UTC, text with an offset is converted."""
    stamp = pd.Timestamp(text)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def complete(engine, email: str, uuid: str, at: str, source: str = "platform", run_id: str | None = None) -> None:
    """A completion as the platform itself (or the run named) would have it."""
    with engine.begin() as conn:
        user_id = conn.execute(sa.select(users.c.id).where(users.c.email == email)).scalar_one()
        content_id = conn.execute(sa.select(content.c.id).where(content.c.uuid == uuid)).scalar_one()
        conn.execute(
            sa.insert(completions).values(
                user_id=user_id,
                content_id=content_id,
                completed_at=utc(at).to_pydatetime(),
                source=source,
                run_id=run_id,
            )
        )


def count_completions(engine, source: str | None = None) -> int:
    """How many completions the platform holds (of one source)."""
    query = sa.select(sa.func.count()).select_from(completions)
    if source:
        query = query.where(completions.c.source == source)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def children(engine, uuid: str) -> list[str]:
    """The uuids of what an item contains, in the platform's order."""
    parent = content.alias("parent")
    query = (
        sa.select(content.c.uuid)
        .join(content_items, content_items.c.child_id == content.c.id)
        .join(parent, parent.c.id == content_items.c.parent_id)
        .where(parent.c.uuid == uuid)
        .order_by(content_items.c.position, content.c.id)
    )
    with engine.connect() as conn:
        return [str(u) for u in conn.execute(query).scalars()]


def journal_of(engine, run_id: str) -> list[dict]:
    """The change journal of one run."""
    journal = ledger.journal
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(journal)
                .where(journal.c.run_id == run_id)
                .order_by(journal.c.action, journal.c.user_id, journal.c.content_id)
            ).mappings()
        ]


def sheet(target, job, name: str) -> list[tuple]:
    """Every row of one sheet of a run's report, the header first."""
    book = openpyxl.load_workbook(target.root / job.report, read_only=True)
    return list(book[name].iter_rows(values_only=True))


def refuse_inserts_of(engine, content_uuid: str, message: str = "completions of this item are locked") -> None:
    """A platform rule of the kind a real platform has: a trigger that refuses every new completion of one item."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.content_id = (SELECT id FROM content "
                    f"WHERE uuid = '{content_uuid}') THEN RAISE EXCEPTION '{message}' USING "
                    "ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text("CREATE TRIGGER refuse BEFORE INSERT ON completions FOR EACH ROW EXECUTE FUNCTION refuse()")
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON completions WHEN NEW.content_id = (SELECT id FROM content "
                    f"WHERE uuid = '{content_uuid}') BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
            )


@dataclass(frozen=True)
class People:
    """Users of a seeded platform by what they may see, looked up in its groups (not by the generator's order)."""

    no_group: str  # in no group: sees nothing
    group_0: str  # in the group given the first programme
    group_1: str  # in the group given the second programme
    also_group_1: str  # another user in that group


def people(engine, slug: str) -> People:
    """Who is who on the platform `slug` (seeded with groups, and users left out of them)."""
    with engine.connect() as conn:
        pid = conn.execute(sa.select(platforms.c.id).where(platforms.c.slug == slug)).scalar_one()
        alone = (
            conn.execute(
                sa.select(users.c.email)
                .where(users.c.platform_id == pid, ~sa.exists().where(group_members.c.user_id == users.c.id))
                .order_by(users.c.id)
            )
            .scalars()
            .first()
        )
        programmes = (
            sa.select(content.c.id)
            .where(content.c.platform_id == pid, content.c.type == "programme")
            .order_by(content.c.id)
            .limit(2)
        )
        members = []
        for programme in conn.execute(programmes).scalars():
            members.append(
                list(
                    conn.execute(
                        sa.select(users.c.email)
                        .join(group_members, group_members.c.user_id == users.c.id)
                        .join(groups, groups.c.id == group_members.c.group_id)
                        .join(content_groups, content_groups.c.group_id == groups.c.id)
                        .where(content_groups.c.content_id == programme)
                        .order_by(users.c.id)
                    ).scalars()
                )
            )
    return People(no_group=alone, group_0=members[0][0], group_1=members[1][0], also_group_1=members[1][1])


def write_registry(path: Path, customers: dict[str, dict]) -> Path:
    """A registry file as the service desk keeps it: one entry per customer slug."""
    path.write_text(yaml.safe_dump(customers, sort_keys=False))
    return path


def update_customer(path: Path, slug: str, **settings) -> None:
    """Change one customer's entry of a registry file, the rest as it was."""
    registry = yaml.safe_load(path.read_text())
    registry[slug].update(settings)
    write_registry(path, registry)


def smtp_connection(port: int) -> str:
    """An Airflow connection (as AIRFLOW_CONN_* JSON) to the loopback SMTP server of the `mailbox` fixture."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "progression@lxp.example"},
        }
    )


def slack_connection(url: str) -> str:
    """An Airflow connection (as AIRFLOW_CONN_* JSON) to the loopback webhook of the `webhook` fixture."""
    return json.dumps({"conn_type": "slackwebhook", "password": url})


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
