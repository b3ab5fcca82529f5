"""progression_undo through Airflow itself: an import run by the DAG, undone as a dry run (the default), then for
real, each through `bin/airflow dags test`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from dags_support import ROOT, asset_events, drop, engine_of, run_dag, summary_line
from progression import ledger
from demo_platform import describe, workbook_bytes
from progression.platform import completions

pytestmark = pytest.mark.airflow


def count_completions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(completions)).scalar()


def test_an_import_is_undone_after_a_dry_run(world):
    engine = engine_of(world, "acme")
    found = describe(engine, "acme")
    drop(world, "acme", "inbox/journeys/j.xlsx", workbook_bytes(
        ["Email", "Content uuid", "Completion date"], [[found.emails[0], found.uuids["journey"][0], "2024-03-31"]]))
    imported = summary_line(run_dag(world, "progression_import", {"customer": "acme"}), "progression_import")
    run_id = imported["runs"]["acme/journeys/j.xlsx"]
    written = count_completions(engine)
    assert written == 1 + imported["derived_written"] > 1

    events_before = len(asset_events(world))
    dry = summary_line(run_dag(world, "progression_undo", {"customer": "acme", "run_id": run_id}), "progression_undo")
    assert dry["dry_run"] and dry["undone_run_id"] == run_id and dry["restored"] == written
    assert count_completions(engine) == written
    assert (world["dir"] / "acme" / dry["report"]).exists()

    done = summary_line(run_dag(world, "progression_undo", {"customer": "acme", "run_id": run_id, "dry_run": False}),
                        "progression_undo")
    assert not done["dry_run"] and done["removed"] == written and done["conflicts"] == 0
    assert count_completions(engine) == 0
    with engine.connect() as conn:
        assert ledger.get_run(conn, run_id)["undone_by"] == done["run_id"]
    # Only the real undo tells downstream DAGs that acme's completions changed.
    assert asset_events(world)[events_before:] == [
        ("progression://acme/completions", {"dag": "progression_undo", "restored": written})]
    # The ledger's own words for it: restored and removed, nothing written by the undo itself.
    assert (done["changes"], done["restored"]) == (written, written)


def test_merge_and_undo_parse_light_and_offer_every_param_with_a_description(world):
    code = """
import json, runpy, sys
for name in ("progression_merge_users", "progression_undo"):
    runpy.run_path(f"dags/{name}.py")
heavy = sorted(m for m in ("pandas", "great_expectations", "fastexcel", "openpyxl") if m in sys.modules)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
assert not bag.import_errors, bag.import_errors
params = {name: {key: [bag.get_dag(name).params.get_param(key).description,
                       bag.get_dag(name).params.get_param(key).value if key == "dry_run" else None]
                 for key in bag.get_dag(name).params}
          for name in ("progression_merge_users", "progression_undo")}
print(json.dumps({"heavy": heavy, **params}))
"""
    env = {**world["env"], "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("heavy") == []
    merge, undo = found["progression_merge_users"], found["progression_undo"]
    assert set(merge) == {"customer", "from_email", "to_email", "path", "mode", "dry_run"}
    assert set(undo) == {"customer", "run_id", "dry_run", "force"}
    assert all(description for description, _ in [*merge.values(), *undo.values()])
    assert (merge["dry_run"][1], undo["dry_run"][1]) == (False, True)
