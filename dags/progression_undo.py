"""Undo, triggered per customer: every completion one earlier run (an import, a transfer, a merge or an undo)
inserted, changed or deleted is put back as it was, from the change journal, in one transaction. A completion a later
run has changed since is a conflict, left alone unless `force`. Dry run by default: read its report, then switch
`dry_run` off. The undo is a run of its own in the ledger, so it can be undone too."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import refused_conf, run_stage, run_started, summary_task, target_of

REGISTRY = load_registry()


@dag(
    dag_id="progression_undo",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            type="string", enum=sorted(REGISTRY.customers), description="Customer slug from the registry."
        ),
        "run_id": Param(
            type="string",
            minLength=1,
            description="The run to undo, as the ledger, the report and the DAG's summary show it "
            "(e.g. import-acme-20261128T021500-3f9a1c).",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            description="Compute and report what would be restored, write nothing. Switch off to undo.",
        ),
        "force": Param(
            False, type="boolean", description="Also restore completions that a later run has changed since."
        ),
    },
)
def progression_undo():
    @task(multiple_outputs=False)
    @refused_conf
    def plan(params: dict, run_id: str, dag_run=None) -> dict:
        """Refuse a run that is not in the customer's ledger, or was a dry run, before any work."""
        from progression.undo import plan

        job = plan(
            target_of(params["customer"]),
            run_id=params["run_id"].strip(),
            dry_run=bool(params["dry_run"]),
            force=bool(params["force"]),
            airflow_run_id=run_id,
            started=run_started(dag_run),
        )
        print(f"undo run {job.undone_run_id} ({job.undone_dag_id}: {job.undone_subject})")
        return job.as_dict()

    @task(multiple_outputs=False)
    def apply(job: dict) -> dict:
        """Restore from the journal in one transaction and mark the run undone; a dry run only reports."""
        from progression import undo as stages

        return run_stage(stages.apply, stages.UndoJob, job)

    @task(multiple_outputs=False)
    def report(job: dict) -> dict:
        """Write the undo's report: every completion restored, and every conflict."""
        from progression import undo as stages

        return run_stage(stages.report, stages.UndoJob, job)

    summarise = summary_task("progression_undo", ("restored",))

    # A teardown: it runs whatever happened before it, and the run's state stays the work's.
    report(apply(plan())) >> summarise().as_teardown()


progression_undo()
