"""The project's own tables: an upgrade in place from an older ledger keeps every row."""

from __future__ import annotations

import sqlalchemy as sa

from progression import ledger


def test_a_version_1_ledger_is_upgraded_in_place_without_losing_a_row(engine):
    # A version 1 ledger: the runs table without `staging`, as the first release created it.
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE progression_runs DROP COLUMN staging"))
        conn.execute(sa.update(ledger.schema_version).values(version=1))
        conn.execute(sa.text(
            "INSERT INTO progression_runs (run_id, customer, dag_id, subject, status, dry_run, started_at, rows_read, "
            "imported, updated, kept, rejected, duplicates, derived_written, without_access, rejected_by_reason) "
            "VALUES ('import-acme-1', 'acme', 'progression_import', 'inbox/activities/q3.xlsx', 'succeeded', "
            "false, '2026-01-01 02:00:00.000000', 3, 3, 0, 0, 0, 0, 0, 0, '{}')"))
    assert ledger.upgrade(engine) == 2
    assert ledger.upgrade(engine) == 2  # twice is harmless
    with engine.connect() as conn:
        run = ledger.get_run(conn, "import-acme-1")
        versions = conn.execute(sa.select(ledger.schema_version.c.version)).scalars().all()
    assert run["imported"] == 3 and run["status"] == "succeeded" and run["staging"] is None
    assert sorted(versions) == [1, 2]
