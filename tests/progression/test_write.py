"""The one write path: outcomes per policy, the journal, and re-runs that touch nothing."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from progression import ledger, write as write_module
from progression.platform import completions, content, users
from progression.write import ConcurrentChange, write_completions


def ids(engine, count: int) -> tuple[list[int], list[int]]:
    with engine.connect() as conn:
        user_ids = list(conn.execute(sa.select(users.c.id).order_by(users.c.id).limit(count)).scalars())
        content_ids = list(conn.execute(sa.select(content.c.id).order_by(content.c.id).limit(count)).scalars())
    return user_ids, content_ids


def frame(pairs, at="2024-03-31", direct=True) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "content_id": [c for _, c in pairs],
            "completed_at": pd.Timestamp(at, tz="UTC"),
            "direct": direct,
        }
    )


def utc(stored) -> pd.Timestamp:
    """A stored completion time in UTC: SQLite gives it back naive (it is UTC), PostgreSQL in the session's zone."""
    stamp = pd.Timestamp(stored)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def write(engine, rows, run_id, **kwargs):
    with engine.begin() as conn:
        return write_completions(
            conn, rows, run_id=run_id, source="import", on_existing=kwargs.pop("on", "keep"), **kwargs
        )


def test_outcomes_are_counted_for_named_and_derived_items(engine, platform):
    user_ids, content_ids = ids(engine, 4)
    write(engine, frame([(user_ids[0], content_ids[0])], "2024-06-01"), "first")
    rows = pd.concat(
        [
            frame([(user_ids[0], content_ids[0]), (user_ids[1], content_ids[0])], "2024-01-01"),
            frame([(user_ids[1], content_ids[1])], "2024-01-01", direct=False),
        ]
    )
    result = write(engine, rows, "second", on="earliest")
    assert result.direct_counts == {"updated": 1, "imported": 1}
    assert result.derived_counts == {"imported": 1}
    assert result.exceptions[["user_id", "content_id", "outcome"]].values.tolist() == [
        [user_ids[0], content_ids[0], "updated"]
    ]


def test_completions_sent_in_many_pieces_land_whole(engine, platform, monkeypatch):
    """The binary COPY sends its rows a piece at a time: every row of every piece lands with its own values."""
    monkeypatch.setattr(write_module, "COPY_CHUNK_ROWS", 2)
    user_ids, content_ids = ids(engine, 4)
    pairs = [(u, c) for u in user_ids[:3] for c in content_ids[:3]]
    rows = frame(pairs, "2024-02-29")
    rows["completed_at"] += pd.to_timedelta(range(len(rows)), unit="s")
    result = write(engine, rows, "pieces")
    assert result.direct_counts == {"imported": len(pairs)}
    with engine.connect() as conn:
        landed = conn.execute(
            sa.select(completions.c.user_id, completions.c.content_id, completions.c.completed_at, completions.c.run_id)
        ).all()
    assert sorted((u, c, utc(at), r) for u, c, at, r in landed) == sorted(
        zip(rows["user_id"], rows["content_id"], rows["completed_at"], ["pieces"] * len(rows))
    )


TOUCHED = (
    "SELECT pg_stat_get_xact_tuples_inserted('completions'::regclass) + "
    "pg_stat_get_xact_tuples_updated('completions'::regclass) + "
    "pg_stat_get_xact_tuples_deleted('completions'::regclass)"
)


def physical(engine) -> list:
    """Where and by which transaction each completion row was written: changes if a row is rewritten."""
    if engine.dialect.name == "postgresql":
        query = "SELECT ctid::text, xmin::text, user_id, content_id FROM completions ORDER BY 3, 4"
    else:
        query = "SELECT rowid, user_id, content_id, completed_at, run_id FROM completions ORDER BY 2, 3"
    with engine.connect() as conn:
        return conn.exec_driver_sql(query).all()


def test_a_rerun_rewrites_no_row(engine, platform):
    user_ids, content_ids = ids(engine, 20)
    rows = frame([(u, c) for u in user_ids for c in content_ids[:5]])
    write(engine, rows, "first")
    before = physical(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            touched_before = conn.exec_driver_sql(TOUCHED).scalar()
        result = write_completions(conn, rows, run_id="again", source="import", on_existing="overwrite")
        if engine.dialect.name == "postgresql":
            # This transaction's own statistics: no row inserted, updated (a dead tuple) or deleted.
            assert conn.exec_driver_sql(TOUCHED).scalar() == touched_before
    assert result.direct_counts == {"kept": len(rows)}
    assert physical(engine) == before


def test_dry_run_decides_but_writes_neither_completions_nor_journal(engine, platform):
    user_ids, content_ids = ids(engine, 2)
    result = write(engine, frame([(user_ids[0], content_ids[0])]), "dry", dry_run=True)
    assert result.direct_counts == {"imported": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(completions)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0


def test_an_unknown_policy_is_refused(engine, platform):
    with pytest.raises(ValueError, match="on_existing"):
        write(engine, frame([]), "x", on="sometimes")


def test_completion_times_keep_their_microseconds_and_zone(engine, platform):
    user_ids, content_ids = ids(engine, 1)
    at = pd.Timestamp("2024-03-31 22:15:07.123456", tz="UTC")
    rows = pd.DataFrame({"user_id": user_ids, "content_id": content_ids[:1], "completed_at": [at], "direct": True})
    write(engine, rows, "micro")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(completions.c.completed_at)).scalar()
    assert utc(stored) == at


def test_a_write_that_keeps_colliding_with_another_writer_fails_whole(engine, platform):
    """A key that appears between the decision and the insert: decided again, and if it keeps happening the
    write fails with a clear message and leaves nothing half-written."""
    user_ids, content_ids = ids(engine, 3)
    first, second = (user_ids[0], content_ids[0]), (user_ids[0], content_ids[1])
    # A trigger plays the other writer: inserting `first` makes `second` appear after it was decided "new".
    insert_second = (
        f"INSERT INTO completions (user_id, content_id, completed_at, source, run_id) "
        f"VALUES ({second[0]}, {second[1]}, '2020-01-01 00:00:00.000000', 'platform', NULL)"
    )
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER other_writer AFTER INSERT ON completions WHEN NEW.content_id = "
                f"{first[1]} BEGIN {insert_second}; END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION other_writer() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.content_id = {first[1]} THEN {insert_second}; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER other_writer AFTER INSERT ON completions FOR EACH ROW EXECUTE FUNCTION other_writer()"
            )
    with pytest.raises(ConcurrentChange, match="nothing was written"):
        write(engine, frame([first, second], "2024-03-31"), "run", on="earliest")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(completions)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0
