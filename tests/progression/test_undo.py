"""Undo from the journal: imports (with what they completed through the hierarchy), transfers, merges and undos,
conflicts with later runs, on both databases; and a property test that undoes random runs in reverse order."""

from __future__ import annotations

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import NOW, drop, stored, utc
from progression import ledger
from demo_platform import workbook_bytes
from progression.expand import expand_completions
from progression.merge import plan as plan_merge, run_merge
from progression.pipeline import plan as plan_import, run_file
from progression.runs import ConfError
from progression.platform import completions, content, load_edges, users
from progression.transfer import plan as plan_transfer, run_transfer
from progression.undo import plan, run_undo
from progression.write import write_completions


def undo(target, run_id: str, *, dry_run=False, force=False):
    return run_undo(
        target, plan(target, run_id=run_id, dry_run=dry_run, force=force, airflow_run_id="manual__test", started=NOW)
    )


def import_file(target, rows, kind="activities", on_existing="keep"):
    rel = drop(target.root, f"inbox/{kind}/file.xlsx", workbook_bytes(["User email", "Content uuid", "Date"], rows))
    job = run_file(
        target,
        plan_import(
            target,
            path=rel,
            content_type=None,
            dry_run=False,
            on_existing=on_existing,
            force=True,
            airflow_run_id="manual__test",
            started=NOW,
        )[0],
    )
    assert job.status == "ok", job.message
    return job


def merge(target, from_email, to_email, mode="copy"):
    return run_merge(
        target,
        plan_merge(
            target,
            from_email=from_email,
            to_email=to_email,
            path=None,
            mode=mode,
            dry_run=False,
            airflow_run_id="manual__test",
            started=NOW,
        ),
    )


def ids_of(engine, emails: list[str], uuids: list[str]) -> tuple[list[int], list[int]]:
    with engine.connect() as conn:
        user_ids = {e: i for i, e in conn.execute(sa.select(users.c.id, users.c.email)).all()}
        content_ids = {str(u): i for i, u in conn.execute(sa.select(content.c.id, content.c.uuid)).all()}
    return [user_ids[e] for e in emails], [content_ids[u] for u in uuids]


def written_run(engine, rows: pd.DataFrame, kind: str, on_existing: str = "keep") -> str:
    """A run that writes completions as a transfer or an import does: a ledger run and write_completions."""
    run_id = ledger.new_run_id(kind, "acme")
    with engine.begin() as conn:
        ledger.start_run(conn, run_id=run_id, customer="acme", dag_id=f"progression_{kind}", subject="test")
        if len(rows):
            write_completions(conn, rows, run_id=run_id, source=kind, on_existing=on_existing)
        ledger.finish_run(conn, run_id, "succeeded")
    return run_id


def run_of(engine, run_id: str) -> dict:
    with engine.connect() as conn:
        return ledger.get_run(conn, run_id)


def journal_size(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar()


def test_undo_of_an_import_restores_everything_it_wrote_including_the_hierarchy(target, platform):
    e, journey = platform.emails, platform.uuids["journey"][0]
    import_file(target, [[e[0], platform.uuids["activity"][0], "2024-09-01"]])  # inside the journey, later
    before = stored(target.engine)
    job = import_file(
        target, [[e[0], journey, "2024-04-10"], [e[1], journey, "2024-04-10"]], "journeys", on_existing="earliest"
    )
    assert len(stored(target.engine)) > len(before) + 2
    done = undo(target, job.run_id)
    assert stored(target.engine) == before
    changed = job.counts["imported"] + job.counts["updated"] + job.counts["derived_written"]
    assert done.counts == {
        "changes": changed,
        "restored": changed,
        "removed": changed - 1,
        "put_back": 1,
        "reinserted": 0,
        "conflicts": 0,
        "left_alone": 0,
    }
    assert run_of(target.engine, job.run_id)["undone_by"] == done.run_id
    recorded = run_of(target.engine, done.run_id)
    assert (recorded["dag_id"], recorded["subject"], recorded["status"]) == (
        "progression_undo",
        job.run_id,
        "succeeded",
    )
    # The ledger says what the undo did in its own columns: none of it counts as written by the undo.
    assert (recorded["rows_read"], recorded["restored"], recorded["removed"], recorded["conflicts"]) == (
        changed,
        changed,
        changed - 1,
        0,
    )
    assert (recorded["imported"], recorded["updated"], recorded["kept"], recorded["derived_written"]) == (0, 0, 0, 0)
    restored = list(openpyxl.load_workbook(target.root / done.report, read_only=True)["Restored"].values)
    assert len(restored) == 1 + changed
    with target.engine.connect() as conn:  # the same bytes count as not imported any more
        assert ledger.earlier_import_of(conn, "acme", job.checksum) is None


def test_undo_of_a_transfer(target, platform):
    e, journeys = platform.emails, platform.uuids["journey"]
    # Users 5 and 7 are in the group given programme 0, which holds both journeys: they have access to the new one.
    import_file(target, [[e[5], journeys[0], "2024-05-01"], [e[7], journeys[0], "2024-05-01"]], "journeys")
    before = stored(target.engine)
    job = run_transfer(
        target,
        plan_transfer(
            target,
            old_uuid=journeys[0],
            new_uuid=journeys[1],
            dry_run=False,
            completion_date="original",
            on_existing=None,
            airflow_run_id="manual__test",
            started=NOW,
        ),
    )
    written = {key: value for key, value in stored(target.engine).items() if value[1] == "transfer"}
    assert {email for email, _ in written} == {e[5], e[7]} and len(written) > 2  # the journey and its activities
    done = undo(target, job.run_id)
    assert stored(target.engine) == before and done.counts["removed"] == len(written)
    assert done.undone_dag_id == "progression_transfer"


def test_undo_of_a_merge_brings_back_the_source_and_the_targets_own_dates(target, platform):
    e, a = platform.emails, platform.uuids["activity"]
    import_file(target, [[e[0], a[0], "2024-03-01"], [e[0], a[1], "2024-03-01"], [e[1], a[0], "2024-06-01"]])
    before = stored(target.engine)
    job = merge(target, e[0], e[1], mode="move")
    assert {key[0] for key in stored(target.engine)} == {e[1]}
    done = undo(target, job.run_id)
    assert stored(target.engine) == before
    assert (done.counts["removed"], done.counts["put_back"], done.counts["reinserted"]) == (1, 1, 2)


@pytest.mark.parametrize("force", [False, True])
def test_a_completion_changed_by_a_later_run_is_a_conflict_left_alone_unless_forced(target, platform, force):
    e, a = platform.emails, platform.uuids["activity"]
    first = import_file(target, [[e[0], a[0], "2024-03-01"], [e[1], a[0], "2024-03-01"]])
    later = import_file(target, [[e[0], a[0], "2024-01-01"]], on_existing="overwrite")
    done = undo(target, first.run_id, force=force)
    got = stored(target.engine)
    assert (e[1], a[0]) not in got
    if force:
        assert got == {}
    else:
        assert got == {(e[0], a[0]): (utc("2023-12-31 23:00"), "import", later.run_id)}
    assert (done.counts["conflicts"], done.counts["left_alone"]) == (1, 0 if force else 1)
    conflicts = list(openpyxl.load_workbook(target.root / done.report, read_only=True)["Conflicts"].values)
    assert conflicts[1][:2] == (e[0], a[0]) and conflicts[1][3] == ("removed" if force else "left alone")
    assert conflicts[1][6] == first.run_id and conflicts[1][9] == later.run_id


def test_a_run_from_a_ledger_that_journaled_its_inserts_is_undone_once_per_completion(target, platform):
    """Older versions journaled every insert too: those rows and the completions carrying the run id are one."""
    e, journey = platform.emails, platform.uuids["journey"][0]
    job = import_file(target, [[e[0], journey, "2024-04-10"]], "journeys")
    written = stored(target.engine)
    with target.engine.begin() as conn:
        conn.execute(
            sa.text("""
            INSERT INTO progression_journal (run_id, user_id, content_id, action, new_completed_at, new_source,
                                             new_run_id)
            SELECT run_id, user_id, content_id, 'insert', completed_at, source, run_id FROM completions
            WHERE run_id = :run_id"""),
            {"run_id": job.run_id},
        )
    done = undo(target, job.run_id)
    assert stored(target.engine) == {}
    assert (done.counts["changes"], done.counts["removed"], done.counts["conflicts"]) == (len(written),) * 2 + (0,)


def test_undoing_a_run_twice_does_nothing_the_second_time(target, platform):
    job = import_file(target, [[platform.emails[0], platform.uuids["activity"][0], "2024-03-01"]])
    first = undo(target, job.run_id)
    journal = journal_size(target.engine)
    again = undo(target, job.run_id)
    assert again.status == "skipped" and first.run_id in again.message
    assert journal_size(target.engine) == journal and stored(target.engine) == {}
    assert run_of(target.engine, job.run_id)["undone_by"] == first.run_id
    assert run_of(target.engine, again.run_id)["status"] == "skipped"


def test_an_undo_can_be_undone_and_the_run_undone_again(target, platform):
    e, journey = platform.emails, platform.uuids["journey"][0]
    job = import_file(target, [[e[0], journey, "2024-04-10"]], "journeys")
    after = stored(target.engine)
    first = undo(target, job.run_id)
    assert stored(target.engine) == {}
    back = undo(target, first.run_id)
    assert stored(target.engine) == after
    assert run_of(target.engine, first.run_id)["undone_by"] == back.run_id
    assert run_of(target.engine, job.run_id)["undone_by"] is None  # its completions are in place again
    again = undo(target, job.run_id)
    assert again.status == "succeeded" and stored(target.engine) == {}


def test_a_dry_run_undo_reports_and_writes_nothing(target, platform):
    job = import_file(target, [[platform.emails[0], platform.uuids["journey"][0], "2024-04-10"]], "journeys")
    before, journal = stored(target.engine), journal_size(target.engine)
    done = undo(target, job.run_id, dry_run=True)
    assert stored(target.engine) == before and journal_size(target.engine) == journal
    assert done.counts["restored"] == len(before) and "would restore" in done.message
    assert run_of(target.engine, job.run_id)["undone_by"] is None
    assert run_of(target.engine, done.run_id)["dry_run"] and (target.root / done.report).exists()


def test_a_run_that_cannot_be_undone_is_refused(target, platform):
    rel = drop(
        target.root,
        "inbox/activities/dry.xlsx",
        workbook_bytes(["User email", "Content uuid"], [[platform.emails[0], platform.uuids["activity"][0]]]),
    )
    dry = run_file(
        target,
        plan_import(
            target,
            path=rel,
            content_type=None,
            dry_run=True,
            on_existing=None,
            force=False,
            airflow_run_id=None,
            started=NOW,
        )[0],
    )
    with pytest.raises(ConfError, match="was a dry run"):
        plan(target, run_id=dry.run_id, dry_run=False, force=False, airflow_run_id=None, started=NOW)
    with target.engine.begin() as conn:
        ledger.start_run(conn, run_id="import-globex-1", customer="globex", dag_id="progression_import", subject="x")
        ledger.start_run(conn, run_id="import-acme-1", customer="acme", dag_id="progression_import", subject="x")
    with pytest.raises(ConfError, match="has not finished"):
        plan(target, run_id="import-acme-1", dry_run=False, force=False, airflow_run_id=None, started=NOW)
    for run_id in ("no-such-run", "import-globex-1"):
        with pytest.raises(ConfError, match=f"run_id '{run_id}' is not in the ledger of customer acme"):
            plan(target, run_id=run_id, dry_run=False, force=False, airflow_run_id=None, started=NOW)


# --- the property: any sequence of runs, undone in reverse order, leaves exactly what was there ---------------------

USERS, ITEMS, DAYS = 4, 5, 4
row = st.tuples(st.integers(0, USERS - 1), st.integers(0, ITEMS - 1), st.integers(0, DAYS - 1))
step = st.one_of(
    st.tuples(
        st.just("import"),
        st.lists(row, min_size=1, max_size=4),
        st.sampled_from(["keep", "earliest", "latest", "overwrite"]),
    ),
    st.tuples(st.just("transfer"), st.integers(0, ITEMS - 1), st.integers(0, ITEMS - 1)),
    st.tuples(
        st.just("merge"), st.integers(0, USERS - 1), st.integers(1, USERS - 1), st.sampled_from(["copy", "move"])
    ),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.lists(row, max_size=6), steps=st.lists(step, min_size=1, max_size=4))
def test_undoing_every_run_in_reverse_order_restores_the_completions_it_started_with(target, platform, start, steps):
    engine = target.engine
    with engine.begin() as conn:  # the fixtures are shared by the examples: each starts from nothing
        for table in (completions, ledger.journal, ledger.runs):
            conn.execute(sa.delete(table))
    # Activities, a journey and a programme: imports and transfers of the last two complete what they contain.
    uuids = platform.uuids["activity"][:3] + platform.uuids["journey"][:1] + platform.uuids["programme"][:1]
    user_ids, item_ids = ids_of(engine, platform.emails[:USERS], uuids)
    with engine.begin() as conn:
        edges = load_edges(conn, platform.platform_id)
        firsts = {(u, i): d for u, i, d in sorted(start, key=lambda r: r[2], reverse=True)}
        if firsts:
            conn.execute(
                sa.insert(completions),
                [
                    {
                        "user_id": user_ids[u],
                        "content_id": item_ids[i],
                        "completed_at": day(d).to_pydatetime(),
                        "source": "platform",
                        "run_id": None,
                    }
                    for (u, i), d in firsts.items()
                ],
            )
    before = stored(engine)

    def expanded(frame: pd.DataFrame) -> pd.DataFrame:
        first = frame.sort_values("completed_at").drop_duplicates(["user_id", "content_id"])
        return expand_completions(first, edges)

    run_ids = []
    for kind, *args in steps:
        if kind == "import":
            rows, policy = args
            frame = pd.DataFrame(
                {
                    "user_id": [user_ids[u] for u, _, _ in rows],
                    "content_id": [item_ids[i] for _, i, _ in rows],
                    "completed_at": [day(d) for _, _, d in rows],
                }
            )
            run_ids.append(written_run(engine, expanded(frame), "import", policy))
        elif kind == "transfer":
            old, new = args
            with engine.connect() as conn:
                held = conn.execute(
                    sa.select(completions.c.user_id, completions.c.completed_at).where(
                        completions.c.content_id == item_ids[old]
                    )
                ).all()
            frame = pd.DataFrame(
                {
                    "user_id": [u for u, _ in held],
                    "content_id": item_ids[new],
                    "completed_at": pd.to_datetime([at for _, at in held], utc=True),
                }
            )
            run_ids.append(written_run(engine, expanded(frame) if len(frame) else frame, "transfer"))
        else:
            source, offset, mode = args
            into = (source + offset) % USERS
            run_ids.append(merge(target, platform.emails[source], platform.emails[into], mode).run_id)
    for run_id in reversed(run_ids):
        done = undo(target, run_id)
        assert done.status == "succeeded" and done.counts["conflicts"] == 0, done.message
    assert stored(engine) == before


def day(number: int) -> pd.Timestamp:
    return utc("2024-01-01") + pd.Timedelta(days=number)
