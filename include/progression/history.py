"""Run history a data team reads at a glance: the ledgers of every configured platform database as one list,
a run's detail with its rejection reasons, and completions written per day. Rendered as plain HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from html import escape
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from progression.ledger import runs

PAGE_SIZE = 50
STATUSES = ("running", "succeeded", "failed", "skipped", "abandoned")


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


def _conditions(filters: Filters, customers: list[str]) -> list:
    where = [runs.c.customer.in_(customers)]
    if filters.customer:
        where.append(runs.c.customer == filters.customer)
    if filters.dag_id:
        where.append(runs.c.dag_id == filters.dag_id)
    if filters.status:
        where.append(runs.c.status == filters.status)
    if filters.since:
        where.append(runs.c.started_at >= datetime.combine(filters.since, datetime.min.time(), timezone.utc))
    if filters.until:
        where.append(runs.c.started_at < datetime.combine(filters.until + timedelta(days=1), datetime.min.time(),
                                                          timezone.utc))
    return where


def find_runs(databases: dict[Engine, list[str]], filters: Filters, page_size: int = PAGE_SIZE
              ) -> tuple[list[dict], int]:
    """Newest first across every database (each holds the ledgers of the customers listed with it): one page
    and the total count."""
    found, total = [], 0
    limit = filters.page * page_size
    for engine, customers in databases.items():
        where = _conditions(filters, customers)
        with engine.connect() as conn:
            total += conn.execute(sa.select(sa.func.count()).select_from(runs).where(*where)).scalar()
            rows = conn.execute(sa.select(runs).where(*where)
                                .order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)).mappings()
            found += [dict(row) for row in rows]
    found.sort(key=lambda r: (_utc(r["started_at"]), r["run_id"]), reverse=True)
    return found[(filters.page - 1) * page_size:limit], total


def written_per_day(engine: Engine, customer: str, today: date, days: int = 30) -> list[tuple[date, int]]:
    """Completions written per day by the customer's real runs over the last `days` days, oldest first."""
    first = today - timedelta(days=days - 1)
    totals = dict.fromkeys((first + timedelta(days=i) for i in range(days)), 0)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.started_at, runs.c.imported, runs.c.updated, runs.c.derived_written)
                            .where(runs.c.customer == customer, runs.c.dry_run.is_(False),
                                   runs.c.status == "succeeded",
                                   runs.c.started_at >= datetime.combine(first, datetime.min.time(), timezone.utc)))
        for started, imported, updated, derived in rows:
            day = _utc(started).date()
            if day in totals:
                totals[day] += int(imported or 0) + int(updated or 0) + int(derived or 0)
    return list(totals.items())


def _utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# --- HTML ---------------------------------------------------------------------------------------------------------

_STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2433}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{padding:.35rem .5rem;border-bottom:1px solid #e3e6ec;
text-align:left;vertical-align:top}th{background:#f4f6f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.succeeded{color:#1a7f37}.failed,.abandoned{color:#cf222e;font-weight:600}.skipped{color:#6e7781}.running{color:#9a6700}
form{margin:.5rem 0 1rem}form>*{margin-right:.4rem}.pager a{margin-right:.6rem}.bar{fill:#3b82f6}
</style>"""


def _duration(run: dict) -> str:
    if not run.get("finished_at"):
        return ""
    seconds = (_utc(run["finished_at"]) - _utc(run["started_at"])).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_list(found: list[dict], total: int, filters: Filters, customers: list[str], dag_ids: list[str], *,
                base: str, airflow_url: str, page_size: int = PAGE_SIZE) -> str:
    def options(values, chosen):
        return "".join(f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>'
                       for v in ["", *values])

    rows = []
    for run in found:
        airflow_link = (f'<a href="{escape(airflow_url)}/dags/{escape(run["dag_id"])}/runs/'
                        f'{escape(run["airflow_run_id"])}">{escape(run["airflow_run_id"])}</a>'
                        if run.get("airflow_run_id") else "")
        report = (f'<a href="{base}/report/{escape(run["customer"])}/{escape(run["run_id"])}">report</a>'
                  if run.get("report_path") else "")
        undone = f'undone by {escape(run["undone_by"])}' if run.get("undone_by") else ""
        rows.append(
            "<tr>"
            f'<td>{_utc(run["started_at"]):%Y-%m-%d %H:%M}</td><td>{escape(run["customer"])}</td>'
            f'<td>{escape(run["dag_id"].removeprefix("progression_"))}</td>'
            f'<td><a href="{base}/runs/{escape(run["customer"])}/{escape(run["run_id"])}">'
            f'{escape(run["subject"])}</a></td>'
            f'<td class="{escape(run["status"])}">{escape(run["status"])}{" (dry run)" if run["dry_run"] else ""}'
            f'{"<br>" + undone if undone else ""}</td>'
            + "".join(f'<td class="n">{int(run[k] or 0):,}</td>' for k in (
                "rows_read", "imported", "derived_written", "kept", "rejected", "without_access"))
            + f"<td>{_duration(run)}</td><td>{airflow_link}</td><td>{report}</td></tr>")
    pages = max(1, -(-total // page_size))
    pager = "".join([
        f'<a href="{base}/?{filters.query(page=filters.page - 1)}">newer</a>' if filters.page > 1 else "",
        f"page {filters.page} of {pages} ({total:,} runs)",
        f' <a href="{base}/?{filters.query(page=filters.page + 1)}">older</a>' if filters.page < pages else ""])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Progression runs</title>{_STYLE}</head><body>
<h1>Progression runs</h1>
<form method="get" action="{base}/">
<label>Customer <select name="customer">{options(customers, filters.customer)}</select></label>
<label>DAG <select name="dag_id">{options(dag_ids, filters.dag_id)}</select></label>
<label>Status <select name="status">{options(list(STATUSES), filters.status)}</select></label>
<label>From <input type="date" name="since" value="{filters.since or ''}"></label>
<label>To <input type="date" name="until" value="{filters.until or ''}"></label>
<button type="submit">Filter</button></form>
<table id="runs"><thead><tr><th>Started (UTC)</th><th>Customer</th><th>DAG</th><th>File or pair</th><th>Status</th>
<th>Rows read</th><th>Written</th><th>Through hierarchy</th><th>Kept</th><th>Rejected</th><th>Without access</th>
<th>Duration</th><th>Airflow run</th><th>Report</th></tr></thead>
<tbody>{"".join(rows) or '<tr><td colspan="14">No runs match.</td></tr>'}</tbody></table>
<p class="pager">{pager}</p></body></html>"""


def render_chart(days: list[tuple[date, int]], width: int = 720, height: int = 160) -> str:
    """A bar per day, as inline SVG: no script, so it shows wherever the page does."""
    peak = max((n for _, n in days), default=0) or 1
    step = width / max(len(days), 1)
    bars = []
    for i, (day, count) in enumerate(days):
        h = round(count / peak * (height - 20))
        bars.append(f'<rect class="bar" x="{i * step + 1:.1f}" y="{height - 15 - h}" width="{step - 2:.1f}" '
                    f'height="{h}"><title>{day:%Y-%m-%d}: {count:,}</title></rect>')
    labels = (f'<text x="0" y="{height - 2}" font-size="10">{days[0][0]:%d %b}</text>'
              f'<text x="{width - 40}" y="{height - 2}" font-size="10">{days[-1][0]:%d %b}</text>') if days else ""
    return (f'<svg id="per-day" width="{width}" height="{height}" role="img" '
            f'aria-label="completions written per day">{"".join(bars)}{labels}</svg>')


def render_detail(run: dict, days: list[tuple[date, int]], *, base: str) -> str:
    counts = "".join(f"<tr><th>{label}</th><td class='n'>{int(run[key] or 0):,}</td></tr>" for label, key in (
        ("Rows read", "rows_read"), ("Imported", "imported"), ("Updated", "updated"), ("Kept", "kept"),
        ("Duplicates", "duplicates"), ("Through the hierarchy", "derived_written"),
        ("Saved without access", "without_access"), ("Rejected", "rejected")))
    reasons = "".join(f"<tr><td>{escape(reason)}</td><td class='n'>{count:,}</td></tr>"
                      for reason, count in sorted(run["rejected_by_reason"].items(), key=lambda x: -x[1]))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(run['run_id'])}</title>{_STYLE}
</head><body><p><a href="{base}/">all runs</a></p>
<h1>{escape(run['subject'])}</h1>
<p>{escape(run['customer'])} · {escape(run['dag_id'])} · run <code>{escape(run['run_id'])}</code> ·
<span class="{escape(run['status'])}">{escape(run['status'])}</span>{' (dry run)' if run['dry_run'] else ''}
{' · undone by ' + escape(run['undone_by']) if run.get('undone_by') else ''}</p>
{f"<p>{escape(run['message'])}</p>" if run.get('message') else ''}
<table id="counts" style="width:auto">{counts}</table>
<h2>Rejected rows by reason</h2>
<table id="reasons" style="width:auto">{reasons or '<tr><td>none</td></tr>'}</table>
<h2>Completions written per day, last 30 days ({escape(run['customer'])})</h2>
{render_chart(days)}</body></html>"""
