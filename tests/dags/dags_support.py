"""Running a DAG as a person does and reading what it says."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from progression.customers import load_registry
from progression.db import engine_for
from progression.runs import Target

ROOT = Path(__file__).resolve().parents[2]


def run_dag(world, dag_id: str, conf: dict | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [str(ROOT / "bin/airflow"), "dags", "test", dag_id]
    if conf is not None:
        command += ["--conf", json.dumps(conf)]
    return subprocess.run(command, env=env or world["env"], capture_output=True, text=True, timeout=300)


def summary_line(done: subprocess.CompletedProcess, dag_id: str) -> dict:
    """The one-line JSON summary the DAG's last task logs."""
    lines = [
        line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.startswith(f'{{"dag": "{dag_id}"')
    ]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1])


def engine_of(world, slug: str):
    return engine_for(f"sqlite:///{world['dir'] / f'{slug}.db'}")


def target_of(world, slug: str) -> Target:
    """The customer `slug` of the world's registry as the stages get it, to act on it without Airflow."""
    customer = load_registry(Path(world["env"]["PROGRESSION_CUSTOMERS"])).get(slug)
    return Target(customer=customer, root=world["dir"] / slug, engine=engine_of(world, slug))


def asset_events(world) -> list[tuple[str, dict]]:
    with sqlite3.connect(world["home"] / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri LIKE 'progression://%' ORDER BY e.id"
        ).fetchall()
    return [(uri, json.loads(extra)) for uri, extra in rows]
