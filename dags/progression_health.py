"""Hourly, and on demand: which customers are late (no successful import within their `expect_files_every`), failing,
or sent a file of unusual size. Each customer's `notify` hears once per lateness episode and once per unusual file,
never every hour; what was told is kept in the platform database's `progression_alerts`."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import notify_customer, target_for

REGISTRY = load_registry()


@dag(
    dag_id="progression_health",
    schedule="0 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two checks at once could both tell the same news
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            None,
            type=["null", "string"],
            enum=[None, *sorted(REGISTRY.customers)],
            description="Customer slug from the registry. Empty: every active customer.",
        ),
        "dry_run": Param(
            False, type="boolean", description="Check and say what would be told; tell nobody and remember nothing."
        ),
    },
)
def progression_health():
    @task(multiple_outputs=False)
    def check(params: dict) -> dict:
        """Check each customer, tell what is new, and end with the run's one-line JSON summary."""
        import functools
        import json

        from airflow.sdk import get_current_context

        from progression import health, ledger

        registry = load_registry()
        customers = [registry.get(params["customer"])] if params.get("customer") else registry.active()
        context, now, dry_run = get_current_context(), ledger.utcnow(), bool(params.get("dry_run"))
        checks = []
        for customer in customers:
            tell = functools.partial(notify_customer, customer, context=context)
            checks.append(health.watch(target_for(customer), now, tell, dry_run=dry_run))
            print(json.dumps(checks[-1]))
        summary = health.summarise(checks, dry_run=dry_run)
        print(json.dumps(summary))
        return summary

    check()


progression_health()
