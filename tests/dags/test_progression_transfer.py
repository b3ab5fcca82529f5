"""progression_transfer through Airflow itself, as a data engineer runs it: `bin/airflow dags test` with a registry,
connections and storage of the test's own, then the platform database, the storage and the ledger checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from dags_support import ROOT, drop, engine_of, run_dag, summary_line
from support import SMALL
from demo_platform import describe, seed_platform, workbook_bytes
from progression.platform import completions, content, users

pytestmark = pytest.mark.airflow
DAG_ID = "progression_transfer"
IN_GROUP_1, NO_GROUP = 6, 0  # group 1 is given programme 1, which holds journey 2 (see tests/progression)


def completed_journey_0(engine, slug: str) -> tuple[str, str]:
    """Two users completed journey 0; only the first can see journey 2. Returns (journey 0, journey 2)."""
    found = describe(engine, slug)
    j0, j2 = found.uuids["journey"][0], found.uuids["journey"][2]
    with engine.begin() as conn:
        item = conn.execute(sa.select(content.c.id).where(content.c.uuid == j0)).scalar_one()
        for index in (IN_GROUP_1, NO_GROUP):
            user = conn.execute(sa.select(users.c.id).where(users.c.email == found.emails[index])).scalar_one()
            conn.execute(sa.insert(completions).values(user_id=user, content_id=item, source="platform",
                                                       completed_at=sa.func.current_timestamp()))
    return j0, j2


def transferred(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(completions)
                            .where(completions.c.source == "transfer")).scalar()


def test_the_dag_file_parses_without_the_heavy_libraries_and_describes_every_param(world):
    code = ("import json, sys, runpy; runpy.run_path('dags/progression_transfer.py'); "
            "heavy = sorted(m for m in ('pandas', 'great_expectations', 'fastexcel', 'openpyxl') if m in sys.modules); "
            "from airflow.dag_processing.dagbag import DagBag; bag = DagBag(dag_folder='dags'); "
            "assert not bag.import_errors, bag.import_errors; d = bag.get_dag('progression_transfer'); "
            "print(json.dumps([heavy, {k: d.params.get_param(k).description for k in d.params}]))")
    env = {**world["env"], "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy, described = json.loads(done.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert set(described) == {"customer", "old_uuid", "new_uuid", "path", "dry_run", "completion_date",
                              "on_existing"}
    assert all(described.values())


def test_a_pairs_workbook_transferred_for_real(world):
    engine = engine_of(world, "acme")
    j0, j2 = completed_journey_0(engine, "acme")
    drop(world, "acme", "inbox/transfers/q4.xlsx", workbook_bytes(["Old content uuid", "New content uuid"], [[j0, j2]]))
    done = run_dag(world, DAG_ID, {"customer": "acme", "path": "inbox/transfers/q4.xlsx", "dry_run": False})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_line(done, DAG_ID)
    assert summary["status"] == "succeeded" and not summary["dry_run"]
    assert (summary["completed_old"], summary["written_directly"], summary["written_through_contents"],
            summary["skipped_without_access"]) == (2, 1, 3, 1)
    assert transferred(engine) == 4
    assert (world["dir"] / "acme/processed/transfers/q4.xlsx").exists()
    assert (world["dir"] / "acme" / summary["report"]).exists()


def test_a_pair_is_a_dry_run_unless_switched_off(world):
    engine = engine_of(world, "acme")
    j0, j2 = completed_journey_0(engine, "acme")
    done = run_dag(world, DAG_ID, {"customer": "acme", "old_uuid": j0, "new_uuid": j2})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_line(done, DAG_ID)
    assert summary["dry_run"] and summary["transfer"] == f"{j0} -> {j2}"
    assert summary["written_directly"] == 1 and summary["written_through_contents"] == 3
    assert transferred(engine) == 0
    assert (world["dir"] / "acme" / summary["report"]).exists()


@pytest.mark.parametrize("conf, message", [
    ({"customer": "nobody"}, "Invalid input for param customer"),
    ({"customer": "acme", "old_uuid": "not-a-uuid"}, "Invalid input for param old_uuid"),
    ({"customer": "acme", "new_uuid": "activity", "dry_run": False}, "-> {new}: the old item is a journey"),
])
def test_a_bad_conf_or_pair_is_refused_and_nothing_written(world, conf, message):
    engine = engine_of(world, "acme")
    j0, j2 = completed_journey_0(engine, "acme")
    activity = describe(engine, "acme").uuids["activity"][0]
    conf = {"old_uuid": j0, "new_uuid": j2, **conf}
    conf["new_uuid"] = activity if conf["new_uuid"] == "activity" else conf["new_uuid"]
    done = run_dag(world, DAG_ID, conf)
    assert done.returncode != 0
    assert message.format(new=activity) in done.stdout + done.stderr
    assert transferred(engine) == 0


def test_a_postgresql_platform_through_an_airflow_connection(world, postgres_database):
    url = postgres_database
    env = {**world["env"], "AIRFLOW_CONN_HOOLI_DB":
           f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"}
    done = subprocess.run([str(ROOT / "bin/progression-db"), "upgrade", "hooli_db", "--with-platform-tables"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    seed_platform(engine, "hooli", sizes=SMALL)
    j0, j2 = completed_journey_0(engine, "hooli")
    registry = world["dir"] / "hooli.yaml"
    registry.write_text(f"hooli:\n  platform_conn_id: hooli_db\n  platform: hooli\n"
                        f"  storage: file://{world['dir'] / 'hooli'}\n  timezone: Europe/Amsterdam\n")
    env["PROGRESSION_CUSTOMERS"] = str(registry)
    done = run_dag(world, DAG_ID, {"customer": "hooli", "old_uuid": j0, "new_uuid": j2, "dry_run": False}, env=env)
    summary = summary_line(done, DAG_ID)
    assert summary["status"] == "succeeded" and summary["written_directly"] == 1
    with engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT source, run_id, count(*) FROM completions GROUP BY 1, 2 ORDER BY 1"))
        assert sources.all() == [("platform", None, 2), ("transfer", summary["run_id"], 4)]
    engine.dispose()
