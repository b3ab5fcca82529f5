"""progression_transfer through Airflow itself, as a data engineer runs it: `bin/airflow dags test` with a registry,
connections and storage of the test's own, then the platform database, the storage and the ledger checked.

What else a transfer's conf does is shown without Airflow: the params' refusals and the dry-run default in
test_dag_files.py, refused pairs, dry runs and PostgreSQL in tests/progression/test_transfer.py; a platform behind
a postgres connection in test_progression_import.py."""

from __future__ import annotations

import pytest

from dags_support import engine_of, run_dag, summary_line
from demo_platform import describe, workbook_bytes
from support import complete, count_completions, drop, people

pytestmark = pytest.mark.airflow
DAG_ID = "progression_transfer"


def test_a_pairs_workbook_transferred_for_real(world):
    """Two users completed journey 0; only one of them can see journey 2, which is what replaces it."""
    engine = engine_of(world, "acme")
    found, who = describe(engine, "acme"), people(engine, "acme")
    j0, j2 = found.uuids["journey"][0], found.uuids["journey"][2]  # journey 2 sits in the second programme only
    for user in (who.group_1, who.no_group):
        complete(engine, user, j0, "2024-03-01")
    drop(
        world["dir"] / "acme",
        "inbox/transfers/q4.xlsx",
        workbook_bytes(["Old content uuid", "New content uuid"], [[j0, j2]]),
    )
    done = run_dag(world, DAG_ID, {"customer": "acme", "path": "inbox/transfers/q4.xlsx", "dry_run": False})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_line(done, DAG_ID)
    assert summary["status"] == "succeeded" and not summary["dry_run"]
    assert (
        summary["completed_old"],
        summary["written_directly"],
        summary["written_through_contents"],
        summary["skipped_without_access"],
    ) == (2, 1, 3, 1)
    assert count_completions(engine, "transfer") == 4
    assert (world["dir"] / "acme/processed/transfers/q4.xlsx").exists()
    assert (world["dir"] / "acme" / summary["report"]).exists()
