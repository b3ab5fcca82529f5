"""Where the plain `progression` package meets Airflow: connections become engines, storage URLs become
ObjectStoragePath roots, and pipeline stages become tasks with a readable map index."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Callable, TypeVar

from progression.customers import Customer, load_registry
from progression.jobs import Job

if TYPE_CHECKING:  # the DAG files import this module at parse time: keep pandas and SQLAlchemy out of it
    from progression.runs import Target

J = TypeVar("J", bound=Job)

FILE_LABEL = "progression_file"


def _alias():
    from airflow.sdk import AssetAlias

    return AssetAlias("progression-completions")


COMPLETIONS_CHANGED = _alias()  # resolves to `progression://<customer>/completions` as runs report changes


def completions_asset(customer: str):
    """The asset a downstream DAG schedules on to follow one customer's completions."""
    from airflow.sdk import Asset

    return Asset(uri=f"progression://{customer}/completions", name=f"{customer}_completions")


def customers_of_events(events) -> list[str]:
    """The customers named by the asset events that triggered a run (none for a run triggered by hand)."""
    found = set()
    for asset_events in (events or {}).values():
        for event in asset_events:
            uri = getattr(getattr(event, "asset", None), "uri", "") or ""
            if uri.startswith("progression://"):
                found.add(uri.removeprefix("progression://").split("/", 1)[0])
    return sorted(found)


def announce_completions(outlet_events, customer: str, dag_id: str, summary: dict, changed: tuple[str, ...]) -> bool:
    """Emit `progression://<customer>/completions` when a real (not dry) run changed completions; the event's
    extra holds the counts named in `changed`."""
    counts = {name: int(summary.get(name) or 0) for name in changed}
    if summary.get("dry_run") or not any(counts.values()):
        return False
    outlet_events[COMPLETIONS_CHANGED].add(completions_asset(customer), extra={"dag": dag_id, **counts})
    return True


def platform_url(conn_id: str):
    """The SQLAlchemy URL of the platform database behind an Airflow connection."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    kind = (connection.conn_type or "").lower()
    if kind == "sqlite":
        return f"sqlite:///{connection.host}"
    if kind in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=conn_id).sqlalchemy_url
    raise ValueError(f"connection {conn_id!r} is of type {kind!r}; platform databases are postgres or sqlite")


def platform_engine(conn_id: str):
    from progression.db import engine_for

    return engine_for(platform_url(conn_id))


def storage_root(url: str):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url if "://" in url else f"file://{url}")


def target_for(customer: Customer) -> Target:
    from progression.runs import Target

    return Target(
        customer=customer, root=storage_root(customer.storage), engine=platform_engine(customer.platform_conn_id)
    )


def target_of(slug: str) -> Target:
    return target_for(load_registry().get(slug))


def run_started(dag_run) -> datetime:
    """When the run began: it fixes "today" for every task of the run (now, when Airflow gives no start)."""
    import pendulum

    return dag_run.start_date if dag_run is not None and dag_run.start_date else pendulum.now("UTC")


def run_stage(stage: Callable[[Target, J], J], job_type: type[J], job: dict) -> dict:
    """Run one stage of a transfer, merge or undo on the job the previous task returned, and hand on its result."""
    return stage(target_of(job["customer"]), job_type.from_dict(job)).as_dict()


def summary_task(dag_id: str, changed: tuple[str, ...] = ()):
    """The last task of a DAG run, a teardown: one JSON line from the ledger (runs.summarise: what the run did in its
    kind's words, its run id and report) for the customer of the conf, or for each customer the triggering asset
    events name (then under `runs`); and the asset event when the figures named in `changed` show a real run
    changed completions. A conf refused by the first task is in the line too."""
    from airflow.sdk import task

    @task(multiple_outputs=False, task_id="summarise", outlets=[COMPLETIONS_CHANGED] if changed else [])
    def summarise(params: dict, run_id: str, triggering_asset_events=None, outlet_events=None) -> dict:
        import json

        from airflow.sdk import get_current_context

        from progression import runs
        from progression.ledger import Status

        refused = get_current_context()["ti"].xcom_pull(task_ids="plan", key="refused")
        parts = []
        for slug in customers_of_events(triggering_asset_events) or [params["customer"]]:
            part = runs.summarise(dag_id, slug, runs.rows_of(target_of(slug), run_id), refused=refused)
            if changed and part["status"] == Status.SUCCEEDED:
                announce_completions(outlet_events, part["customer"], dag_id, part, changed)
            parts.append(part)
        summary = parts[0] if len(parts) == 1 else {"dag": dag_id, "runs": parts}
        print(json.dumps(summary))
        return summary

    return summarise


def airflow_run_is_live(dag_id: str, run_id: str) -> bool:
    """Whether Airflow still has this DAG run queued or running (asked from inside a task, through the task
    execution API). A run Airflow no longer knows is over; when Airflow cannot be asked, it counts as alive, so a
    live run's files are never taken from it."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        state = RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the execution API answers a run it does not know with an HTTP 404
        return getattr(getattr(exc, "response", None), "status_code", None) != 404
    return str(state).lower().rsplit(".", 1)[-1] in ("queued", "running")


def refused_conf(fn: Callable) -> Callable:
    """A first task that refuses a bad conf leaves its reason in XCom (key `refused`) for the summary task."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from progression.runs import ConfError

        try:
            return fn(*args, **kwargs)
        except ConfError as exc:
            from airflow.sdk import get_current_context

            get_current_context()["ti"].xcom_push(key="refused", value=str(exc))
            raise

    return wrapper


def labelled(fn: Callable) -> Callable:
    """Name a mapped task instance after its file (e.g. `demo/activities/q3.xlsx`) instead of a number."""

    @functools.wraps(fn)
    def wrapper(job: dict, *args, **kwargs):
        from airflow.sdk import get_current_context

        # Airflow documents adding a key to the context for map_index_template; its Context TypedDict lists only
        # its own keys.
        get_current_context()[FILE_LABEL] = (  # type: ignore[literal-required]
            f"{job['customer']}/{job['path'].removeprefix('inbox/')}"
        )
        return fn(job, *args, **kwargs)

    return wrapper


def tell_customer(customer: Customer, summary: dict, runs: list[dict], context) -> bool:
    """Tell the customer's `notify` when an import run needs a look; a clean or dry run tells nobody."""
    from progression.notify import message, plain, worth_telling

    if summary.get("dry_run") or not worth_telling(summary):
        return False
    subject, body = message(customer.slug, summary, runs)
    return notify_customer(customer, subject, body, plain(customer.slug, summary, runs), context)


def notify_customer(customer: Customer, subject: str, html: str, text: str, context) -> bool:
    """Send one message to the customer's `notify` channels: e-mail through Airflow's SMTP notifier, a Slack
    webhook through the Slack provider's. False when the customer has none."""
    addresses = customer.notify.get("email") or []
    slack = customer.notify.get("slack_webhook_conn_id")
    if addresses:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(
            to=addresses,
            subject=subject,
            html_content=html,
            smtp_conn_id=customer.notify.get("smtp_conn_id") or "smtp_default",
        ).notify(context)
    if slack:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        SlackWebhookNotifier(slack_webhook_conn_id=slack, text=text).notify(context)
    return bool(addresses or slack)
