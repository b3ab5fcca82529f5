"""Row checks: the GX column rules, their reasons and order, normalised keys and the completion dates."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pandas as pd
import pytest

from progression.read import DATE, EMAIL, ROW, UUID, read_input
from progression.validate import VALID_COLUMNS, validate_rows

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2024, 11, 15, 12, 0, tzinfo=timezone.utc)
IMPORT_DATE = date(2024, 11, 15)
U1 = "3f2b8c1e-9d4a-4b6e-8f10-2a3b4c5d6e7f"
U2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
HEADERS = {EMAIL: "User email", UUID: "Content uuid", DATE: "Completion date"}


def rows(*records: tuple[object, object, object]) -> pd.DataFrame:
    """Canonical input rows (as read_input gives them), numbered from Excel row 2."""
    frame = pd.DataFrame(list(records), columns=[EMAIL, UUID, DATE], dtype="string")
    frame.insert(0, ROW, pd.Series(range(2, 2 + len(frame)), dtype="int64"))
    return frame


def check(frame: pd.DataFrame, headers: dict[str, str] = HEADERS, *, order: str = "DMY"):
    return validate_rows(frame, headers, tz=AMSTERDAM, date_order=order, now=NOW, import_date=IMPORT_DATE)


def reasons(rejected: pd.DataFrame) -> dict[int, tuple[str, str]]:
    return {int(r[ROW]): (r["reason_code"], r["reason"]) for _, r in rejected.iterrows()}


def test_valid_rows_come_out_normalised_with_utc_dates():
    valid, rejected = check(
        rows(
            ("  Ann.Smith@Example.COM ", f" {U1.upper()} ", "2024-03-31"),
            ("bob@example.com", U2, None),
        )
    )
    assert rejected.empty
    assert list(valid.columns) == VALID_COLUMNS
    assert valid[ROW].tolist() == [2, 3]
    assert valid["email_key"].tolist() == ["ann.smith@example.com", "bob@example.com"]
    assert valid["uuid_key"].tolist() == [U1, U2]
    assert valid["completed_at"].tolist() == [pd.Timestamp("2024-03-30T23:00Z"), pd.Timestamp("2024-11-14T23:00Z")]
    assert str(valid["completed_at"].dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize(
    "email, uuid, code, reason",
    [
        (None, U1, "missing e-mail", "missing e-mail in column 'User email'"),
        ("", U1, "missing e-mail", "missing e-mail in column 'User email'"),
        ("ann.example.com", U1, "invalid e-mail", "invalid e-mail in column 'User email': 'ann.example.com'"),
        ("ann@example", U1, "invalid e-mail", "invalid e-mail in column 'User email': 'ann@example'"),
        (
            "ann smith@example.com",
            U1,
            "invalid e-mail",
            "invalid e-mail in column 'User email': 'ann smith@example.com'",
        ),
        ("ann@@example.com", U1, "invalid e-mail", "invalid e-mail in column 'User email': 'ann@@example.com'"),
        ("ann@example.com", None, "missing content uuid", "missing content uuid in column 'Content uuid'"),
        ("ann@example.com", "", "missing content uuid", "missing content uuid in column 'Content uuid'"),
    ],
)
def test_column_rules_reject_the_row_with_a_reason(email, uuid, code, reason):
    valid, rejected = check(rows(("ok@example.com", U2, None), (email, uuid, None)))
    assert valid[ROW].tolist() == [2]
    assert reasons(rejected) == {3: (code, reason)}


@pytest.mark.parametrize("content", ["Excel 101", U1[:-1], U1.replace("-", ""), "{" + U1 + "}", "SAF-101"])
def test_content_named_otherwise_than_by_a_uuid_passes_for_resolving_to_judge(content):
    """A title or a customer's code is looked up when resolving; here it is only trimmed and lowercased."""
    valid, rejected = check(rows(("ann@example.com", f"  {content} ", None)))
    assert rejected.empty
    assert valid["uuid_key"].tolist() == [content.lower()]


def test_a_whitespace_only_email_counts_as_missing():
    _valid, rejected = check(rows(("   ", U1, None)))
    assert rejected["reason_code"].tolist() == ["missing e-mail"]


def test_reasons_name_the_header_used_in_the_file():
    headers = {EMAIL: "E-mail", UUID: "Content ID", DATE: "Completed on"}
    _valid, rejected = check(
        rows(("nope", U1, None), ("ann@example.com", None, None), ("ann@example.com", U1, "tomorrow")), headers
    )
    assert reasons(rejected) == {
        2: ("invalid e-mail", "invalid e-mail in column 'E-mail': 'nope'"),
        3: ("missing content uuid", "missing content uuid in column 'Content ID'"),
        4: ("unreadable date", "unreadable date 'tomorrow' in column 'Completed on'"),
    }


@pytest.mark.parametrize(
    "email, uuid, completed, code",
    [
        (None, None, "soon", "missing e-mail"),
        (None, "not-a-uuid", None, "missing e-mail"),
        ("not-an-email", None, None, "invalid e-mail"),
        ("not-an-email", "not-a-uuid", "2099-01-01", "invalid e-mail"),
        ("ann@example.com", None, "soon", "missing content uuid"),
        ("ann@example.com", "not-a-uuid", "2099-01-01", "date in the future"),
        ("ann@example.com", U1, "2099-01-01", "date in the future"),
        ("ann@example.com", U1, "soon", "unreadable date"),
    ],
)
def test_the_first_failing_rule_wins_and_a_row_is_rejected_once(email, uuid, completed, code):
    valid, rejected = check(rows((email, uuid, completed)))
    assert valid.empty
    assert rejected[ROW].tolist() == [2]
    assert rejected["reason_code"].tolist() == [code]
    assert rejected["reason"].str.startswith(code).all()


def test_date_reasons_carry_the_value_and_the_header():
    _valid, rejected = check(rows(("ann@example.com", U1, "2099-01-01"), ("bob@example.com", U2, "31/02/2024")))
    assert reasons(rejected) == {
        2: ("date in the future", "date in the future: 2099-01-01 in column 'Completion date'"),
        3: ("unreadable date", "unreadable date '31/02/2024' in column 'Completion date'"),
    }


def test_date_order_of_the_customer_decides_validity():
    _valid, rejected = check(rows(("ann@example.com", U1, "31/03/2024")), order="MDY")
    assert rejected["reason_code"].tolist() == ["unreadable date"]
    valid, rejected = check(rows(("ann@example.com", U1, "03/31/2024")), order="MDY")
    assert rejected.empty
    assert valid["completed_at"].tolist() == [pd.Timestamp("2024-03-30T23:00Z")]


def test_every_row_ends_up_valid_or_rejected_exactly_once_in_file_order():
    frame = rows(
        ("a@example.com", U1, None),
        (None, U1, None),
        ("c@example.com", "bad", None),
        ("d@example.com", U2, None),
        ("bad", None, "x"),
        ("f@example.com", U1, "2099-01-01"),
        ("G@Example.com", U2, "2024-01-01"),
    )
    valid, rejected = check(frame)
    assert valid[ROW].tolist() == [2, 4, 5, 8]
    assert rejected[ROW].tolist() == [3, 6, 7]
    assert rejected["reason_code"].tolist() == ["missing e-mail", "invalid e-mail", "date in the future"]
    assert valid.loc[valid[ROW] == 8, "email_key"].item() == "g@example.com"


def test_rows_that_are_all_invalid_in_one_column_are_all_rejected():
    _valid, rejected = check(rows((None, U1, None), (None, U2, None), (None, "x", None)))
    assert rejected["reason_code"].tolist() == ["missing e-mail"] * 3


def test_rows_from_a_workbook_are_rejected_with_their_excel_row_numbers():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for record in [
        ["Completions export"],  # 1
        ["Name", "E-mail", "Content ID", "Completed on"],  # 2
        ["Ann", "Ann@Example.com ", U1.upper(), datetime(2024, 3, 31, 9, 0)],  # 3
        ["Bob", "bob(at)example.com", U1, "2024-03-31"],  # 4
        [None, None, None, None],  # 5
        ["Cy", "cy@example.com", U2, "2099-01-01"],  # 6
    ]:
        sheet.append(record)
    buffer = io.BytesIO()
    workbook.save(buffer)
    table = read_input(buffer.getvalue(), "completions.xlsx")
    valid, rejected = check(table.canonical(), table.columns)
    assert valid[[ROW, "email_key", "uuid_key"]].values.tolist() == [[3, "ann@example.com", U1]]
    assert valid["completed_at"].tolist() == [pd.Timestamp("2024-03-31T07:00Z")]
    assert reasons(rejected) == {
        4: ("invalid e-mail", "invalid e-mail in column 'E-mail': 'bob(at)example.com'"),
        6: ("date in the future", "date in the future: 2099-01-01 in column 'Completed on'"),
    }


def test_great_expectations_loads_frozen_and_without_scipy_stats_and_altair_which_still_work_when_used():
    """GX imports them for an expectation the column rules never use: they load on first use instead (2 s). What
    the process holds once GX is in is frozen: full collections, and the last one at exit, skip it."""
    script = """
import sys
from progression.validate import UNUSED_BY_THE_RULES, column_failures, import_great_expectations
import pandas as pd

import_great_expectations()
import gc
print(gc.get_freeze_count() > 10 * len(gc.get_objects()))
column_failures(pd.DataFrame({"email_key": ["a@b.c", None], "uuid_key": ["x", "y"]}))
print(sorted(type(sys.modules[name]).__name__ for name in UNUSED_BY_THE_RULES))

from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl_divergence
import scipy.stats
from scipy.stats import norm
print(round(kl_divergence.stats.entropy([0.5, 0.5], base=2), 3), scipy.stats.norm is norm, norm.cdf(0))
print(kl_divergence.alt.Chart.__name__, type(sys.modules["altair"]).__name__)
"""
    include = Path(__file__).resolve().parents[2] / "include"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(include)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "True",  # what the process held with GX in is out of the collector's sight: a collection walks a tenth
        "['_ImportedOnFirstUse', '_ImportedOnFirstUse']",
        "1.0 True 0.5",
        "Chart module",
    ]


def test_two_files_validated_at_once_in_one_process_each_get_their_own_rejections():
    """Tests and the benchmark run files' tasks in threads of one process (as a thread-pooled worker would): each
    file's rows are checked, never the other file's, however the two validations interleave."""
    import threading

    def file_with_a_bad_email_every(step: int, count: int) -> pd.DataFrame:
        return rows(
            *((f"user{i}@example.com" if i % step else f"not an email {i}", U1, "2024-01-02") for i in range(count))
        )

    files = [file_with_a_bad_email_every(7, 3_000), file_with_a_bad_email_every(3, 5_000)]
    alone = [sorted(check(frame)[1][ROW].tolist()) for frame in files]
    wrong = []

    def validate(index: int) -> None:
        rejected = sorted(check(files[index])[1][ROW].tolist())
        if rejected != alone[index]:
            wrong.append(index)

    for _ in range(15):
        threads = [threading.Thread(target=validate, args=(index,)) for index in range(len(files))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert wrong == []
