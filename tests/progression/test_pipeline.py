"""The import rules of the contract, end to end through every stage, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timezone

import openpyxl
import pytest
import sqlalchemy as sa

from support import NOW, as_utc, drop, stored, utc
from progression import ledger
from progression.demo import describe, workbook_bytes
from progression.pipeline import plan, run_file
from progression.runs import ConfError
from progression.platform import content, content_items

HEADER = ["User email", "Content uuid", "Completion date"]


def run(target, rel, *, content_type=None, dry_run=False, on_existing=None, force=False, now=NOW):
    jobs = plan(target, path=rel, content_type=content_type, dry_run=dry_run, on_existing=on_existing,
                force=force, airflow_run_id="manual__test", started=now)
    assert len(jobs) == 1
    return run_file(target, jobs[0])


def children(engine, uuid: str) -> list[str]:
    parent = content.alias("parent")
    query = (sa.select(content.c.uuid).join(content_items, content_items.c.child_id == content.c.id)
             .join(parent, parent.c.id == content_items.c.parent_id).where(parent.c.uuid == uuid))
    with engine.connect() as conn:
        return [str(u) for u in conn.execute(query).scalars()]


def xlsx(rows, header=HEADER) -> bytes:
    return workbook_bytes(header, rows)


def report_rows(target, job) -> list[tuple]:
    book = openpyxl.load_workbook(target.root / job.report, read_only=True)
    return list(book["Rows"].iter_rows(values_only=True))


def test_activities_land_with_source_run_id_and_archive(target, platform):
    a1, a2 = platform.uuids["activity"][:2]
    rel = drop(target.root, "inbox/activities/q3.xlsx", xlsx([
        [platform.emails[0], a1, datetime(2024, 3, 31)],
        [f"  {platform.emails[1].upper()} ", a2.upper(), "2024-06-01"],
    ]))
    job = run(target, rel)
    assert job.status == "ok", job.message
    got = stored(target.engine)
    assert got[(platform.emails[0], a1)] == (utc("2024-03-30 23:00"), "import", job.run_id)
    assert got[(platform.emails[1], a2)][0] == utc("2024-05-31 22:00")
    assert job.counts["imported"] == 2 and job.counts["rejected"] == 0
    assert not (target.root / rel).exists()
    assert (target.root / "processed/activities/q3.xlsx").exists()
    assert (target.root / job.report).exists()
    with target.engine.connect() as conn:
        recorded = ledger.get_run(conn, job.run_id)
    assert recorded["status"] == "succeeded" and recorded["imported"] == 2 and recorded["report_path"] == job.report


def test_type_comes_from_the_conf_or_the_folder(target, platform):
    journey = platform.uuids["journey"][0]
    loose = drop(target.root, "inbox/loose.xlsx", xlsx([[platform.emails[0], journey, "2024-01-02"]]))
    failed = run(target, loose)
    assert failed.failed and "inbox/activities/" in failed.message
    assert (target.root / "failed/loose.xlsx").exists()
    again = drop(target.root, "inbox/loose2.xlsx", xlsx([[platform.emails[0], journey, "2024-01-02"]]))
    job = run(target, again, content_type="journeys")
    assert job.status == "ok" and job.counts["imported"] == 1


def test_rows_of_another_type_or_unknown_are_rejected_with_their_reason(target, engine):
    acme, other = describe(engine, "acme"), describe(engine, "other")
    rel = drop(target.root, "inbox/activities/mixed.xlsx", xlsx([
        [acme.emails[0], acme.uuids["activity"][0], "2024-01-02"],
        [acme.emails[0], acme.uuids["journey"][0], "2024-01-02"],
        ["nobody@acme.example", acme.uuids["activity"][0], "2024-01-02"],
        [acme.emails[0], "0b2e4c5e-1111-4222-8333-944455556666", "2024-01-02"],
        [acme.emails[0], other.uuids["activity"][0], "2024-01-02"],
        [other.emails[0], acme.uuids["activity"][1], "2024-01-02"],
    ]))
    job = run(target, rel)
    assert job.counts["imported"] == 1 and job.counts["rejected"] == 5
    reasons = {row[0]: row[-1] for row in report_rows(target, job)[1:]}
    assert "is a journey, this file holds activities" in reasons[3]
    assert "no user with e-mail nobody@acme.example" in reasons[4]
    assert "no content with uuid 0b2e4c5e" in reasons[5]
    assert f"no content with uuid {other.uuids['activity'][0]}" in reasons[6]  # another platform's content
    assert "no user with e-mail" in reasons[7]  # another platform's user
    assert job.counts["rejected_by_reason"] == {"wrong content type": 1, "unknown user": 2, "unknown content": 2}
    assert len(stored(target.engine)) == 1


def test_blank_date_is_midnight_of_the_import_day_in_the_customers_zone(target, platform):
    rel = drop(target.root, "inbox/activities/blank.xlsx", xlsx([[platform.emails[0], platform.uuids["activity"][0],
                                                                 None]]))
    run(target, rel, now=datetime(2026, 7, 1, 9, 0, tzinfo=timezone.utc))
    assert stored(target.engine)[(platform.emails[0], platform.uuids["activity"][0])][0] == utc("2026-06-30 22:00")


def test_every_date_form_lands_as_utc(target, platform):
    a = platform.uuids["activity"]
    rel = drop(target.root, "inbox/activities/forms.xlsx", xlsx([
        [platform.emails[0], a[0], datetime(2024, 3, 31)], [platform.emails[0], a[1], "31-03-2024"],
        [platform.emails[0], a[2], "31/03/2024 14:30"], [platform.emails[0], a[3], 45382],
        [platform.emails[0], a[4], "2024-07-01T10:00:00Z"]]))
    job = run(target, rel)
    assert job.counts["imported"] == 5, job.counts
    got = stored(target.engine)
    assert [got[(platform.emails[0], u)][0] for u in a[:5]] == [
        utc("2024-03-30 23:00"), utc("2024-03-30 23:00"), utc("2024-03-31 12:30"), utc("2024-03-30 23:00"),
        utc("2024-07-01 10:00")]


def test_future_and_unreadable_dates_reject_the_row(target, platform):
    a = platform.uuids["activity"]
    rel = drop(target.root, "inbox/activities/dates.xlsx", xlsx([
        [platform.emails[0], a[0], "2027-01-01"], [platform.emails[0], a[1], "someday"],
        [platform.emails[0], a[2], 45382]]))
    job = run(target, rel)
    assert job.counts["rejected_by_reason"] == {"date in the future": 1, "unreadable date": 1}
    assert stored(target.engine)[(platform.emails[0], a[2])][0] == utc("2024-03-30 23:00")


def test_the_same_user_and_content_twice_counts_once_with_the_earliest_date(target, platform):
    a = platform.uuids["activity"][0]
    rel = drop(target.root, "inbox/activities/dup.xlsx", xlsx([
        [platform.emails[0], a, "2024-05-01"], [platform.emails[0].upper(), a, "2024-02-01"]]))
    job = run(target, rel)
    assert job.counts["imported"] == 1 and job.counts["duplicates"] == 1
    assert stored(target.engine)[(platform.emails[0], a)][0] == utc("2024-01-31 23:00")
    rows = report_rows(target, job)
    assert "same user and content as row 3" in rows[1][-1]


def test_a_journey_completes_its_activities_with_the_same_date(target, platform):
    journey = platform.uuids["journey"][0]
    rel = drop(target.root, "inbox/journeys/j.xlsx", xlsx([[platform.emails[0], journey, "2024-04-10"]]))
    job = run(target, rel)
    got = stored(target.engine)
    inside = children(target.engine, journey)
    assert len(inside) >= 3
    assert {(platform.emails[0], u) for u in [journey, *inside]} == set(got)
    assert {v[0] for v in got.values()} == {utc("2024-04-09 22:00")}
    assert job.counts["derived_written"] == len(inside)


def test_a_programme_completes_journeys_and_activities_and_shared_items_once(target, platform):
    programmes = platform.uuids["programme"]
    rel = drop(target.root, "inbox/programmes/p.xlsx", xlsx([
        [platform.emails[0], programmes[0], "2024-04-10"], [platform.emails[0], programmes[1], "2024-03-01"]]))
    job = run(target, rel)
    expected = set(programmes)
    for programme in programmes:
        for journey in children(target.engine, programme):
            expected |= {journey, *children(target.engine, journey)}
    got = stored(target.engine)
    assert {u for (_e, u) in got} == expected
    assert job.counts["imported"] == 2 and job.counts["derived_written"] == len(expected) - 2
    # The journey shared by both programmes carries the earlier programme's date.
    shared = set(children(target.engine, programmes[0])) & set(children(target.engine, programmes[1]))
    assert shared and all(got[(platform.emails[0], j)][0] == utc("2024-02-29 23:00") for j in shared)


def test_completions_without_access_are_saved_and_counted(target, platform):
    a = platform.uuids["activity"][0]
    no_group = platform.emails[0]  # the generator leaves the first users out of every group
    with_group = platform.emails[-1]
    rel = drop(target.root, "inbox/activities/access.xlsx", xlsx([[no_group, a, "2024-01-02"],
                                                                  [with_group, a, "2024-01-02"]]))
    job = run(target, rel)
    assert job.counts["without_access"] == 1 and job.counts["imported"] == 2
    assert "no access" in report_rows(target, job)[1][-1]


@pytest.mark.parametrize("policy, expected, outcome", [
    ("keep", "2024-05-31 22:00", "kept"), ("earliest", "2024-01-31 23:00", "updated"),
    ("latest", "2024-05-31 22:00", "kept"), ("overwrite", "2024-01-31 23:00", "updated"),
])
def test_on_existing_decides_what_happens_to_a_completion_already_there(target, platform, policy, expected,
                                                                         outcome):
    a = platform.uuids["activity"][0]
    first = drop(target.root, "inbox/activities/first.xlsx", xlsx([[platform.emails[0], a, "2024-06-01"]]))
    run(target, first)
    second = drop(target.root, "inbox/activities/second.xlsx", xlsx([[platform.emails[0], a, "2024-02-01"]]))
    job = run(target, second, on_existing=policy)
    assert stored(target.engine)[(platform.emails[0], a)][0] == utc(expected)
    assert job.counts[outcome] == 1
    assert report_rows(target, job)[1][-2] == outcome


def test_latest_replaces_an_older_completion(target, platform):
    a = platform.uuids["activity"][0]
    run(target, drop(target.root, "inbox/activities/one.xlsx", xlsx([[platform.emails[0], a, "2024-01-01"]])))
    job = run(target, drop(target.root, "inbox/activities/two.xlsx", xlsx([[platform.emails[0], a, "2024-09-01"]])),
              on_existing="latest")
    assert job.counts["updated"] == 1
    assert stored(target.engine)[(platform.emails[0], a)][0] == utc("2024-08-31 22:00")


def test_a_re_run_of_the_same_file_changes_nothing(target, platform):
    journey = platform.uuids["journey"][0]
    data = xlsx([[platform.emails[0], journey, "2024-04-10"], [platform.emails[1], journey, None]])
    first = run(target, drop(target.root, "inbox/journeys/j.xlsx", data))
    before = stored(target.engine)
    again = run(target, drop(target.root, "inbox/journeys/j.xlsx", data), force=True, on_existing="overwrite")
    assert stored(target.engine) == before
    assert again.counts["imported"] == again.counts["updated"] == again.counts["derived_written"] == 0
    assert again.counts["kept"] == 2
    with target.engine.connect() as conn:
        journal_rows = conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)
                                    .where(ledger.journal.c.run_id == again.run_id)).scalar()
    assert journal_rows == 0 and first.run_id != again.run_id


def test_an_already_imported_file_is_skipped_unless_forced(target, platform):
    data = xlsx([[platform.emails[0], platform.uuids["activity"][0], "2024-04-10"]])
    first = run(target, drop(target.root, "inbox/activities/a.xlsx", data))
    skipped = run(target, drop(target.root, "inbox/activities/a-copy.xlsx", data))
    assert skipped.status == "skipped" and first.run_id in skipped.message and "force" in skipped.message
    assert (target.root / "processed/activities/a-copy.xlsx").exists()
    forced = run(target, drop(target.root, "inbox/activities/a-again.xlsx", data), force=True)
    assert forced.status == "ok" and forced.counts["kept"] == 1


def test_too_many_rejected_rows_fail_the_file_and_write_nothing(target, platform):
    target.customer = replace(target.customer, max_error_rate=0.25)
    rows = [[platform.emails[0], platform.uuids["activity"][0], "2024-01-02"],
            ["bad", platform.uuids["activity"][1], "2024-01-02"], ["x@y", "nope", "2024-01-02"]]
    job = run(target, drop(target.root, "inbox/activities/bad.xlsx", xlsx(rows)))
    assert job.failed and "2 of 3 rows rejected" in job.message and "max_error_rate" in job.message
    assert stored(target.engine) == {}
    assert (target.root / "failed/activities/bad.xlsx").exists()
    outcomes = [r[-2] for r in report_rows(target, job)[1:]]
    assert outcomes == ["not written", "rejected", "rejected"]
    with target.engine.connect() as conn:
        assert ledger.get_run(conn, job.run_id)["status"] == "failed"


def test_the_journal_holds_every_change_with_what_was_there_before(target, platform):
    a = platform.uuids["activity"][0]
    first = run(target, drop(target.root, "inbox/activities/1.xlsx", xlsx([[platform.emails[0], a, "2024-06-01"]])))
    second = run(target, drop(target.root, "inbox/activities/2.xlsx", xlsx([[platform.emails[0], a, "2024-02-01"],
                                                                           [platform.emails[1], a, "2024-02-01"]])),
                 on_existing="earliest")
    with target.engine.connect() as conn:
        rows = conn.execute(sa.select(ledger.journal).where(ledger.journal.c.run_id == second.run_id)
                            .order_by(ledger.journal.c.action)).mappings().all()
    # The new completion carries the run id (undo finds it by that); the changed one is journaled.
    assert [r["action"] for r in rows] == ["update"]
    update = rows[0]
    assert update["old_run_id"] == first.run_id and update["old_source"] == "import"
    assert as_utc(update["old_completed_at"]) == utc("2024-05-31 22:00")
    assert as_utc(update["new_completed_at"]) == utc("2024-01-31 23:00")
    assert stored(target.engine)[(platform.emails[1], a)][1:] == ("import", second.run_id)


def test_a_dry_run_reports_everything_and_writes_nothing(target, platform):
    rel = drop(target.root, "inbox/journeys/j.xlsx", xlsx([[platform.emails[0], platform.uuids["journey"][0],
                                                           "2024-04-10"]]))
    job = run(target, rel, dry_run=True)
    assert job.counts["imported"] == 1 and job.counts["derived_written"] >= 3
    assert stored(target.engine) == {}
    assert (target.root / rel).exists()  # left in the inbox
    assert (target.root / job.report).exists()
    with target.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar() == 0
    # A dry run does not count as an import of those bytes.
    assert run(target, rel).status == "ok"


def password_protected(workbook: bytes) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    encrypted = io.BytesIO()
    OOXMLFile(io.BytesIO(workbook)).encrypt("s3cret", encrypted)
    return encrypted.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("empty.xlsx", b"", "empty"),
    ("notes.xlsx", b"just some text, not a workbook", "not a workbook"),
    ("locked.xlsx", password_protected(workbook_bytes(HEADER, [["a@b.nl", "x", "2024-01-01"]])), "password protected"),
    ("damaged.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512, "cannot be opened"),
    ("headers.xlsx", workbook_bytes(HEADER, []), "no data rows"),
    ("no-uuid.xlsx", workbook_bytes(["Email", "Course", "Date"], [["a@b.nl", "x", "2024-01-01"]]),
     "'Email', 'Course', 'Date'"),
])
def test_a_bad_file_fails_whole_with_a_message_and_a_report(target, name, data, message):
    rel = drop(target.root, f"inbox/activities/{name}", data)
    job = run(target, rel)
    assert job.failed and message in job.message and job.message.startswith(rel)
    assert (target.root / f"failed/activities/{name}").exists()
    assert (target.root / job.report).exists()
    assert stored(target.engine) == {}


def test_a_file_over_the_customer_max_rows_fails_whole(target, platform):
    smaller = replace(target, customer=replace(target.customer, max_rows=2))
    rows = [[email, platform.uuids["activity"][0], "2024-01-01"] for email in platform.emails[:3]]
    job = run(smaller, drop(target.root, "inbox/activities/big.xlsx", xlsx(rows)))
    assert job.failed and "has 3 data rows, over the 2 allowed for this customer (max_rows)" in job.message
    assert (target.root / "failed/activities/big.xlsx").exists() and stored(target.engine) == {}


@pytest.mark.parametrize("conf, message", [
    ({"path": "../other-customer/inbox/x.xlsx"}, "leaves the customer's storage root"),
    ({"path": "/etc/passwd"}, "must be relative"),
    ({"path": "s3://bucket/x.xlsx"}, "must be relative"),
    ({"path": "inbox/activities/missing.xlsx"}, "does not exist"),
    ({"content_type": "courses"}, "content_type 'courses'"),
    ({"on_existing": "sometimes"}, "on_existing 'sometimes'"),
])
def test_a_bad_conf_is_refused_before_any_work(target, conf, message):
    kwargs = {"path": None, "content_type": None, "dry_run": False, "on_existing": None, "force": False,
              "airflow_run_id": None, "started": NOW, **conf}
    with pytest.raises(ConfError, match=message):
        plan(target, **kwargs)


def test_without_a_path_every_inbox_file_is_planned_with_its_folder_type(target):
    for rel in ("inbox/activities/a.xlsx", "inbox/journeys/b.xlsx", "inbox/programmes/c.csv",
                "inbox/activities/~$a.xlsx", "inbox/activities/.hidden"):
        drop(target.root, rel, b"x")
    jobs = plan(target, path=None, content_type=None, dry_run=False, on_existing=None, force=False,
                airflow_run_id=None, started=NOW)
    assert [(j.path, j.content_type) for j in jobs] == [
        ("inbox/activities/a.xlsx", "activities"), ("inbox/journeys/b.xlsx", "journeys"),
        ("inbox/programmes/c.csv", "programmes")]


def test_a_link_in_the_inbox_is_refused_and_left_where_it_is(target, tmp_path, caplog):
    """A link to another customer's file or folder is neither imported nor accepted as a path: named in the log."""
    drop(tmp_path / "globex", "inbox/activities/theirs.xlsx", b"theirs")
    drop(target.root, "inbox/activities/ours.xlsx", b"ours")
    (target.root / "inbox/activities/theirs.xlsx").symlink_to(tmp_path / "globex/inbox/activities/theirs.xlsx")
    (target.root / "inbox/journeys").symlink_to(tmp_path / "globex/inbox/activities")
    conf = {"content_type": None, "dry_run": False, "on_existing": None, "force": False, "airflow_run_id": None,
            "started": NOW}
    assert [job.path for job in plan(target, path=None, **conf)] == ["inbox/activities/ours.xlsx"]
    assert "acme: inbox/journeys is a symbolic link" in caplog.text
    assert "acme: inbox/activities/theirs.xlsx is a symbolic link" in caplog.text
    with pytest.raises(ConfError, match="inbox/activities/theirs.xlsx is a symbolic link"):
        plan(target, path="inbox/activities/theirs.xlsx", **conf)
    assert (target.root / "inbox/activities/theirs.xlsx").is_symlink()
    assert (tmp_path / "globex/inbox/activities/theirs.xlsx").read_bytes() == b"theirs"
