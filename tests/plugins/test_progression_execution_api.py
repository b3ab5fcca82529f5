"""`dags test`, the dag processor and the triggerer call an in-process execution API: with the plugins folder
loaded it answers in the Task SDK's own version only (its routes for nine versions took about 4 s to build),
while the API server's execution API keeps every version."""

from __future__ import annotations

import json
from pathlib import Path

from test_progression_celery import in_project_environment

IN_PROCESS = """
import json
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
import httpx
import airflow.sdk.api.datamodels._generated as sdk_models
from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI, create_task_execution_api_app
sdk_models.API_VERSION = SDK_VERSION or sdk_models.API_VERSION
api = InProcessExecutionAPI()
client = httpx.Client(transport=api.transport, base_url="http://in-process.invalid./")
answers = {version: client.get("/health/ping", headers={"Airflow-API-Version": version}).status_code
           for version in (sdk_models.API_VERSION, "2025-04-28")}
print(json.dumps({"in_process": list(api.app.versions.version_values), "answers": answers,
                  "server": list(create_task_execution_api_app().versions.version_values)}))
"""


def run(tmp_path: Path, sdk_version: str | None) -> dict:
    return json.loads(in_project_environment(f"SDK_VERSION = {sdk_version!r}\n{IN_PROCESS}", tmp_path))


def test_the_in_process_api_answers_the_task_sdks_version_and_the_api_server_keeps_every_version(tmp_path):
    seen = run(tmp_path, None)
    [newest] = seen["in_process"]
    assert seen["answers"] == {newest: 200, "2025-04-28": 404}
    assert seen["server"][0] == newest
    assert "2025-04-28" in seen["server"] and len(seen["server"]) >= 9


def test_a_task_sdk_of_another_version_finds_every_version_in_process(tmp_path):
    seen = run(tmp_path, "2025-04-28")
    assert seen["in_process"] == seen["server"]
    assert seen["answers"] == {"2025-04-28": 200}
