"""The progression export: its sheets, and a round trip through the import into another database."""

from __future__ import annotations

import io
from dataclasses import replace
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from progression import ledger
from progression.db import engine_for
from demo_platform import seed_platform, workbook_bytes
from progression.export import write_export
from progression.pipeline import plan, run_file
from progression.runs import Target
from progression.platform import create_platform_tables
from support import NOW, SMALL, drop, stored

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def import_file(target, rel, on_existing=None):
    job = run_file(
        target,
        plan(
            target,
            path=rel,
            content_type=None,
            dry_run=False,
            on_existing=on_existing,
            force=False,
            airflow_run_id="t",
            started=NOW,
        )[0],
    )
    assert job.status == "ok", job.message
    return job


def export(engine) -> openpyxl.Workbook:
    buffer = io.BytesIO()
    with engine.connect() as conn:
        write_export(conn, "acme", AMSTERDAM, buffer, summary=[("Customer", "acme")])
    return openpyxl.load_workbook(io.BytesIO(buffer.getvalue()))


@pytest.fixture
def imported(target, platform):
    """A journey for two users and one loose activity, imported the ordinary way."""
    journey = platform.uuids["journey"][0]
    import_file(
        target,
        drop(
            target.root,
            "inbox/journeys/j.xlsx",
            workbook_bytes(
                ["User email", "Content uuid", "Completion date"],
                [[platform.emails[0], journey, "2024-03-31"], [platform.emails[1], journey, "2024-07-01 14:30"]],
            ),
        ),
    )
    import_file(
        target,
        drop(
            target.root,
            "inbox/activities/a.xlsx",
            workbook_bytes(
                ["User email", "Content uuid", "Completion date"],
                [[platform.emails[2], platform.uuids["activity"][-1], "2024-01-15"]],
            ),
        ),
    )
    return journey


def test_the_export_has_a_sheet_per_type_and_the_content_list(target, platform, imported):
    book = export(target.engine)
    assert book.sheetnames == ["Summary", "#Activities", "#Journeys", "#Programmes", "Content"]
    journeys = list(book["#Journeys"].iter_rows(values_only=True))
    assert journeys[0] == ("User email", "Content uuid", "Title", "Completion date", "Source", "Run id", "Parent uuids")
    assert [(r[0], r[1], r[3], r[4]) for r in journeys[1:]] == [
        (platform.emails[0], imported, "2024-03-31 00:00:00+01:00", "import"),  # before that night's DST change
        (platform.emails[1], imported, "2024-07-01 14:30:00+02:00", "import"),
    ]
    holders = journeys[1][6].split(";")  # the programmes that hold the journey (the generator shares one)
    assert holders and set(holders) <= set(platform.uuids["programme"])
    activities = list(book["#Activities"].iter_rows(values_only=True))[1:]
    assert len(activities) == 2 * SMALL.activities_per_journey + 1
    assert all(imported in r[6].split(";") for r in activities if r[0] == platform.emails[0])
    content = list(book["Content"].iter_rows(values_only=True))
    assert len(content) - 1 == sum(len(v) for v in platform.uuids.values())
    summary = dict(book["Summary"].iter_rows(min_row=2, values_only=True))
    assert summary["Completions of journeys"] == 2 and summary["Customer"] == "acme"


def test_an_exported_sheet_imports_as_is_into_another_database_of_the_platform(
    target, platform, imported, tmp_path, customer
):
    book = export(target.engine)
    other = engine_for(f"sqlite:///{tmp_path / 'copy.db'}")
    create_platform_tables(other)
    ledger.upgrade(other)
    seed_platform(other, "acme", sizes=SMALL)
    seed_platform(other, "other", sizes=SMALL)
    root = tmp_path / "copy-storage"
    copy = Target(customer=replace(customer, timezone="UTC"), root=root, engine=other)  # another zone on purpose
    buffer = io.BytesIO()
    openpyxl.load_workbook(io.BytesIO(_saved(book))).save(buffer)
    import_file(copy, drop(root, "inbox/activities/export.xlsx", buffer.getvalue()))  # takes #Activities
    journeys_only = openpyxl.Workbook()
    for row in book["#Journeys"].iter_rows(values_only=True):
        journeys_only.active.append(row)
    only = io.BytesIO()
    journeys_only.save(only)
    import_file(copy, drop(root, "inbox/journeys/journeys.xlsx", only.getvalue()))
    original = {key: at for key, (at, _source, _run) in stored(target.engine).items()}
    copied = {key: at for key, (at, _source, _run) in stored(other).items()}
    assert copied == original


def _saved(book: openpyxl.Workbook) -> bytes:
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_an_export_imported_back_with_overwrite_changes_nothing_down_to_the_microsecond(target, platform):
    items = platform.uuids["activity"][:3]
    times = ["2024-03-31 14:05:07.123456", "2024-07-01 09:00:00.000001", "2024-10-27 02:30:59.999999"]
    import_file(
        target,
        drop(
            target.root,
            "inbox/activities/precise.xlsx",
            workbook_bytes(
                ["User email", "Content uuid", "Completion date"],
                [[email, item, at] for email, item, at in zip(platform.emails[:3], items, times, strict=True)],
            ),
        ),
    )
    before = stored(target.engine)
    assert sorted(at.microsecond for at, _source, _run in before.values()) == [1, 123456, 999999]
    activities = openpyxl.Workbook()
    for row in export(target.engine)["#Activities"].iter_rows(values_only=True):
        activities.active.append(row)
    job = import_file(
        target, drop(target.root, "inbox/activities/export.xlsx", _saved(activities)), on_existing="overwrite"
    )
    assert (job.counts["kept"], job.counts["updated"]) == (3, 0)
    assert stored(target.engine) == before


def test_an_export_that_fails_half_way_is_closed_as_failed_and_summarised_from_the_ledger(target, platform):
    from progression.export import run_export
    from progression.runs import rows_of, summarise

    elsewhere = replace(target, customer=replace(target.customer, platform="no-such-platform"))
    with pytest.raises(Exception, match="no-such-platform"):
        run_export(elsewhere, airflow_run_id="manual__export", dry_run=False)
    summary = summarise("progression_export", "acme", rows_of(target, "manual__export"))
    assert summary["status"] == "failed"
    assert summary["message"].startswith("the export failed: ") and "no-such-platform" in summary["message"]
