"""progression_export through bin/airflow: the workbook lands in the customer's reports and the ledger, the
templates in its templates folder. An unknown customer is refused by the params: test_dag_files.py."""

from __future__ import annotations

import json

import openpyxl
import pytest

from dags_support import run_dag, summary_line, target_of
from demo_platform import describe
from progression import ledger
from support import complete

pytestmark = pytest.mark.airflow


def test_an_export_of_a_customers_completions_and_its_templates(world):
    target = target_of(world, "acme")
    found = describe(target.engine, "acme")
    complete(target.engine, found.emails[0], found.uuids["journey"][0], "2024-03-31")
    complete(target.engine, found.emails[0], found.uuids["activity"][0], "2024-03-31")
    done = run_dag(world, "progression_export", {"customer": "acme"})
    summary = summary_line(done, "progression_export")  # the teardown's, from the ledger
    assert (summary["status"], summary["exported"], summary["customer"]) == ("succeeded", 2, "acme")
    [written] = [
        json.loads(line)
        for line in done.stdout.splitlines()
        if line.startswith('{"dag": "progression_export"') and '"completions"' in line
    ]
    assert written["completions"]["journey"] == 1 and written["completions"]["activity"] == 1
    book = openpyxl.load_workbook(world["dir"] / "acme" / summary["report"], read_only=True)
    assert book.sheetnames == ["Summary", "#Activities", "#Journeys", "#Programmes", "Content"]
    assert written["templates"] == ["templates/activities.xlsx", "templates/journeys.xlsx", "templates/programmes.xlsx"]
    template = openpyxl.load_workbook(world["dir"] / "acme/templates/journeys.xlsx")
    [drop_down] = template["Completions"].data_validations.dataValidation
    offered = [cell.value for (cell,) in template["Lists"][drop_down.formula1.split("!")[1].replace("$", "")]]
    assert sorted(offered) == sorted(found.uuids["journey"])
    with target.engine.connect() as conn:
        run = ledger.get_run(conn, summary["run_id"])
    assert run["status"] == "succeeded" and run["report_path"] == summary["report"]
