"""Nightly and on-demand import of the completion workbooks customers drop in their inbox, and check of those they
drop in their check folder (decided as an import, written never)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task, task_group

from progression.customers import CONTENT_TYPES, ON_EXISTING, load_registry
from progression.jobs import IMPORT_TASKS
from progression_airflow import (
    COMPLETIONS_CHANGED,
    FILE_LABEL,
    airflow_run_is_live,
    announce_completions,
    labelled,
    refused_conf,
    run_started,
    target_for,
    target_of,
    tell_customer,
)

REGISTRY = load_registry()
FILE_LABEL_TEMPLATE = "{{ " + FILE_LABEL + " }}"


@dag(
    dag_id="progression_import",
    schedule=REGISTRY.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["progression"],
    doc_md=__doc__,
    params={
        "customer": Param(
            None,
            type=["null", "string"],
            enum=[None, *sorted(REGISTRY.customers)],
            description="Customer slug from the registry. Empty: every active customer.",
        ),
        "path": Param(
            None,
            type=["null", "string"],
            description="One file, relative to the customer's storage root "
            "(e.g. inbox/activities/q3.xlsx). Empty: every file in the inbox.",
        ),
        "content_type": Param(
            None,
            type=["null", "string"],
            enum=[None, *CONTENT_TYPES],
            description="What the file(s) hold. Empty: taken from the inbox sub-folder.",
        ),
        "dry_run": Param(False, type="boolean", description="Compute and report everything, write no completion."),
        "on_existing": Param(
            None,
            type=["null", "string"],
            enum=[None, *ON_EXISTING],
            description="When a completion exists already. Empty: the customer's setting.",
        ),
        "force": Param(False, type="boolean", description="Import a file even if the same bytes were imported."),
        "check": Param(
            False,
            type="boolean",
            description="Check instead of import: the files of the customer's check folder (or `path`, "
            "which must be in it) are decided against the platform as it is now and "
            "reported, nothing is written, and each moves to checked/.",
        ),
    },
)
def progression_import():
    @task(multiple_outputs=False)
    @refused_conf
    def discover(params: dict, run_id: str, dag_run=None) -> list[dict]:
        """Refuse a bad conf before any work; put back the files of runs that died; list the files to import or
        check."""
        from progression.pipeline import plan
        from progression.runs import ConfError, recover

        registry = load_registry()
        customers = [registry.get(params["customer"])] if params.get("customer") else registry.active()
        if params.get("path") and not params.get("customer"):
            raise ConfError("path needs a customer: a path is relative to one customer's storage root")
        started = run_started(dag_run)
        jobs = []
        for customer in customers:
            target = target_for(customer)
            for line in recover(target, airflow_run_is_live):
                print(f"{customer.slug}: recovered {line}")
            jobs += plan(
                target,
                path=params.get("path"),
                content_type=params.get("content_type"),
                dry_run=bool(params.get("dry_run")),
                on_existing=params.get("on_existing"),
                force=bool(params.get("force")),
                airflow_run_id=run_id,
                started=started,
                check=bool(params.get("check")),
            )
        print(f"{len(jobs)} file(s) to import or check: " + ", ".join(j.label for j in jobs))
        return [j.as_dict() for j in jobs]

    def file_task(name: str):
        @task(multiple_outputs=False, task_id=name, map_index_template=FILE_LABEL_TEMPLATE)
        @labelled
        def run(job: dict) -> dict:
            from progression import pipeline

            result, timings = pipeline.run_task(target_of(job["customer"]), pipeline.FileJob.from_dict(job), name)
            print(", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings) + f": {result.status}")
            if result.message:
                print(result.message)
            if result.failed and name == "report_archive":
                if result.is_check:  # what the customer asked to learn, not a failure of the run
                    print(f"check: an import would fail (moved to {result.archived_to}; report {result.report})")
                else:
                    raise RuntimeError(f"{result.message} (moved to {result.archived_to}; report {result.report})")
            return result.as_dict()

        return run

    @task_group
    def each_file(job: dict):
        staged = job
        for name in IMPORT_TASKS:
            staged = file_task(name)(staged)
        return staged

    # A teardown runs whatever happened before it and leaves the run's state to the files: a run with a failed
    # file is a failed run in Airflow, and its summary is still written.
    @task(multiple_outputs=False, outlets=[COMPLETIONS_CHANGED])
    def summarise(jobs: list[dict] | None, archived: list[dict] | None, run_id: str, outlet_events=None) -> dict:
        """One JSON line for the whole run, read back from the ledger so failed files are in it too; per
        customer, an asset event when completions changed and an e-mail when rows were rejected or files failed;
        the run's staging folders removed."""
        import json

        from airflow.sdk import get_current_context

        from progression.pipeline import FileJob, close_run_staging
        from progression.runs import IMPORT_DAG, rows_of, summarise

        context = get_current_context()
        if jobs is None:  # discover refused the conf: nothing ran
            summary = summarise(
                IMPORT_DAG, None, [], refused=context["ti"].xcom_pull(task_ids="discover", key="refused")
            )
            print(json.dumps(summary))
            return summary
        registry = load_registry()
        customers = sorted({job["customer"] for job in jobs})
        runs = {slug: rows_of(target_of(slug), run_id) for slug in customers}
        for slug in customers:
            close_run_staging(target_of(slug), [FileJob.from_dict(job) for job in jobs if job["customer"] == slug])
        for slug, customer_runs in runs.items():
            part = summarise(IMPORT_DAG, slug, customer_runs)
            announce_completions(
                outlet_events, slug, "progression_import", part, ("imported", "updated", "derived_written")
            )
            if tell_customer(registry.get(slug), part, customer_runs, context):
                print(f"told {slug}'s notify addresses about rejected rows or failed files")
        summary = summarise(IMPORT_DAG, None, [run for customer_runs in runs.values() for run in customer_runs])
        print(json.dumps(summary))
        return summary

    jobs = discover()
    summarise(jobs, each_file.expand(job=jobs)).as_teardown()


progression_import()
