"""The progression export workbook of one customer (#Activities, #Journeys, #Programmes and Content), and its
template workbooks `templates/<type>.xlsx` written afresh.

Triggered by hand for the customer in the form, or by the asset events of runs that changed completions
(`progression://<customer>/completions`), then for each customer those events name."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import COMPLETIONS_CHANGED, customers_of_events, target_of

REGISTRY = load_registry()


@dag(
    dag_id="progression_export",
    schedule=[COMPLETIONS_CHANGED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            sorted(REGISTRY.customers)[0] if REGISTRY.customers else "",
            type="string",
            enum=sorted(REGISTRY.customers) or [""],
            description="Customer slug from the registry.",
        ),
        "dry_run": Param(
            False, type="boolean", description="An export writes no completion; a dry run is only marked as one."
        ),
    },
)
def progression_export():
    @task(multiple_outputs=False)
    def export(params: dict, run_id: str, triggering_asset_events=None) -> dict:
        """Stream the workbook into the customer's reports folder and write its templates; the summary is the last
        line of the log."""
        import json

        from progression.export import run_export

        customers = customers_of_events(triggering_asset_events) or [params["customer"]]
        exports = [
            run_export(target_of(slug), airflow_run_id=run_id, dry_run=bool(params["dry_run"])) for slug in customers
        ]
        summary = exports[0] if len(exports) == 1 else {"dag": "progression_export", "exports": exports}
        print(json.dumps(summary))
        return summary

    export()


progression_export()
