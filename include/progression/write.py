"""The one way completions are written (stage, decide per row, journal, upsert) and deleted (journaled), in the
caller's transaction. Undo's restore is in restore.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression import ledger

STAGE = "progression_stage"
ATTEMPTS = 3  # decisions made again when another writer adds the same completions meanwhile


class ConcurrentChange(RuntimeError):
    """Another writer kept adding the completions this write was about to insert."""


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
    direct_counts: dict[str, int]  # outcome -> count for the items the input named
    derived_counts: dict[str, int]  # outcome -> count for items completed through the hierarchy
    exceptions: pd.DataFrame  # user_id, content_id, outcome of the named items that were not imported

    def count(self, outcome: str, direct: bool = True) -> int:
        return int((self.direct_counts if direct else self.derived_counts).get(outcome, 0))


def write_completions(
    conn: Connection,
    rows: pd.DataFrame,
    *,
    run_id: str,
    source: str,
    on_existing: str,
    dry_run: bool = False,
) -> WriteResult:
    """Write (user_id, content_id, completed_at[UTC], direct) rows; one row per key expected.

    Outcomes: `imported` (new), `updated` (replaced per `on_existing`), `kept` (existing left alone). A dry run
    computes the same outcomes and writes nothing. Journal rows go in the same transaction as the change.
    """
    if on_existing not in _REPLACES:
        raise ValueError(f"on_existing must be one of {', '.join(_REPLACES)}")
    dialect = conn.dialect.name
    with ThreadPoolExecutor(max_workers=1) as sorter:
        # The insert's key order is sorted beside the stage's COPY: numpy sorts without holding the GIL.
        sorting = sorter.submit(_key_order, rows) if dialect == "postgresql" else None
        _stage(conn, rows, dialect)
        key_order = sorting.result() if sorting else None
    replaces = _REPLACES[on_existing].format(new="s.completed_at", old="c.completed_at")
    values = {"run_id": run_id, "source": source}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with conn.begin_nested():
                _decide(conn, replaces)
                met, updated = _met(conn, dialect)
                if not dry_run:
                    _insert_new(conn, rows, values, key_order, met)
                    if updated.any():  # else a re-run's million kept rows are not scanned twice more for none
                        _journal(conn, values)
                        _update_changed(conn, values)
            break
        except (sa.exc.IntegrityError, psycopg.IntegrityError) as exc:  # COPY raises the driver's own
            if not _duplicate_key(exc):
                raise
            # Another writer added one of these completions after we looked: look again.
            if attempt == ATTEMPTS:
                raise ConcurrentChange(
                    "another writer kept adding the same completions while this run wrote them; nothing was "
                    f"written, run it again ({_driver_error(exc).__class__.__name__})"
                ) from exc
    conn.exec_driver_sql(f"DROP TABLE {STAGE}_decided")
    conn.exec_driver_sql(f"DROP TABLE {STAGE}")
    return _result(rows, met, updated)


def _result(rows: pd.DataFrame, met: np.ndarray, updated: np.ndarray) -> WriteResult:
    """Counts and exceptions from the rows' positions that met a completion (`met`) and which of those are updated."""
    direct = rows["direct"].to_numpy(bool)
    met_direct = direct[met]
    counts: dict[bool, dict[str, int]] = {}
    for is_direct, staged, of_these in (
        (True, int(direct.sum()), met_direct),
        (False, int((~direct).sum()), ~met_direct),
    ):
        n_updated = int(np.count_nonzero(updated[of_these]))
        n_met = int(np.count_nonzero(of_these))
        # A staged row that met no completion is a new one.
        found = {"imported": staged - n_met, "updated": n_updated, "kept": n_met - n_updated}
        counts[is_direct] = {outcome: n for outcome, n in found.items() if n}
    # Only the exceptions are listed: a named item not among them was imported.
    named = met[met_direct]
    exceptions = pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy("int64")[named],
            "content_id": rows["content_id"].to_numpy("int64")[named],
            "outcome": np.where(updated[met_direct], "updated", "kept").astype(object),
        }
    )
    return WriteResult(direct_counts=counts[True], derived_counts=counts[False], exceptions=exceptions)


def _met(conn: Connection, dialect: str) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the staged rows that met a completion, and whether each is updated (else kept): what the
    insert, the counts and the exceptions all need, read once. A re-run's million of them come back by binary COPY,
    not as Row objects."""
    select = f"SELECT position, outcome = 'updated' FROM {STAGE}_decided"
    if dialect == "postgresql":
        found = _binary_rows(conn, select, {"position": ">i8", "updated": "?"})
        return found["position"].astype("int64"), found["updated"].astype(bool)
    rows = conn.exec_driver_sql(select).all()
    return np.array([r[0] for r in rows], dtype="int64"), np.array([bool(r[1]) for r in rows], dtype=bool)


def _driver_error(exc: Exception) -> Exception:
    return getattr(exc, "orig", exc)


def _duplicate_key(exc: Exception) -> bool:
    error = _driver_error(exc)
    return getattr(error, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(error)


def _decide(conn: Connection, replaces: str) -> None:
    """The staged rows that meet a completion there now, each with its outcome (updated or kept) and that
    completion's values. A staged row not among them is new: only these are kept, so a first import of a million
    rows materialises none."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}_decided")
    conn.exec_driver_sql(f"""
        CREATE TEMPORARY TABLE {STAGE}_decided AS
        SELECT s.user_id, s.content_id, s.completed_at, s.direct, s.position,
               c.completed_at AS old_completed_at, c.source AS old_source, c.run_id AS old_run_id,
               CASE WHEN {replaces} THEN 'updated' ELSE 'kept' END AS outcome
        FROM {STAGE} s
        JOIN completions c ON c.user_id = s.user_id AND c.content_id = s.content_id
    """)


def _journal(conn: Connection, values: dict) -> None:
    """The old values of every completion about to be updated. Inserts are not journaled: a new completion carries
    the run's id, which is how undo finds it (see restore_from_journal)."""
    ledger.journal_changes(
        conn,
        f"""
        SELECT :run_id, user_id, content_id, 'update', old_completed_at, old_source, old_run_id, completed_at,
               :source, :run_id
        FROM {STAGE}_decided WHERE outcome = 'updated'""",
        values,
    )


def _insert_new(
    conn: Connection, rows: pd.DataFrame, values: dict, key_order: np.ndarray | None, met: np.ndarray
) -> None:
    """The completions decided new, as plain inserts in key order (index writes stay local): twice as fast as ON
    CONFLICT's speculative inserts at millions of rows, and exact, because each was decided new; should another
    writer have added one of those keys since the decision, the insert fails and the caller decides again.
    `key_order`: the rows' positions in key order, for PostgreSQL's COPY; `met`: the positions decided not new."""
    if key_order is not None:
        _copy_new_completions(conn, rows, values, key_order, met)
        return
    conn.execute(
        sa.text(f"""
        INSERT INTO completions (user_id, content_id, completed_at, source, run_id)
        SELECT user_id, content_id, completed_at, :source, :run_id FROM {STAGE}
        WHERE position NOT IN (SELECT position FROM {STAGE}_decided) ORDER BY user_id, content_id
    """),
        values,
    )


def _update_changed(conn: Connection, values: dict) -> None:
    """The completions decided updated, only where a value really changes: a re-run rewrites no row and leaves no
    dead tuple."""
    conn.execute(
        sa.text(f"""
        UPDATE completions SET completed_at = d.completed_at, source = :source, run_id = :run_id
        FROM {STAGE}_decided d
        WHERE d.outcome = 'updated' AND completions.user_id = d.user_id AND completions.content_id = d.content_id
          AND (completions.completed_at <> d.completed_at OR completions.source <> :source
               OR completions.run_id IS DISTINCT FROM :run_id)
    """),
        values,
    )


def _key_order(rows: pd.DataFrame) -> np.ndarray:
    return np.lexsort((rows["content_id"].to_numpy("int64"), rows["user_id"].to_numpy("int64")))


def _copy_new_completions(
    conn: Connection, rows: pd.DataFrame, values: dict, key_order: np.ndarray, met: np.ndarray
) -> None:
    """The new completions by binary COPY, from the caller's rows at the positions that met no completion: COPY
    writes a page of rows per WAL record where INSERT ... SELECT writes one per row, which made the insert twice as
    slow."""
    new = np.ones(len(rows), dtype=bool)
    new[met] = False
    in_key_order = key_order[new[key_order]]
    del new
    if not len(in_key_order):
        return
    source, run_id = values["source"].encode(), values["run_id"].encode()
    _copy_binary(
        conn,
        "COPY completions (user_id, content_id, completed_at, source, run_id) FROM STDIN (FORMAT binary)",
        in_key_order,
        {
            "user_id": (">i8", rows["user_id"].to_numpy("int64")),
            "content_id": (">i8", rows["content_id"].to_numpy("int64")),
            "completed_at": (">i8", _pg_micros(rows["completed_at"])),
            "source": (f"S{len(source)}", source),
            "run_id": (f"S{len(run_id)}", run_id),
        },
    )


def _stage(conn: Connection, rows: pd.DataFrame, dialect: str) -> None:
    """The rows in a temporary table, each with its position in `rows`."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}")
    if dialect == "postgresql":
        positions = np.arange(len(rows))
        conn.exec_driver_sql(f"""CREATE TEMPORARY TABLE {STAGE}
            (user_id bigint NOT NULL, content_id bigint NOT NULL, completed_at timestamptz NOT NULL,
             direct boolean NOT NULL, position bigint NOT NULL)""")
        _copy_binary(
            conn,
            f"COPY {STAGE} (user_id, content_id, completed_at, direct, position) FROM STDIN (FORMAT binary)",
            positions,
            {
                "user_id": (">i8", rows["user_id"].to_numpy("int64")),
                "content_id": (">i8", rows["content_id"].to_numpy("int64")),
                "completed_at": (">i8", _pg_micros(rows["completed_at"])),
                "direct": ("u1", rows["direct"].to_numpy(bool)),
                "position": (">i8", positions),
            },
        )
    else:
        conn.exec_driver_sql(f"""CREATE TEMPORARY TABLE {STAGE}
            (user_id INTEGER NOT NULL, content_id INTEGER NOT NULL, completed_at TEXT NOT NULL,
             direct INTEGER NOT NULL, position INTEGER NOT NULL)""")
        at = rows["completed_at"].dt.tz_convert("UTC").dt.strftime(SQLITE_TIME_FORMAT)
        records = list(
            zip(
                rows["user_id"].astype("int64").tolist(),
                rows["content_id"].astype("int64").tolist(),
                at.tolist(),
                rows["direct"].astype(int).tolist(),
                range(len(rows)),
            )
        )
        _driver_connection(conn).executemany(f"INSERT INTO {STAGE} VALUES (?, ?, ?, ?, ?)", records)


def _driver_connection(conn: Connection) -> Any:
    """The driver's own connection, for the bulk paths SQLAlchemy has no API for (executemany, COPY)."""
    driver = conn.connection.driver_connection
    if driver is None:
        raise RuntimeError("the database connection was invalidated while completions were being written")
    return driver


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970: PostgreSQL's timestamp zero
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8


def _tuple_layout(columns: dict[str, str]) -> np.dtype:
    """A binary COPY tuple of fixed-width, non-null fields: the field count, then each field's length and value."""
    layout = [("fields", ">i2")]
    for name, dtype in columns.items():
        layout += [(f"{name}_length", ">i4"), (name, dtype)]
    return np.dtype(layout)


def _binary_rows(conn: Connection, select: str, columns: dict[str, str]) -> np.ndarray:
    """The rows of a SELECT of fixed-width, non-null columns (name -> numpy dtype on the wire) by binary COPY, as
    one numpy structured array: no Python object per row."""
    data = bytearray()
    with _driver_connection(conn).cursor().copy(f"COPY ({select}) TO STDOUT (FORMAT binary)") as copy:
        for block in copy:
            data += block
    body = memoryview(data)[len(_COPY_HEADER) : len(data) - 2]  # the trailer is a field count of -1
    return np.frombuffer(body, dtype=_tuple_layout(columns))


def _pg_micros(times: pd.Series) -> np.ndarray:
    """UTC times as PostgreSQL's binary timestamptz: microseconds since 2000-01-01."""
    micros = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
    return micros.astype("int64") - _PG_EPOCH_US


# Rows per piece of a binary COPY: the server inserts one piece while numpy lays out the next (1M completions:
# 0.3-0.4 s less than one piece of them all).
COPY_CHUNK_ROWS = 1 << 17


def _copy_binary(conn: Connection, statement: str, at: np.ndarray, columns: dict[str, tuple[str, object]]) -> None:
    """Binary COPY of the rows at positions `at` of the columns, the tuples laid out by numpy a chunk at a time: no
    per-row Python, no text formatting, no full copy of the columns. `columns`: name -> (numpy dtype of the value
    on the wire, an array or one value for every row)."""
    chunk = COPY_CHUNK_ROWS
    layout = _tuple_layout({name: dtype for name, (dtype, _) in columns.items()})
    cursor = _driver_connection(conn).cursor()
    with cursor.copy(statement) as copy:
        copy.write(_COPY_HEADER)
        for start in range(0, len(at), chunk):
            part = at[start : start + chunk]
            tuples = np.empty(len(part), dtype=layout)
            tuples["fields"] = len(columns)
            for name, (dtype, values) in columns.items():
                tuples[f"{name}_length"] = np.dtype(dtype).itemsize
                tuples[name] = values[part] if isinstance(values, np.ndarray) else values
            copy.write(tuples.tobytes())
        copy.write(b"\xff\xff")


KEYS = f"{STAGE}_keys"


def delete_completions(conn: Connection, keys: pd.DataFrame, *, run_id: str, dry_run: bool = False) -> int:
    """Delete the completions at the (user_id, content_id) `keys`, each journaled as `delete` with the row as it
    was, so that undo can put it back. Keys without a completion are ignored. Returns how many completions were
    deleted (a dry run: would be)."""
    keys = keys[["user_id", "content_id"]].drop_duplicates()
    if keys.empty:
        return 0
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {KEYS}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {KEYS} (user_id bigint NOT NULL, content_id bigint NOT NULL)")
    conn.execute(
        sa.text(f"INSERT INTO {KEYS} (user_id, content_id) VALUES (:user_id, :content_id)"),
        [
            {"user_id": u, "content_id": c}
            for u, c in zip(keys["user_id"].astype("int64").tolist(), keys["content_id"].astype("int64").tolist())
        ],
    )
    # A row-value IN lets SQLite look each key up by the primary key instead of scanning every completion.
    held = f"(user_id, content_id) IN (SELECT user_id, content_id FROM {KEYS})"
    found = conn.exec_driver_sql(f"SELECT count(*) FROM completions WHERE {held}").scalar_one()
    if not dry_run:
        ledger.journal_changes(
            conn,
            f"SELECT :run_id, user_id, content_id, 'delete', completed_at, source, run_id FROM completions WHERE {held}",
            {"run_id": run_id},
            leaves_a_row=False,
        )
        conn.exec_driver_sql(f"DELETE FROM completions WHERE {held}")
    conn.exec_driver_sql(f"DROP TABLE {KEYS}")
    return int(found)
