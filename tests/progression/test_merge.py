"""Account merges: earliest date per item, copy and move, workbooks of pairs, and every refusal, on both databases."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import sqlalchemy as sa

from support import NOW, complete, drop, journal_of, sheet, stored, utc
from progression import ledger
from demo_platform import describe, workbook_bytes
from progression.merge import DAG_ID, plan, run_merge
from progression.runs import ConfError, rows_of, summarise
from progression.platform import users


def merge(target, *, from_email=None, to_email=None, path=None, mode="copy", dry_run=False):
    job = plan(
        target,
        from_email=from_email,
        to_email=to_email,
        path=path,
        mode=mode,
        dry_run=dry_run,
        airflow_run_id="manual__test",
        started=NOW,
    )
    return run_merge(target, job)


def test_copy_gives_every_completion_to_the_target_and_leaves_the_source(target, platform):
    source, into = platform.emails[0], platform.emails[1]
    a = platform.uuids["activity"]
    complete(target.engine, source, a[0], "2024-01-01")
    complete(target.engine, source, platform.uuids["journey"][0], "2024-02-01", source="import", run_id="import-x")
    job = merge(target, from_email=f" {source.upper()} ", to_email=into)
    got = stored(target.engine)
    assert got[(into, a[0])] == (utc("2024-01-01"), "merge", job.run_id)
    assert got[(into, platform.uuids["journey"][0])] == (utc("2024-02-01"), "merge", job.run_id)
    assert got[(source, a[0])] == (utc("2024-01-01"), "platform", None)  # copy leaves the source alone
    assert asdict(job.pairs[0]) | {"from_user_id": 0, "to_user_id": 0} == {
        "row": None,
        "from_email": source,
        "to_email": into,
        "from_user_id": 0,
        "to_user_id": 0,
        "completions": 2,
        "copied": 2,
        "kept": 0,
        "replaced": 0,
        "removed": 0,
    }
    assert journal_of(target.engine, job.run_id) == []  # new completions carry the run id: undo finds them by it
    with target.engine.connect() as conn:
        run = ledger.get_run(conn, job.run_id)
    assert (run["dag_id"], run["status"], run["imported"], run["report_path"]) == (
        "progression_merge_users",
        "succeeded",
        2,
        job.report,
    )


def test_where_both_hold_an_item_the_earliest_date_wins(target, platform):
    source, into = platform.emails[0], platform.emails[1]
    a = platform.uuids["activity"]
    for uuid, at in ((a[0], "2024-03-01"), (a[1], "2024-03-01"), (a[2], "2024-03-01"), (a[3], "2024-03-01")):
        complete(target.engine, source, uuid, at)
    complete(target.engine, into, a[0], "2024-01-01")  # earlier: kept
    complete(target.engine, into, a[1], "2024-03-01")  # the same date: kept
    complete(target.engine, into, a[2], "2024-06-01")  # later: replaced by the earlier date
    complete(target.engine, into, a[4], "2024-06-01")  # only the target has it: untouched
    job = merge(target, from_email=source, to_email=into)
    got = stored(target.engine)
    assert got[(into, a[0])] == (utc("2024-01-01"), "platform", None)
    assert got[(into, a[1])] == (utc("2024-03-01"), "platform", None)
    assert got[(into, a[2])] == (utc("2024-03-01"), "merge", job.run_id)
    assert got[(into, a[3])] == (utc("2024-03-01"), "merge", job.run_id)
    assert got[(into, a[4])] == (utc("2024-06-01"), "platform", None)
    pair = job.pairs[0]
    assert (pair.copied, pair.kept, pair.replaced) == (1, 2, 1)
    rows = sheet(target, job, "Pairs")
    assert rows[0][:4] == ("Row", "From email", "To email", "Completions of the source account")
    assert rows[1][1:] == (source, into, 4, 1, 2, 1, 0)
    outcomes = {r[3]: (r[7], r[9]) for r in sheet(target, job, "Completions")[1:]}
    assert outcomes == {a[0]: ("kept", "no"), a[1]: ("kept", "no"), a[2]: ("replaced", "no"), a[3]: ("copied", "no")}


def test_move_also_removes_the_sources_completions_through_the_journal(target, platform):
    source, into = platform.emails[0], platform.emails[1]
    a = platform.uuids["activity"]
    complete(target.engine, source, a[0], "2024-03-01")
    complete(target.engine, source, a[1], "2024-03-01", source="import", run_id="import-x")
    complete(target.engine, into, a[0], "2024-01-01")
    with target.engine.connect() as conn:
        people = conn.execute(sa.select(users).order_by(users.c.id)).all()
    job = merge(target, from_email=source, to_email=into, mode="move")
    got = stored(target.engine)
    assert not [key for key in got if key[0] == source]
    assert got[(into, a[0])][0] == utc("2024-01-01") and got[(into, a[1])][0] == utc("2024-03-01")
    assert job.pairs[0].removed == 2 and "2 completion(s) removed" in job.message
    with target.engine.connect() as conn:  # the ledger records the removals, not only the message
        recorded = ledger.get_run(conn, job.run_id)
    assert (recorded["rows_read"], recorded["imported"], recorded["kept"], recorded["removed"]) == (2, 1, 1, 2)
    assert summarise(DAG_ID, "acme", rows_of(target, "manual__test"))["removed"] == 2
    deleted = [r for r in journal_of(target.engine, job.run_id) if r["action"] == "delete"]
    assert {(r["old_source"], r["old_run_id"]) for r in deleted} == {("platform", None), ("import", "import-x")}
    assert all(r["new_completed_at"] is None for r in deleted)
    with target.engine.connect() as conn:  # users are never created, deleted or changed
        assert conn.execute(sa.select(users).order_by(users.c.id)).all() == people


def test_a_dry_run_reports_the_merge_and_writes_nothing(target, platform):
    source, into = platform.emails[0], platform.emails[1]
    complete(target.engine, source, platform.uuids["activity"][0], "2024-03-01")
    before = stored(target.engine)
    job = merge(target, from_email=source, to_email=into, mode="move", dry_run=True)
    assert stored(target.engine) == before
    assert job.pairs[0].copied == 1 and job.pairs[0].removed == 1 and "would be removed" in job.message
    assert journal_of(target.engine, job.run_id) == []
    assert dict(sheet(target, job, "Summary"))["Status"].startswith("DRY RUN")


def test_a_workbook_of_pairs_and_two_accounts_into_one_target(target, platform):
    e = platform.emails
    a = platform.uuids["activity"]
    complete(target.engine, e[0], a[0], "2024-05-01")
    complete(target.engine, e[2], a[0], "2024-02-01")  # the earlier of the two sources wins
    complete(target.engine, e[2], a[1], "2024-02-01")
    complete(target.engine, e[3], a[2], "2024-02-01")
    rel = drop(
        target.root,
        "merges/pairs.xlsx",
        workbook_bytes(
            ["From e-mail", "To email"],
            [[e[0], e[1]], [None, None], [e[2].upper(), e[1]], [e[3], e[4]], [e[5], e[6]]],
            title="Accounts to merge",
        ),
    )
    job = merge(target, path=rel, mode="move")
    got = stored(target.engine)
    assert got[(e[1], a[0])] == (utc("2024-02-01"), "merge", job.run_id)
    assert got[(e[1], a[1])][0] == utc("2024-02-01") and got[(e[4], a[2])][0] == utc("2024-02-01")
    assert {key[0] for key in got} == {e[1], e[4]}
    counts = [(p.row, p.completions, p.copied, p.kept, p.removed) for p in job.pairs]
    assert counts == [(3, 1, 0, 1, 1), (5, 2, 2, 0, 2), (6, 1, 1, 0, 1), (7, 0, 0, 0, 0)]
    reasons = [r[8] for r in sheet(target, job, "Completions")[1:] if r[1] == e[0]]
    assert reasons == ["another account merged into the same target has it at the same or an earlier date"]
    assert job.subject == rel


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"from_email": 0, "to_email": 0}, "the same e-mail twice"),
        ({"from_email": "nobody@acme.example", "to_email": 1}, "from_email 'nobody@acme.example': no user"),
        ({"from_email": 0}, "to_email missing"),
        ({"from_email": 0, "to_email": 1, "path": "merges/p.xlsx"}, "not both"),
        ({"from_email": 0, "to_email": 1, "mode": "swap"}, "mode 'swap'"),
        ({"path": "../elsewhere/p.xlsx"}, "leaves the customer's storage root"),
        ({"path": "merges/missing.xlsx"}, "does not exist"),
    ],
)
def test_a_bad_conf_is_refused_with_a_message(target, platform, conf, message):
    drop(target.root, "merges/p.xlsx", b"unused")
    conf = {k: platform.emails[v] if isinstance(v, int) else v for k, v in conf.items()}
    with pytest.raises(ConfError, match=message):
        plan(
            target,
            **{
                "from_email": None,
                "to_email": None,
                "path": None,
                "mode": "copy",
                "dry_run": False,
                "airflow_run_id": None,
                "started": NOW,
                **conf,
            },
        )


@pytest.mark.parametrize(
    "rows, messages",
    [
        ([[0, 1], [1, 2]], ["row 3: {1} is a source here and the target of row 2"]),
        ([[0, 1], [0, 2]], ["row 3: {0} is already the source of row 2"]),
        ([[0, 1], [0, 1]], ["row 3: {0} is already the source of row 2"]),
        (
            [[0, None], ["ghost@acme.example", 1], [2, 2]],
            [
                "row 2: To email is empty",
                "row 3: From email 'ghost@acme.example': no user",
                "row 4: the same e-mail twice ({2})",
            ],
        ),
    ],
)
def test_a_workbook_with_bad_pairs_is_refused_whole_naming_each_row(target, platform, rows, messages):
    cells = [[platform.emails[v] if isinstance(v, int) else v for v in row] for row in rows]
    rel = drop(target.root, "merges/pairs.xlsx", workbook_bytes(["From email", "To email"], cells))
    with pytest.raises(ConfError) as refused:
        plan(
            target,
            from_email=None,
            to_email=None,
            path=rel,
            mode="move",
            dry_run=False,
            airflow_run_id=None,
            started=NOW,
        )
    for message in messages:
        assert message.format(*platform.emails) in str(refused.value)
    assert stored(target.engine) == {}


def test_a_workbook_without_the_pair_columns_is_refused(target, platform):
    rel = drop(target.root, "merges/pairs.xlsx", workbook_bytes(["Email", "New email"], [["a@b.c", "d@e.f"]]))
    with pytest.raises(ConfError, match="'From email' and 'To email' are missing; found 'Email', 'New email'"):
        plan(
            target,
            from_email=None,
            to_email=None,
            path=rel,
            mode="copy",
            dry_run=False,
            airflow_run_id=None,
            started=NOW,
        )


def test_a_user_of_another_platform_is_unknown_here(target, engine, platform):
    other = describe(engine, "other")
    with pytest.raises(ConfError, match="no user with this e-mail on platform acme"):
        plan(
            target,
            from_email=other.emails[0],
            to_email=platform.emails[0],
            path=None,
            mode="copy",
            dry_run=False,
            airflow_run_id=None,
            started=NOW,
        )
