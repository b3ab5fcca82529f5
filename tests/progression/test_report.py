"""The import report workbook, read back with openpyxl."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest
from openpyxl import load_workbook
from openpyxl.workbook.workbook import Workbook

from progression.report import write_import_report

# The customer's own header spelling, with an extra column the importer does not use.
COLUMNS = ["E-mail address", "Content ID", "Date completed", "Department"]
INJECTIONS = ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)"]


def _rows(
    records: list[tuple[int, str | None, str | None, str | None, str | None]], columns: list[str] = COLUMNS
) -> pd.DataFrame:
    frame = pd.DataFrame([list(r[1:]) for r in records], columns=columns, dtype="string")
    frame["row"] = [r[0] for r in records]
    return frame


def _outcomes(records: list[tuple[int, str, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=["row", "outcome", "reason"])
    frame["reason"] = frame["reason"].astype("string")
    return frame


# Deliberately not in row order; row 5 has missing values.
ROWS = _rows(
    [
        (4, "b@example.com", "uuid-2", "2024-01-05", "Sales"),
        (2, "a@example.com", "uuid-1", "2024-01-04", "HR"),
        (6, "not an email", "uuid-3", "2024-01-06", None),
        (3, "c@example.com", "uuid-9", "2024-01-07", "IT"),
        (5, None, "uuid-4", None, "Ops"),
        (7, "d@example.com", "uuid-1", "2024-02-01", "HR"),
    ]
)
OUTCOMES = _outcomes(
    [
        (2, "imported", None),
        (3, "rejected", "unknown content uuid"),
        (4, "updated", None),
        (5, "rejected", "the email is missing"),
        (6, "rejected", "not an email address"),
        (7, "kept", "an earlier completion exists"),
    ]
)
SUMMARY: list[tuple[str, object]] = [("File", "completions.xlsx"), ("Rows read", 6), ("Seconds", 1.5), ("Error", None)]


def _write(summary=SUMMARY, rows=ROWS, columns=COLUMNS, outcomes=OUTCOMES) -> Workbook:
    target = io.BytesIO()
    write_import_report(target, summary=summary, rows=rows, columns=columns, outcomes=outcomes)
    return load_workbook(io.BytesIO(target.getvalue()))


def _values(ws) -> list[list[object]]:
    return [list(row) for row in ws.iter_rows(values_only=True)]


def _outcome_table(ws) -> dict[str, int]:
    values = _values(ws)
    start = next(i for i, row in enumerate(values) if row[:2] == ["Outcome", "Rows"])
    table = {}
    for label, count in values[start + 1 :]:
        if label is None:
            break
        table[label] = count
    return table


def test_sheets_in_order():
    assert _write().sheetnames == ["Summary", "Rows", "Rejected"]


def test_rows_sheet_has_every_row_in_row_order_with_outcome_and_reason():
    ws = _write()["Rows"]
    assert _values(ws) == [
        ["Row", *COLUMNS, "Outcome", "Reason"],
        [2, "a@example.com", "uuid-1", "2024-01-04", "HR", "imported", None],
        [3, "c@example.com", "uuid-9", "2024-01-07", "IT", "rejected", "unknown content uuid"],
        [4, "b@example.com", "uuid-2", "2024-01-05", "Sales", "updated", None],
        [5, None, "uuid-4", None, "Ops", "rejected", "the email is missing"],
        [6, "not an email", "uuid-3", "2024-01-06", None, "rejected", "not an email address"],
        [7, "d@example.com", "uuid-1", "2024-02-01", "HR", "kept", "an earlier completion exists"],
    ]


def test_rejected_sheet_has_original_headers_and_only_rejected_rows_in_input_layout_then_the_reason():
    ws = _write()["Rejected"]
    assert _values(ws) == [
        [*COLUMNS, "Reason"],
        ["c@example.com", "uuid-9", "2024-01-07", "IT", "unknown content uuid"],
        [None, "uuid-4", None, "Ops", "the email is missing"],
        ["not an email", "uuid-3", "2024-01-06", None, "not an email address"],
    ]


def test_rejected_sheet_follows_columns_not_the_frame_order():
    # `columns` is the file's layout; the frame may hold its columns in another order.
    rows = ROWS[["Department", "row", "Content ID", "Date completed", "E-mail address"]]
    ws = _write(rows=rows)["Rejected"]
    assert _values(ws)[:2] == [
        [*COLUMNS, "Reason"],
        ["c@example.com", "uuid-9", "2024-01-07", "IT", "unknown content uuid"],
    ]


def test_an_earlier_reports_reason_column_gives_way_to_this_reports_reason():
    # A Rejected sheet dropped back: its Reason column is not carried on beside the new one.
    columns = ["User email", "Content uuid", "Completion date", "Reason"]
    rows = _rows([(2, "a@example.com", "uuid-1", "2024-01-04", "unknown user a@example.com")], columns=columns)
    wb = _write(rows=rows, columns=columns, outcomes=_outcomes([(2, "rejected", "unknown content uuid")]))
    assert _values(wb["Rejected"]) == [columns, ["a@example.com", "uuid-1", "2024-01-04", "unknown content uuid"]]
    assert _values(wb["Rows"])[0] == ["Row", *columns[:3], "Outcome", "Reason"]


def test_repeated_header_names_keep_their_own_columns():
    columns = ["Email", "Uuid", "Note", "Note"]
    rows = _rows([(2, "a@example.com", "uuid-1", "first", "second")], columns=columns)
    wb = _write(rows=rows, columns=columns, outcomes=_outcomes([(2, "rejected", "bad")]))
    assert _values(wb["Rejected"]) == [[*columns, "Reason"], ["a@example.com", "uuid-1", "first", "second", "bad"]]


def test_numeric_looking_text_stays_text():
    rows = _rows([(2, "00123", "1e5", "45292", "0.50")])
    wb = _write(rows=rows, outcomes=_outcomes([(2, "rejected", "bad")]))
    cells = list(wb["Rejected"].iter_rows(min_row=2))[0][:4]
    assert [(c.value, c.data_type) for c in cells] == [("00123", "s"), ("1e5", "s"), ("45292", "s"), ("0.50", "s")]


@pytest.mark.parametrize("sheet", ["Rows", "Rejected"])
def test_formula_like_values_are_written_as_text(sheet):
    rows = _rows([(2, *INJECTIONS)])
    outcomes = _outcomes([(2, "rejected", '=HYPERLINK("http://evil")')])
    ws = _write(rows=rows, outcomes=outcomes)[sheet]
    cells = {c.value: c.data_type for c in list(ws.iter_rows(min_row=2))[0]}
    for value in INJECTIONS:
        assert cells[value] == "s", value
    if sheet == "Rows":
        assert cells['=HYPERLINK("http://evil")'] == "s"


def test_formula_like_headers_summary_values_and_error_codes_are_text():
    columns = ["=Email", "Uuid"]
    rows = _rows([(2, "#N/A", "#REF!")], columns=columns)
    wb = _write(
        summary=[("File", "=cmd|' /C calc'!A0"), ("-Note", "@x")],
        rows=rows,
        columns=columns,
        outcomes=_outcomes([(2, "rejected", "bad")]),
    )
    rejected = [(c.value, c.data_type) for row in wb["Rejected"].iter_rows() for c in row]
    assert rejected == [("=Email", "s"), ("Uuid", "s"), ("Reason", "s"), ("#N/A", "s"), ("#REF!", "s"), ("bad", "s")]
    summary = [(c.value, c.data_type) for row in wb["Summary"].iter_rows(max_row=2) for c in row]
    assert summary == [("File", "s"), ("=cmd|' /C calc'!A0", "s"), ("-Note", "s"), ("@x", "s")]


def test_control_characters_are_dropped_instead_of_failing():
    rows = _rows([(2, "a\x01b@example.com", "uuid\x1f-1", "2024-01-04", "HR")])
    ws = _write(rows=rows, outcomes=_outcomes([(2, "rejected", "bad\x00 email")]))["Rows"]
    assert _values(ws)[1] == [2, "ab@example.com", "uuid-1", "2024-01-04", "HR", "rejected", "bad email"]


def test_summary_pairs_with_bold_labels_and_numbers_kept_as_numbers():
    ws = _write()["Summary"]
    top = list(ws.iter_rows(max_row=len(SUMMARY)))
    assert [[c.value for c in row] for row in top] == [list(pair) for pair in SUMMARY]
    assert all(row[0].font.b for row in top)
    assert not top[0][1].font.b
    rows_read = top[1][1]  # a number cell (stored as Excel stores every number, a double)
    assert rows_read.data_type == "n" and rows_read.value == 6
    assert type(top[2][1].value) is float


def test_summary_counts_each_outcome():
    assert _outcome_table(_write()["Summary"]) == {"imported": 1, "updated": 1, "kept": 1, "rejected": 3, "Total": 6}


def test_failed_file_with_no_rows_and_no_outcomes_still_gives_the_summary():
    summary = [("File", "broken.xlsx"), ("Status", "failed"), ("Error", "no sheet has the mandatory columns")]
    wb = _write(summary=summary, rows=pd.DataFrame(), columns=[], outcomes=pd.DataFrame())
    assert wb.sheetnames == ["Summary", "Rows", "Rejected"]
    assert _values(wb["Summary"])[:3] == [list(pair) for pair in summary]
    assert _outcome_table(wb["Summary"]) == {"imported": 0, "updated": 0, "kept": 0, "rejected": 0, "Total": 0}
    assert _values(wb["Rows"]) == [["Row", "Outcome", "Reason"]]


def test_file_with_headers_but_no_data_rows():
    rows = _rows([])
    wb = _write(rows=rows, outcomes=_outcomes([]))
    assert _values(wb["Rows"]) == [["Row", *COLUMNS, "Outcome", "Reason"]]
    assert _values(wb["Rejected"]) == [[*COLUMNS, "Reason"]]


def test_rows_without_an_outcome_are_still_listed():
    # The file failed after it was read: rows are known, outcomes are not.
    ws = _write(outcomes=pd.DataFrame())["Rows"]
    values = _values(ws)
    assert [row[0] for row in values[1:]] == [2, 3, 4, 5, 6, 7]
    assert all(row[-2:] == [None, None] for row in values[1:])


def test_header_row_frozen_and_columns_sized():
    wb = _write()
    for name in ("Rows", "Rejected"):
        ws = wb[name]
        assert ws.freeze_panes == "A2", name
        assert all(c.font.b for c in next(ws.iter_rows(max_row=1))), name
    widths = wb["Rows"].column_dimensions
    assert 8 <= widths["A"].width < widths["B"].width <= 60  # Row narrow, e-mail column wider


def test_writes_to_a_file(tmp_path):
    path = tmp_path / "report.xlsx"
    with path.open("wb") as target:
        write_import_report(target, summary=SUMMARY, rows=ROWS, columns=COLUMNS, outcomes=OUTCOMES)
    assert load_workbook(path).sheetnames == ["Summary", "Rows", "Rejected"]


def test_a_header_missing_from_rows_is_an_error():
    with pytest.raises(ValueError, match="Nope"):
        _write(columns=[*COLUMNS, "Nope"])


def test_two_outcomes_for_one_row_is_an_error():
    outcomes = pd.concat([OUTCOMES, _outcomes([(3, "imported", None)])], ignore_index=True)
    with pytest.raises(ValueError, match="more than one outcome"):
        _write(outcomes=outcomes)


def test_a_file_longer_than_an_excel_sheet_continues_on_numbered_sheets(monkeypatch):
    import progression.report as report

    monkeypatch.setattr(report, "EXCEL_DATA_ROWS", 3)  # a million rows, scaled down
    rows = pd.DataFrame({"Email": pd.array([f"u{i}@x.nl" for i in range(7)], dtype="string"), "row": range(2, 9)})
    outcomes = pd.DataFrame({"row": range(2, 9), "outcome": ["rejected"] * 7, "reason": ["bad"] * 7})
    target = io.BytesIO()
    report.write_import_report(target, summary=[], rows=rows, columns=["Email"], outcomes=outcomes)
    book = load_workbook(io.BytesIO(target.getvalue()))
    assert book.sheetnames == ["Summary", "Rows", "Rows 2", "Rows 3", "Rejected", "Rejected 2", "Rejected 3"]
    assert [r[0] for r in book["Rows 3"].iter_rows(values_only=True)] == ["Row", 8]
    assert [r[0] for r in book["Rejected 2"].iter_rows(values_only=True)] == ["Email", "u3@x.nl", "u4@x.nl", "u5@x.nl"]


def test_plain_sheets_are_written_as_text_where_they_look_like_formulas():
    from progression.report import write_sheets

    target = io.BytesIO()
    write_sheets(target, [("Pairs", ["Old", "New", "Users"], [["=cmd()", "@x", 3]]), ("Empty", ["A"], [])])
    book = load_workbook(io.BytesIO(target.getvalue()))
    assert book.sheetnames == ["Pairs", "Empty"]
    cells = list(book["Pairs"].iter_rows(min_row=2))[0]
    assert [c.value for c in cells] == ["=cmd()", "@x", 3] and cells[0].data_type == "s"


def test_a_missing_time_is_an_empty_cell_and_a_time_keeps_its_zone():
    from progression.report import write_sheets

    target = io.BytesIO()
    write_sheets(target, [("Times", ["Before", "After"], [[pd.NaT, pd.Timestamp("2024-03-01", tz="UTC")]])])
    row = list(load_workbook(io.BytesIO(target.getvalue()))["Times"].iter_rows(min_row=2, values_only=True))[0]
    assert row == (None, "2024-03-01 00:00:00+00:00")


# What a customer's cell may hold that Excel would take for a formula, a number or a link if typed in.
LOOKS_LIKE_FORMULAS = [
    "=1+1",
    '=HYPERLINK("http://evil.example","click")',
    "+31 6 12345678",
    "-5",
    "@SUM(A1)",
    "http://example.com",
    "1e5",
    "#DIV/0!",
]


def _cells_and_formulas(target: io.BytesIO, sheet: str) -> tuple[list[tuple[object, str]], int]:
    """The sheet's data cells (value, type) as openpyxl reads them, and how many formula elements its XML has."""
    book = load_workbook(io.BytesIO(target.getvalue()))
    cells = [(c.value, c.data_type) for row in book[sheet].iter_rows(min_row=2) for c in row]
    with zipfile.ZipFile(io.BytesIO(target.getvalue())) as archive:
        formulas = sum(archive.read(name).count(b"<f") for name in archive.namelist() if "worksheets/" in name)
    return cells, formulas


@pytest.mark.parametrize("given", ["frame", "list", "streamed"])
def test_text_that_looks_like_a_formula_stays_text_in_every_kind_of_sheet(given):
    from progression.report import Streamed, write_sheets

    rows = {
        "frame": pd.DataFrame({"Value": LOOKS_LIKE_FORMULAS}),
        "list": [[v] for v in LOOKS_LIKE_FORMULAS],
        "streamed": Streamed(([v] for v in LOOKS_LIKE_FORMULAS), len(LOOKS_LIKE_FORMULAS)),
    }[given]
    target = io.BytesIO()
    write_sheets(target, [("Values", ["Value"], rows)])
    cells, formulas = _cells_and_formulas(target, "Values")
    assert cells == [(value, "s") for value in LOOKS_LIKE_FORMULAS] and formulas == 0


def test_the_import_report_keeps_formula_like_input_as_text_in_rows_and_rejected():
    columns = [f"Column {i}" for i in range(len(LOOKS_LIKE_FORMULAS))]
    rows = _rows([(2, *LOOKS_LIKE_FORMULAS)], columns=columns)
    target = io.BytesIO()
    write_import_report(
        target, summary=SUMMARY, rows=rows, columns=columns, outcomes=_outcomes([(2, "rejected", "=1+1")])
    )
    rejected, formulas = _cells_and_formulas(target, "Rejected")
    assert rejected == [(value, "s") for value in [*LOOKS_LIKE_FORMULAS, "=1+1"]] and formulas == 0
    every, _ = _cells_and_formulas(target, "Rows")
    assert every[1:] == [(value, "s") for value in LOOKS_LIKE_FORMULAS] + [("rejected", "s"), ("=1+1", "s")]


def test_frames_keep_numbers_and_write_times_and_other_values_as_text():
    from progression.report import write_sheets

    frame = pd.DataFrame(
        {
            "n": pd.array([1, None], dtype="Int64"),
            "x": [1.5, float("nan")],
            "b": [True, False],
            "at": pd.to_datetime(["2024-03-01", None]).tz_localize("UTC"),
            "o": ["a\x01b", None],
        }
    )
    target = io.BytesIO()
    write_sheets(target, [("Frame", ["N", "X", "B", "At", "O"], frame)])
    assert _values(load_workbook(io.BytesIO(target.getvalue()))["Frame"]) == [
        ["N", "X", "B", "At", "O"],
        [1, 1.5, True, "2024-03-01 00:00:00+00:00", "ab"],
        [None, None, False, None, None],
    ]


def test_text_longer_than_a_cell_holds_is_cut_to_excels_limit():
    from progression.report import EXCEL_CELL_CHARS, write_sheets

    target = io.BytesIO()
    long = "x" * (EXCEL_CELL_CHARS + 10)
    write_sheets(target, [("Frame", ["A"], pd.DataFrame({"a": [long]})), ("List", ["A"], [[long]])])
    book = load_workbook(io.BytesIO(target.getvalue()))
    assert len(book["Frame"]["A2"].value) == len(book["List"]["A2"].value) == EXCEL_CELL_CHARS


@pytest.mark.parametrize("given", ["frame", "streamed"])
def test_plain_sheets_longer_than_an_excel_sheet_continue_on_numbered_sheets(monkeypatch, given):
    import progression.report as report

    monkeypatch.setattr(report, "EXCEL_DATA_ROWS", 3)
    values = [f"u{i}" for i in range(7)]
    rows = pd.DataFrame({"a": values}) if given == "frame" else report.Streamed(([v] for v in values), 7)
    target = io.BytesIO()
    report.write_sheets(target, [("Summary", ["Field", "Value"], [["Users", 7]]), ("Users", ["User"], rows)])
    book = load_workbook(io.BytesIO(target.getvalue()))
    assert book.sheetnames == ["Summary", "Users", "Users 2", "Users 3"]
    assert [_values(book[name])[1:] for name in book.sheetnames[1:]] == [
        [["u0"], ["u1"], ["u2"]],
        [["u3"], ["u4"], ["u5"]],
        [["u6"]],
    ]


@pytest.mark.parametrize("given", [2, 4])
def test_streamed_rows_that_are_not_as_many_as_counted_are_an_error(given):
    from progression.report import Streamed, write_sheets

    with pytest.raises(ValueError, match="not as many as counted"):
        write_sheets(io.BytesIO(), [("Users", ["User"], Streamed(([f"u{i}"] for i in range(given)), 3))])


# Text a sheet's XML must escape, or that a reader changes unless told not to.
AWKWARD_TEXT = [
    " leading space",
    "trailing space ",
    "\tindented",
    "_x0041_ looks like an escape",
    "line\r\nbreaks\nkept",
    "<tag> & 'quotes' \"too\"",
    "ünïcödé ✓ 漢字",
    "",
    None,
]


def test_a_frame_and_the_same_rows_as_a_list_read_back_alike():
    """Frames' rows are written as sheet XML by the report module; lists' rows by rustpy-xlsxwriter. A reader
    sees the same values from both, and the importer's own reader (which takes a report's Rejected sheet back)
    the text exactly as it was, awkward text included."""
    import fastexcel

    from progression.report import write_sheets

    frame = pd.DataFrame(
        {
            "text": pd.array(AWKWARD_TEXT, dtype="string"),
            "count": pd.array([1, -2, None, 4, 5, 6, 2**40, 0, 9], dtype="Int64"),
            "score": [1.5, float("nan"), float("inf"), -0.25, 1e20, 3.0, 0.1, 7.0, 8.0],
            "done": [True, False, True, False, True, False, True, False, True],
        }
    )
    as_list = frame.astype(object).where(frame.notna(), None).values.tolist()
    target = io.BytesIO()
    write_sheets(target, [("Frame", list(frame.columns), frame), ("List", list(frame.columns), as_list)])
    book = load_workbook(io.BytesIO(target.getvalue()))
    from_frame, from_list = _values(book["Frame"]), _values(book["List"])
    assert from_frame == from_list
    text = fastexcel.read_excel(target.getvalue()).load_sheet("Frame").to_arrow()["text"].to_pylist()
    assert text == [*AWKWARD_TEXT[:-2], None, None]


def test_sheets_written_in_blocks_keep_every_row_in_order_and_declare_their_range(monkeypatch):
    from progression import report

    monkeypatch.setattr(report, "_BLOCK_MAX_ROWS", 3)
    monkeypatch.setattr(report, "_BLOCK_TEXT_BYTES", 40)  # a block of one row where a row is longer
    frame = pd.DataFrame({"n": range(10), "text": [f"value {i}" * (1 + 10 * (i == 4)) for i in range(10)]})
    target = io.BytesIO()
    report.write_sheets(target, [("Data & more", ["N", "Text"], frame)])
    sheet = load_workbook(io.BytesIO(target.getvalue()), read_only=True)["Data & more"]
    assert (sheet.max_row, sheet.max_column) == (11, 2)  # what read-only readers take from the declared range
    assert _values(sheet) == [["N", "Text"], *([i, f"value {i}" * (1 + 10 * (i == 4))] for i in range(10))]


def test_sheet_rows_are_deflated_by_isal(monkeypatch):
    """The fast compressor is in use: if a later Python's zip writer stopped taking it, sheets would be written at
    zlib's speed, correct but several times slower."""
    from progression import report

    given = []
    compressobj = report.isal_zlib.compressobj
    monkeypatch.setattr(report.isal_zlib, "compressobj", lambda *a: given.append(a) or compressobj(*a))
    target = io.BytesIO()
    report.write_sheets(target, [("Data", ["N"], pd.DataFrame({"n": range(5)}))])
    assert len(given) == 1 and _values(load_workbook(io.BytesIO(target.getvalue()))["Data"])[-1] == [4]


def test_characters_xml_cannot_carry_are_dropped_from_frames_and_lists_alike():
    from progression.report import write_sheets

    text = ["a\x01b", "c\ufffed", "e\uffff", "\uff01 fullwidth stays"]
    headers = [f"T{i}" for i in range(len(text))]
    frame = pd.DataFrame({header: [value] for header, value in zip(headers, text)})  # each column looked at alone
    target = io.BytesIO()
    write_sheets(target, [("Frame", headers, frame), ("List", headers, [text])])
    book = load_workbook(io.BytesIO(target.getvalue()))
    expected = [headers, ["ab", "cd", "e", "\uff01 fullwidth stays"]]
    assert _values(book["Frame"]) == expected and _values(book["List"]) == expected


def test_a_sheet_the_layout_lost_is_an_error_rather_than_a_report_without_its_rows(monkeypatch):
    from progression import report

    monkeypatch.setattr(report, "_sheet_members", lambda workbook: {})
    with pytest.raises(ValueError, match="no sheet named \\['Data'\\]"):
        report.write_sheets(io.BytesIO(), [("Data", ["N"], pd.DataFrame({"n": [1]}))])
