"""Undo's restore: every completion a run inserted, changed or deleted put back to what it was before, from the
journal and the completions themselves, each change journaled in turn so that an undo can be undone."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression import ledger
from progression.write import STAGE

UNDO = f"{STAGE}_undo"
RESTORE_COLUMNS = [
    "user_id",
    "content_id",
    "action",
    "new_completed_at",
    "new_source",
    "new_run_id",
    "now_completed_at",
    "now_source",
    "now_run_id",
    "old_completed_at",
    "old_source",
    "old_run_id",
    "restore",
    "conflict",
    "applied",
]


def restore_from_journal(
    conn: Connection, undone_run_id: str, undo_run_id: str, *, force: bool = False, dry_run: bool = False
) -> pd.DataFrame:
    """Put every completion the run `undone_run_id` inserted, changed or deleted back to what it was before.

    A row that a later run has changed since (it is no longer what the undone run left) is a conflict: left alone
    unless `force`. The undo journals its own changes under `undo_run_id` the way any run does, so that an undo can
    be undone. `restore` per row: `delete` (the run inserted it), `update` (put the old values back), `insert`
    (the run deleted it) or `none` (already as it was before). Returns one row per completion the run inserted,
    changed or deleted: the keys, `action`, what the run left (`new_*`), what is there now (`now_*`), what it was
    before (`old_*`), `restore`, `conflict` and `applied` (the undo writes it; a dry run: would).
    """
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {UNDO}")
    before_matches = (
        "c.completed_at = j.old_completed_at AND c.source = j.old_source AND c.run_id IS NOT DISTINCT FROM j.old_run_id"
    )
    # write_completions journals no insert: a completion it inserted carries the run's id until a later run changes
    # or deletes it, and that run's journal then holds it as its old side, as the run left it (only the run writes
    # its own id, and an undo puts back exactly what was there). Keys in the run's own journal are left out of
    # both: the run updated them, or it is an older run whose inserts were journaled.
    not_own = (
        "NOT EXISTS (SELECT 1 FROM progression_journal o WHERE o.run_id = :run_id "
        "AND o.user_id = {table}.user_id AND o.content_id = {table}.content_id)"
    )
    conn.execute(
        sa.text(f"""
        CREATE TEMPORARY TABLE {UNDO} AS
        SELECT j.user_id, j.content_id, j.action,
               j.new_completed_at, j.new_source, j.new_run_id,
               c.completed_at AS now_completed_at, c.source AS now_source, c.run_id AS now_run_id,
               j.old_completed_at, j.old_source, j.old_run_id,
               CASE WHEN j.action = 'delete' THEN c.user_id IS NOT NULL
                    ELSE c.user_id IS NULL OR c.completed_at <> j.new_completed_at OR c.source <> j.new_source
                         OR c.run_id IS DISTINCT FROM j.new_run_id END AS conflict,
               CASE WHEN j.action = 'insert' THEN CASE WHEN c.user_id IS NULL THEN 'none' ELSE 'delete' END
                    WHEN c.user_id IS NULL THEN 'insert'
                    WHEN {before_matches} THEN 'none'
                    ELSE 'update' END AS restore
        FROM progression_journal j
        LEFT JOIN completions c ON c.user_id = j.user_id AND c.content_id = j.content_id
        WHERE j.run_id = :run_id
        UNION ALL
        SELECT c.user_id, c.content_id, 'insert', c.completed_at, c.source, c.run_id,
               c.completed_at, c.source, c.run_id, NULL, NULL, NULL, FALSE, 'delete'
        FROM completions c
        WHERE c.run_id = :run_id AND {not_own.format(table="c")}
        UNION ALL
        SELECT l.user_id, l.content_id, 'insert', l.completed_at, l.source, :run_id,
               c.completed_at, c.source, c.run_id, NULL, NULL, NULL, TRUE,
               CASE WHEN c.user_id IS NULL THEN 'none' ELSE 'delete' END
        FROM (SELECT user_id, content_id, min(old_completed_at) AS completed_at, min(old_source) AS source
              FROM progression_journal WHERE old_run_id = :run_id GROUP BY user_id, content_id) l
        LEFT JOIN completions c ON c.user_id = l.user_id AND c.content_id = l.content_id
        WHERE c.run_id IS DISTINCT FROM :run_id AND {not_own.format(table="l")}
    """),
        {"run_id": undone_run_id},
    )
    applies = "restore <> 'none'" + ("" if force else " AND NOT conflict")
    if not dry_run:
        # What is there now is the old side of the undo's own journal row; what it puts back is the new side.
        ledger.journal_changes(
            conn,
            f"""
            SELECT :run_id, user_id, content_id, restore, now_completed_at, now_source, now_run_id, old_completed_at,
                   old_source, old_run_id
            FROM {UNDO} WHERE {applies}""",
            {"run_id": undo_run_id},
        )
        conn.exec_driver_sql(f"""
            DELETE FROM completions WHERE (user_id, content_id) IN
                (SELECT user_id, content_id FROM {UNDO} WHERE restore = 'delete' AND {applies})
        """)
        conn.exec_driver_sql(f"""
            INSERT INTO completions (user_id, content_id, completed_at, source, run_id)
            SELECT user_id, content_id, old_completed_at, old_source, old_run_id FROM {UNDO}
            WHERE restore IN ('insert', 'update') AND {applies}
            ORDER BY user_id, content_id
            ON CONFLICT (user_id, content_id) DO UPDATE
            SET completed_at = excluded.completed_at, source = excluded.source, run_id = excluded.run_id
        """)
    rows = pd.DataFrame(
        conn.exec_driver_sql(f"""
            SELECT {", ".join(RESTORE_COLUMNS[:-1])}, CASE WHEN {applies} THEN 1 ELSE 0 END
            FROM {UNDO} ORDER BY user_id, content_id""").all(),
        columns=RESTORE_COLUMNS,
    )
    rows[["conflict", "applied"]] = rows[["conflict", "applied"]].astype(bool)
    conn.exec_driver_sql(f"DROP TABLE {UNDO}")
    return rows
