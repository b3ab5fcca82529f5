"""The one way completions are written: stage, decide per row, journal, upsert, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

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
    direct: pd.DataFrame      # user_id, content_id, outcome for the items the input named
    derived_counts: dict[str, int]  # outcome -> count for items completed through the hierarchy

    def count(self, outcome: str, direct: bool = True) -> int:
        if direct:
            return int((self.direct["outcome"] == outcome).sum())
        return int(self.derived_counts.get(outcome, 0))


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
                (run_id, user_id, content_id, action, old_completed_at, old_source, old_run_id, new_completed_at)
            SELECT :run_id, user_id, content_id, CASE outcome WHEN 'imported' THEN 'insert' ELSE 'update' END,
                   old_completed_at, old_source, old_run_id, completed_at
            FROM {STAGE}_decided WHERE outcome <> 'kept'
        """), {"run_id": run_id})
        # The WHERE guard keeps a re-run from rewriting rows that would not change.
        conn.execute(sa.text(f"""
            INSERT INTO completions (user_id, content_id, completed_at, source, run_id)
            SELECT user_id, content_id, completed_at, :source, :run_id FROM {STAGE}_decided WHERE outcome <> 'kept'
            ON CONFLICT (user_id, content_id) DO UPDATE
            SET completed_at = excluded.completed_at, source = excluded.source, run_id = excluded.run_id
            WHERE completions.completed_at <> excluded.completed_at
               OR completions.source <> excluded.source
               OR completions.run_id IS DISTINCT FROM excluded.run_id
        """),
            {"source": source, "run_id": run_id})
    direct = pd.DataFrame(
        conn.exec_driver_sql(
            f"SELECT user_id, content_id, outcome FROM {STAGE}_decided WHERE direct").all(),
        columns=["user_id", "content_id", "outcome"])
    derived = dict(conn.exec_driver_sql(
        f"SELECT outcome, count(*) FROM {STAGE}_decided WHERE NOT direct GROUP BY outcome").all())
    conn.exec_driver_sql(f"DROP TABLE {STAGE}_decided")
    conn.exec_driver_sql(f"DROP TABLE {STAGE}")
    return WriteResult(direct=direct, derived_counts={k: int(v) for k, v in derived.items()})


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
    conn.exec_driver_sql(f"CREATE INDEX {STAGE}_key ON {STAGE} (user_id, content_id)")


def _copy_postgres(conn: Connection, rows: pd.DataFrame, chunk: int = 500_000) -> None:
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {STAGE} (user_id, content_id, completed_at, direct) FROM STDIN") as copy:
        for start in range(0, len(rows), chunk):
            part = rows.iloc[start:start + chunk]
            text = pd.DataFrame({
                "u": part["user_id"].astype("int64"), "c": part["content_id"].astype("int64"),
                "t": part["completed_at"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                "d": part["direct"].map({True: "t", False: "f"}),
            }).to_csv(sep="\t", header=False, index=False)
            copy.write(text)
