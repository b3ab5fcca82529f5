"""The progression export workbook of one customer: #Activities, #Journeys, #Programmes and Content."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import target_of

REGISTRY = load_registry()


@dag(
    dag_id="progression_export",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(sorted(REGISTRY.customers)[0] if REGISTRY.customers else "", type="string",
                          enum=sorted(REGISTRY.customers) or [""], description="Customer slug from the registry."),
        "dry_run": Param(False, type="boolean",
                         description="An export writes no completion; a dry run is only marked as one."),
    },
)
def progression_export():
    @task
    def export(params: dict, run_id: str) -> dict:
        """Stream the workbook into the customer's reports folder; the summary is the last line of the log."""
        import json

        from progression.export import run_export

        summary = run_export(target_of(params["customer"]), airflow_run_id=run_id, dry_run=bool(params["dry_run"]))
        print(json.dumps(summary))
        return summary

    export()


progression_export()
