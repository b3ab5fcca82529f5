"""A Celery worker started through bin/airflow loads the tasks' libraries once, before it forks a process per task,
and nothing else in Airflow pays for that."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What `airflow celery worker` does before its first task: build Airflow's Celery app from the configured options,
# then the worker's loader imports the configured modules.
WORKER_START = """
import json, sys
from airflow.providers.celery.executors.celery_executor_utils import app
before = "great_expectations" in sys.modules
app.loader.import_default_modules()
print(json.dumps({"imports": list(app.conf.imports), "before": before,
                  "after": [m for m in ("great_expectations", "pandas", "progression.pipeline") if m in sys.modules]}))
"""


def in_project_environment(code: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__CELERY__")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    done = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/bin/env.sh" && exec python -c "$0"', code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_celery_worker_imports_the_tasks_libraries_before_it_forks_task_processes(tmp_path):
    started = json.loads(in_project_environment(WORKER_START, tmp_path))
    assert "progression.preload" in started["imports"]
    assert not started["before"], "the Celery app alone (as the scheduler builds it) must stay light"
    assert started["after"] == ["great_expectations", "pandas", "progression.pipeline"]


def test_the_plugin_manager_leaves_the_celery_configuration_and_the_history_page_alone(tmp_path):
    loaded = in_project_environment(
        "import sys; from airflow import plugins_manager; plugins_manager.ensure_plugins_loaded(); "
        "print(sorted(m for m in sys.modules if m.startswith('progression')))",
        tmp_path,
    )
    assert "progression_history" in loaded, "the plugin manager read the plugins folder"
    assert "progression_celery" not in loaded and "progression.preload" not in loaded
    # The history page loads in the API server on its first request: not in every command and task.
    assert "progression_history_page" not in loaded
