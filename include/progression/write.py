"""The one way completions are written: stage, decide per row, journal, upsert, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

STAGE = "progression_stage"
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's own text format for DateTime on SQLite

# When an existing completion gives way to the incoming one (`old` and `new` are SQL expressions).
_REPLACES = {
    "keep": "FALSE",
    "earliest": "{new} < {old}",
    "latest": "{new} > {old}",
    "overwrite": "{new} <> {old}",
}


@dataclass
class WriteResult:
    direct_counts: dict[str, int]   # outcome -> count for the items the input named
    derived_counts: dict[str, int]  # outcome -> count for items completed through the hierarchy
    exceptions: pd.DataFrame        # user_id, content_id, outcome of the named items that were not imported

    def count(self, outcome: str, direct: bool = True) -> int:
        return int((self.direct_counts if direct else self.derived_counts).get(outcome, 0))


def write_completions(
    conn: Connection, rows: pd.DataFrame, *, run_id: str, source: str, on_existing: str, dry_run: bool = False,
) -> WriteResult:
    """Write (user_id, content_id, completed_at[UTC], direct) rows; one row per key expected.

    Outcomes: `imported` (new), `updated` (replaced per `on_existing`), `kept` (existing left alone). A dry run
    computes the same outcomes and writes nothing. Journal rows go in the same transaction as the change.
    """
    if on_existing not in _REPLACES:
        raise ValueError(f"on_existing must be one of {', '.join(_REPLACES)}")
    dialect = conn.dialect.name
    _stage(conn, rows, dialect)
    replaces = _REPLACES[on_existing].format(new="s.completed_at", old="c.completed_at")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}_decided")
    conn.exec_driver_sql(f"""
        CREATE TEMPORARY TABLE {STAGE}_decided AS
        SELECT s.user_id, s.content_id, s.completed_at, s.direct,
               c.completed_at AS old_completed_at, c.source AS old_source, c.run_id AS old_run_id,
               CASE WHEN c.user_id IS NULL THEN 'imported' WHEN {replaces} THEN 'updated' ELSE 'kept' END AS outcome
        FROM {STAGE} s
        LEFT JOIN completions c ON c.user_id = s.user_id AND c.content_id = s.content_id
    """)
    if not dry_run:
        conn.execute(sa.text(f"""
            INSERT INTO progression_journal
                (run_id, user_id, content_id, action, old_completed_at, old_source, old_run_id, new_completed_at,
                 new_source, new_run_id)
            SELECT :run_id, user_id, content_id, CASE outcome WHEN 'imported' THEN 'insert' ELSE 'update' END,
                   old_completed_at, old_source, old_run_id, completed_at, :source, :run_id
            FROM {STAGE}_decided WHERE outcome <> 'kept'
        """), {"run_id": run_id, "source": source})
        # The WHERE guard keeps a re-run from rewriting rows that would not change; key order keeps index writes local.
        conn.execute(sa.text(f"""
            INSERT INTO completions (user_id, content_id, completed_at, source, run_id)
            SELECT user_id, content_id, completed_at, :source, :run_id FROM {STAGE}_decided WHERE outcome <> 'kept'
            ORDER BY user_id, content_id
            ON CONFLICT (user_id, content_id) DO UPDATE
            SET completed_at = excluded.completed_at, source = excluded.source, run_id = excluded.run_id
            WHERE completions.completed_at <> excluded.completed_at
               OR completions.source <> excluded.source
               OR completions.run_id IS DISTINCT FROM excluded.run_id
        """),
            {"source": source, "run_id": run_id})
    counts = conn.exec_driver_sql(
        f"SELECT direct, outcome, count(*) FROM {STAGE}_decided GROUP BY direct, outcome").all()
    # Only the exceptions come back row by row: a direct row not listed was imported.
    exceptions = pd.DataFrame(
        conn.exec_driver_sql(
            f"SELECT user_id, content_id, outcome FROM {STAGE}_decided WHERE direct AND outcome <> 'imported'").all(),
        columns=["user_id", "content_id", "outcome"])
    conn.exec_driver_sql(f"DROP TABLE {STAGE}_decided")
    conn.exec_driver_sql(f"DROP TABLE {STAGE}")
    return WriteResult(
        direct_counts={outcome: int(n) for is_direct, outcome, n in counts if is_direct},
        derived_counts={outcome: int(n) for is_direct, outcome, n in counts if not is_direct},
        exceptions=exceptions,
    )


def _stage(conn: Connection, rows: pd.DataFrame, dialect: str) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}")
    if dialect == "postgresql":
        conn.exec_driver_sql(f"""CREATE TEMPORARY TABLE {STAGE}
            (user_id bigint NOT NULL, content_id bigint NOT NULL, completed_at timestamptz NOT NULL,
             direct boolean NOT NULL)""")
        _copy_postgres(conn, rows)
    else:
        conn.exec_driver_sql(f"""CREATE TEMPORARY TABLE {STAGE}
            (user_id INTEGER NOT NULL, content_id INTEGER NOT NULL, completed_at TEXT NOT NULL,
             direct INTEGER NOT NULL)""")
        at = rows["completed_at"].dt.tz_convert("UTC").dt.strftime(SQLITE_TIME_FORMAT)
        records = list(zip(rows["user_id"].astype("int64").tolist(), rows["content_id"].astype("int64").tolist(),
                           at.tolist(), rows["direct"].astype(int).tolist()))
        conn.connection.driver_connection.executemany(f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?)", records)


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970: PostgreSQL's timestamp zero
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TUPLE = np.dtype([("fields", ">i2"), ("user_len", ">i4"), ("user_id", ">i8"), ("content_len", ">i4"),
                        ("content_id", ">i8"), ("at_len", ">i4"), ("completed_at", ">i8"), ("direct_len", ">i4"),
                        ("direct", "u1")])


def _copy_postgres(conn: Connection, rows: pd.DataFrame, chunk: int = 1_000_000) -> None:
    """Binary COPY, the tuples laid out by numpy in one go: no per-row Python and no text formatting."""
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {STAGE} (user_id, content_id, completed_at, direct) FROM STDIN (FORMAT binary)") as copy:
        copy.write(_COPY_HEADER)
        for start in range(0, len(rows), chunk):
            part = rows.iloc[start:start + chunk]
            tuples = np.empty(len(part), dtype=_COPY_TUPLE)
            tuples["fields"] = 4
            tuples["user_len"] = tuples["content_len"] = tuples["at_len"] = 8
            tuples["direct_len"] = 1
            tuples["user_id"] = part["user_id"].to_numpy("int64")
            tuples["content_id"] = part["content_id"].to_numpy("int64")
            micros = part["completed_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
            tuples["completed_at"] = micros.astype("int64") - _PG_EPOCH_US
            tuples["direct"] = part["direct"].to_numpy(bool)
            copy.write(tuples.tobytes())
        copy.write(b"\xff\xff")
