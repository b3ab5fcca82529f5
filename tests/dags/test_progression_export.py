"""progression_export through bin/airflow: the workbook lands in the customer's reports and the ledger, the
templates in its templates folder."""

from __future__ import annotations

import openpyxl
import pytest

from dags_support import drop, engine_of, run_dag, summary_line
from progression import ledger
from demo_platform import describe, workbook_bytes

pytestmark = pytest.mark.airflow


def test_an_export_after_an_import(world):
    found = describe(engine_of(world, "acme"), "acme")
    drop(world, "acme", "inbox/journeys/j.xlsx", workbook_bytes(["Email", "Content uuid", "Completion date"], [
        [found.emails[0], found.uuids["journey"][0], "2024-03-31"]]))
    assert run_dag(world, "progression_import", {"customer": "acme"}).returncode == 0
    done = run_dag(world, "progression_export", {"customer": "acme"})
    summary = summary_line(done, "progression_export")
    assert summary["completions"]["journey"] == 1 and summary["completions"]["activity"] >= 1
    book = openpyxl.load_workbook(world["dir"] / "acme" / summary["report"], read_only=True)
    assert book.sheetnames == ["Summary", "#Activities", "#Journeys", "#Programmes", "Content"]
    assert summary["templates"] == ["templates/activities.xlsx", "templates/journeys.xlsx", "templates/programmes.xlsx"]
    template = openpyxl.load_workbook(world["dir"] / "acme/templates/journeys.xlsx")
    [drop_down] = template["Completions"].data_validations.dataValidation
    offered = [cell.value for (cell,) in template["Lists"][drop_down.formula1.split("!")[1].replace("$", "")]]
    assert sorted(offered) == sorted(found.uuids["journey"])
    with engine_of(world, "acme").connect() as conn:
        run = ledger.get_run(conn, summary["run_id"])
    assert run["status"] == "succeeded" and run["report_path"] == summary["report"]


def test_an_unknown_customer_is_refused(world):
    done = run_dag(world, "progression_export", {"customer": "nobody"})
    assert "Invalid input for param customer" in done.stdout + done.stderr
