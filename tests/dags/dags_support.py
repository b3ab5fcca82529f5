"""Running a DAG as a person does and reading what it says."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from progression.db import engine_for

ROOT = Path(__file__).resolve().parents[2]


def run_dag(world, dag_id: str, conf: dict | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [str(ROOT / "bin/airflow"), "dags", "test", dag_id]
    if conf is not None:
        command += ["--conf", json.dumps(conf)]
    return subprocess.run(command, env=env or world["env"], capture_output=True, text=True, timeout=300)


def summary_line(done: subprocess.CompletedProcess, dag_id: str) -> dict:
    """The one-line JSON summary the DAG's last task logs."""
    lines = [line for line in done.stdout.splitlines() + done.stderr.splitlines()
             if line.startswith(f'{{"dag": "{dag_id}"')]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1])


def smtp_connection(port: int) -> str:
    """An Airflow connection (as AIRFLOW_CONN_* JSON) to the loopback SMTP server of the `mailbox` fixture."""
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "progression@lxp.example"}})


def engine_of(world, slug: str):
    return engine_for(f"sqlite:///{world['dir'] / f'{slug}.db'}")


def drop(world, slug: str, rel: str, data: bytes) -> Path:
    path = world["dir"] / slug / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def asset_events(world) -> list[tuple[str, dict]]:
    with sqlite3.connect(world["home"] / "airflow.db") as conn:
        rows = conn.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                            "WHERE a.uri LIKE 'progression://%' ORDER BY e.id").fetchall()
    return [(uri, json.loads(extra)) for uri, extra in rows]
