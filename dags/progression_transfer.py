"""Content replacement, triggered per customer: everyone who completed an old activity, journey or programme gets
the new one completed, when they have access to it. One pair in the conf (`old_uuid`, `new_uuid`), or `path` to a
workbook of pairs (by convention under inbox/transfers/). A transfer touches many users: `dry_run` is on unless
switched off."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import ON_EXISTING, load_registry
from progression_airflow import refused_conf, run_stage, run_started, summary_task, target_of

REGISTRY = load_registry()
# The trigger form's check; the plan checks every uuid again, as it checks those of a workbook.
UUID = r"^\s*[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\s*$"


@dag(
    dag_id="progression_transfer",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            type="string", enum=sorted(REGISTRY.customers), description="Customer slug from the registry."
        ),
        "old_uuid": Param(
            None,
            type=["null", "string"],
            pattern=UUID,
            description="The content being replaced: who completed it gets the new content.",
        ),
        "new_uuid": Param(
            None,
            type=["null", "string"],
            pattern=UUID,
            description="The content that replaces it, of the same type, on the same platform.",
        ),
        "path": Param(
            None,
            type=["null", "string"],
            description="Instead of one pair: a workbook of pairs relative to the customer's storage root "
            "(e.g. inbox/transfers/q4.xlsx), columns 'Old content uuid' and 'New content uuid'.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            description="Compute and report everything, write no completion. Switch off to transfer.",
        ),
        "completion_date": Param(
            "original",
            type="string",
            enum=["original", "transfer"],
            description="original: the date of the old completion; transfer: the day of the run.",
        ),
        "on_existing": Param(
            None,
            type=["null", "string"],
            enum=[None, *ON_EXISTING],
            description="When the new content is completed already. Empty: the customer's setting.",
        ),
    },
)
def progression_transfer():
    @task(multiple_outputs=False)
    @refused_conf
    def plan(params: dict, run_id: str, dag_run=None) -> dict:
        """Refuse a bad conf before any work; check every pair on the customer's platform."""
        from progression.transfer import plan

        job = plan(
            target_of(params["customer"]),
            old_uuid=params.get("old_uuid"),
            new_uuid=params.get("new_uuid"),
            path=params.get("path"),
            dry_run=bool(params["dry_run"]),
            completion_date=params["completion_date"],
            on_existing=params.get("on_existing"),
            airflow_run_id=run_id,
            started=run_started(dag_run),
        )
        print(job.message or f"{len(job.pairs)} pair(s) to transfer: " + ", ".join(p.label for p in job.pairs))
        return job.as_dict()

    @task(multiple_outputs=False)
    def transfer(job: dict) -> dict:
        """Every pair's completions in one transaction, all or none; a dry run decides and writes nothing."""
        from progression import transfer as stages

        return run_stage(stages.transfer, stages.TransferJob, job)

    @task(multiple_outputs=False)
    def report(job: dict) -> dict:
        """Write the transfer's report workbook (Summary, Pairs, Skipped users)."""
        from progression import transfer as stages

        return run_stage(stages.report, stages.TransferJob, job)

    @task(multiple_outputs=False)
    def archive(job: dict) -> dict:
        """Move the pairs workbook out of the inbox; a refused transfer fails the run here, its report written."""
        from progression import transfer

        result = transfer.archive(target_of(job["customer"]), transfer.TransferJob.from_dict(job))
        if result.refused:
            raise RuntimeError(f"{result.message} (report {result.report})")
        return result.as_dict()

    # A teardown runs whatever happened before it and leaves the run's state to the work: a refused transfer
    # fails the run, and still ends with its summary.
    summarise = summary_task("progression_transfer", ("written_directly", "written_through_contents"))

    archive(report(transfer(plan()))) >> summarise().as_teardown()


progression_transfer()
