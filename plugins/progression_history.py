"""The "Progression" page in Airflow's UI: every run of the ledgers, newest first, with a detail page per run
and its report workbook to download. A FastAPI app mounted in Airflow's API server behind its authentication;
it reads the ledgers through the same code the DAGs use and never touches Airflow's metadata database."""

from __future__ import annotations

from datetime import date, datetime, timezone

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from progression.customers import load_registry
from progression_airflow import platform_engine, storage_root

BASE = "/progression"
DAG_IDS = ["progression_import", "progression_transfer", "progression_merge_users", "progression_undo",
           "progression_export"]

app = FastAPI(title="Progression run history", dependencies=[Depends(get_user)])


def _databases() -> dict:
    """Each configured platform database once, with the customers whose ledgers it holds."""
    grouped: dict[str, list[str]] = {}
    registry = load_registry()
    for customer in registry.customers.values():
        grouped.setdefault(customer.platform_conn_id, []).append(customer.slug)
    return {platform_engine(conn_id): slugs for conn_id, slugs in grouped.items()}


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise HTTPException(status_code=422, detail=f"not a date: {text!r} (use YYYY-MM-DD)") from None


def _run(customer: str, run_id: str):
    from progression import ledger

    registry = load_registry()
    if customer not in registry.customers:
        raise HTTPException(status_code=404, detail=f"unknown customer {customer!r}")
    target = registry.get(customer)
    engine = platform_engine(target.platform_conn_id)
    with engine.connect() as conn:
        run = ledger.get_run(conn, run_id)
    if run is None or run["customer"] != customer:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r} for customer {customer!r}")
    return target, engine, run


@app.get("/", response_class=HTMLResponse)
def runs_page(customer: str | None = None, dag_id: str | None = None, status: str | None = None,
              since: str | None = None, until: str | None = None, page: int = 1) -> str:
    from progression.history import Filters, find_runs, render_list

    filters = Filters(customer=customer or None, dag_id=dag_id or None, status=status or None,
                      since=_day(since), until=_day(until), page=max(page, 1))
    found, total = find_runs(_databases(), filters)
    return render_list(found, total, filters, sorted(load_registry().customers), DAG_IDS, base=BASE,
                       airflow_url="")


@app.get("/runs/{customer}/{run_id}", response_class=HTMLResponse)
def run_page(customer: str, run_id: str) -> str:
    from progression.history import render_detail, written_per_day

    _target, engine, run = _run(customer, run_id)
    return render_detail(run, written_per_day(engine, customer, datetime.now(timezone.utc).date()), base=BASE)


@app.get("/report/{customer}/{run_id}")
def report(customer: str, run_id: str) -> Response:
    from progression import storage

    target, _engine, run = _run(customer, run_id)
    if not run.get("report_path"):
        raise HTTPException(status_code=404, detail=f"run {run_id!r} has no report")
    data = storage.read_bytes(storage_root(target.storage), run["report_path"])
    name = run["report_path"].rsplit("/", 1)[-1]
    return Response(data, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class ProgressionHistoryPlugin(AirflowPlugin):
    name = "progression_history"
    fastapi_apps = [{"app": app, "url_prefix": BASE, "name": "Progression run history"}]
    external_views = [{"name": "Progression", "href": f"{BASE}/", "destination": "nav", "url_route": "progression"}]
