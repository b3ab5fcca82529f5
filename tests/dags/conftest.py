"""Running DAGs as a person does: `bin/airflow` with an Airflow home, a registry and connections of the test's
own. The metadata database is migrated once per session."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import sqlalchemy as sa

from dags_support import ROOT
from progression import ledger
from progression.db import engine_for
from demo_platform import seed_platform
from progression.platform import create_platform_tables
from support import PG_URL, SMALL, drop_database, recreate_database, require_postgres, write_registry


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
    customers = {}
    for slug, active in (("acme", True), ("globex", True), ("initech", False)):
        db = tmp_path / f"{slug}.db"
        engine = engine_for(f"sqlite:///{db}")
        create_platform_tables(engine)
        ledger.upgrade(engine)
        seed_platform(engine, slug, sizes=SMALL)
        env[f"AIRFLOW_CONN_{slug.upper()}_DB"] = json.dumps({"conn_type": "sqlite", "host": str(db)})
        customers[slug] = {
            "platform_conn_id": f"{slug}_db",
            "platform": slug,
            "storage": f"file://{tmp_path / slug}",
            "timezone": "Europe/Amsterdam",
            "active": active,
        }
    write_registry(registry, customers)
    return {"env": env, "dir": tmp_path, "home": airflow_home}


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    require_postgres()
    name = f"progression_dag_{os.getpid()}"
    admin = sa.make_url(PG_URL)
    yield recreate_database(admin, name)
    drop_database(admin, name)
