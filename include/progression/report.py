"""The import report workbook: a summary, every input row with its outcome, and the rejected rows ready to resend.

Sheets, in order:
  Summary   label/value pairs, then a small "Outcome | Rows" table.
  Rows      Row, the file's own headers, Resolved uuid (the content the row named, however it named it; when
            the outcomes carry it), Outcome, Reason: every input row, in row order.
  Rejected  only the file's own headers and the rejected rows as they were read, so the customer can fix the
            rows and drop the sheet into the inbox again.

Written with openpyxl's write-only mode, a chunk of rows at a time. Every text value is written as text: a value
starting with `=`, `+`, `-` or `@` (or looking like an Excel error such as `#N/A`) is never a formula or an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

ROW = "row"
OUTCOMES = ("imported", "updated", "kept", "rejected")
REJECTED = "rejected"
SHEETS = ("Summary", "Rows", "Rejected")

EXCEL_DATA_ROWS = 1_048_575    # a sheet holds 1,048,576 rows, one of them the header
_CHUNK = 10_000                 # input rows converted to Python values at a time
_WIDTH_SAMPLE = 500             # rows looked at to size a column
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_FORMULA_STARTS = ("=", "+", "-", "@")
_ERROR_CODES = frozenset(ERROR_CODES)
_BOLD = Font(bold=True)


def write_import_report(
    target: BinaryIO, *, summary: list[tuple[str, object]], rows: pd.DataFrame, columns: list[str],
    outcomes: pd.DataFrame,
) -> None:
    """Write the report workbook for one input file to `target` (a binary file object).

    `rows`: every input row as text, the original headers `columns` plus the int column `row`.
    `outcomes`: one row per input row, columns `row`, `outcome`, `reason`, and `content_uuid` for a Resolved uuid
    column; may be empty when the file failed.
    Raises ValueError when a header in `columns` is not in `rows` or a row number has more than one outcome.
    """
    positions = _column_positions(rows, columns)
    row_numbers = _row_numbers(rows)
    outcome, reason, resolved = _aligned_outcomes(outcomes, row_numbers)
    uuids = ["Resolved uuid"] if "content_uuid" in outcomes.columns else []
    order = np.argsort(row_numbers, kind="stable")

    wb = Workbook(write_only=True)
    _write_summary(wb.create_sheet(SHEETS[0]), summary, outcomes)

    ws = _SplitSheet(wb, SHEETS[1], ["Row", *columns, *uuids, "Outcome", "Reason"],
                     [_numbers_width(row_numbers), *_text_widths(rows, positions), *(_clamp(36) for _ in uuids),
                      _values_width(OUTCOMES, "Outcome"), _values_width(reason[:_WIDTH_SAMPLE], "Reason")])
    for start in range(0, len(order), _CHUNK):
        take = order[start:start + _CHUNK]
        for number, values, uuid, what, why in zip(row_numbers[take].tolist(), _values(rows, take, positions),
                                                   resolved[take].tolist(), outcome[take].tolist(),
                                                   reason[take].tolist()):
            ws.append([number, *[_cell(ws.sheet, v) for v in values], *[_cell(ws.sheet, uuid) for _ in uuids],
                       _cell(ws.sheet, what), _cell(ws.sheet, why)])

    rejected = order[outcome[order] == REJECTED]
    ws = _SplitSheet(wb, SHEETS[2], list(columns), _text_widths(rows.iloc[rejected], positions))
    for start in range(0, len(rejected), _CHUNK):
        for values in _values(rows, rejected[start:start + _CHUNK], positions):
            ws.append([_cell(ws.sheet, v) for v in values])

    wb.save(target)


class _SplitSheet:
    """A sheet that continues in `Rows 2`, `Rows 3`, ... when Excel's row limit is reached."""

    def __init__(self, wb: Workbook, name: str, headers: list[str], widths: list[float]) -> None:
        self.wb, self.name, self.headers, self.widths, self.limit = wb, name, headers, widths, EXCEL_DATA_ROWS
        self.parts, self.written = 0, 0
        self._next()

    def _next(self) -> None:
        self.parts += 1
        self.sheet = self.wb.create_sheet(self.name if self.parts == 1 else f"{self.name} {self.parts}")
        _layout(self.sheet, self.headers, self.widths)
        self.written = 0

    def append(self, values: list[object]) -> None:
        if self.written == self.limit:
            self._next()
        self.sheet.append(values)
        self.written += 1


def _column_positions(rows: pd.DataFrame, columns: Sequence[str]) -> list[int]:
    """Where each header of `columns` is in `rows`, by position so that repeated header names work."""
    names = list(rows.columns)
    used: set[int] = set()
    positions = []
    for header in columns:
        position = next((i for i, name in enumerate(names) if name == header and i not in used), None)
        if position is None:
            raise ValueError(f"rows has no column {header!r}")
        used.add(position)
        positions.append(position)
    return positions


def _row_numbers(rows: pd.DataFrame) -> np.ndarray:
    if len(rows) == 0:
        return np.empty(0, dtype="int64")
    if ROW not in rows.columns:
        raise ValueError(f"rows has no {ROW!r} column")
    numbers = rows.loc[:, ROW]
    if isinstance(numbers, pd.DataFrame):  # a customer header `row` as well: the last one is ours
        numbers = numbers.iloc[:, -1]
    return numbers.to_numpy(dtype="int64")


def _aligned_outcomes(outcomes: pd.DataFrame, row_numbers: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcome, reason and resolved uuid for each input row (None where there is none), as object arrays."""
    if len(outcomes) == 0 or len(row_numbers) == 0:
        empty = np.full(len(row_numbers), None, dtype=object)
        return empty, empty.copy(), empty.copy()
    by_row = outcomes.set_index(outcomes[ROW].astype("int64"))
    if by_row.index.has_duplicates:
        repeated = sorted(set(by_row.index[by_row.index.duplicated()].tolist()))
        raise ValueError(f"more than one outcome for row(s) {repeated[:10]}")
    aligned = by_row.reindex(row_numbers)
    blank = pd.Series(pd.NA, index=aligned.index)
    return (aligned["outcome"].to_numpy(dtype=object, na_value=None),
            aligned.get("reason", blank).to_numpy(dtype=object, na_value=None),
            aligned.get("content_uuid", blank).to_numpy(dtype=object, na_value=None))


def _values(rows: pd.DataFrame, take: np.ndarray, positions: list[int]) -> Iterator[list[object]]:
    """The values of rows `take` (positions) in columns `positions`, <NA> as None."""
    if not positions:
        return iter([[] for _ in range(len(take))])
    block = rows.iloc[take, positions].to_numpy(dtype=object, na_value=None)
    return iter(block.tolist())


def _cell(ws: WriteOnlyWorksheet, value: object) -> object:
    """A value openpyxl will write as itself: text stays text, <NA>/NaN/NaT become an empty cell."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        if ILLEGAL_CHARACTERS_RE.search(value):  # control characters cannot be stored in a workbook
            value = ILLEGAL_CHARACTERS_RE.sub("", value)
        if value.startswith(_FORMULA_STARTS) or value in _ERROR_CODES:
            cell = WriteOnlyCell(ws, value=value)
            cell.data_type = "s"
            return cell
        return value
    if isinstance(value, (int, np.integer)):  # bool included
        return value
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    return _cell(ws, str(value))


def _bold(ws: WriteOnlyWorksheet, value: object) -> object:
    cell = _cell(ws, value)
    if cell is None:
        return None
    if not isinstance(cell, Cell):
        cell = WriteOnlyCell(ws, value=cell)
    cell.font = _BOLD
    return cell


def _write_summary(ws: WriteOnlyWorksheet, summary: Sequence[tuple[str, object]], outcomes: pd.DataFrame) -> None:
    counts = _outcome_counts(outcomes)
    ws.column_dimensions["A"].width = _values_width([label for label, _ in summary] + ["Outcome"], "", _MAX_WIDTH)
    ws.column_dimensions["B"].width = _values_width([value for _, value in summary], "Rows", _MAX_WIDTH)
    for label, value in summary:
        ws.append([_bold(ws, label), _cell(ws, value)])
    ws.append([])
    ws.append([_bold(ws, "Outcome"), _bold(ws, "Rows")])
    for name, count in counts.items():
        ws.append([_cell(ws, name), count])
    ws.append([_bold(ws, "Total"), sum(counts.values())])


def _outcome_counts(outcomes: pd.DataFrame) -> dict[str, int]:
    """Every known outcome (0 when absent), then any other outcome found."""
    counts = dict.fromkeys(OUTCOMES, 0)
    if len(outcomes) and "outcome" in outcomes.columns:
        for name, count in outcomes["outcome"].fillna("(none)").astype(str).value_counts(sort=False).items():
            counts[name] = counts.get(name, 0) + int(count)
    return counts


def _layout(ws: WriteOnlyWorksheet, headers: list[str], widths: list[float]) -> None:
    """Column widths, a frozen header row and the bold header; before any other row is written."""
    for index, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(index)].width = width
    ws.freeze_panes = "A2"
    ws.append([_bold(ws, header) for header in headers])


def _text_widths(rows: pd.DataFrame, positions: list[int]) -> list[float]:
    sample = rows.iloc[:_WIDTH_SAMPLE]
    widths = []
    for position in positions:
        lengths = sample.iloc[:, position].astype("string").str.len()
        longest = int(lengths.max()) if lengths.notna().any() else 0
        widths.append(_clamp(max(longest, len(str(rows.columns[position])))))
    return widths


def _numbers_width(numbers: np.ndarray) -> float:
    return _clamp(max(len("Row"), len(str(int(numbers.max()))) if len(numbers) else 0))


def _values_width(values: Sequence[object], header: str, limit: int = _MAX_WIDTH) -> float:
    longest = max((len(str(v)) for v in values if v is not None), default=0)
    return _clamp(max(longest, len(header)), limit)


def _clamp(characters: int, limit: int = _MAX_WIDTH) -> float:
    return float(min(max(characters + 2, _MIN_WIDTH), limit))


Rows = Iterable[Sequence[object]]


def write_sheets(target: BinaryIO, sheets: Sequence[tuple[str, list[str], Rows | Callable[[], Rows]]]) -> None:
    """A report of plain sheets (name, headers, rows), formula-safe and streamed, for transfers, merges, undo and
    the export. Rows given as a callable are filled last, keeping the sheet's place: a summary whose counts are
    known only once the other sheets have streamed."""
    wb = Workbook(write_only=True)
    later = []
    for name, headers, rows in sheets:
        ws = _SplitSheet(wb, name, headers, [_clamp(len(str(header))) for header in headers])
        if callable(rows):
            later.append((ws, rows))
            continue
        for values in rows:
            ws.append([_cell(ws.sheet, value) for value in values])
    for ws, rows in later:
        for values in rows():
            ws.append([_cell(ws.sheet, value) for value in values])
    wb.save(target)
