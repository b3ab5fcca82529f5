"""Run history a data team reads at a glance: every customer's health on one page, the ledgers of every configured
platform database as one list, a run's detail with its rejection reasons, and completions written per day. Rendered
as plain HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from html import escape
from io import BytesIO
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from progression.ledger import RECORDED, WRITTEN, Status, as_utc, runs
from progression.runs import figure_lines

PAGE_SIZE = 50


@dataclass(frozen=True)
class Filters:
    customer: str | None = None
    dag_id: str | None = None
    status: str | None = None
    since: date | None = None
    until: date | None = None
    page: int = 1

    def query(self, **changes) -> str:
        values = {**self.__dict__, **changes}
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _conditions(filters: Filters, customers: list[str]) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [runs.c.customer.in_(customers)]
    if filters.customer:
        where.append(runs.c.customer == filters.customer)
    if filters.dag_id:
        where.append(runs.c.dag_id == filters.dag_id)
    if filters.status:
        where.append(runs.c.status == filters.status)
    if filters.since:
        where.append(runs.c.started_at >= datetime.combine(filters.since, datetime.min.time(), timezone.utc))
    if filters.until:
        where.append(
            runs.c.started_at < datetime.combine(filters.until + timedelta(days=1), datetime.min.time(), timezone.utc)
        )
    return where


def find_runs(
    databases: dict[Engine, list[str]], filters: Filters, page_size: int = PAGE_SIZE
) -> tuple[list[dict], int]:
    """Newest first across every database (each holds the ledgers of the customers listed with it): one page
    and the total count."""
    found, total = [], 0
    limit = filters.page * page_size
    for engine, customers in databases.items():
        where = _conditions(filters, customers)
        with engine.connect() as conn:
            total += conn.execute(sa.select(sa.func.count()).select_from(runs).where(*where)).scalar_one()
            rows = conn.execute(
                sa.select(runs).where(*where).order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)
            ).mappings()
            found += [dict(row) for row in rows]
    found.sort(key=lambda r: (as_utc(r["started_at"]), r["run_id"]), reverse=True)
    return found[(filters.page - 1) * page_size : limit], total


def written_per_day(engine: Engine, customer: str, today: date, days: int = 30) -> list[tuple[date, int]]:
    """Completions written (new, changed, through contents) per day by the customer's real imports, transfers and
    merges over the last `days` days, oldest first; an undo restores, and is not counted."""
    first = today - timedelta(days=days - 1)
    totals = dict.fromkeys((first + timedelta(days=i) for i in range(days)), 0)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(runs.c.started_at, *(runs.c[name] for name in WRITTEN)).where(
                runs.c.customer == customer,
                runs.c.dry_run.is_(False),
                runs.c.status == Status.SUCCEEDED,
                runs.c.started_at >= datetime.combine(first, datetime.min.time(), timezone.utc),
            )
        )
        for started, *written in rows:
            day = as_utc(started).date()
            if day in totals:
                totals[day] += sum(int(n or 0) for n in written)
    return list(totals.items())


UNDO = "progression_undo"
# The report sheet that says per pair (or per figure) what a run did, shown on its page.
REPORT_SHEETS = {UNDO: "Summary", "progression_transfer": "Pairs", "progression_merge_users": "Pairs"}


def report_sheet(run: dict, workbook: bytes) -> tuple[list[str], list[tuple]]:
    """The headers and rows of the report sheet that details this kind of run (empty when it has none)."""
    from openpyxl import load_workbook

    sheet_name = REPORT_SHEETS.get(run["dag_id"])
    book = load_workbook(BytesIO(workbook), read_only=True)
    if sheet_name not in book.sheetnames:
        return [], []
    rows = [tuple("" if cell is None else cell for cell in row) for row in book[sheet_name].iter_rows(values_only=True)]
    book.close()
    return (list(rows[0]), rows[1:]) if rows else ([], [])


# --- HTML ---------------------------------------------------------------------------------------------------------

_STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1rem 1.5rem;color:#1d2433;max-width:1300px}
table{border-collapse:collapse;font-size:.88rem}th,td{padding:.3rem .45rem;border-bottom:1px solid #e3e6ec;
text-align:left;vertical-align:top;overflow-wrap:anywhere}th{background:#f4f6f9}
td.n{text-align:right;font-variant-numeric:tabular-nums}
#runs,#overview{width:100%;table-layout:fixed}#runs td.what,#overview small{font-size:.82rem;color:#424a57}
.succeeded,.ok{color:#1a7f37}.failed,.abandoned,.failing{color:#cf222e;font-weight:600}
.skipped,.no_expectation{color:#6e7781}.running,.late,.unusual{color:#9a6700}.late,.unusual{font-weight:600}
form{margin:.5rem 0 1rem}form>*{margin-right:.4rem}.pager a{margin-right:.6rem}.bar{fill:#3b82f6}
form.action{display:inline;margin:0}.action-box{padding:.6rem .8rem;background:#f4f6f9;border-left:4px solid #3b82f6;
margin:.8rem 0}button{cursor:pointer}.preview{border-left:4px solid #9a6700;padding:.2rem .8rem;margin:.6rem 0}
</style>"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{escape(title)}</title>{_STYLE}</head><body>{body}</body></html>"
    )


def _duration(run: dict) -> str:
    if not run.get("finished_at"):
        return ""
    seconds = (as_utc(run["finished_at"]) - as_utc(run["started_at"])).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _status(run: dict) -> str:
    return (
        f'<span class="{escape(run["status"])}">{escape(run["status"])}</span>{" (dry run)" if run["dry_run"] else ""}'
    )


def grid_link(airflow_url: str, dag_id: str, dag_run_id: str) -> str:
    """The DAG run in Airflow's grid."""
    return f'<a href="{escape(airflow_url)}/dags/{escape(dag_id)}/runs/{escape(dag_run_id)}">{escape(dag_run_id)}</a>'


def render_list(
    found: list[dict],
    total: int,
    filters: Filters,
    customers: list[str],
    dag_ids: list[str],
    *,
    base: str,
    airflow_url: str,
    page_size: int = PAGE_SIZE,
) -> str:
    def options(values, chosen):
        return "".join(
            f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>'
            for v in ["", *values]
        )

    rows = []
    for run in found:
        customer, run_id = escape(run["customer"]), escape(run["run_id"])
        links = [
            f'<a href="{base}/report/{customer}/{run_id}">report</a>' if run.get("report_path") else "",
            grid_link(airflow_url, run["dag_id"], run["airflow_run_id"]) if run.get("airflow_run_id") else "",
        ]
        undone = f"<br>undone by {escape(run['undone_by'])}" if run.get("undone_by") else ""
        what = " · ".join(f"{n:,} {label}" for label, n in figure_lines(run)[:3])
        rows.append(
            f"<tr><td>{as_utc(run['started_at']):%Y-%m-%d %H:%M}<br><small>{_duration(run)}</small></td>"
            f"<td>{customer}</td><td>{escape(run['dag_id'].removeprefix('progression_'))}</td>"
            f'<td><a href="{base}/runs/{customer}/{run_id}">{escape(run["subject"])}</a></td>'
            f'<td>{_status(run)}{undone}</td><td class="what">{what}</td>'
            f"<td>{'<br>'.join(link for link in links if link)}</td></tr>"
        )
    pages = max(1, -(-total // page_size))
    pager = "".join(
        [
            f'<a href="{base}/runs?{filters.query(page=filters.page - 1)}">newer</a>' if filters.page > 1 else "",
            f"page {filters.page} of {pages} ({total:,} runs)",
            f' <a href="{base}/runs?{filters.query(page=filters.page + 1)}">older</a>' if filters.page < pages else "",
        ]
    )
    waiting = (
        f' · <a href="{base}/customers/{escape(filters.customer)}/waiting">files waiting in '
        f"{escape(filters.customer)}'s inbox</a>"
        if filters.customer
        else ""
    )
    return _page(
        "Progression runs",
        f"""<p><a href="{base}/">customers overview</a></p><h1>Progression runs</h1>
<form method="get" action="{base}/runs">
<label>Customer <select name="customer">{options(customers, filters.customer)}</select></label>
<label>DAG <select name="dag_id">{options(dag_ids, filters.dag_id)}</select></label>
<label>Status <select name="status">{options(list(RECORDED), filters.status)}</select></label>
<label>From <input type="date" name="since" value="{filters.since or ""}"></label>
<label>To <input type="date" name="until" value="{filters.until or ""}"></label>
<button type="submit">Filter</button>{waiting}</form>
<table id="runs"><colgroup><col style="width:9rem"><col style="width:8rem"><col style="width:7rem"><col>
<col style="width:9rem"><col style="width:17rem"><col style="width:11rem"></colgroup>
<thead><tr><th>Started (UTC)</th><th>Customer</th><th>DAG</th><th>File or pair</th><th>Status</th>
<th>What happened</th><th>Report, Airflow run</th></tr></thead>
<tbody>{"".join(rows) or '<tr><td colspan="7">No runs match.</td></tr>'}</tbody></table>
<p class="pager">{pager}</p>""",
    )


def _ago(at: datetime, now: datetime) -> str:
    minutes = int((now - at).total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago" if minutes < 48 * 60 else f"{minutes // (24 * 60)} days ago"


def _when(at: str, now: datetime) -> str:
    """A health time (ISO text) as UTC minutes and how long ago it was."""
    moment = as_utc(at)
    return f"{moment:%Y-%m-%d %H:%M}<br><small>{_ago(moment, now)}</small>"


def _shortened(text: str, limit: int = 160) -> str:
    """Long failure messages (a file's whole header row) cut to keep the row short; the whole text on hover."""
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return f'<span title="{escape(text)}">{escape(cut)}</span>'


def render_overview(healths: list[dict], now: datetime, *, base: str) -> str:
    """One row per customer, worst first, from health.customer_health's `as_dict()`: its state, last successful
    import, files waiting, last failure and failing streak, completions written lately and unusual files."""
    rows = []
    for health in healths:
        slug = escape(health["customer"])
        run_url = f"{base}/runs/{slug}/"
        state = health["state"]
        expects = (
            f"<br><small>expects files every {escape(health['expected_every'])}</small>"
            if health["expected_every"]
            else ""
        )
        success, failure = health["last_success"], health["last_failure"]
        success_cell = (
            f'<a href="{run_url}{escape(success["run_id"])}">{_when(success["at"], now)}</a><br>'
            f"{success['completions']:,} completions"
            if success
            else "never"
        )
        failure_cell = (
            f'{_when(failure["at"], now)}<br><a href="{run_url}{escape(failure["run_id"])}">'
            f"{escape(failure['file'])}</a><br><small>{_shortened(failure['message'] or '')}</small>"
            if failure
            else ""
        )
        waiting = (
            f'<a href="{base}/customers/{slug}/waiting">{health["waiting_files"]:,}</a>'
            if health["waiting_files"]
            else "0"
        )
        unusual = "<br>".join(
            f'<a href="{run_url}{escape(f["run_id"])}">{escape(f["file"])}</a>: '
            f"<small>{f['rows_read']:,} rows read, usually {round(f['median']):,}</small>"
            for f in health["unusual_files"]
        )
        rows.append(
            f'<tr id="customer-{slug}"><td><a href="{base}/runs?{urlencode({"customer": health["customer"]})}">'
            f'{slug}</a></td><td><span class="{escape(state)}">{escape(state.replace("_", " "))}</span>{expects}</td>'
            f'<td>{success_cell}</td><td class="n">{waiting}</td><td>{failure_cell}</td>'
            f'<td class="n">{health["failing_streak"]:,}</td><td class="n">{health["written_7d"]:,}</td>'
            f'<td class="n">{health["written_30d"]:,}</td><td>{unusual}</td></tr>'
        )
    tally: dict[str, int] = {}
    for health in healths:  # already worst first, so the tally reads worst first too
        tally[health["state"]] = tally.get(health["state"], 0) + 1
    summary = " · ".join(
        f'<span class="{escape(s)}">{n} {escape(s.replace("_", " "))}</span>' for s, n in tally.items()
    )
    return _page(
        "Progression: customers",
        f"""<p><a href="{base}/runs">all runs</a></p>
<h1>Customers</h1>
<p>{len(healths)} customers: {summary or "none in the registry"} · as of {now:%Y-%m-%d %H:%M} UTC</p>
<table id="overview"><colgroup><col style="width:7rem"><col style="width:7.5rem"><col style="width:9.5rem">
<col style="width:5rem"><col><col style="width:5rem"><col style="width:5.5rem"><col style="width:5.5rem">
<col style="width:13rem"></colgroup>
<thead><tr><th>Customer (its runs)</th><th>State</th><th>Last successful import</th><th>Files waiting</th>
<th>Last failure</th><th>Failed in a row</th><th>Written, 7 days</th><th>Written, 30 days</th><th>Unusual files</th>
</tr></thead>
<tbody>{"".join(rows) or '<tr><td colspan="9">No customers in the registry.</td></tr>'}</tbody></table>""",
    )


def render_chart(days: list[tuple[date, int]], width: int = 720, height: int = 160) -> str:
    """A bar per day, as inline SVG: no script, so it shows wherever the page does."""
    peak = max((n for _, n in days), default=0) or 1
    step = width / max(len(days), 1)
    bars = []
    for i, (day, count) in enumerate(days):
        h = round(count / peak * (height - 20))
        bars.append(
            f'<rect class="bar" x="{i * step + 1:.1f}" y="{height - 15 - h}" width="{step - 2:.1f}" '
            f'height="{h}"><title>{day:%Y-%m-%d}: {count:,}</title></rect>'
        )
    labels = (
        (
            f'<text x="0" y="{height - 2}" font-size="10">{days[0][0]:%d %b}</text>'
            f'<text x="{width - 40}" y="{height - 2}" font-size="10">{days[-1][0]:%d %b}</text>'
        )
        if days
        else ""
    )
    return (
        f'<svg id="per-day" width="{width}" height="{height}" role="img" '
        f'aria-label="completions written per day">{"".join(bars)}{labels}</svg>'
    )


@dataclass(frozen=True)
class Action:
    """An Airflow DAG run the page started on the user's behalf, and its state as the REST API last said."""

    dag_id: str
    dag_run_id: str
    state: str

    @property
    def ended(self) -> bool:
        return self.state in ("success", "failed")  # Airflow's DAG run states, not the ledger's


def action_box(action: Action | None, *, base: str, airflow_url: str) -> str:
    """The action's DAG run state, polled through the page's own app until it ends; then the page reloads once to
    show the result (rendered with the ended state, it polls no more)."""
    if action is None:
        return ""
    poll = (
        ""
        if action.ended
        else f"""<script>
(function poll() {{
  fetch("{base}/actions/state/{escape(action.dag_id)}/{escape(action.dag_run_id)}", {{credentials: "same-origin"}})
    .then(r => r.json()).then(s => {{
      document.getElementById("action-state").textContent = s.state;
      if (s.state === "success" || s.state === "failed") location.reload(); else setTimeout(poll, 2000);
    }});
}})();</script>"""
    )
    return (
        f'<div class="action-box" id="action">{escape(action.dag_id)} run '
        f"{grid_link(airflow_url, action.dag_id, action.dag_run_id)}: "
        f'<strong id="action-state">{escape(action.state)}</strong></div>{poll}'
    )


def _button(url: str, label: str, name: str, fields: dict[str, str] | None = None) -> str:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in (fields or {}).items())
    return (
        f'<form class="action" method="post" action="{escape(url)}">{hidden}'
        f'<button type="submit" name="{name}">{escape(label)}</button></form>'
    )


@dataclass(frozen=True)
class RunActions:
    """What the logged-in user may do from a run's page, as Airflow's authorization and the run allow."""

    undo: bool = False  # progression_undo may be triggered and the run can be undone
    failed_file: str | None = None  # the run's file in failed/, to move back and import again
    previews: tuple[dict, ...] = ()  # the undo runs of this run in the ledger, newest first


def undoable(run: dict) -> bool:
    """A real run that finished writing completions and is not undone yet (undo.plan refuses the others)."""
    return (
        not run["dry_run"]
        and run["status"] == Status.SUCCEEDED
        and not run.get("undone_by")
        and run["dag_id"] != "progression_export"
    )


def _undo_section(run: dict, actions: RunActions, base: str) -> str:
    url = f"{base}/actions/undo/{escape(run['customer'])}/{escape(run['run_id'])}"
    preview = next((p for p in actions.previews if p["dry_run"]), None)
    parts = ["<h2>Undo</h2>"]
    if preview:
        figures = "".join(f"<tr><th>{label}</th><td class='n'>{n:,}</td></tr>" for label, n in figure_lines(preview))
        parts.append(
            f'<div class="preview" id="undo-preview"><p>Preview <a href="{base}/runs/{escape(run["customer"])}/'
            f'{escape(preview["run_id"])}">{escape(preview["run_id"])}</a> ({_status(preview)}): '
            f"{escape(preview.get('message') or '')}</p><table>{figures}</table></div>"
        )
    if actions.undo and undoable(run):
        parts.append(_button(url, "Preview the undo (dry run)", "undo-preview", {"dry_run": "true"}))
        if preview and preview["status"] == Status.SUCCEEDED:
            parts.append(_button(url, "Undo this run for real", "undo-confirm", {"dry_run": "false"}))
    return "".join(parts) if len(parts) > 1 else ""


def render_detail(
    run: dict,
    days: list[tuple[date, int]],
    *,
    base: str,
    airflow_url: str = "",
    actions: RunActions = RunActions(),
    action: Action | None = None,
    report: tuple[list[str], list[tuple]] = ([], []),
) -> str:
    customer, run_id = escape(run["customer"]), escape(run["run_id"])
    counts = "".join(f"<tr><th>{label}</th><td class='n'>{n:,}</td></tr>" for label, n in figure_lines(run))
    reasons = "".join(
        f"<tr><td>{escape(reason)}</td><td class='n'>{count:,}</td></tr>"
        for reason, count in sorted(run["rejected_by_reason"].items(), key=lambda x: -x[1])
    )
    headers, rows = report
    detail = (
        (
            f'<h2>From the report: {escape(REPORT_SHEETS[run["dag_id"]])}</h2><table id="report-detail">'
            f"<tr>{''.join(f'<th>{escape(str(h))}</th>' for h in headers)}</tr>"
            + "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
            + "</table>"
        )
        if headers
        else ""
    )
    rerun = (
        (
            f"<h2>Failed file</h2><p><code>{escape(actions.failed_file)}</code> "
            + _button(f"{base}/actions/rerun/{customer}/{run_id}", "Move it back to the inbox and import it", "rerun")
            + "</p>"
        )
        if actions.failed_file
        else ""
    )
    airflow_run = (
        f" · Airflow run {grid_link(airflow_url, run['dag_id'], run['airflow_run_id'])}"
        if run.get("airflow_run_id")
        else ""
    )
    report_link = f' · <a href="{base}/report/{customer}/{run_id}">report</a>' if run.get("report_path") else ""
    return _page(
        run["run_id"],
        f"""<p><a href="{base}/runs">all runs</a> ·
<a href="{base}/runs?customer={customer}">{customer}'s runs</a> ·
<a href="{base}/customers/{customer}/waiting">files waiting in {customer}'s inbox</a></p>
<h1>{escape(run["subject"])}</h1>
<p>{customer} · {escape(run["dag_id"])} · run <code>{run_id}</code> · {_status(run)}
{" · undone by " + escape(run["undone_by"]) if run.get("undone_by") else ""}{airflow_run}{report_link}</p>
{f"<p>{escape(run['message'])}</p>" if run.get("message") else ""}
{action_box(action, base=base, airflow_url=airflow_url)}
<table id="counts">{counts}</table>
{_undo_section(run, actions, base)}{rerun}
{f'<h2>Rejected by reason</h2><table id="reasons">{reasons}</table>' if reasons else ""}{detail}
<h2>Completions written per day by imports, transfers and merges, last 30 days ({customer})</h2>
{render_chart(days)}""",
    )


def render_waiting(
    customer: str,
    files: list[tuple[str, str | None]],
    refused: list[str],
    *,
    base: str,
    airflow_url: str,
    may_dry_run: bool,
    action: Action | None = None,
) -> str:
    """A customer's files waiting in the inbox, each with a button for a dry-run import of it."""
    url = f"{base}/actions/dry-run-import/{escape(customer)}"
    rows = "".join(
        f"<tr><td><code>{escape(path)}</code></td><td>{escape(kind or '')}</td>"
        f"<td>{_button(url, 'Dry-run import', 'dry-run-import', {'path': path}) if may_dry_run else ''}</td></tr>"
        for path, kind in files
    )
    odd = "".join(f"<li>{escape(reason)}</li>" for reason in refused)
    return _page(
        f"{customer}: waiting files",
        f"""<p><a href="{base}/runs">all runs</a> ·
<a href="{base}/runs?customer={escape(customer)}">{escape(customer)}'s runs</a></p>
<h1>Files waiting in {escape(customer)}'s inbox</h1>
{action_box(action, base=base, airflow_url=airflow_url)}
<table id="waiting"><tr><th>File</th><th>Content type</th><th></th></tr>
{rows or '<tr><td colspan="3">The inbox is empty.</td></tr>'}</table>
{f"<h2>Left where they are</h2><ul>{odd}</ul>" if odd else ""}""",
    )
