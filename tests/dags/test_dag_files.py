"""The DAG files as Airflow's parser reads them, in one fresh interpreter: they parse without the heavy libraries,
import without errors, describe every param of the trigger form, and refuse a bad conf by their params before any
task runs (what `bin/airflow dags test --conf` and the trigger form answer with "Invalid input for param ...")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dags_support import ROOT

pytestmark = pytest.mark.airflow
DAGS = (
    "progression_import",
    "progression_transfer",
    "progression_merge_users",
    "progression_undo",
    "progression_export",
    "progression_health",
)
CONFS = [  # (dag, conf, the param that refuses it, or None when the conf is accepted)
    ("progression_import", {"customer": "nobody"}, "customer"),
    ("progression_import", {"customer": "acme", "content_type": "courses"}, "content_type"),
    ("progression_import", {"customer": "acme", "path": "inbox/activities/q3.xlsx", "dry_run": True}, None),
    ("progression_transfer", {"customer": "nobody"}, "customer"),
    ("progression_transfer", {"customer": "acme", "old_uuid": "not-a-uuid"}, "old_uuid"),
    ("progression_export", {"customer": "nobody"}, "customer"),
]
CODE = """
import copy, json, runpy, sys
dags, confs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in dags:
    runpy.run_path(f"dags/{name}.py")
heavy = sorted(m for m in ("pandas", "great_expectations", "fastexcel", "openpyxl") if m in sys.modules)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
assert not bag.import_errors, bag.import_errors
params = {name: {key: [bag.get_dag(name).params.get_param(key).description,
                       bag.get_dag(name).params.get_param(key).value if key == "dry_run" else None]
                 for key in bag.get_dag(name).params} for name in dags}
refusals = []
for name, conf, _ in confs:
    given = copy.deepcopy(bag.get_dag(name).params)
    try:
        given.update(conf)
        given.validate()
        refusals.append(None)
    except Exception as exc:
        refusals.append(str(exc))
per_key = {name: sorted(t.task_id for t in bag.get_dag(name).tasks if getattr(t, "multiple_outputs", False))
           for name in dags}
print(json.dumps({"heavy": heavy, "params": params, "refusals": refusals, "per_key": per_key}))
"""


@pytest.fixture(scope="module")
def parsed(airflow_home, tmp_path_factory):
    """What the parser found, with a registry of customers acme and globex."""
    registry = tmp_path_factory.mktemp("registry") / "customers.yaml"
    registry.write_text(
        "acme:\n  platform_conn_id: acme_db\n  platform: acme\n  storage: file:///tmp/acme\n"
        "globex:\n  platform_conn_id: globex_db\n  platform: globex\n  storage: file:///tmp/globex\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "PROGRESSION_CUSTOMERS": str(registry),
        "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [sys.executable, "-c", CODE, json.dumps(DAGS), json.dumps(CONFS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_files_parse_without_loading_the_heavy_libraries(parsed):
    assert parsed["heavy"] == []


def test_the_trigger_form_offers_every_param_with_a_description(parsed):
    params = parsed["params"]
    assert set(params["progression_import"]) == {
        "customer",
        "path",
        "content_type",
        "dry_run",
        "on_existing",
        "force",
        "check",
    }
    assert set(params["progression_transfer"]) == {
        "customer",
        "old_uuid",
        "new_uuid",
        "path",
        "dry_run",
        "completion_date",
        "on_existing",
    }
    assert set(params["progression_merge_users"]) == {"customer", "from_email", "to_email", "path", "mode", "dry_run"}
    assert set(params["progression_undo"]) == {"customer", "run_id", "dry_run", "force"}
    assert all(description for dag in DAGS for description, _ in params[dag].values())


def test_what_touches_many_users_is_a_dry_run_unless_switched_off(parsed):
    dry_run = {dag: params["dry_run"][1] for dag, params in parsed["params"].items()}
    assert dry_run == {
        "progression_import": False,
        "progression_transfer": True,
        "progression_merge_users": False,
        "progression_undo": True,
        "progression_export": False,
        "progression_health": False,
    }


@pytest.mark.parametrize("index", range(len(CONFS)), ids=[f"{dag}-{field}" for dag, _, field in CONFS])
def test_a_bad_conf_is_refused_by_the_params_naming_the_field(parsed, index):
    refused, field = parsed["refusals"][index], CONFS[index][2]
    if field is None:
        assert refused is None
    else:
        assert refused and refused.startswith(f"Invalid input for param {field}:")


def test_each_task_hands_its_result_on_as_one_xcom(parsed):
    # A task annotated `-> dict` would otherwise push one XCom per key as well: twenty calls to the execution API
    # per task of an import, for values no one reads.
    assert parsed["per_key"] == {dag: [] for dag in DAGS}
