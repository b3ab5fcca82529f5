"""The progression export: one customer's completions as the workbook the help-centre article describes.

Sheets `Summary`, `#Activities`, `#Journeys`, `#Programmes` (raw rows under the import's own column names, so a
sheet dropped into an inbox imports as is) and `Content` (every item with its uuid, type, title and parents:
where a customer looks up uuids). Rows stream from the database into the report writer, so a million completions
never sit in memory at once; they are counted first, in the same snapshot, because the writer lays out its sheets
(and the parts of a sheet longer than Excel allows) before it writes the first row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression.platform import completions, content, content_items, platform_id, users
from progression.report import Rows, Streamed, write_sheets

SHEET_OF_TYPE = {"activity": "#Activities", "journey": "#Journeys", "programme": "#Programmes"}
RAW_HEADERS = ["User email", "Content uuid", "Title", "Completion date", "Source", "Run id"]
PARENT_HEADER = "Parent uuids"
BATCH = 20_000


@dataclass
class ExportCounts:
    by_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHEET_OF_TYPE, 0))
    content_items: int = 0


def local_text(value, tz: ZoneInfo) -> str:
    """A completion time in the customer's zone, with its offset: readable, and exact when imported again (to
    the microsecond, where the time has any)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:  # SQLite keeps UTC without a zone
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(tz).isoformat(sep=" ")


def content_parents(conn: Connection, platform: int) -> dict[int, str]:
    """content id -> the uuids of the items that contain it, `;`-separated."""
    parent = content.alias("parent")
    found: dict[int, list[str]] = defaultdict(list)
    rows = conn.execute(
        sa.select(content_items.c.child_id, parent.c.uuid)
        .join(parent, parent.c.id == content_items.c.parent_id)
        .where(parent.c.platform_id == platform)
        .order_by(content_items.c.child_id, content_items.c.position, parent.c.uuid)
    )
    for child, uuid in rows:
        found[child].append(str(uuid))
    return {child: ";".join(uuids) for child, uuids in found.items()}


def _completions_query(platform: int, kind: str) -> sa.Select:
    return (
        sa.select(
            users.c.email,
            content.c.uuid,
            content.c.title,
            completions.c.completed_at,
            completions.c.source,
            completions.c.run_id,
            content.c.id,
        )
        .join(users, users.c.id == completions.c.user_id)
        .join(content, content.c.id == completions.c.content_id)
        .where(content.c.platform_id == platform, content.c.type == kind)
    )


def _completions(conn: Connection, platform: int, kind: str, parents: dict[int, str], tz: ZoneInfo) -> Iterator[list]:
    query = (
        _completions_query(platform, kind)
        .order_by(content.c.uuid, users.c.email)
        .execution_options(stream_results=True, yield_per=BATCH)
    )
    for email, uuid, title, at, source, run_id, item in conn.execute(query):
        row = [email, str(uuid), title, local_text(at, tz), source, run_id]
        yield row if kind == "programme" else [*row, parents.get(item, "")]


def content_list(conn: Connection, platform: int, parents: dict[int, str]) -> list[list]:
    """Every item of the platform as [uuid, type, title, parent uuids], by type and then title."""
    query = (
        sa.select(content.c.id, content.c.uuid, content.c.type, content.c.title)
        .where(content.c.platform_id == platform)
        .order_by(content.c.type, content.c.title, content.c.uuid)
    )
    return [[str(uuid), kind, title, parents.get(item, "")] for item, uuid, kind, title in conn.execute(query)]


def write_export(
    conn: Connection, platform_slug: str, tz: ZoneInfo, target: BinaryIO, *, summary: list[tuple[str, object]]
) -> ExportCounts:
    """Stream the platform's progression into `target`; the Summary sheet gets `summary` plus the counts.
    `conn` should read one snapshot (see `run_export`), or a write in between fails the export."""
    platform = platform_id(conn, platform_slug)
    parents = content_parents(conn, platform)
    items = content_list(conn, platform, parents)
    counts = ExportCounts(content_items=len(items))
    for kind in SHEET_OF_TYPE:
        counted = sa.select(sa.func.count()).select_from(_completions_query(platform, kind).subquery())
        counts.by_type[kind] = conn.execute(counted).scalar_one()
    summary_rows = [
        *([label, value] for label, value in summary),
        *([f"Completions of {kind}s", counts.by_type[kind]] for kind in SHEET_OF_TYPE),
        ["Content items", counts.content_items],
    ]
    sheets: list[tuple[str, list[str], Rows]] = [("Summary", ["Export", ""], summary_rows)]
    sheets += [
        (
            SHEET_OF_TYPE[kind],
            RAW_HEADERS + ([] if kind == "programme" else [PARENT_HEADER]),
            Streamed(_completions(conn, platform, kind, parents, tz), counts.by_type[kind]),
        )
        for kind in SHEET_OF_TYPE
    ]
    sheets.append(("Content", ["Content uuid", "Type", "Title", PARENT_HEADER], items))
    write_sheets(target, sheets)
    return counts


DAG_ID = "progression_export"


def run_export(target, *, airflow_run_id: str | None, dry_run: bool = False) -> dict:
    """Export one customer's progression to `reports/<date>/export.<run id>.xlsx`, recorded in the ledger, and
    write its template workbooks afresh (`templates/<type>.xlsx`, listing the content as it is now). An export
    writes no completion, so a dry run differs only in being marked as one."""
    from progression import ledger, storage
    from progression.templates import write_templates

    customer = target.customer
    run_id = ledger.new_run_id("export", customer.slug)
    with target.engine.begin() as conn:
        ledger.start_run(
            conn,
            run_id=run_id,
            customer=customer.slug,
            dag_id=DAG_ID,
            subject="progression export",
            airflow_run_id=airflow_run_id,
            dry_run=dry_run,
        )
    rel = f"{storage.REPORTS}/{ledger.utcnow():%Y-%m-%d}/export.{run_id}.xlsx"
    exported_at = local_text(ledger.utcnow().replace(microsecond=0), customer.tz)
    summary = [
        ("Customer", customer.slug),
        ("Platform", customer.platform),
        ("Run id", run_id),
        ("Exported at", exported_at),
        ("Time zone", customer.timezone),
    ]
    try:
        with target.engine.connect() as conn, storage.writer(target.root, rel) as out:
            # The counts and the rows from one snapshot (SQLite's BEGIN gives one).
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            counts = write_export(conn, customer.platform, customer.tz, out, summary=summary)
        templates = write_templates(target)
    except Exception as exc:  # the ledger says so, and the task fails with the error
        with target.engine.begin() as conn:
            ledger.finish_run(
                conn, run_id, ledger.Status.FAILED, message=f"the export failed: {exc.__class__.__name__}: {exc}"
            )
        raise
    exported = sum(counts.by_type.values())
    with target.engine.begin() as conn:
        ledger.record_counts(conn, run_id, ledger.RunCounts(rows_read=exported))
        ledger.finish_run(conn, run_id, ledger.Status.SUCCEEDED, report_path=rel)
    return {
        "dag": DAG_ID,
        "customer": customer.slug,
        "run_id": run_id,
        "report": rel,
        "dry_run": dry_run,
        "completions": {kind: n for kind, n in counts.by_type.items()},
        "content_items": counts.content_items,
        "templates": templates,
    }
