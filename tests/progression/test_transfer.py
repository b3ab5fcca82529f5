"""The transfer rules of the contract and the issue, end to end through every stage, on SQLite and PostgreSQL.

The small demo platform `acme`: programme 0 holds journeys 0 and 1, programme 1 holds journeys 2, 3 and (shared)
journey 0; each journey holds three activities; activities 12 and 13 sit in no journey. Some users are in no group
(`who.no_group`), the others in group 0, given programme 0 (`who.group_0`), or group 1, given programme 1
(`who.group_1`, `who.also_group_1`).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from support import NOW, as_utc, children, complete, drop, journal_of, refuse_inserts_of, sheet, stored, utc
from progression import ledger
from demo_platform import describe, workbook_bytes
from progression.runs import ConfError, rows_of, summarise
from progression.platform import content, content_groups, groups
from progression.transfer import DAG_ID, plan, run_transfer

PAIRS = ["Old content uuid", "New content uuid"]


def run(target, *, dry_run=False, completion_date="original", on_existing=None, now=NOW, **pairs):
    """Plan and run a transfer: `old_uuid` and `new_uuid`, or `path`."""
    job = plan(
        target,
        dry_run=dry_run,
        completion_date=completion_date,
        on_existing=on_existing,
        airflow_run_id="manual__test",
        started=now,
        **pairs,
    )
    return run_transfer(target, job)


def pairs_file(target, rows, header=PAIRS, name="pairs.xlsx", title=None) -> str:
    return drop(target.root, f"inbox/transfers/{name}", workbook_bytes(header, rows, title=title))


def test_who_completed_the_old_journey_and_can_see_the_new_one_gets_it_with_its_activities(target, platform, who):
    j0, _j1, j2, _j3 = platform.uuids["journey"]
    for user, day in ((who.group_1, "2024-03-01 09:30"), (who.group_0, "2024-04-01"), (who.no_group, "2024-05-01")):
        complete(target.engine, user, j0, day)
    before = stored(target.engine)
    job = run(target, old_uuid=j0, new_uuid=j2.upper())
    assert job.status == "ok", job.message
    got = stored(target.engine)
    written = {key: value for key, value in got.items() if key not in before}
    assert set(written) == {(who.group_1, u) for u in [j2, *children(target.engine, j2)]}
    assert set(written.values()) == {(utc("2024-03-01 09:30"), "transfer", job.run_id)}
    assert {key: got[key] for key in before} == before  # the old completions stay as they were
    assert job.counts == {
        **job.counts,
        "rows_read": 3,
        "imported": 1,
        "derived_written": 3,
        "skipped_without_access": 2,
    }
    with target.engine.connect() as conn:  # skipped, not saved: a transfer leaves those users out
        recorded = ledger.get_run(conn, job.run_id)
    assert (recorded["skipped_without_access"], recorded["saved_without_access"]) == (2, 0)
    assert sheet(target, job, "Pairs")[1:] == [
        (None, j0, job.pairs[0].old_title, j2, job.pairs[0].new_title, "journey", None, 3, 1, 3, 2, 0)
    ]
    assert sheet(target, job, "Skipped users")[1:] == sorted([(j0, j2, who.no_group), (j0, j2, who.group_0)])
    with target.engine.connect() as conn:
        recorded = ledger.get_run(conn, job.run_id)
    assert recorded["status"] == "succeeded" and recorded["dag_id"] == "progression_transfer"
    assert recorded["subject"] == f"{j0} -> {j2}" and recorded["report_path"] == job.report


def test_access_comes_from_a_group_given_the_item_or_a_journey_or_programme_containing_it(target, platform, who):
    activities = platform.uuids["activity"]
    loose, inside, given = activities[12], activities[6], activities[13]  # activity 6: journey 2, programme 1
    with target.engine.begin() as conn:
        group_0 = (
            conn.execute(
                sa.select(groups.c.id).where(groups.c.platform_id == platform.platform_id).order_by(groups.c.id)
            )
            .scalars()
            .first()
        )
        item = conn.execute(sa.select(content.c.id).where(content.c.uuid == given)).scalar_one()
        conn.execute(sa.insert(content_groups).values(content_id=item, group_id=group_0))
    for user in (who.no_group, who.group_0, who.group_1):
        complete(target.engine, user, loose, "2024-02-02")
    job = run(target, path=pairs_file(target, [[loose, inside], [loose, given]]))
    new = {(e, u) for (e, u), (_at, source, _run) in stored(target.engine).items() if source == "transfer"}
    assert new == {(who.group_1, inside), (who.group_0, given)}
    assert [row[-5:] for row in sheet(target, job, "Pairs")[1:]] == [(3, 1, 0, 2, 0), (3, 1, 0, 2, 0)]
    assert (target.root / "processed/transfers/pairs.xlsx").exists()


def test_a_programme_completes_its_journeys_and_their_activities(target, platform, who):
    p0, p1 = platform.uuids["programme"]
    complete(target.engine, who.group_1, p0, "2024-06-30")
    job = run(target, old_uuid=p0, new_uuid=p1)
    expected = {p1}
    for journey in children(target.engine, p1):
        expected |= {journey, *children(target.engine, journey)}
    new = {u for (_e, u), (_at, source, _run) in stored(target.engine).items() if source == "transfer"}
    assert new == expected and len(expected) == 13  # three journeys (one shared), nine activities
    assert job.counts["imported"] == 1 and job.counts["derived_written"] == 12


def test_the_date_can_be_midnight_of_the_day_of_the_transfer_in_the_customers_zone(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-03-01")
    run(target, old_uuid=j0, new_uuid=j2, completion_date="transfer", now=datetime(2026, 7, 1, 9, tzinfo=timezone.utc))
    assert stored(target.engine)[(who.group_1, j2)][0] == utc("2026-06-30 22:00")


@pytest.mark.parametrize(
    "policy, expected, outcome",
    [
        ("keep", "2024-06-01", "kept"),
        ("earliest", "2024-03-01", "updated"),
        ("latest", "2024-06-01", "kept"),
        ("overwrite", "2024-03-01", "updated"),
    ],
)
def test_on_existing_decides_what_happens_to_a_new_item_completed_already(
    target, platform, policy, expected, outcome, who
):
    email, j0, j2 = who.group_1, platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, email, j0, "2024-03-01")
    complete(target.engine, email, j2, "2024-06-01", source="import", run_id="import-earlier")
    job = run(target, old_uuid=j0, new_uuid=j2, on_existing=policy)
    assert stored(target.engine)[(email, j2)][0] == utc(expected)
    assert job.counts[outcome] == 1
    already_had_it = sheet(target, job, "Pairs")[1][-1]
    assert already_had_it == (1 if outcome == "kept" else 0)
    if outcome == "updated":
        update = [r for r in journal_of(target.engine, job.run_id) if r["action"] == "update"]
        assert [(r["old_source"], r["old_run_id"], as_utc(r["old_completed_at"])) for r in update] == [
            ("import", "import-earlier", utc("2024-06-01"))
        ]


def test_every_written_completion_carries_the_run_for_undo(target, platform, who):
    """Undo finds a run's new completions by their run id: the journal holds only what a run replaced."""
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-03-01")
    job = run(target, old_uuid=j0, new_uuid=j2)
    written = [value for value in stored(target.engine).values() if value[2] == job.run_id]
    assert len(written) == 4 and {source for _, source, _ in written} == {"transfer"}
    assert journal_of(target.engine, job.run_id) == []


def test_a_re_run_changes_nothing(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    for user in (who.group_1, who.also_group_1, who.no_group):
        complete(target.engine, user, j0, "2024-03-01")
    run(target, old_uuid=j0, new_uuid=j2)
    before = stored(target.engine)
    again = run(target, old_uuid=j0, new_uuid=j2, on_existing="overwrite")
    assert stored(target.engine) == before
    assert again.counts["imported"] == again.counts["updated"] == again.counts["derived_written"] == 0
    assert again.counts["kept"] == 2 and again.counts["skipped_without_access"] == 1
    assert journal_of(target.engine, again.run_id) == []


def test_chains_also_transfer_from_the_first_item_to_the_last(target, platform, who):
    j0, _j1, j2, j3 = platform.uuids["journey"]  # all three in programme 1
    complete(target.engine, who.group_1, j0, "2024-01-10")
    complete(target.engine, who.also_group_1, j2, "2024-02-10")
    job = run(target, path=pairs_file(target, [[j0, j2], [j2, j3]]))
    got = stored(target.engine)
    assert got[(who.group_1, j2)][0] == got[(who.group_1, j3)][0] == utc("2024-01-10")
    assert got[(who.also_group_1, j3)][0] == utc("2024-02-10")
    pairs = [(row[0], row[1], row[3], row[6], *row[7:]) for row in sheet(target, job, "Pairs")[1:]]
    assert pairs == [
        (2, j0, j2, None, 1, 1, 3, 0, 0),
        (3, j2, j3, None, 1, 1, 3, 0, 0),
        (None, j0, j3, f"{j0} -> {j2} -> {j3}", 1, 1, 3, 0, 0),
    ]
    assert (job.counts["imported"], job.counts["derived_written"]) == (3, 9)


def test_an_item_reached_through_two_pairs_is_written_once_with_the_earliest_date(target, platform, who):
    email, (j0, j1, j2, _j3) = who.group_1, platform.uuids["journey"]
    complete(target.engine, email, j0, "2024-05-01")
    complete(target.engine, email, j1, "2024-02-01")
    job = run(target, path=pairs_file(target, [[j0, j2], [j1, j2]]))
    assert stored(target.engine)[(email, j2)][0] == utc("2024-02-01")
    assert (job.counts["imported"], job.counts["derived_written"]) == (1, 3)
    assert [row[-5:] for row in sheet(target, job, "Pairs")[1:]] == [(1, 1, 3, 0, 0), (1, 1, 3, 0, 0)]  # both count it
    assert len([value for value in stored(target.engine).values() if value[2] == job.run_id]) == 4
    again = run(target, path=pairs_file(target, [[j0, j2], [j1, j2]]))
    assert (again.counts["imported"], again.counts["derived_written"], again.counts["kept"]) == (0, 0, 1)
    assert [row[-5:] for row in sheet(target, again, "Pairs")[1:]] == [(1, 0, 0, 0, 1), (1, 0, 0, 0, 1)]


def test_a_cycle_is_refused_naming_its_uuids(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-01-10")
    before = stored(target.engine)
    job = run(target, path=pairs_file(target, [[j0, j2], [j2, j0]]))
    assert job.refused and f"{j0} -> {j2} -> {j0}" in job.message
    assert stored(target.engine) == before
    assert (target.root / "failed/transfers/pairs.xlsx").exists()


def test_all_pairs_are_written_in_one_transaction(target, platform, engine, who):
    """A database error in the second pair leaves nothing of the first one behind."""
    j0, j1, j2, j3 = platform.uuids["journey"]
    complete(engine, who.group_1, j0, "2024-01-10")
    complete(engine, who.also_group_1, j1, "2024-01-10")
    refuse_inserts_of(engine, children(engine, j3)[-1])
    before = stored(engine)
    job = plan(
        target,
        path=pairs_file(target, [[j0, j2], [j1, j3]]),
        dry_run=False,
        completion_date="original",
        on_existing=None,
        airflow_run_id=None,
        started=NOW,
    )
    with pytest.raises(Exception, match="completions of this item are locked"):
        run_transfer(target, job)
    assert stored(engine) == before
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0


def test_a_dry_run_reports_everything_and_writes_nothing(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    for user in (who.group_1, who.no_group):
        complete(target.engine, user, j0, "2024-03-01")
    before = stored(target.engine)
    rel = pairs_file(target, [[j0, j2]])
    job = run(target, path=rel, dry_run=True)
    assert (
        job.counts["imported"] == 1 and job.counts["derived_written"] == 3 and job.counts["skipped_without_access"] == 1
    )
    assert stored(target.engine) == before
    assert (target.root / rel).exists()  # left in the inbox for the real run
    assert sheet(target, job, "Skipped users")[1:] == [(j0, j2, who.no_group)]
    assert ("Status", "DRY RUN, nothing written: succeeded") in sheet(target, job, "Summary")
    with target.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0
    summary = summarise(DAG_ID, "acme", rows_of(target, "manual__test"))
    assert summary["dry_run"] is True and summary["status"] == "succeeded" and summary["report"] == job.report
    assert (summary["written_directly"], summary["written_through_contents"], summary["skipped_without_access"]) == (
        1,
        3,
        1,
    )


def test_a_workbook_is_read_as_imports_are_read(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-03-01")
    rel = pairs_file(
        target,
        [[None, None, "x"], [f"  {j0.upper()} ", j2, "replaced in 2026"], [j0, j2, "again"]],
        header=[" FROM UUID", "To uuid", "Note"],
        title="Replacements",
        name="q4.xlsx",
    )
    job = run(target, path=rel)
    assert job.status == "ok", job.message
    assert [(p.row, p.old_uuid, p.new_uuid) for p in job.pairs] == [(4, j0, j2)]  # the same pair twice: once
    assert (who.group_1, j2) in stored(target.engine)


def test_a_csv_of_pairs_works_too(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-03-01")
    rel = drop(target.root, "inbox/transfers/pairs.csv", f"Old uuid;New uuid\n{j0};{j2}\n".encode())
    job = run(target, path=rel)
    assert job.status == "ok" and job.counts["imported"] == 1
    assert (target.root / "processed/transfers/pairs.csv").exists()


def other_activity(engine) -> str:
    return describe(engine, "other").uuids["activity"][0]


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "journey:0",
            "activity:0",
            "the old item is a journey and the new one an activity: a transfer goes from "
            "activity to activity, journey to journey or programme to programme",
        ),
        ("activity:0", "other", "no content with uuid {new} on platform acme"),
        ("activity:0", "activity:0", "old and new are the same item"),
        ("activity:0", "0b2e4c5e-1111-4222-8333-944455556666", "no content with uuid 0b2e4c5e"),
        ("not-a-uuid", "activity:0", "the old content uuid 'not-a-uuid' is not a uuid"),
    ],
)
def test_a_pair_that_cannot_be_transferred_is_refused_naming_it(target, platform, engine, old, new, message, who):
    def uuid(spec: str) -> str:
        if spec == "other":
            return other_activity(engine)
        kind, _, index = spec.partition(":")
        return platform.uuids[kind][int(index)] if index else spec

    old, new = uuid(old), uuid(new)
    complete(engine, who.group_1, platform.uuids["activity"][0], "2024-03-01")
    before = stored(engine)
    job = run(target, old_uuid=old, new_uuid=new)
    assert job.refused and f"pair {old} -> {new}: " in job.message
    assert message.format(new=new) in job.message
    assert stored(engine) == before
    assert sheet(target, job, "Refused")[1][1:3] == (old, new)
    with engine.connect() as conn:
        recorded = ledger.get_run(conn, job.run_id)
    assert recorded["status"] == "failed" and recorded["message"] == job.message and recorded["rejected"] == 1


def test_one_bad_row_refuses_the_whole_workbook_naming_the_row(target, platform, who):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    complete(target.engine, who.group_1, j0, "2024-03-01")
    before = stored(target.engine)
    rel = pairs_file(target, [[j0, j2], [j2, "abc"], [platform.uuids["programme"][0], j0]])
    job = run(target, path=rel)
    assert job.refused
    assert f"row 3 ({j2} -> abc): the new content uuid 'abc' is not a uuid" in job.message
    assert (
        f"row 4 ({platform.uuids['programme'][0]} -> {j0}): the old item is a programme and the new one a "
        "journey" in job.message
    )
    assert stored(target.engine) == before
    assert [row[0] for row in sheet(target, job, "Refused")[1:]] == [3, 4]
    assert (target.root / "failed/transfers/pairs.xlsx").exists()
    assert job.counts["rejected_by_reason"] == {"different types": 1, "invalid uuid": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        (
            workbook_bytes(["Course", "Replacement"], [["a", "b"]]),
            "the columns 'Old content uuid' and 'New content uuid' are missing; found 'Course', 'Replacement'",
        ),
        (workbook_bytes(PAIRS, []), "has the headers but no pairs"),
        (b"just some text", "not a workbook (.xlsx, .xlsm, .xlsb, .xls, .ods) or a CSV file"),
    ],
)
def test_a_workbook_without_the_columns_is_refused_whole(target, data, message):
    rel = drop(target.root, "inbox/transfers/bad.xlsx", data)
    job = run(target, path=rel)
    assert job.refused and message in job.message and f"{rel}: " in job.message
    assert (target.root / "failed/transfers/bad.xlsx").exists() and (target.root / job.report).exists()
    assert stored(target.engine) == {}


@pytest.mark.parametrize(
    "conf, message",
    [
        ({}, "nothing to transfer: give old_uuid and new_uuid"),
        ({"old_uuid": "0b2e4c5e-1111-4222-8333-944455556666"}, "new_uuid is missing"),
        ({"path": "inbox/transfers/x.xlsx", "old_uuid": "a", "new_uuid": "b"}, "not both"),
        ({"path": "../other/inbox/transfers/x.xlsx"}, "leaves the customer's storage root"),
        ({"path": "inbox/transfers/missing.xlsx"}, "does not exist"),
        ({"path": "inbox/transfers/x.xlsx", "completion_date": "today"}, "completion_date 'today'"),
        ({"path": "inbox/transfers/x.xlsx", "on_existing": "sometimes"}, "on_existing 'sometimes'"),
    ],
)
def test_a_bad_conf_is_refused_before_any_work(target, conf, message):
    drop(target.root, "inbox/transfers/x.xlsx", b"x")
    kwargs = {
        "dry_run": True,
        "completion_date": "original",
        "on_existing": None,
        "airflow_run_id": None,
        "started": NOW,
        **conf,
    }
    with pytest.raises(ConfError, match=message):
        plan(target, **kwargs)
    with target.engine.connect() as conn:
        assert ledger.list_runs(conn) == []


def test_an_old_item_nobody_completed_transfers_nothing(target, platform):
    j0, j2 = platform.uuids["journey"][0], platform.uuids["journey"][2]
    for completion_date in ("original", "transfer"):
        job = run(target, old_uuid=j0, new_uuid=j2, completion_date=completion_date)
        assert job.status == "ok" and job.counts["rows_read"] == job.counts["imported"] == 0
        assert sheet(target, job, "Skipped users")[1:] == []
    assert stored(target.engine) == {}
