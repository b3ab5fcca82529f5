"""Reading customers' completion files: headers, sheets, row numbers, bad files and every accepted date form."""

from __future__ import annotations

import io
import os
import signal
import struct
import zipfile
import zlib
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import utc
from progression.read import (
    DATE,
    EMAIL,
    ROW,
    UUID,
    InputError,
    load_sheet,
    parse_dates,
    read_input,
    read_pairs,
    read_sheets,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
UTC = timezone.utc
NOW = datetime(2024, 11, 15, 12, 0, tzinfo=UTC)
U1 = "3f2b8c1e-9d4a-4b6e-8f10-2a3b4c5d6e7f"
U2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def xlsx(*sheets: tuple[str, list[list[object]]]) -> bytes:
    """A workbook with the given (title, rows) sheets, written by openpyxl as Excel would store it."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def one_sheet(rows: list[list[object]]) -> bytes:
    return xlsx(("Completions", rows))


def canonical(data: bytes, name: str = "completions.xlsx") -> pd.DataFrame:
    return read_input(data, name).canonical()


def parse(
    values: list[object],
    *,
    order: str = "DMY",
    tz: ZoneInfo = AMSTERDAM,
    now: datetime = NOW,
    import_date: date | None = None,
):
    return parse_dates(pd.Series(values, dtype="string"), tz=tz, date_order=order, now=now, import_date=import_date)


# --- headers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "User email",
        "Email",
        "E-mail",
        "User e-mail",
        "  USER EMAIL  ",
        "e-mail address",
        "Email Address",
        "Learner email",
        "user_email",
    ],
)
def test_email_header_spellings_are_recognised(header):
    rows = canonical(one_sheet([[header, "Content uuid"], ["ann@example.com", U1]]))
    assert rows[EMAIL].tolist() == ["ann@example.com"]
    assert rows[UUID].tolist() == [U1]


@pytest.mark.parametrize(
    "header",
    [
        "Content uuid",
        "CONTENT UUID",
        " content uuid ",
        "Uuid",
        "Content ID",
        "Content GUID",
        "Course uuid",
        "content-uuid",
    ],
)
def test_uuid_header_spellings_are_recognised(header):
    rows = canonical(one_sheet([["User email", header], ["ann@example.com", U1]]))
    assert rows[UUID].tolist() == [U1]


@pytest.mark.parametrize(
    "header",
    [
        "Completion date",
        "completion DATE",
        "Completed at",
        "Completed on",
        "Date",
        "Date completed",
        " Date of completion ",
    ],
)
def test_completion_date_header_spellings_are_recognised(header):
    rows = canonical(one_sheet([["User email", "Content uuid", header], ["ann@example.com", U1, "2024-03-31"]]))
    assert rows[DATE].tolist() == ["2024-03-31"]


def test_the_file_own_header_is_kept_for_messages():
    table = read_input(
        one_sheet([[" E-mail ", "Content ID", "Completed on"], ["ann@example.com", U1, "2024-03-31"]]), "x.xlsx"
    )
    assert table.columns == {EMAIL: "E-mail", UUID: "Content ID", DATE: "Completed on"}


def test_extra_columns_are_ignored_and_lookalike_headers_are_not_taken():
    rows = canonical(
        one_sheet(
            [
                ["Name", "Manager email", "User email", "Department", "Content uuid", "Score"],
                ["Ann", "boss@example.com", "ann@example.com", "Sales", U1, 93],
            ]
        )
    )
    assert list(rows.columns) == [ROW, EMAIL, UUID, DATE]
    assert rows.loc[0, EMAIL] == "ann@example.com"  # not the manager's address in the column before it
    assert rows.loc[0, UUID] == U1


def test_optional_date_column_may_be_absent():
    rows = canonical(one_sheet([["User email", "Content uuid"], ["ann@example.com", U1]]))
    assert rows[DATE].isna().all()


def test_missing_mandatory_column_rejects_the_file_naming_what_was_found():
    data = xlsx(
        ("Export", [["Email", "Course", "Completed"], ["ann@example.com", "Excel 101", "2024-03-31"]]),
        ("Notes", [["Name", "Uuid"]]),
    )
    with pytest.raises(InputError) as caught:
        read_input(data, "export.xlsx")
    message = str(caught.value)
    assert "'Content uuid'" in message  # what is needed
    assert "'Email', 'Course', 'Completed'" in message  # what the first sheet has
    assert "'Notes'" in message and "'Name', 'Uuid'" in message  # and the other sheet


def test_missing_mandatory_column_in_csv_names_its_columns():
    with pytest.raises(InputError) as caught:
        read_input(b"Content uuid,Date\n" + U1.encode() + b",2024-03-31\n", "export.csv")
    message = str(caught.value)
    assert "'User email'" in message
    assert "'Content uuid', 'Date'" in message


OWN = {"email": "Werknemer e-mail", "uuid": "Cursus", "date": "Afgerond op"}


@pytest.mark.parametrize(
    "name, data",
    [
        (
            "x.xlsx",
            one_sheet(
                [
                    ["Email", "Werknemer E-mail", " CURSUS ", "Afgerond op"],
                    ["boss@example.com", "ann@example.com", U1, "2024-03-31"],
                ]
            ),
        ),
        (
            "x.csv",
            f"Email;Werknemer E-mail;CURSUS;Afgerond op\nboss@example.com;ann@example.com;{U1};2024-03-31\n".encode(),
        ),
    ],
)
def test_a_customer_own_headers_are_matched_as_the_aliases_are_and_come_first(name, data):
    table = read_input(data, name, own_headers=OWN)
    assert table.columns == {EMAIL: "Werknemer E-mail", UUID: "CURSUS", DATE: "Afgerond op"}
    assert table.canonical()[[EMAIL, UUID, DATE]].values.tolist() == [["ann@example.com", U1, "2024-03-31"]]


def test_the_built_in_spellings_still_work_for_a_customer_with_own_headers():
    table = read_input(
        one_sheet([["E-mail", "Content uuid"], ["ann@example.com", U1]]), "x.xlsx", own_headers={"uuid": "Cursus"}
    )
    assert table.columns == {EMAIL: "E-mail", UUID: "Content uuid"}


def test_a_missing_column_names_the_customer_own_header_as_well():
    with pytest.raises(InputError, match="'Content uuid' \\(or 'Cursus'\\)"):
        read_input(one_sheet([["Werknemer e-mail", "Course"], ["ann@example.com", U1]]), "x.xlsx", own_headers=OWN)


# --- sheets and Excel row numbers ----------------------------------------------------------------------------------


def test_first_sheet_having_the_headers_is_used():
    data = xlsx(
        ("Read me", [["How to fill in this workbook"], ["Put one completion per row on the next sheet"]]),
        ("Data", [["User email", "Content uuid"], ["ann@example.com", U1]]),
        ("Old", [["User email", "Content uuid"], ["old@example.com", U2]]),
    )
    table = read_input(data, "x.xlsx")
    assert table.sheet == "Data"
    assert table.canonical()[EMAIL].tolist() == ["ann@example.com"]


def test_row_numbers_are_excel_rows_when_title_rows_are_above_the_header():
    data = one_sheet(
        [
            ["Completions export Q1"],  # 1
            [],  # 2
            ["User email", "Content uuid", "Note"],  # 3
            ["ann@example.com", U1],  # 4
            ["bob@example.com", U2],  # 5
            [None, None, "a remark, no data"],  # 6
            ["cy@example.com", U1],  # 7
        ]
    )
    rows = canonical(data)
    assert rows[[ROW, EMAIL]].values.tolist() == [[4, "ann@example.com"], [5, "bob@example.com"], [7, "cy@example.com"]]


def test_row_numbers_count_empty_rows_at_the_top_of_the_sheet():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet["B2"] = "Export of 2024"  # row 1 and column A stay empty
    sheet["B4"], sheet["C4"] = "User email", "Content uuid"
    sheet["B5"], sheet["C5"] = "ann@example.com", U1
    buffer = io.BytesIO()
    workbook.save(buffer)
    rows = canonical(buffer.getvalue())
    assert rows[[ROW, EMAIL, UUID]].values.tolist() == [[5, "ann@example.com", U1]]


def test_blank_trailing_rows_are_ignored():
    data = one_sheet(
        [
            ["User email", "Content uuid", "Completion date"],
            ["ann@example.com", U1, "2024-03-31"],
            ["", "", ""],
            ["   ", None, " "],
            [None, None, None],
        ]
    )
    rows = canonical(data)
    assert rows[[ROW, EMAIL]].values.tolist() == [[2, "ann@example.com"]]


@pytest.mark.parametrize(
    "data, name",
    [
        (one_sheet([["User email", "Content uuid", "Completion date"]]), "x.xlsx"),
        (one_sheet([["Title"], ["User email", "Content uuid"], [None, None], ["", " "]]), "x.xlsx"),
        (b"User email;Content uuid\n", "x.csv"),
        (b"User email,Content uuid\n,\n\n", "x.csv"),
    ],
    ids=["xlsx", "xlsx-blank-rows", "csv", "csv-blank-lines"],
)
def test_a_file_with_only_headers_is_rejected(data, name):
    with pytest.raises(InputError, match="headers but no data rows"):
        read_input(data, name)


# --- bad files ------------------------------------------------------------------------------------------------------


def _zip_without_workbook() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, name, expected",
    [
        (b"", "x.xlsx", "empty"),
        (b"", "x.csv", "empty"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "completions.xlsx", "not a workbook"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "completions", "not a workbook"),
        (b"User email,Content uuid\n", "completions.xlsx", "not a workbook"),
        (_zip_without_workbook(), "completions.xlsx", "cannot be opened"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504, "old.xls", "cannot be opened"),
        (bytes(range(256)), "completions.csv", "not a workbook"),
        (b"\n\n\n", "completions.csv", "empty"),
    ],
    ids=[
        "empty-xlsx",
        "empty-csv",
        "pdf",
        "png-no-extension",
        "csv-named-xlsx",
        "zip",
        "damaged-ole",
        "binary-csv",
        "blank-csv",
    ],
)
def test_unreadable_files_fail_with_a_clear_message(data, name, expected):
    with pytest.raises(InputError, match=expected):
        read_input(data, name)


def test_a_csv_with_a_title_line_above_its_semicolon_header_is_read_with_excel_like_row_numbers():
    table = read_input(b"Export 2024\nUser email;Content uuid\nann@example.com;" + U1.encode() + b"\n", "x.csv")
    assert table.canonical()[["row", "email"]].values.tolist() == [[3, "ann@example.com"]]


@pytest.mark.parametrize("body", [b",x,y\n", b"\nbob@example.com,x,y,z\n"], ids=["first-row", "later-row"])
def test_a_csv_row_with_more_cells_than_headers_fails_the_file_instead_of_shifting(body):
    with pytest.raises(InputError, match="CSV file cannot be read"):
        read_input(b"User email,Content uuid\nann@example.com," + U1.encode() + body, "x.csv")


def test_a_password_protected_workbook_fails_with_a_clear_message():
    ooxml = pytest.importorskip("msoffcrypto.format.ooxml")
    plain = one_sheet([["User email", "Content uuid"], ["ann@example.com", U1]])
    encrypted = io.BytesIO()
    ooxml.OOXMLFile(io.BytesIO(plain)).encrypt("s3cret", encrypted)
    data = encrypted.getvalue()
    assert ooxml.OOXMLFile(io.BytesIO(data)).is_encrypted()  # a genuinely encrypted workbook
    with pytest.raises(InputError, match="password protected: remove the password and drop it again"):
        read_input(data, "completions.xlsx")


# --- CSV -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["export.csv", "EXPORT.CSV"])
def test_semicolon_csv_is_read_with_line_numbers(name):
    data = (
        b"User e-mail;Content uuid;Completed at\n"
        b"ann@example.com;" + U1.encode() + b";31/03/2024\n"
        b"\n"
        b"bob@example.com;" + U2.encode() + b";\n"
    )
    rows = canonical(data, name)
    assert rows[[ROW, EMAIL, UUID]].values.tolist() == [[2, "ann@example.com", U1], [4, "bob@example.com", U2]]
    assert rows[DATE].tolist()[0] == "31/03/2024" and pd.isna(rows[DATE].tolist()[1])


def test_cp1252_csv_is_decoded():
    data = ("Naam;User email;Content uuid\nJosé Müller;jose@example.nl;" + U1 + "\n").encode("cp1252")
    table = read_input(data, "export.csv")
    assert table.rows["Naam"].tolist() == ["José Müller"]
    assert table.canonical()[EMAIL].tolist() == ["jose@example.nl"]


def test_utf8_csv_with_byte_order_mark_finds_its_first_header():
    data = ("\ufeffUser email,Content uuid\nzoë@example.com," + U1 + "\n").encode("utf-8")
    assert canonical(data, "x.csv")[EMAIL].tolist() == ["zoë@example.com"]


# --- dates: from the workbook to UTC ----------------------------------------------------------------------------------


def test_workbook_dates_in_every_form_become_utc():
    data = one_sheet(
        [
            ["User email", "Content uuid", "Completion date"],
            ["a@example.com", U1, datetime(2024, 3, 31, 14, 5)],  # real date-time cell (summer time)
            ["b@example.com", U1, date(2024, 3, 30)],  # real date cell (winter time)
            ["c@example.com", U1, 45382],  # serial number: 2024-03-31
            ["d@example.com", U1, 45382.75],  # serial with a time: 18:00
            ["e@example.com", U1, "2024-03-31"],  # ISO text
            ["f@example.com", U1, "31-03-2024"],  # day first text
            ["g@example.com", U1, "31/03/2024 09:30"],  # day first date-time text
            ["h@example.com", U1, None],  # blank: the import date
        ]
    )
    raw = canonical(data)[DATE]
    parsed = parse_dates(raw, tz=AMSTERDAM, date_order="DMY", now=NOW, import_date=date(2024, 11, 1))
    assert parsed.error.isna().all(), parsed.error.tolist()
    assert parsed.completed_at.tolist() == [
        utc("2024-03-31T12:05Z"),
        utc("2024-03-29T23:00Z"),
        utc("2024-03-30T23:00Z"),
        utc("2024-03-31T16:00Z"),
        utc("2024-03-30T23:00Z"),
        utc("2024-03-30T23:00Z"),
        utc("2024-03-31T07:30Z"),
        utc("2024-10-31T23:00Z"),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-01-15", "2024-01-14T23:00Z"),
        ("2024-1-5", "2024-01-04T23:00Z"),
        ("15-01-2024", "2024-01-14T23:00Z"),
        ("15/01/2024", "2024-01-14T23:00Z"),
        ("15.01.2024", "2024-01-14T23:00Z"),
        ("5/1/2024", "2024-01-04T23:00Z"),
        ("45306", "2024-01-14T23:00Z"),
        ("45306.0", "2024-01-14T23:00Z"),
        ("45306.5", "2024-01-15T11:00Z"),
        ("2024-01-15 08:30", "2024-01-15T07:30Z"),
        ("2024-01-15T08:30:15", "2024-01-15T07:30:15Z"),
        ("2024-01-15 08:30:00.250", "2024-01-15T07:30:00.250Z"),
        ("15/01/2024 08:30", "2024-01-15T07:30Z"),
        ("15-01-2024 08:30:15", "2024-01-15T07:30:15Z"),
        ("2024-01-15T08:30:00Z", "2024-01-15T08:30Z"),  # explicit offsets are kept as they are
        ("2024-01-15T08:30:00+05:00", "2024-01-15T03:30Z"),
        ("  2024-01-15  ", "2024-01-14T23:00Z"),
    ],
)
def test_every_accepted_date_form(text, expected):
    parsed = parse([text])
    assert parsed.error.isna().all(), parsed.error.tolist()
    assert parsed.completed_at[0] == utc(expected)


@pytest.mark.parametrize(
    "text, dmy, mdy",
    [
        ("03/04/2024", "2024-04-02T22:00Z", "2024-03-03T23:00Z"),  # 3 April vs 4 March
        ("03-04-2024", "2024-04-02T22:00Z", "2024-03-03T23:00Z"),
        ("12/01/2023 10:00", "2023-01-12T09:00Z", "2023-12-01T09:00Z"),
    ],
)
def test_day_month_order_follows_the_customer(text, dmy, mdy):
    assert parse([text], order="DMY").completed_at[0] == utc(dmy)
    assert parse([text], order="MDY").completed_at[0] == utc(mdy)


def test_iso_and_serial_dates_do_not_depend_on_day_month_order():
    for order in ("DMY", "MDY"):
        assert parse(["2024-03-04", "45355"], order=order).completed_at.tolist() == [utc("2024-03-03T23:00Z")] * 2


@pytest.mark.parametrize("text, order", [("31/03/2024", "MDY"), ("03/31/2024", "DMY"), ("13-13-2024", "DMY")])
def test_a_day_month_date_impossible_in_the_customer_order_is_unreadable(text, order):
    parsed = parse([text], order=order)
    assert pd.isna(parsed.completed_at[0])
    assert parsed.error[0] == f"unreadable date '{text}'"


@given(st.dates(min_value=date(1950, 1, 1), max_value=date(2024, 11, 14)))
@settings(max_examples=40, deadline=None)
def test_day_first_and_month_first_spell_the_same_day(day):
    dmy = parse([day.strftime("%d/%m/%Y")], order="DMY").completed_at[0]
    mdy = parse([day.strftime("%m/%d/%Y")], order="MDY").completed_at[0]
    iso = parse([day.isoformat()], order="MDY").completed_at[0]
    assert dmy == mdy == iso == pd.Timestamp(datetime.combine(day, datetime.min.time(), tzinfo=AMSTERDAM))


# --- dates: time zone -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-03-30", "2024-03-29T23:00Z"),  # CET, UTC+1
        ("2024-03-31", "2024-03-30T23:00Z"),  # midnight is still CET on the day summer time starts
        ("2024-04-01", "2024-03-31T22:00Z"),  # CEST, UTC+2
        ("2024-03-31 01:30", "2024-03-31T00:30Z"),
        ("2024-03-31 03:30", "2024-03-31T01:30Z"),
        ("2024-03-31 02:30", "2024-03-31T01:00Z"),  # does not exist: moved on to 03:00 CEST
        ("2024-10-27", "2024-10-26T22:00Z"),  # CEST midnight on the day winter time starts
        ("2024-10-28", "2024-10-27T23:00Z"),  # CET
        ("2024-10-27 02:30", "2024-10-27T00:30Z"),  # happens twice: the first (summer time) is taken
        ("2024-10-27 04:00", "2024-10-27T03:00Z"),
    ],
)
def test_local_dates_in_amsterdam_across_daylight_saving_changes(text, expected):
    parsed = parse([text])
    assert parsed.error.isna().all(), parsed.error.tolist()
    assert parsed.completed_at[0] == utc(expected)


def test_the_same_date_means_a_different_instant_in_another_time_zone():
    parsed = parse(["2024-07-01", "2024-07-01"], tz=ZoneInfo("America/New_York"))
    assert parsed.completed_at.tolist() == [utc("2024-07-01T04:00Z")] * 2


# --- dates: blank, future, unreadable ------------------------------------------------------------------------------


def test_a_blank_date_is_midnight_of_the_import_date_in_the_customer_time_zone():
    parsed = parse([None, "", "   "], import_date=date(2024, 7, 1))
    assert parsed.error.isna().all()
    assert parsed.completed_at.tolist() == [utc("2024-06-30T22:00Z")] * 3


def test_without_an_import_date_a_blank_date_is_today_in_the_customer_time_zone():
    late_evening = datetime(2024, 11, 15, 23, 30, tzinfo=UTC)  # already 16 November in Amsterdam
    parsed = parse([None], now=late_evening)
    assert parsed.completed_at[0] == utc("2024-11-15T23:00Z")  # midnight 16 November, Amsterdam
    assert parse([None], now=late_evening, tz=ZoneInfo("UTC")).completed_at[0] == utc("2024-11-15T00:00Z")


@pytest.mark.parametrize(
    "text", ["2024-11-16", "16/11/2024", "2099-01-01", "2024-11-15 13:01", "45612", "2024-11-15T12:00:01Z"]
)
def test_a_date_in_the_future_is_rejected_with_its_value(text):
    parsed = parse([text])
    assert pd.isna(parsed.completed_at[0])
    assert parsed.error[0] == f"date in the future: {text}"


@pytest.mark.parametrize("text", ["2024-11-15", "15/11/2024", "2024-11-15 12:59", "2024-11-15T12:00:00Z"])
def test_today_and_now_are_not_the_future(text):
    parsed = parse([text])
    assert parsed.error.isna().all(), parsed.error.tolist()
    assert parsed.completed_at[0] <= utc("2024-11-15T12:00Z")


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2024-02-30",
        "31/02/2024",
        "32-01-2024",
        "20240331",
        "0",
        "2958466",
        "15 January 2024",
        "2024/13/01",
        "n/a",
    ],
)
def test_an_unreadable_date_is_rejected_with_its_value(text):
    parsed = parse([text])
    assert pd.isna(parsed.completed_at[0])
    assert parsed.error[0] == f"unreadable date {text!r}"


def test_one_bad_date_does_not_affect_the_other_rows():
    parsed = parse(["2024-01-15", "soon", "2099-01-01", None], import_date=date(2024, 11, 1))
    assert parsed.error.isna().tolist() == [True, False, False, True]
    assert parsed.completed_at[0] == utc("2024-01-14T23:00Z")
    assert parsed.completed_at[3] == utc("2024-10-31T23:00Z")


def test_a_naive_now_is_taken_as_utc():
    naive_noon = datetime(2024, 11, 15, 12, 0)
    parsed = parse(["2024-11-15 13:30", "2024-11-15 12:30"], now=naive_noon, import_date=date(2024, 11, 15))
    # 13:30 Amsterdam = 12:30 UTC (after noon UTC): future; 12:30 Amsterdam = 11:30 UTC: fine.
    assert parsed.error.isna().tolist() == [False, True]
    assert parsed.completed_at[1] == utc("2024-11-15T11:30Z")


# --- formats ---------------------------------------------------------------------------------------------------------

FORMAT_ROWS = [
    ["User email", "Content uuid", "Completion date"],
    ["ann@example.com", U1, datetime(2024, 3, 31, 14, 5)],
    ["bob@example.com", U2, "31/03/2024"],
]


def _xlsm() -> bytes:
    """An xlsx zip whose workbook part has the macro-enabled content type, as Excel saves a .xlsm."""
    source = zipfile.ZipFile(io.BytesIO(one_sheet(FORMAT_ROWS)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in source.infolist():
            data = source.read(part)
            if part.filename == "[Content_Types].xml":
                data = data.replace(
                    b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
                    b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
                )
                assert b"macroEnabled" in data
            archive.writestr(part, data)
    return buffer.getvalue()


def _xlsb(tmp_path) -> bytes:
    from pyxlsbwriter import XlsbWriter

    with XlsbWriter(str(tmp_path / "completions.xlsb")) as writer:
        writer.add_sheet("Completions")
        writer.write_sheet(FORMAT_ROWS)
    return (tmp_path / "completions.xlsb").read_bytes()


def _xls() -> bytes:
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("Completions")
    date_style = xlwt.easyxf(num_format_str="yyyy-mm-dd hh:mm")
    for r, row in enumerate(FORMAT_ROWS):
        for c, value in enumerate(row):
            sheet.write(r, c, value, date_style)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _ods() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(FORMAT_ROWS[1:], columns=FORMAT_ROWS[0]).to_excel(
        buffer, engine="odf", index=False, sheet_name="Completions"
    )
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", ["xlsx", "xlsm", "xlsb", "xls", "ods"])
def test_every_workbook_format_is_read_the_same_way(suffix, tmp_path):
    data = {
        "xlsx": lambda: one_sheet(FORMAT_ROWS),
        "xlsm": _xlsm,
        "xlsb": lambda: _xlsb(tmp_path),
        "xls": _xls,
        "ods": _ods,
    }[suffix]()
    table = read_input(data, f"completions.{suffix}")
    assert table.sheet == "Completions"
    rows = table.canonical()
    assert rows[[ROW, EMAIL, UUID]].values.tolist() == [[2, "ann@example.com", U1], [3, "bob@example.com", U2]]
    parsed = parse_dates(rows[DATE], tz=AMSTERDAM, date_order="DMY", now=NOW)
    assert parsed.completed_at.tolist() == [utc("2024-03-31T12:05Z"), utc("2024-03-30T23:00Z")]


def test_the_first_bytes_choose_the_reader_not_the_name():
    data = one_sheet([["User email", "Content uuid"], ["ann@example.com", U1]])
    assert canonical(data, "completions.csv")[EMAIL].tolist() == ["ann@example.com"]
    assert canonical(data, "completions")[EMAIL].tolist() == ["ann@example.com"]


def test_a_legacy_xls_is_read_and_is_not_taken_for_a_password_protected_workbook():
    assert canonical(_xls(), "old.xls")[EMAIL].tolist() == ["ann@example.com", "bob@example.com"]


# --- bounds ----------------------------------------------------------------------------------------------------------


def _stored_parts(workbook: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(workbook))
    return {name: archive.read(name) for name in archive.namelist()}


def _zip_declaring(parts: dict[str, bytes], declared: dict[str, int]) -> bytes:
    """A deflated zip of `parts` whose headers declare the uncompressed sizes in `declared` (where given) instead
    of the true ones, as a crafted file can: zipfile cannot write such a zip."""
    out, central = io.BytesIO(), []
    for name, data in parts.items():
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        packed = packer.compress(data) + packer.flush()
        size, crc, encoded, offset = declared.get(name, len(data)), zlib.crc32(data), name.encode(), out.tell()
        out.write(
            struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed), size, len(encoded), 0)
            + encoded
            + packed
        )
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(packed),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


SHEET_PART = "xl/worksheets/sheet1.xml"


def _sheet_rows(rows: int) -> bytes:
    """The sheet part of `one_sheet` with `rows` data rows of distinct addresses (so it does not pack 100:1)."""
    cells = "".join(
        f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>user{r * 7919 % 100003}@example.com</t></is>'
        f'</c><c r="B{r}" t="inlineStr"><is><t>{U1}</t></is></c></row>'
        for r in range(2, rows + 2)
    )
    header = (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>User email</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>Content uuid</t></is></c></row>'
    )
    return (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        f"{header}{cells}</sheetData></worksheet>"
    ).encode()


def _with_sheet(sheet: bytes, declared: int | None = None) -> bytes:
    parts = _stored_parts(one_sheet([["User email", "Content uuid"]]))
    parts[SHEET_PART] = sheet
    return _zip_declaring(parts, {} if declared is None else {SHEET_PART: declared})


def test_the_crafted_zip_helper_makes_a_workbook_the_reader_reads():
    assert len(canonical(_with_sheet(_sheet_rows(3)))) == 3


def test_a_workbook_declaring_more_than_a_gibibyte_is_refused_before_it_is_inflated():
    data = _with_sheet(_sheet_rows(3), declared=3 << 30)
    with pytest.raises(InputError, match=r"unpacks to 3,072 MiB, over the 1,024 MiB an import reads"):
        read_input(data, "bomb.xlsx")


def test_a_part_inflating_past_100_to_1_is_refused():
    padding = b" " * (4 << 20)  # 4 MiB of blanks inside the sheet: packs about 1000:1
    data = _with_sheet(_sheet_rows(3).replace(b"<sheetData>", padding + b"<sheetData>"))
    with pytest.raises(
        InputError,
        match=r"part 'xl/worksheets/sheet1.xml' of the workbook inflates [0-9,]+ times, "
        r"over the 100",
    ):
        read_input(data, "bomb.xlsx")


def test_a_small_part_may_pack_tighter_than_100_to_1():
    padding = b" " * (90 * 1024)  # under ZipSecureFile's 100 KiB grace
    data = _with_sheet(_sheet_rows(3).replace(b"<sheetData>", padding + b"<sheetData>"))
    assert len(canonical(data)) == 3


def test_a_part_that_inflates_past_the_size_it_declares_is_refused():
    sheet = _sheet_rows(20_000)  # about 2.4 MB of XML that declares 1 MB: within 100:1 either way
    data = _with_sheet(sheet, declared=1_000_000)
    with pytest.raises(
        InputError,
        match="part 'xl/worksheets/sheet1.xml' of the workbook unpacks to more than the 1,000,000 bytes it declares",
    ):
        read_input(data, "bomb.xlsx")
    assert len(canonical(_with_sheet(sheet, declared=len(sheet)))) == 20_000  # the same part, declared truly


def test_a_workbook_of_too_many_parts_is_refused_before_they_are_listed():
    parts = _stored_parts(one_sheet([["User email", "Content uuid"], ["ann@example.com", U1]]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
        for number in range(10_001 - len(parts)):
            archive.writestr(f"xl/media/empty{number}.bin", b"")
    with pytest.raises(InputError, match="more than 10,000 parts"):
        read_input(buffer.getvalue(), "parts.xlsx")


def test_a_sheet_past_excel_last_row_is_refused():
    far = b'<row r="1048577"><c r="A1048577" t="inlineStr"><is><t>ann@example.com</t></is></c></row></sheetData>'
    data = _with_sheet(_sheet_rows(1).replace(b"</sheetData>", far))
    with pytest.raises(InputError, match="sheet 'Completions' has 1,048,577 rows, over Excel's 1,048,576"):
        read_input(data, "tall.xlsx")


@pytest.mark.parametrize("name", ["tall.xlsx", "tall.csv"])
def test_a_file_over_the_customer_max_rows_is_refused(name):
    rows = [["User email", "Content uuid"]] + [[f"user{i}@example.com", U1] for i in range(5)]
    data = one_sheet(rows) if name.endswith("xlsx") else "\n".join(",".join(row) for row in rows).encode()
    assert len(read_input(data, name, max_rows=5).rows) == 5
    with pytest.raises(InputError, match="has 5 data rows, over the 4 allowed for this customer \\(max_rows\\)"):
        read_input(data, name, max_rows=4)


def test_a_sheet_whose_cells_lie_far_apart_is_refused_and_the_process_lives_on():
    # Two cells, at A2 and XFD1048576: the reader would allocate their whole rectangle (about 550 GB) and abort.
    far = b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData>'
    data = _with_sheet(_sheet_rows(1).replace(b"</sheetData>", far))
    assert len(data) < 5_000
    with pytest.raises(
        InputError,
        match=r"the reader stopped on it \(SIGABRT: memory allocation of [0-9]+ bytes "
        r"failed\); it is damaged, or its cells lie so far apart that a sheet "
        r"would take over 2 GiB to load",
    ):
        read_input(data, "far.xlsx")
    assert len(canonical(_with_sheet(_sheet_rows(3)))) == 3  # and this process reads the next file


def test_a_reader_that_crashes_is_the_file_error_and_one_stopped_from_outside_is_not():
    data = _with_sheet(_sheet_rows(1))
    with pytest.raises(InputError, match=r"the reader stopped on it \(SIGSEGV\)"):
        read_sheets(data, lambda reader: os.kill(os.getpid(), signal.SIGSEGV))  # type: ignore[func-returns-value]
    with pytest.raises(RuntimeError, match="the workbook reader's process ended"):
        read_sheets(data, lambda reader: os.kill(os.getpid(), signal.SIGKILL))  # type: ignore[func-returns-value]


def test_sheets_come_back_from_the_reader_process_in_order():
    book = openpyxl.Workbook()
    book.active.title = "Notes"
    book.active.append(["Read me first"])
    book.create_sheet("Data").append(["User email", "Content uuid"])
    book["Data"].append(["ann@example.com", U1])
    buffer = io.BytesIO()
    book.save(buffer)
    sheets = read_sheets(buffer.getvalue(), lambda reader: [load_sheet(reader, name) for name in reader.sheet_names])
    assert [sheet.column(0).to_pylist() for sheet in sheets] == [["Read me first"], ["User email", "ann@example.com"]]
    assert read_input(buffer.getvalue(), "two.xlsx").sheet == "Data"


# --- reader errors while loading a sheet -----------------------------------------------------------------------------


def test_a_sheet_the_reader_cannot_load_names_the_sheet():
    data = _with_sheet(_sheet_rows(1).replace(b'<c r="A2"', b'<c r="A2" t="s"><v>99</v></c><c r="Z2"'))
    with pytest.raises(InputError, match="sheet 'Completions' cannot be read \\(CalamineError: .*shared strings"):
        read_input(data, "broken.xlsx")


def test_a_panic_in_the_reader_becomes_an_input_error_naming_the_sheet():
    class PanicException(BaseException):  # what pyo3 raises for a Rust panic: not an Exception
        pass

    class PanickingReader:
        def load_sheet(self, *args, **kwargs):
            raise PanicException("index out of bounds")

    with pytest.raises(InputError, match="sheet 'Data' cannot be read \\(PanicException: index out of bounds\\)"):
        load_sheet(PanickingReader(), "Data")


def test_pairs_come_through_the_same_bounded_opening():
    data = _with_sheet(_sheet_rows(3), declared=3 << 30)
    with pytest.raises(InputError, match="over the 1,024 MiB an import reads"):
        read_pairs(data, "pairs.xlsx", ("User email", "Content uuid"))
