"""The progression export workbook of one customer (#Activities, #Journeys, #Programmes and Content), and its
template workbooks `templates/<type>.xlsx` written afresh.

Triggered by hand for the customer in the form, or by the asset events of runs that changed completions
(`progression://<customer>/completions`), then for each customer those events name."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import COMPLETIONS_CHANGED, customers_of_events, summary_task, target_of

REGISTRY = load_registry()
DAG_ID = "progression_export"


@dag(
    dag_id=DAG_ID,
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
    def export(params: dict, run_id: str, triggering_asset_events=None) -> list[dict]:
        """Stream the workbook into the customer's reports folder and write its templates; what each export wrote
        (completions per type, templates) is logged as it ends."""
        import json

        from progression.export import run_export

        exports = []
        for slug in customers_of_events(triggering_asset_events) or [params["customer"]]:
            exports.append(run_export(target_of(slug), airflow_run_id=run_id, dry_run=bool(params["dry_run"])))
            print(json.dumps(exports[-1]))
        return exports

    summarise = summary_task(DAG_ID)

    # A teardown: it runs whatever happened before it, and the run's state stays the export's.
    export() >> summarise().as_teardown()


progression_export()
