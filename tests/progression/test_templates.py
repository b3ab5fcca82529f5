"""The customer's template workbooks, read back with openpyxl as Excel would open them, and filled as a customer
would: on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import replace
from datetime import datetime

import openpyxl
import pytest
import sqlalchemy as sa

from support import NOW, SMALL, stored, utc
from progression import ledger
from progression.customers import CONTENT_TYPES
from progression.db import engine_for
from demo_platform import seed_platform
from progression.pipeline import plan, run_file
from progression.platform import CONTENT_TYPE_OF, content, content_items, create_platform_tables
from progression.templates import write_templates

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADERS = ["User email", "Content uuid", "Completion date"]


def opened(target, content_type: str) -> openpyxl.Workbook:
    return openpyxl.load_workbook(target.root / "templates" / f"{content_type}.xlsx")


def listed(book: openpyxl.Workbook) -> list[str]:
    """The values the `Content uuid` drop-down offers: the cells its formula points at."""
    [drop_down] = book["Completions"].data_validations.dataValidation
    sheet, cells = drop_down.formula1.split("!")
    return [cell.value for (cell,) in book[sheet][cells.replace("$", "")]]


def parents_of(engine, uuid: str) -> list[str]:
    parent = content.alias("parent")
    query = (
        sa.select(parent.c.uuid)
        .join(content_items, content_items.c.parent_id == parent.c.id)
        .join(content, content.c.id == content_items.c.child_id)
        .where(content.c.uuid == uuid)
    )
    with engine.connect() as conn:
        return sorted(str(u) for u in conn.execute(query).scalars())


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_a_template_offers_the_platforms_content_of_its_type_in_a_drop_down(target, platform, content_type):
    assert write_templates(target) == [f"templates/{kind}.xlsx" for kind in CONTENT_TYPES]
    book = opened(target, content_type)
    assert book.sheetnames == ["Completions", "Instructions", "Content", "Lists"]
    fill = book["Completions"]
    assert [c.value for c in fill[1]][:3] == HEADERS
    [drop_down] = fill.data_validations.dataValidation
    assert drop_down.type == "list" and str(drop_down.sqref) == "B2:B1048576"  # the uuid column, every row
    assert book[drop_down.formula1.split("!")[0]].sheet_state == "hidden"
    mine = platform.uuids[CONTENT_TYPE_OF[content_type]]
    assert sorted(listed(book)) == sorted(mine)  # exactly this platform's items of the type, never `other`'s
    rows = list(book["Content"].iter_rows(values_only=True))
    assert sorted(row[0] for row in rows[1:]) == sorted(mine)
    if content_type == "programmes":
        assert rows[0] == ("Content uuid", "Title")
    else:
        assert rows[0] == ("Content uuid", "Title", "Parent uuids")
        assert all(sorted((row[2] or "").split(";")) == (parents_of(target.engine, row[0]) or [""]) for row in rows[1:])
        assert any(row[2] for row in rows[1:])


def test_instructions_name_the_customers_date_order_time_zone_limits_and_folders(target, platform):
    target = replace(
        target,
        customer=replace(
            target.customer, date_order="MDY", timezone="America/Chicago", max_rows=5_000, max_error_rate=0.25
        ),
    )
    write_templates(target)
    book = opened(target, "journeys")
    text = "\n".join(" ".join(str(v) for v in row if v) for row in book["Instructions"].iter_rows(values_only=True))
    for wanted in (
        "MDY",
        "month first",
        "03/31/2024",
        "America/Chicago",
        "5,000 rows",
        "25%",
        "inbox/journeys/",
        "check/journeys/",
        "Left blank, it is the day of the import",
    ):
        assert wanted in text, wanted
    [drop_down] = book["Completions"].data_validations.dataValidation
    assert str(drop_down.sqref) == "B2:B5001"  # no further than the rows a file may have


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_a_filled_template_imports_as_it_is(target, platform, content_type):
    write_templates(target)
    book = opened(target, content_type)
    offered = listed(book)
    picks = [offered[i % len(offered)] for i in range(3)]  # a small platform has two programmes
    fill = book["Completions"]
    for row, (email, uuid, date) in enumerate(
        zip(platform.emails, picks, [datetime(2024, 3, 31), "31-03-2024", None]), start=2
    ):
        fill.cell(row, 1, email), fill.cell(row, 2, uuid), fill.cell(row, 3, date)
    filled = io.BytesIO()
    book.save(filled)
    rel = f"inbox/{content_type}/filled.xlsx"
    (target.root / rel).parent.mkdir(parents=True)
    (target.root / rel).write_bytes(filled.getvalue())
    [job] = plan(
        target,
        path=rel,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id="manual__test",
        started=NOW,
    )
    job = run_file(target, job)
    assert job.status == "ok" and job.sheet == "Completions", job.message
    assert job.counts["imported"] == 3 and job.counts["rejected"] == 0
    got = stored(target.engine)
    assert got[(platform.emails[0], picks[0])][0] == utc("2024-03-30 23:00")
    assert got[(platform.emails[1], picks[1])][0] == utc("2024-03-30 23:00")
    assert got[(platform.emails[2], picks[2])][0] == utc("2026-11-27 23:00")  # blank: the day of the import


def test_titles_that_look_like_formulas_stay_text(target, platform):
    uuid = platform.uuids["activity"][0]
    with target.engine.begin() as conn:
        conn.execute(sa.update(content).where(content.c.uuid == uuid).values(title='=HYPERLINK("http://evil")'))
    write_templates(target)
    book = opened(target, "activities")
    for sheet in ("Content", "Lists"):
        cells = [c for row in book[sheet].iter_rows(min_row=2) for c in row if c.value == '=HYPERLINK("http://evil")']
        assert [c.data_type for c in cells] == ["s"], sheet


def test_bin_progression_db_templates_writes_them(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'hooli.db'}")
    create_platform_tables(engine)
    ledger.upgrade(engine)
    seed_platform(engine, "hooli", sizes=SMALL)
    engine.dispose()
    registry = tmp_path / "customers.yaml"
    registry.write_text(
        f"hooli:\n  platform_conn_id: hooli_db\n  platform: hooli\n"
        f"  storage: file://{tmp_path / 'hooli'}\n  timezone: Europe/Amsterdam\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "PROGRESSION_CUSTOMERS": str(registry),
        "AIRFLOW_CONN_HOOLI_DB": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "hooli.db")}),
    }
    done = subprocess.run(
        [os.path.join(ROOT, "bin/progression-db"), "templates", "hooli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [f"hooli: wrote templates/{kind}.xlsx" for kind in CONTENT_TYPES]
    book = openpyxl.load_workbook(tmp_path / "hooli/templates/programmes.xlsx")
    assert len(listed(book)) == SMALL.programmes
