"""Account merges, triggered per customer: a user with a second account gets every completion of that account on
the account they keep; where both hold the same item, the earliest date wins. One pair in the conf (`from_email`,
`to_email`), or `path` to a workbook of pairs. `copy` leaves the second account's completions, `move` removes them.
Users themselves are never created, deleted or changed. The whole merge is one run: `progression_undo` takes it back."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from progression.customers import load_registry
from progression_airflow import refused_conf, run_stage, run_started, summary_task, target_of

REGISTRY = load_registry()


@dag(
    dag_id="progression_merge_users",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            type="string", enum=sorted(REGISTRY.customers), description="Customer slug from the registry."
        ),
        "from_email": Param(
            None,
            type=["null", "string"],
            description="The account whose completions are given to the other (the second one).",
        ),
        "to_email": Param(
            None, type=["null", "string"], description="The account that receives them (the one the user keeps)."
        ),
        "path": Param(
            None,
            type=["null", "string"],
            description="Instead of one pair: a workbook of pairs relative to the customer's storage root "
            "(e.g. merges/q4.xlsx), columns 'From email' and 'To email'.",
        ),
        "mode": Param(
            "copy",
            type="string",
            enum=["copy", "move"],
            description="copy: the source account keeps its completions; move: they are removed from it.",
        ),
        "dry_run": Param(False, type="boolean", description="Compute and report everything, write no completion."),
    },
)
def progression_merge_users():
    @task(multiple_outputs=False)
    @refused_conf
    def plan(params: dict, run_id: str, dag_run=None) -> dict:
        """Refuse a bad conf before any work: every pair's e-mails are checked on the customer's platform."""
        from progression.merge import plan

        job = plan(
            target_of(params["customer"]),
            from_email=params.get("from_email"),
            to_email=params.get("to_email"),
            path=params.get("path"),
            mode=params["mode"],
            dry_run=bool(params["dry_run"]),
            airflow_run_id=run_id,
            started=run_started(dag_run),
        )
        print(
            f"{len(job.pairs)} pair(s) to merge ({job.mode}): "
            + ", ".join(f"{p.from_email} -> {p.to_email}" for p in job.pairs)
        )
        return job.as_dict()

    @task(multiple_outputs=False)
    def apply(job: dict) -> dict:
        """Give each pair's completions to its target account (with move, delete the source's), in one transaction."""
        from progression import merge as stages

        return run_stage(stages.apply, stages.MergeJob, job)

    @task(multiple_outputs=False)
    def report(job: dict) -> dict:
        """Write the merge's report workbook."""
        from progression import merge as stages

        return run_stage(stages.report, stages.MergeJob, job)

    summarise = summary_task("progression_merge_users", ("copied", "replaced", "removed"))

    # A teardown: it runs whatever happened before it, and the run's state stays the work's.
    report(apply(plan())) >> summarise().as_teardown()


progression_merge_users()
