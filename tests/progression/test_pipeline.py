"""The import rules of the contract, end to end through every stage, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import replace
from datetime import datetime, timezone

import openpyxl
import pytest
import sqlalchemy as sa

from support import NOW, as_utc, children, drop, stored, utc
from progression import ledger
from demo_platform import describe, workbook_bytes
from progression.pipeline import plan, run_file
from progression.runs import ConfError
from progression.platform import content

HEADER = ["User email", "Content uuid", "Completion date"]


def run(target, rel, *, content_type=None, dry_run=False, on_existing=None, force=False, now=NOW, check=False):
    jobs = plan(
        target,
        path=rel,
        content_type=content_type,
        dry_run=dry_run,
        on_existing=on_existing,
        force=force,
        airflow_run_id="manual__test",
        started=now,
        check=check,
    )
    assert len(jobs) == 1
    return run_file(target, jobs[0])


def xlsx(rows, header=HEADER) -> bytes:
    return workbook_bytes(header, rows)


def report_rows(target, job) -> list[tuple]:
    book = openpyxl.load_workbook(target.root / job.report, read_only=True)
    return list(book["Rows"].iter_rows(values_only=True))


def test_activities_land_with_source_run_id_and_archive(target, platform):
    a1, a2 = platform.uuids["activity"][:2]
    rel = drop(
        target.root,
        "inbox/activities/q3.xlsx",
        xlsx(
            [
                [platform.emails[0], a1, datetime(2024, 3, 31)],
                [f"  {platform.emails[1].upper()} ", a2.upper(), "2024-06-01"],
            ]
        ),
    )
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
    rel = drop(
        target.root,
        "inbox/activities/mixed.xlsx",
        xlsx(
            [
                [acme.emails[0], acme.uuids["activity"][0], "2024-01-02"],
                [acme.emails[0], acme.uuids["journey"][0], "2024-01-02"],
                ["nobody@acme.example", acme.uuids["activity"][0], "2024-01-02"],
                [acme.emails[0], "0b2e4c5e-1111-4222-8333-944455556666", "2024-01-02"],
                [acme.emails[0], other.uuids["activity"][0], "2024-01-02"],
                [other.emails[0], acme.uuids["activity"][1], "2024-01-02"],
            ]
        ),
    )
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


def test_a_reports_rejected_sheet_with_its_reasons_fixed_and_dropped_back_imports(target, platform):
    a = platform.uuids["activity"]
    rel = drop(
        target.root,
        "inbox/activities/first.xlsx",
        xlsx(
            [
                [platform.emails[0], a[0], "2024-01-02"],
                ["nobody@acme.example", a[1], "2024-01-03"],
                [platform.emails[1], a[2], "someday"],
            ]
        ),
    )
    first = run(target, rel)
    book = openpyxl.load_workbook(target.root / first.report)
    rejected = book["Rejected"]
    assert [c.value for c in rejected[1]] == [*HEADER, "Reason"]
    assert "no user with e-mail nobody@acme.example" in rejected["D2"].value
    assert "unreadable date" in rejected["D3"].value
    rejected["A2"], rejected["C3"] = platform.emails[2], "2024-01-04"  # the customer fixes the rows, not the reasons
    fixed = io.BytesIO()
    book.save(fixed)
    again = run(target, drop(target.root, "inbox/activities/first-fixed.xlsx", fixed.getvalue()))
    assert again.status == "ok" and again.sheet == "Rejected"
    assert again.counts["imported"] == 2 and again.counts["rejected"] == 0
    got = stored(target.engine)
    assert got[(platform.emails[2], a[1])][0] == utc("2024-01-02 23:00")
    assert got[(platform.emails[1], a[2])][0] == utc("2024-01-03 23:00")
    assert report_rows(target, again)[0] == ("Row", *HEADER, "Resolved uuid", "Outcome", "Reason")


def test_blank_date_is_midnight_of_the_import_day_in_the_customers_zone(target, platform):
    rel = drop(
        target.root, "inbox/activities/blank.xlsx", xlsx([[platform.emails[0], platform.uuids["activity"][0], None]])
    )
    run(target, rel, now=datetime(2026, 7, 1, 9, 0, tzinfo=timezone.utc))
    assert stored(target.engine)[(platform.emails[0], platform.uuids["activity"][0])][0] == utc("2026-06-30 22:00")


def test_every_date_form_lands_as_utc(target, platform):
    a = platform.uuids["activity"]
    rel = drop(
        target.root,
        "inbox/activities/forms.xlsx",
        xlsx(
            [
                [platform.emails[0], a[0], datetime(2024, 3, 31)],
                [platform.emails[0], a[1], "31-03-2024"],
                [platform.emails[0], a[2], "31/03/2024 14:30"],
                [platform.emails[0], a[3], 45382],
                [platform.emails[0], a[4], "2024-07-01T10:00:00Z"],
            ]
        ),
    )
    job = run(target, rel)
    assert job.counts["imported"] == 5, job.counts
    got = stored(target.engine)
    assert [got[(platform.emails[0], u)][0] for u in a[:5]] == [
        utc("2024-03-30 23:00"),
        utc("2024-03-30 23:00"),
        utc("2024-03-31 12:30"),
        utc("2024-03-30 23:00"),
        utc("2024-07-01 10:00"),
    ]


def test_future_and_unreadable_dates_reject_the_row(target, platform):
    a = platform.uuids["activity"]
    rel = drop(
        target.root,
        "inbox/activities/dates.xlsx",
        xlsx(
            [
                [platform.emails[0], a[0], "2027-01-01"],
                [platform.emails[0], a[1], "someday"],
                [platform.emails[0], a[2], 45382],
            ]
        ),
    )
    job = run(target, rel)
    assert job.counts["rejected_by_reason"] == {"date in the future": 1, "unreadable date": 1}
    assert stored(target.engine)[(platform.emails[0], a[2])][0] == utc("2024-03-30 23:00")


def test_the_same_user_and_content_twice_counts_once_with_the_earliest_date(target, platform):
    a = platform.uuids["activity"][0]
    rel = drop(
        target.root,
        "inbox/activities/dup.xlsx",
        xlsx([[platform.emails[0], a, "2024-05-01"], [platform.emails[0].upper(), a, "2024-02-01"]]),
    )
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
    rel = drop(
        target.root,
        "inbox/programmes/p.xlsx",
        xlsx([[platform.emails[0], programmes[0], "2024-04-10"], [platform.emails[0], programmes[1], "2024-03-01"]]),
    )
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


def test_completions_without_access_are_saved_and_counted(target, platform, who):
    a = platform.uuids["activity"][0]  # in journey 0, in programme 0: group 0 sees it
    rel = drop(
        target.root,
        "inbox/activities/access.xlsx",
        xlsx([[who.no_group, a, "2024-01-02"], [who.group_0, a, "2024-01-02"]]),
    )
    job = run(target, rel)
    assert job.counts["saved_without_access"] == 1 and job.counts["imported"] == 2
    with target.engine.connect() as conn:
        recorded = ledger.get_run(conn, job.run_id)
    assert (recorded["saved_without_access"], recorded["skipped_without_access"]) == (1, 0)
    assert "no access" in report_rows(target, job)[1][-1]


@pytest.mark.parametrize(
    "policy, expected, outcome",
    [
        ("keep", "2024-05-31 22:00", "kept"),
        ("earliest", "2024-01-31 23:00", "updated"),
        ("latest", "2024-05-31 22:00", "kept"),
        ("overwrite", "2024-01-31 23:00", "updated"),
    ],
)
def test_on_existing_decides_what_happens_to_a_completion_already_there(target, platform, policy, expected, outcome):
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
    job = run(
        target,
        drop(target.root, "inbox/activities/two.xlsx", xlsx([[platform.emails[0], a, "2024-09-01"]])),
        on_existing="latest",
    )
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
        journal_rows = conn.execute(
            sa.select(sa.func.count()).select_from(ledger.journal).where(ledger.journal.c.run_id == again.run_id)
        ).scalar()
    assert journal_rows == 0 and first.run_id != again.run_id


def test_an_already_imported_file_is_skipped_unless_forced(target, platform):
    data = xlsx([[platform.emails[0], platform.uuids["activity"][0], "2024-04-10"]])
    first = run(target, drop(target.root, "inbox/activities/a.xlsx", data))
    skipped = run(target, drop(target.root, "inbox/activities/a-copy.xlsx", data))
    assert skipped.status == "skipped" and first.run_id in skipped.message and "force" in skipped.message
    assert (target.root / "processed/activities/a-copy.xlsx").exists()
    forced = run(target, drop(target.root, "inbox/activities/a-again.xlsx", data), force=True)
    assert forced.status == "ok" and forced.counts["kept"] == 1


def test_a_file_sent_again_is_recognised_by_its_bytes_on_every_storage(db_kind, target, platform, backend):
    """A local folder, file:// or s3://: the customer sends the same export again, and nothing is written twice."""
    if db_kind != "sqlite":
        pytest.skip("about storage: shown on SQLite")
    on_storage = replace(target, root=backend.root)
    data = xlsx([[platform.emails[0], platform.uuids["activity"][0], "2024-04-10"]])
    backend.put("inbox/activities/q3.xlsx", data)
    first = run(on_storage, "inbox/activities/q3.xlsx")
    backend.put("inbox/activities/q3.xlsx", data)
    again = run(on_storage, "inbox/activities/q3.xlsx")
    assert first.status == "ok" and again.status == "skipped" and first.run_id in again.message
    assert len(stored(target.engine)) == 1
    assert not [f for f in backend.files() if f.startswith(("inbox/", "staging/"))]


def test_too_many_rejected_rows_fail_the_file_and_write_nothing(target, platform):
    target.customer = replace(target.customer, max_error_rate=0.25)
    rows = [
        [platform.emails[0], platform.uuids["activity"][0], "2024-01-02"],
        ["bad", platform.uuids["activity"][1], "2024-01-02"],
        ["x@y", "nope", "2024-01-02"],
    ]
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
    second = run(
        target,
        drop(
            target.root,
            "inbox/activities/2.xlsx",
            xlsx([[platform.emails[0], a, "2024-02-01"], [platform.emails[1], a, "2024-02-01"]]),
        ),
        on_existing="earliest",
    )
    with target.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(ledger.journal)
                .where(ledger.journal.c.run_id == second.run_id)
                .order_by(ledger.journal.c.action)
            )
            .mappings()
            .all()
        )
    # The new completion carries the run id (undo finds it by that); the changed one is journaled.
    assert [r["action"] for r in rows] == ["update"]
    update = rows[0]
    assert update["old_run_id"] == first.run_id and update["old_source"] == "import"
    assert as_utc(update["old_completed_at"]) == utc("2024-05-31 22:00")
    assert as_utc(update["new_completed_at"]) == utc("2024-01-31 23:00")
    assert stored(target.engine)[(platform.emails[1], a)][1:] == ("import", second.run_id)


def test_a_dry_run_reports_everything_and_writes_nothing(target, platform):
    rel = drop(
        target.root, "inbox/journeys/j.xlsx", xlsx([[platform.emails[0], platform.uuids["journey"][0], "2024-04-10"]])
    )
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


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.xlsx", b"", "empty"),
        ("notes.xlsx", b"just some text, not a workbook", "not a workbook"),
        (
            "locked.xlsx",
            password_protected(workbook_bytes(HEADER, [["a@b.nl", "x", "2024-01-01"]])),
            "password protected",
        ),
        ("damaged.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512, "cannot be opened"),
        ("headers.xlsx", workbook_bytes(HEADER, []), "no data rows"),
        (
            "no-uuid.xlsx",
            workbook_bytes(["Email", "Course", "Date"], [["a@b.nl", "x", "2024-01-01"]]),
            "'Email', 'Course', 'Date'",
        ),
    ],
)
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


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"path": "../other-customer/inbox/x.xlsx"}, "leaves the customer's storage root"),
        ({"path": "/etc/passwd"}, "must be relative"),
        ({"path": "s3://bucket/x.xlsx"}, "must be relative"),
        ({"path": "inbox/activities/missing.xlsx"}, "does not exist"),
        ({"content_type": "courses"}, "content_type 'courses'"),
        ({"on_existing": "sometimes"}, "on_existing 'sometimes'"),
        ({"path": "inbox/activities/q3.xlsx", "check": True}, "check takes a path in the check folder"),
    ],
)
def test_a_bad_conf_is_refused_before_any_work(target, conf, message):
    drop(target.root, "inbox/activities/q3.xlsx", xlsx([["User email", "Content uuid"]]))
    kwargs = {
        "path": None,
        "content_type": None,
        "dry_run": False,
        "on_existing": None,
        "force": False,
        "airflow_run_id": None,
        "started": NOW,
        **conf,
    }
    with pytest.raises(ConfError, match=message):
        plan(target, **kwargs)


def test_without_a_path_every_inbox_and_check_file_is_planned_with_its_folder_type(target):
    for rel in (
        "inbox/activities/a.xlsx",
        "inbox/journeys/b.xlsx",
        "inbox/programmes/c.csv",
        "inbox/activities/~$a.xlsx",
        "inbox/activities/.hidden",
        "check/journeys/d.xlsx",
        "checked/activities/e.xlsx",
        "processed/activities/f.xlsx",
    ):
        drop(target.root, rel, b"x")
    conf = {
        "path": None,
        "content_type": None,
        "dry_run": False,
        "on_existing": None,
        "force": False,
        "airflow_run_id": None,
        "started": NOW,
    }
    jobs = plan(target, **conf)
    assert [(j.path, j.content_type, j.dry_run, j.run_id.split("-")[0]) for j in jobs] == [
        ("inbox/activities/a.xlsx", "activities", False, "import"),
        ("inbox/journeys/b.xlsx", "journeys", False, "import"),
        ("inbox/programmes/c.csv", "programmes", False, "import"),
        ("check/journeys/d.xlsx", "journeys", True, "check"),
    ]
    assert [j.path for j in plan(target, **{**conf, "check": True})] == ["check/journeys/d.xlsx"]


def test_a_link_in_the_inbox_is_refused_and_left_where_it_is(target, tmp_path, caplog):
    """A link to another customer's file or folder is neither imported nor accepted as a path: named in the log."""
    drop(tmp_path / "globex", "inbox/activities/theirs.xlsx", b"theirs")
    drop(target.root, "inbox/activities/ours.xlsx", b"ours")
    (target.root / "inbox/activities/theirs.xlsx").symlink_to(tmp_path / "globex/inbox/activities/theirs.xlsx")
    (target.root / "inbox/journeys").symlink_to(tmp_path / "globex/inbox/activities")
    conf = {
        "content_type": None,
        "dry_run": False,
        "on_existing": None,
        "force": False,
        "airflow_run_id": None,
        "started": NOW,
    }
    assert [job.path for job in plan(target, path=None, **conf)] == ["inbox/activities/ours.xlsx"]
    assert "acme: inbox/journeys is a symbolic link" in caplog.text
    assert "acme: inbox/activities/theirs.xlsx is a symbolic link" in caplog.text
    with pytest.raises(ConfError, match="inbox/activities/theirs.xlsx is a symbolic link"):
        plan(target, path="inbox/activities/theirs.xlsx", **conf)
    assert (target.root / "inbox/activities/theirs.xlsx").is_symlink()
    assert (tmp_path / "globex/inbox/activities/theirs.xlsx").read_bytes() == b"theirs"


# --- the check folder -----------------------------------------------------------------------------------------------


def journal_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(ledger.journal)).scalar()


def test_a_checked_file_writes_nothing_reports_moves_to_checked_and_does_not_block_its_import(target, platform):
    a = platform.uuids["activity"]
    data = xlsx(
        [
            [platform.emails[0], a[0], "2024-03-31"],
            [platform.emails[1], a[1], None],
            ["nobody@acme.example", a[2], "2024-03-31"],
        ]
    )
    rel = drop(target.root, "check/activities/q3.xlsx", data)
    checked = run(target, rel)
    assert checked.status == "ok" and checked.run_id.startswith("check-acme-")
    assert checked.counts["imported"] == 2 and checked.counts["rejected"] == 1  # what an import would do
    assert stored(target.engine) == {} and journal_rows(target.engine) == 0
    assert not (target.root / rel).exists() and (target.root / "checked/activities/q3.xlsx").read_bytes() == data
    assert checked.report == f"reports/2026-11-28/q3.check.{checked.run_id}.xlsx"
    rows = report_rows(target, checked)
    assert [row[-2] for row in rows[1:]] == ["imported", "imported", "rejected"]
    assert "no user with e-mail nobody@acme.example" in rows[3][-1]
    summary = dict(
        openpyxl.load_workbook(target.root / checked.report, read_only=True)["Summary"].iter_rows(
            max_col=2, values_only=True
        )
    )
    assert summary["Status"] == "CHECK, nothing written: ok"
    with target.engine.connect() as conn:
        recorded = ledger.get_run(conn, checked.run_id)
    assert (recorded["dag_id"], recorded["subject"], recorded["dry_run"], recorded["status"]) == (
        "progression_import",
        "check/activities/q3.xlsx",
        True,
        "succeeded",
    )
    assert recorded["report_path"] == checked.report and recorded["staging"] is None

    imported = run(target, drop(target.root, "inbox/activities/q3.xlsx", data))
    assert imported.status == "ok" and imported.counts["imported"] == 2
    assert len(stored(target.engine)) == 2


def test_a_check_of_bytes_imported_before_is_not_skipped_and_says_so(target, platform):
    data = xlsx([[platform.emails[0], platform.uuids["activity"][0], "2024-03-31"]])
    first = run(target, drop(target.root, "inbox/activities/a.xlsx", data))
    checked = run(target, drop(target.root, "check/activities/a.xlsx", data))
    assert checked.status == "ok" and checked.counts["kept"] == 1
    assert f"imported by run {first.run_id}" in checked.message
    assert (target.root / "checked/activities/a.xlsx").exists()


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([["bad", "x", "2024-01-02"], ["x@y", "nope", "2024-01-02"]], HEADER, "2 of 2 rows rejected"),
        ([["a@b.nl", "x", "2024-01-01"]], ["Email", "Course", "Date"], "'Email', 'Course', 'Date'"),
    ],
)
def test_a_checked_file_that_an_import_would_fail_goes_to_checked_with_its_report(target, rows, header, message):
    target.customer = replace(target.customer, max_error_rate=0.25)
    checked = run(target, drop(target.root, "check/activities/bad.xlsx", xlsx(rows, header)))
    assert checked.failed and message in checked.message
    assert (target.root / "checked/activities/bad.xlsx").exists() and not (target.root / "failed").exists()
    assert (target.root / checked.report).exists() and ".check." in checked.report
    assert stored(target.engine) == {}


# --- content named by uuid, title or the customer's code -----------------------------------------------------------


def retitle(engine, titles: dict[str, str]) -> None:
    with engine.begin() as conn:
        for uuid, title in titles.items():
            conn.execute(sa.update(content).where(content.c.uuid == uuid).values(title=title))


def test_content_is_named_by_uuid_title_or_crosswalk_code_each_refusal_with_its_reason(target, engine):
    acme, other = describe(engine, "acme"), describe(engine, "other")
    a, journey = acme.uuids["activity"], acme.uuids["journey"][0]
    retitle(
        engine,
        {
            a[0]: "Excel Essentials",
            journey: "Fire Safety",
            a[1]: "Fire Safety ",
            a[4]: "fire safety",
            other.uuids["activity"][0]: "Excel Essentials",
        },
    )
    drop(
        target.root,
        "mappings/content.xlsx",
        workbook_bytes(
            ["Code", "Content uuid"],
            [
                ["SAF-101", a[2].upper()],
                ["OTHER-1", other.uuids["activity"][1]],
                ["J-1", journey],
                ["LOST", None],
                ["TWICE", a[2]],
                ["TWICE", a[3]],
                ["Fire Safety", a[3]],
            ],
        ),
    )
    rows = [
        ["  excel ESSENTIALS ", "2024-01-02"],  # 2: a title unique among acme's activities
        ["fire safety", "2024-01-02"],  # 3: a code wins over the title it also is
        ["saf-101", "2024-01-02"],  # 4: a code, compared case-insensitively
        ["NOPE-9", "2024-01-02"],  # 5: neither
        ["OTHER-1", "2024-01-02"],  # 6: a code of another platform's content
        ["J-1", "2024-01-02"],  # 7: a code of a journey
        ["LOST", "2024-01-02"],  # 8: a code without a uuid
        ["TWICE", "2024-01-02"],  # 9: a code with two uuids
        [a[5], "2024-01-02"],
    ]  # 10: a uuid as ever
    job = run(
        target,
        drop(target.root, "inbox/activities/named.xlsx", xlsx([[acme.emails[i], *row] for i, row in enumerate(rows)])),
    )
    report = {row[0]: row for row in report_rows(target, job)[1:]}
    assert report_rows(target, job)[0] == ("Row", *HEADER, "Resolved uuid", "Outcome", "Reason")
    assert {n: (r[4], r[5]) for n, r in report.items() if r[5] != "rejected"} == {
        2: (a[0], "imported"),
        3: (a[3], "imported"),
        4: (a[2], "imported"),
        10: (a[5], "imported"),
    }
    assert stored(target.engine).keys() == {
        (acme.emails[0], a[0]),
        (acme.emails[1], a[3]),
        (acme.emails[2], a[2]),
        (acme.emails[8], a[5]),
    }
    reasons = {n: r[-1] for n, r in report.items() if r[5] == "rejected"}
    assert reasons[5] == (
        "'nope-9' is neither a content uuid, the title of one of the activities on platform acme, "
        "nor a code in mappings/content.xlsx"
    )
    assert reasons[6] == (
        f"code 'OTHER-1' in mappings/content.xlsx names content {other.uuids['activity'][1]}, "
        "which is not on platform acme"
    )
    assert reasons[7] == "content j-1 is a journey, this file holds activities"
    assert reasons[8] == "code 'LOST' has no content uuid in mappings/content.xlsx (row 5)"
    assert reasons[9] == "code 'TWICE' is given more than one content uuid in mappings/content.xlsx (rows 6, 7)"
    assert job.counts["rejected_by_reason"] == {
        "unknown title or code": 1,
        "code of unknown content": 1,
        "wrong content type": 1,
        "code without content": 2,
    }


def test_a_title_shared_by_several_items_of_the_type_is_refused_and_one_of_another_type_is_unknown(target, engine):
    acme = describe(engine, "acme")
    a = acme.uuids["activity"]
    retitle(engine, {a[0]: "Fire Safety", a[1]: " FIRE SAFETY", acme.uuids["journey"][0]: "Leading Teams"})
    job = run(
        target,
        drop(
            target.root,
            "inbox/activities/titles.xlsx",
            xlsx([[acme.emails[0], "Fire safety", "2024-01-02"], [acme.emails[0], "Leading Teams", "2024-01-02"]]),
        ),
    )
    reasons = [row[-1] for row in report_rows(target, job)[1:]]
    assert reasons[0] == (
        "title 'fire safety' is the title of 2 activities on platform acme: use the content uuid of the one meant"
    )
    assert reasons[1].startswith("'leading teams' is neither a content uuid")
    assert job.counts["rejected_by_reason"] == {"ambiguous title": 1, "unknown title or code": 1}
    assert stored(target.engine) == {}


def test_a_crosswalk_that_cannot_be_read_rejects_only_the_rows_that_need_it(target, platform):
    drop(target.root, "mappings/content.xlsx", workbook_bytes(["Code", "Uuid"], [["SAF-101", "x"]]))
    job = run(
        target,
        drop(
            target.root,
            "inbox/activities/codes.xlsx",
            xlsx(
                [
                    [platform.emails[0], "SAF-101", "2024-01-02"],
                    [platform.emails[0], platform.uuids["activity"][0], None],
                ]
            ),
        ),
    )
    assert job.counts["imported"] == 1 and job.counts["rejected"] == 1
    reason = report_rows(target, job)[1][-1]
    assert "(mappings/content.xlsx cannot be read: the columns 'Code' and 'Content uuid' are missing" in reason


def test_a_customer_own_headers_import(target, platform):
    target.customer = replace(
        target.customer, columns={"email": "Werknemer e-mail", "uuid": "Cursus", "date": "Afgerond op"}
    )
    job = run(
        target,
        drop(
            target.root,
            "inbox/activities/eigen.xlsx",
            xlsx(
                [[platform.emails[0], platform.uuids["activity"][0], "31-03-2024"]],
                header=["Werknemer E-mail", "Cursus", "Afgerond op"],
            ),
        ),
    )
    assert job.status == "ok" and job.counts["imported"] == 1
    assert stored(target.engine)[(platform.emails[0], platform.uuids["activity"][0])][0] == utc("2024-03-30 23:00")


def anonymous_memory_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


def test_the_workbooks_reader_is_forked_without_the_workbooks_bytes_in_the_tasks_memory(target, platform, monkeypatch):
    """A forked reader counts what the task holds as its own memory too, on top of the sheet it loads: the task
    hands it the workbook on disk, not in memory. Here 96 MB of the file are a picture the reader never loads."""
    rel = "inbox/activities/with-a-picture.xlsx"
    (target.root / rel).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(xlsx([[platform.emails[0], platform.uuids["activity"][0], "2024-01-02"]]))) as book:
        with zipfile.ZipFile(target.root / rel, "w") as out:
            for part in book.infolist():
                out.writestr(part, book.read(part))
            with out.open(zipfile.ZipInfo("xl/media/image1.png"), "w") as picture:
                for _ in range(96):
                    picture.write(os.urandom(1 << 20))
    at_fork: list[float] = []
    fork = os.fork

    def measured_fork() -> int:
        at_fork.append(anonymous_memory_mb())
        return fork()

    monkeypatch.setattr(os, "fork", measured_fork)
    before = anonymous_memory_mb()
    job = run(target, rel)
    assert job.status == "ok", job.message
    assert job.counts["imported"] == 1
    [held] = at_fork
    assert held - before < 48, f"the task held {held - before:.0f} MB more than before when it forked its reader"
