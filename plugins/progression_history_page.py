"""The "Progression" page in Airflow's UI: every customer's health at a glance (the landing view), every run of
the ledgers, newest first, a page per run with its report and what can be done about it (undo with a preview
first, re-run a failed file), and each customer's files waiting in the inbox (a dry-run import). A FastAPI app
mounted in Airflow's API server behind its authentication (by the plugin in progression_history.py, on the page's
first request); it reads the ledgers through the same code the DAGs use and never touches Airflow's metadata
database.

Every action is an Airflow DAG run made through Airflow's own REST API with the logged-in user's own credentials,
so Airflow's authorization decides and the DAG run records who asked, when and with which conf. A button shows only
to a user the auth manager lets trigger its DAG, and a POST from anyone else is refused here before any call."""

from __future__ import annotations

from datetime import date, datetime, timezone
from urllib.parse import quote, urlencode

import httpx
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from progression.customers import load_registry
from progression_airflow import platform_engine, storage_root, target_for
from progression_history import BASE

IMPORT, UNDO = "progression_import", "progression_undo"
DAG_IDS = [IMPORT, "progression_transfer", "progression_merge_users", UNDO, "progression_export"]
AIRFLOW_URL = ""  # Airflow's grid, on the same host as this page

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


def _customer(customer: str):
    registry = load_registry()
    if customer not in registry.customers:
        raise HTTPException(status_code=404, detail=f"unknown customer {customer!r}")
    return registry.get(customer)


def _run(customer: str, run_id: str):
    from progression import ledger

    target = _customer(customer)
    engine = platform_engine(target.platform_conn_id)
    with engine.connect() as conn:
        run = ledger.get_run(conn, run_id)
    if run is None or run["customer"] != customer:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r} for customer {customer!r}")
    return target, engine, run


# --- Airflow: who may trigger what, and its REST API on the user's behalf ------------------------------------------


def may_trigger(user, dag_id: str) -> bool:
    """Whether Airflow's auth manager lets this user create runs of the DAG (as its own trigger endpoint asks)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


def _require_trigger(user, dag_id: str) -> None:
    if not may_trigger(user, dag_id):
        raise HTTPException(status_code=403, detail=f"you may not trigger {dag_id}")


def _airflow(request: Request, method: str, path: str, **kwargs) -> dict:
    """Airflow's REST API with the caller's own token: the header it sent, else the UI's session cookie."""
    from airflow.configuration import conf

    api = (conf.get("api", "base_url", fallback="") or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")
    sent = request.headers.get("authorization", "")
    token = sent[7:] if sent.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    response = httpx.request(
        method, f"{api}/api/v2{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs
    )
    if response.is_error:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise HTTPException(status_code=response.status_code, detail=f"Airflow refused {method} {path}: {detail}")
    return response.json()


def _trigger(request: Request, dag_id: str, conf: dict) -> str:
    made = _airflow(request, "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    return made["dag_run_id"]


def _action(request: Request, action_dag: str | None, action_run: str | None):
    from progression.history import Action

    if not (action_dag and action_run):
        return None
    return Action(action_dag, action_run, _dag_run_state(request, action_dag, action_run))


def _dag_run_state(request: Request, dag_id: str, dag_run_id: str) -> str:
    return _airflow(request, "GET", f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(dag_run_id, safe='')}")["state"]


def _after(page: str, dag_id: str, dag_run_id: str) -> RedirectResponse:
    """Back to the page the action came from, which then follows the DAG run."""
    return RedirectResponse(f"{page}?{urlencode({'action_dag': dag_id, 'action_run': dag_run_id})}", status_code=303)


# --- pages ---------------------------------------------------------------------------------------------------------


@app.get("/", response_class=HTMLResponse)
def overview() -> str:
    """Every customer of the registry, worst first, as the health check sees it now."""
    from progression.health import customer_health, worst_first
    from progression.history import render_overview

    now = datetime.now(timezone.utc)
    healths = worst_first(
        [customer_health(target_for(customer), now) for customer in load_registry().customers.values()]
    )
    return render_overview([health.as_dict() for health in healths], now, base=BASE)


@app.get("/runs", response_class=HTMLResponse)
def runs_page(
    customer: str | None = None,
    dag_id: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    page: int = 1,
) -> str:
    from progression.history import Filters, find_runs, render_list

    filters = Filters(
        customer=customer or None,
        dag_id=dag_id or None,
        status=status or None,
        since=_day(since),
        until=_day(until),
        page=max(page, 1),
    )
    found, total = find_runs(_databases(), filters)
    return render_list(
        found, total, filters, sorted(load_registry().customers), DAG_IDS, base=BASE, airflow_url=AIRFLOW_URL
    )


@app.get("/runs/{customer}/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    customer: str,
    run_id: str,
    action_dag: str | None = None,
    action_run: str | None = None,
    user=Depends(get_user),
) -> str:
    from progression import ledger, storage
    from progression.history import REPORT_SHEETS, RunActions, render_detail, report_sheet, written_per_day

    target, engine, run = _run(customer, run_id)
    with engine.connect() as conn:
        previews = tuple(ledger.undos_of(conn, run_id))
    failed = (
        failed_file(storage_root(target.storage), run)
        if run["dag_id"] == IMPORT and run["status"] == ledger.Status.FAILED and not run["dry_run"]
        else None
    )
    actions = RunActions(
        undo=may_trigger(user, UNDO),
        previews=previews,
        failed_file=failed if failed and may_trigger(user, IMPORT) else None,
    )
    report: tuple[list[str], list[tuple]] = ([], [])
    if run["dag_id"] in REPORT_SHEETS and run.get("report_path"):
        report = report_sheet(run, storage.read_bytes(storage_root(target.storage), run["report_path"]))
    return render_detail(
        run,
        written_per_day(engine, customer, datetime.now(timezone.utc).date()),
        base=BASE,
        airflow_url=AIRFLOW_URL,
        actions=actions,
        action=_action(request, action_dag, action_run),
        report=report,
    )


@app.get("/customers/{customer}/waiting", response_class=HTMLResponse)
def waiting_page(
    request: Request,
    customer: str,
    action_dag: str | None = None,
    action_run: str | None = None,
    user=Depends(get_user),
) -> str:
    from progression import storage
    from progression.history import render_waiting

    inbox = storage.inbox_files(storage_root(_customer(customer).storage))
    return render_waiting(
        customer,
        inbox.files,
        inbox.refused,
        base=BASE,
        airflow_url=AIRFLOW_URL,
        may_dry_run=may_trigger(user, IMPORT),
        action=_action(request, action_dag, action_run),
    )


@app.get("/report/{customer}/{run_id}")
def report(customer: str, run_id: str) -> Response:
    from progression import storage

    target, _engine, run = _run(customer, run_id)
    if not run.get("report_path"):
        raise HTTPException(status_code=404, detail=f"run {run_id!r} has no report")
    data = storage.read_bytes(storage_root(target.storage), run["report_path"])
    name = run["report_path"].rsplit("/", 1)[-1]
    return Response(
        data,
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- actions -------------------------------------------------------------------------------------------------------


@app.get("/actions/state/{dag_id}/{dag_run_id}")
def action_state(request: Request, dag_id: str, dag_run_id: str) -> dict:
    return {"dag_id": dag_id, "dag_run_id": dag_run_id, "state": _dag_run_state(request, dag_id, dag_run_id)}


@app.post("/actions/undo/{customer}/{run_id}")
def undo(
    request: Request, customer: str, run_id: str, dry_run: bool = Form(...), user=Depends(get_user)
) -> RedirectResponse:
    """Undo a run: a dry run first, whose result shows on the run's page, then for real."""
    _require_trigger(user, UNDO)
    _run(customer, run_id)
    dag_run_id = _trigger(request, UNDO, {"customer": customer, "run_id": run_id, "dry_run": dry_run})
    return _after(f"{BASE}/runs/{customer}/{run_id}", UNDO, dag_run_id)


@app.post("/actions/rerun/{customer}/{run_id}")
def rerun(request: Request, customer: str, run_id: str, user=Depends(get_user)) -> RedirectResponse:
    """Move a failed import's file back into the inbox and import that path; back to failed/ if Airflow refuses."""
    from progression import storage

    _require_trigger(user, IMPORT)
    target, _engine, run = _run(customer, run_id)
    root = storage_root(target.storage)
    failed = failed_file(root, run) if run["dag_id"] == IMPORT else None
    if failed is None:
        raise HTTPException(status_code=409, detail=f"run {run_id!r} has no failed file to import again")
    kind = run["content_type"]
    inbox = storage.free_name(
        root,
        f"{storage.INBOX}/{kind}" if kind else storage.INBOX,
        failed.rsplit("/", 1)[-1],
        datetime.now(timezone.utc),
    )
    storage.move(root, failed, inbox)
    try:
        dag_run_id = _trigger(request, IMPORT, {"customer": customer, "path": inbox})
    except HTTPException:
        storage.move(root, inbox, failed)
        raise
    return _after(f"{BASE}/runs/{customer}/{run_id}", IMPORT, dag_run_id)


@app.post("/actions/dry-run-import/{customer}")
def dry_run_import(request: Request, customer: str, path: str = Form(...), user=Depends(get_user)) -> RedirectResponse:
    from progression import storage

    _require_trigger(user, IMPORT)
    if path not in {rel for rel, _kind in storage.inbox_files(storage_root(_customer(customer).storage)).files}:
        raise HTTPException(status_code=404, detail=f"{path!r} is not waiting in the inbox of {customer}")
    dag_run_id = _trigger(request, IMPORT, {"customer": customer, "path": path, "dry_run": True})
    return _after(f"{BASE}/customers/{customer}/waiting", IMPORT, dag_run_id)


def failed_file(root, run: dict) -> str | None:
    """Where a failed import left its file: in failed/<type>/ under its own name, or the name with a time stamp
    when one was there already (storage.free_name); the one with the run's bytes."""
    from progression import storage

    name = run["subject"].rsplit("/", 1)[-1]
    folder = f"{storage.FAILED}/{run['content_type']}" if run.get("content_type") else storage.FAILED
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if dot else (name, "")
    for rel in storage.files_in(root, folder):
        candidate = rel.rsplit("/", 1)[-1]
        same_name = candidate == name or (
            candidate.startswith(f"{stem}.")
            and candidate.endswith(suffix)
            and len(candidate) == len(name) + len(".20260101T000000")
        )
        if same_name and run.get("checksum") == storage.checksum(storage.read_bytes(root, rel)):
            return rel
    return None
