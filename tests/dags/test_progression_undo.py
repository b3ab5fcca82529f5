"""progression_undo through Airflow itself: an import (made by the stages, as the import DAG's tasks make it) undone
for real through `bin/airflow dags test`. The dry-run default: test_dag_files.py; what a dry run reports, conflicts
and refusals: tests/progression/test_undo.py."""

from __future__ import annotations

import pytest

from dags_support import asset_events, engine_of, run_dag, summary_line, target_of
from demo_platform import describe, workbook_bytes
from progression import ledger
from progression.pipeline import plan, run_file
from support import NOW, count_completions, drop

pytestmark = pytest.mark.airflow


def test_an_import_is_undone_and_the_undo_is_announced(world):
    target = target_of(world, "acme")
    found = describe(target.engine, "acme")
    rel = drop(
        target.root,
        "inbox/journeys/j.xlsx",
        workbook_bytes(
            ["Email", "Content uuid", "Completion date"], [[found.emails[0], found.uuids["journey"][0], "2024-03-31"]]
        ),
    )
    [job] = plan(
        target,
        path=rel,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id="manual__import",
        started=NOW,
    )
    run_id = run_file(target, job).run_id
    written = count_completions(target.engine)
    assert written > 1  # the journey and its activities

    events_before = len(asset_events(world))
    done = summary_line(
        run_dag(world, "progression_undo", {"customer": "acme", "run_id": run_id, "dry_run": False}), "progression_undo"
    )
    assert not done["dry_run"] and done["undone_run_id"] == run_id
    assert done["removed"] == written and done["conflicts"] == 0
    assert count_completions(engine_of(world, "acme")) == 0
    assert (world["dir"] / "acme" / done["report"]).exists()
    with target.engine.connect() as conn:
        assert ledger.get_run(conn, run_id)["undone_by"] == done["run_id"]
    # The undo tells downstream DAGs that acme's completions changed (a dry run would not: tests/plugins).
    assert asset_events(world)[events_before:] == [
        ("progression://acme/completions", {"dag": "progression_undo", "restored": written})
    ]
    # The ledger's own words for it: restored and removed, nothing written by the undo itself.
    assert (done["changes"], done["restored"]) == (written, written)
