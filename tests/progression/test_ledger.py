"""The project's own tables: an upgrade in place from an older ledger keeps every row, and gives every kind of run
its own counts."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from support import NOW, stored
from progression import ledger
from progression.db import engine_for
from progression.history import render_detail, written_per_day
from progression.platform import completions, content, create_platform_tables, users
from progression.runs import figure_lines
from progression.undo import plan as plan_undo, run_undo

ROOT = Path(__file__).resolve().parents[2]
V1 = Path(__file__).parent / "fixtures" / "ledger_v1.sql"
PROJECT_TABLES = ("progression_alerts", "progression_journal", "progression_runs", "progression_schema")


def make_ledger_v1(engine) -> None:
    """The project's tables replaced by a version 1 ledger (fixtures/ledger_v1.sql) with a run of each kind."""
    with engine.begin() as conn:
        for table in PROJECT_TABLES:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        code = "\n".join(line for line in V1.read_text().splitlines() if not line.startswith("--"))
        for statement in filter(str.strip, code.split(";")):
            conn.exec_driver_sql(statement)


def import_v1_completions(engine, platform) -> list[tuple[str, str]]:
    """The completions the version 1 import `import-acme-1` wrote, journaled as that release did: a row per insert."""
    written = [(platform.emails[0], platform.uuids["activity"][0]), (platform.emails[1], platform.uuids["activity"][1])]
    at = datetime(2024, 3, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        for email, uuid in written:
            user_id = conn.execute(sa.select(users.c.id).where(users.c.email == email)).scalar_one()
            content_id = conn.execute(sa.select(content.c.id).where(content.c.uuid == uuid)).scalar_one()
            conn.execute(
                sa.insert(completions).values(
                    user_id=user_id, content_id=content_id, completed_at=at, source="import", run_id="import-acme-1"
                )
            )
            conn.execute(
                sa.insert(ledger.journal).values(
                    run_id="import-acme-1",
                    user_id=user_id,
                    content_id=content_id,
                    action="insert",
                    new_completed_at=at,
                    new_source="import",
                    new_run_id="import-acme-1",
                )
            )
    return written


def runs_by_id(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {run["run_id"]: run for run in ledger.list_runs(conn)}


def versions(engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(ledger.schema_version.c.version)).scalars())


def test_a_version_1_ledger_is_upgraded_in_place_and_each_kind_gets_its_own_counts(engine):
    make_ledger_v1(engine)
    assert ledger.upgrade(engine) == 4
    assert ledger.upgrade(engine) == 4  # twice is harmless
    assert versions(engine) == [1, 4]
    runs = runs_by_id(engine)
    assert set(runs) == {"import-acme-1", "transfer-acme-1", "merge-acme-1", "undo-acme-1"}
    imported, transfer, merge, undo = (
        runs[r] for r in ("import-acme-1", "transfer-acme-1", "merge-acme-1", "undo-acme-1")
    )
    assert (
        imported["rows_read"],
        imported["imported"],
        imported["kept"],
        imported["rejected"],
        imported["saved_without_access"],
        imported["rejected_by_reason"],
    ) == (4, 2, 1, 1, 1, {"unknown user": 1})
    assert (
        transfer["skipped_without_access"],
        transfer["saved_without_access"],
        transfer["derived_written"],
        transfer["undone_by"],
    ) == (2, 0, 6, "undo-acme-1")
    assert (merge["imported"], merge["kept"], merge["removed"]) == (2, 1, 3)
    assert (undo["rows_read"], undo["restored"], undo["removed"], undo["conflicts"]) == (11, 9, 7, 2)
    assert (undo["imported"], undo["updated"], undo["kept"], undo["rejected"], undo["rejected_by_reason"]) == (
        0,
        0,
        0,
        0,
        {},
    )
    assert imported["staging"] is None and "without_access" not in imported


def test_after_the_upgrade_the_page_says_what_each_kind_did_in_its_own_words(engine):
    make_ledger_v1(engine)
    ledger.upgrade(engine)
    runs = runs_by_id(engine)
    lines = {run_id: dict(figure_lines(run)) for run_id, run in runs.items()}
    assert (
        lines["import-acme-1"]["saved without access"] == 1 and "skipped without access" not in lines["import-acme-1"]
    )
    assert lines["transfer-acme-1"]["skipped without access"] == 2
    assert "saved without access" not in lines["transfer-acme-1"]
    assert lines["merge-acme-1"]["removed from the source accounts"] == 3
    assert lines["undo-acme-1"] == {
        "completions the run changed": 11,
        "restored": 9,
        "of which removed (the run added them)": 7,
        "conflicts left alone": 2,
    }
    page = render_detail(runs["undo-acme-1"], [], base="/progression")
    assert "<th>restored</th><td class='n'>9" in page and "<th>conflicts left alone</th><td class='n'>2" in page
    assert "rows read" not in page and "written" not in page.split('id="counts"')[1].split("</table>")[0]
    # Completions written per day are the writers': the import, the transfer (directly and through the new journey)
    # and the merge; the undo restored, it wrote nothing of its own.
    per_day = dict(written_per_day(engine, "acme", date(2026, 1, 13), days=4))
    assert per_day == {date(2026, 1, 10): 2, date(2026, 1, 11): 9, date(2026, 1, 12): 2, date(2026, 1, 13): 0}


def test_a_version_1_import_is_undone_after_the_upgrade(engine, platform, target):
    make_ledger_v1(engine)
    written = import_v1_completions(engine, platform)
    ledger.upgrade(engine)
    assert set(written) <= set(stored(engine))
    job = plan_undo(
        target, run_id="import-acme-1", dry_run=False, force=False, airflow_run_id="manual__undo", started=NOW
    )
    done = run_undo(target, job)
    assert done.status == "succeeded" and done.counts["restored"] == 2 and done.counts["removed"] == 2
    assert not set(written) & set(stored(engine))
    runs = runs_by_id(engine)
    assert runs["import-acme-1"]["undone_by"] == done.run_id
    assert dict(figure_lines(runs[done.run_id]))["restored"] == 2


def test_a_version_3_ledger_is_upgraded_in_place_keeping_its_alerts(engine):
    # Version 3 is version 1 with `staging` on the runs and the alerts table.
    make_ledger_v1(engine)
    at = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE progression_runs ADD COLUMN staging TEXT")
        ledger.alerts.create(conn)
        conn.execute(sa.insert(ledger.schema_version).values(version=3, applied_at=at))
        ledger.record_alert(conn, "acme", "late", "import-acme-1", "acme is late", at)
    assert ledger.upgrade(engine) == 4
    assert versions(engine) == [1, 3, 4]
    runs = runs_by_id(engine)
    assert len(runs) == 4 and runs["transfer-acme-1"]["skipped_without_access"] == 2
    with engine.connect() as conn:
        [alert] = ledger.open_alerts(conn, "acme")
    assert (alert["kind"], alert["key"], ledger.as_utc(alert["told_at"])) == ("late", "import-acme-1", at)


def test_bin_progression_db_upgrade_upgrades_a_version_1_ledger(tmp_path):
    path = tmp_path / "acme.db"
    engine = engine_for(f"sqlite:///{path}")
    create_platform_tables(engine)
    ledger.upgrade(engine)
    make_ledger_v1(engine)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_ACME_DB": json.dumps({"conn_type": "sqlite", "host": str(path)}),
    }
    done = subprocess.run(
        [str(ROOT / "bin/progression-db"), "upgrade", "acme_db"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "acme_db: progression tables at version 4"
    assert versions(engine) == [1, 4] and runs_by_id(engine)["merge-acme-1"]["removed"] == 3
