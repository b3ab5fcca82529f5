"""The project's own tables: an upgrade in place from an older ledger keeps every row."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from progression import ledger


RUN = ("INSERT INTO progression_runs (run_id, customer, dag_id, subject, status, dry_run, started_at, rows_read, "
       "imported, updated, kept, rejected, duplicates, derived_written, without_access, rejected_by_reason) "
       "VALUES ('import-acme-1', 'acme', 'progression_import', 'inbox/activities/q3.xlsx', 'succeeded', "
       "false, '2026-01-01 02:00:00.000000', 3, 3, 0, 0, 0, 0, 0, 0, '{}')")


def test_a_version_1_ledger_is_upgraded_in_place_without_losing_a_row(engine):
    # A version 1 ledger: the runs table without `staging`, as the first release created it.
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE progression_runs DROP COLUMN staging"))
        conn.execute(sa.update(ledger.schema_version).values(version=1))
        conn.execute(sa.text(RUN))
    assert ledger.upgrade(engine) == 3
    assert ledger.upgrade(engine) == 3  # twice is harmless
    with engine.connect() as conn:
        run = ledger.get_run(conn, "import-acme-1")
        versions = conn.execute(sa.select(ledger.schema_version.c.version)).scalars().all()
    assert run["imported"] == 3 and run["status"] == "succeeded" and run["staging"] is None
    assert sorted(versions) == [1, 3]


def test_a_version_2_ledger_gains_the_alerts_table_in_place(engine):
    # A version 2 ledger: runs and journal as the previous release left them, no alerts table.
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE progression_alerts"))
        conn.execute(sa.update(ledger.schema_version).values(version=2))
        conn.execute(sa.text(RUN))
    assert ledger.upgrade(engine) == 3
    at = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:
        ledger.record_alert(conn, "acme", "late", "import-acme-1", "acme is late", at)
    assert ledger.upgrade(engine) == 3  # twice is harmless, and keeps the alert
    with engine.connect() as conn:
        assert ledger.get_run(conn, "import-acme-1")["imported"] == 3
        [alert] = ledger.open_alerts(conn, "acme")
        versions = conn.execute(sa.select(ledger.schema_version.c.version)).scalars().all()
    assert (alert["kind"], alert["key"], ledger.as_utc(alert["told_at"])) == ("late", "import-acme-1", at)
    assert sorted(versions) == [2, 3]
