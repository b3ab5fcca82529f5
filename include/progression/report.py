"""Report workbooks: the import report, and the plain sheets of the transfer, merge, undo and export reports.

The import report's sheets, in order:
  Summary   label/value pairs, then a small "Outcome | Rows" table.
  Rows      Row, the file's own headers, Resolved uuid (the content the row named, however it named it; when
            the outcomes carry it), Outcome, Reason: every input row, in row order.
  Rejected  the file's own headers and the rejected rows as they were read, then Reason: the customer fixes the
            rows and drops the workbook into the inbox again, whose reader takes this sheet first and ignores
            Reason as it ignores any column that is none of its own.
A column of the file headed `Reason` is left out of both: it is the reason of an earlier report dropped back,
which this report's replaces.
A sheet longer than Excel allows continues on `Rows 2`, `Rows 3`, ...

rustpy-xlsxwriter (rust_xlsxwriter in constant-memory mode) lays the workbook out: its sheets, header rows, widths
and frozen panes, and the rows of short sheets and streamed rows (one dict per row). The rows of sheets held as Arrow
tables (frames, the import report's Rows and Rejected) are written here instead, a block of rows at a time, as sheet
XML built by Arrow's string kernels and deflated by ISA-L: rust_xlsxwriter spends most of a million-row sheet in zlib
at its default level, which ISA-L's fastest level does about ten times faster for a file about a tenth larger.
Both write every text value as an inline text cell, whatever it looks like: nothing converts strings to formulas,
numbers or links, so `=1+1`, `+31 6`, `@SUM(A1)` or `#N/A` from a customer's file stays text. Control characters,
which a workbook cannot hold, are dropped; text longer than a cell holds is cut at 32,767 characters.
"""

from __future__ import annotations

import itertools
import math
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, BinaryIO
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import rustpy_xlsxwriter
from isal import isal_zlib

ROW = "row"
OUTCOMES = ("imported", "updated", "kept", "rejected")
REJECTED = "rejected"
SHEETS = ("Summary", "Rows", "Rejected")
REASON = "Reason"

EXCEL_DATA_ROWS = 1_048_575  # a sheet holds 1,048,576 rows, one of them the header
EXCEL_CELL_CHARS = 32_767
_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"  # what XML 1.0 cannot carry (tab and line breaks it can)
_CONTROL_RE = re.compile(_CONTROL)
_WIDTH_SAMPLE = 500  # rows looked at to size a column
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_BOLD = rustpy_xlsxwriter.Format().set_bold()


@dataclass(frozen=True)
class Streamed:
    """Rows from an iterator whose number is known beforehand. A workbook's sheets are laid out before its first
    row is written, so a sheet longer than Excel allows must know how many parts it needs; the writer checks
    that the iterator gives exactly `count` rows."""

    rows: Iterable[Sequence[object]]
    count: int


Rows = pd.DataFrame | Sequence[Sequence[object]] | Streamed


@dataclass
class _Sheet:
    """One worksheet as the writer takes it: an Arrow table or an iterator of dicts (keyed by the headers)."""

    name: str
    data: object
    widths: list[float]
    bold_header: bool = True  # a header row in bold, frozen above the data
    bold_columns: list[str] = field(default_factory=list)  # the headers of the columns in bold


def write_sheets(target: BinaryIO, sheets: Sequence[tuple[str, list[str], Rows]]) -> None:
    """A report of plain sheets (name, headers, rows), formula-safe and streamed, for transfers, merges, undo and
    the export. Rows are a frame (its columns in header order), a list of row sequences, or `Streamed`."""
    parts: list[_Sheet] = []
    for name, headers, rows in sheets:
        parts += _parts(name, headers, rows, [_clamp(len(str(header))) for header in headers])
    _save(target, parts)


def write_import_report(
    target: BinaryIO,
    *,
    summary: list[tuple[str, object]],
    rows: pd.DataFrame,
    columns: list[str],
    outcomes: pd.DataFrame,
) -> None:
    """Write the report workbook for one input file to `target` (a binary file object).

    `rows`: every input row as text, the original headers `columns` plus the int column `row`.
    `outcomes`: one row per input row, columns `row`, `outcome`, `reason`, and `content_uuid` for a Resolved uuid
    column; may be empty when the file failed.
    Raises ValueError when a header in `columns` is not in `rows` or a row number has more than one outcome.
    """
    shown = [
        (header, position)
        for header, position in zip(columns, _column_positions(rows, columns))
        if header.strip().casefold() != REASON.casefold()
    ]
    headers = [header for header, _ in shown]
    row_numbers = _row_numbers(rows)
    outcome, reason, resolved = _aligned_outcomes(outcomes, row_numbers)
    inputs = [_arrow(rows.iloc[:, position]) for _, position in shown]
    # The uuid each row resolved to, when the outcomes carry it (a row may name its content by title or code).
    uuids = [_arrow(resolved)] if "content_uuid" in outcomes.columns else []
    every = pa.table(
        [pa.array(row_numbers), *inputs, *uuids, _arrow(outcome), _arrow(reason)],
        names=["Row", *headers, *(["Resolved uuid"] if uuids else []), "Outcome", REASON],
    )
    if np.any(np.diff(row_numbers) < 0):  # files are read in row order; a copy only when they are not
        every = every.take(pa.array(np.argsort(row_numbers, kind="stable")))
    rejected = every.filter(pc.fill_null(pc.equal(every["Outcome"], REJECTED), False))
    rejected = rejected.select([*range(1, 1 + len(headers)), every.num_columns - 1])  # input layout, Reason
    _save(
        target,
        [
            _summary(summary, outcomes),
            *_parts(
                SHEETS[1],
                every.column_names,
                every,
                [_numbers_width(row_numbers), *_text_widths(every.drop_columns(["Row"]))],
            ),
            *_parts(SHEETS[2], rejected.column_names, rejected, _text_widths(rejected)),
        ],
    )


def _save(target: BinaryIO, sheets: list[_Sheet]) -> None:
    # Given a file object, the writer builds the whole zip in memory (a 1M-row report: 220 MB more); given a path,
    # it streams the zip to disk. The file is then copied to `target` a chunk at a time.
    with tempfile.TemporaryDirectory(prefix="progression-report-") as folder:
        path = os.path.join(folder, "report.xlsx")
        _write_workbook(path, sheets)
        with open(path, "rb") as written:
            shutil.copyfileobj(written, target, _COPY_CHUNK)


_COPY_CHUNK = 1 << 20


def _write_workbook(path: str, sheets: list[_Sheet]) -> None:
    # rustpy-xlsxwriter lays out the sheets of Arrow tables with their header rows only; _fill_rows adds their rows.
    tables = {sheet.name: sheet.data for sheet in sheets if isinstance(sheet.data, pa.Table) and sheet.data.num_rows}
    layout = f"{path}.layout.xlsx"
    rustpy_xlsxwriter.write_worksheets(
        [(sheet.name, tables[sheet.name].slice(0, 0) if sheet.name in tables else sheet.data) for sheet in sheets],
        layout,
        column_widths={sheet.name: sheet.widths for sheet in sheets},
        header_format={sheet.name: _BOLD for sheet in sheets if sheet.bold_header},
        freeze_panes={sheet.name: {"row": 1, "col": 0} for sheet in sheets if sheet.bold_header},
        column_formats={sheet.name: dict.fromkeys(sheet.bold_columns, _BOLD) for sheet in sheets if sheet.bold_columns},
        inf_value="inf",
    )
    _fill_rows(layout, path, tables)
    os.remove(layout)


# The rows of a sheet held as Arrow: sheet XML a block at a time, never more than about this much of its text at once.
_BLOCK_TEXT_BYTES = 8 << 20
_BLOCK_MAX_ROWS = 16_384
_ZIP32_BYTES = 0xFFFF_FFFF
_NAMESPACES = {
    "main": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "rel": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "pkg": "http://schemas.openxmlformats.org/package/2006/relationships",
}
_PLAIN_TEXT = '" t="inlineStr"><is><t>'
_SPACED_TEXT = '" t="inlineStr"><is><t xml:space="preserve">'  # else a reader drops leading and trailing spaces
_TEXT_END = "</t></is></c>"


def _fill_rows(layout: str, path: str, tables: dict[str, pa.Table]) -> None:
    """Copy the workbook at `layout` to `path`, giving each sheet named in `tables` (laid out with its header row
    only) the table's rows below that header."""
    with zipfile.ZipFile(layout) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        sheet_of = _sheet_members(source)
        unfilled = set(tables) - set(sheet_of.values())
        if unfilled:  # rather no report than one that silently leaves rows out
            raise ValueError(f"the laid-out workbook has no sheet named {sorted(unfilled)}")
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED
            name = sheet_of.get(info.filename)
            if name not in tables:
                target.writestr(entry, source.read(info))
                continue
            table = tables[name]
            text_bytes = _text_bytes_per_row(table)
            head, tail = _around_rows(source.read(info).decode(), table)
            with target.open(entry, "w", force_zip64=_may_exceed_zip32(table, int(text_bytes.sum()))) as sheet:
                _deflate_fast(sheet)
                sheet.write(head.encode())
                for block in _rows_xml(table, _blocks(text_bytes)):
                    sheet.write(block)
                sheet.write(tail.encode())


def _sheet_members(workbook: zipfile.ZipFile) -> dict[str, str]:
    """The zip member of each sheet, with the sheet's name: from the workbook part and its relationships."""
    targets = {
        relation.get("Id"): relation.get("Target", "")
        for relation in ElementTree.fromstring(workbook.read("xl/_rels/workbook.xml.rels"))
        if relation.tag == f"{{{_NAMESPACES['pkg']}}}Relationship"
    }
    members = {}
    for sheet in ElementTree.fromstring(workbook.read("xl/workbook.xml")).iterfind(
        "main:sheets/main:sheet", _NAMESPACES
    ):
        target = targets.get(sheet.get(f"{{{_NAMESPACES['rel']}}}id"), "")
        member = target[1:] if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
        members[member] = sheet.get("name", "")
    return members


def _around_rows(sheet_xml: str, table: pa.Table) -> tuple[str, str]:
    """The sheet's XML before and after where its data rows go, the used range widened to hold them."""
    end = sheet_xml.find("</sheetData>")
    if end < 0:
        raise ValueError("the laid-out sheet has no sheetData to hold its rows")
    used = f'<dimension ref="A1:{_column_letter(table.num_columns - 1)}{table.num_rows + 1}"/>'
    head = re.sub(r"<dimension ref=\"[^\"]*\"/>", used, sheet_xml[:end], count=1)
    return head, sheet_xml[end:]


def _may_exceed_zip32(table: pa.Table, text_bytes: int) -> bool:
    """Whether the sheet's XML may pass 4 GB, the most a zip member holds without the ZIP64 extension (which some
    readers, Excel among them, take only where it is needed). Counts every byte of the table's text as `_x000D_`,
    the longest escape, and every cell at its longest."""
    cells = table.num_rows * table.num_columns
    return 7 * text_bytes + 80 * cells + 40 * table.num_rows > _ZIP32_BYTES


def _deflate_fast(member: IO[bytes]) -> None:
    """Compress the zip member being written with ISA-L's fastest level in place of zlib's default: the same
    deflate format, about ten times faster on sheet XML. Left to zlib if the zip writer keeps its compressor
    elsewhere in a later Python."""
    if hasattr(member, "_compressor"):
        member._compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)


def _rows_xml(table: pa.Table, blocks: list[tuple[int, int]]) -> Iterator[memoryview]:
    """The table's rows as sheet XML, rows 2 onwards, a block of rows at a time."""
    letters = [_column_letter(position) for position in range(table.num_columns)]
    for start, stop in blocks:
        block = table.slice(start, stop - start).combine_chunks().to_batches()[0]
        numbers = pc.cast(pa.array(np.arange(start + 2, stop + 2)), pa.string())
        cells = [_cells(column, letter, numbers) for letter, column in zip(letters, block.columns)]
        rows = pc.binary_join_element_wise(
            '<row r="', numbers, '">', *cells, "</row>", "", null_handling="replace", null_replacement=""
        )
        offsets, data = _text_layout(rows)
        yield data[offsets[0] : offsets[-1]].data


def _text_bytes_per_row(table: pa.Table) -> np.ndarray:
    """How many bytes of text each row of the table holds."""
    per_row = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            per_row += pc.fill_null(pc.binary_length(column), 0).to_numpy()
    return per_row


def _blocks(text_bytes: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of at most `_BLOCK_MAX_ROWS` rows and, where a row allows, `_BLOCK_TEXT_BYTES` of text, given
    each row's bytes of text."""
    ends = np.cumsum(text_bytes)
    blocks, start = [], 0
    while start < len(text_bytes):
        within = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _BLOCK_TEXT_BYTES, side="right"))
        stop = min(max(within, start + 1), start + _BLOCK_MAX_ROWS)
        blocks.append((start, stop))
        start = stop
    return blocks


def _cells(column: pa.Array, letter: str, numbers: pa.Array) -> pa.Array:
    """One cell of XML per value of the column (null where the cell stays empty), as rust_xlsxwriter writes them:
    numbers as numbers, booleans as booleans, NaN and empty text as no cell, infinity as the text `inf`, and any
    other value as inline text."""
    kind = column.type
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    reference = pc.binary_join_element_wise(f'<c r="{letter}', numbers, "")
    if pa.types.is_boolean(kind):
        return pc.binary_join_element_wise(
            reference, '" t="b"><v>', pc.cast(pc.cast(column, pa.int8()), pa.string()), "</v></c>", ""
        )
    if pa.types.is_integer(kind):
        return pc.binary_join_element_wise(reference, '"><v>', pc.cast(column, pa.string()), "</v></c>", "")
    if pa.types.is_floating(kind):
        number = pc.binary_join_element_wise(reference, '"><v>', pc.cast(column, pa.string()), "</v></c>", "")
        infinite = pc.binary_join_element_wise(
            reference, _PLAIN_TEXT, pc.if_else(pc.greater(column, 0), "inf", "-inf"), _TEXT_END, ""
        )
        return pc.if_else(
            pc.is_finite(column), number, pc.if_else(pc.is_inf(column), infinite, pa.scalar(None, pa.string()))
        )
    text = column if pa.types.is_string(kind) else pc.cast(column, pa.string())
    offsets, data = _text_layout(text)
    lengths = np.diff(offsets)
    if np.any(lengths == 0):  # empty text (and null): no cell
        text = pc.if_else(pa.array(lengths > 0), text, pa.scalar(None, pa.string()))
    opening: object = _PLAIN_TEXT
    if len(data):
        first, last = data[np.minimum(offsets[:-1], len(data) - 1)], data[np.maximum(offsets[1:] - 1, 0)]
        spaced = (lengths > 0) & (np.isin(first, _XML_SPACES) | np.isin(last, _XML_SPACES))
        if np.any(spaced):
            opening = pc.if_else(pa.array(spaced), _SPACED_TEXT, _PLAIN_TEXT)
    present = np.bincount(data[offsets[0] : offsets[-1]], minlength=256) > 0
    return pc.binary_join_element_wise(reference, opening, _xml_text(text, present), _TEXT_END, "")


_XML_SPACES = np.frombuffer(b" \t\n\r", dtype=np.uint8)


def _text_layout(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (one more than its values, into the data) and its data, as numpy views."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    data = text.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)


def _xml_text(text: pa.Array, present: np.ndarray) -> pa.Array:
    """Text as an XML element holds it, escaped as Excel reads it back: `&`, `<` and `>` as entities, a carriage
    return as `_x000D_` (XML would read it as a line break), and text that looks like such an escape with its
    underscore escaped. `present` says which bytes occur in the text, so that a replacement with nothing to replace
    is not run."""
    for character, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        if present[ord(character)]:
            text = pc.replace_substring(text, character, escaped)
    if present[ord("_")]:
        text = pc.replace_substring_regex(text, "_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1")
    if present[ord("\r")]:
        text = pc.replace_substring(text, "\r", "_x000D_")
    return text


def _column_letter(position: int) -> str:
    """A column's letters from its 0-based position: A, ..., Z, AA, ..."""
    letters = ""
    position += 1
    while position:
        position, remainder = divmod(position - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _parts(name: str, headers: list[str], rows: Rows | pa.Table, widths: list[float]) -> list[_Sheet]:
    """The sheet, or its parts `name`, `name 2`, ... when it has more rows than a sheet holds."""
    if isinstance(rows, pd.DataFrame):
        if rows.shape[1] != len(headers):
            raise ValueError(f"sheet {name!r}: {len(headers)} headers for {rows.shape[1]} columns")
        rows = pa.table([_arrow(rows.iloc[:, i]) for i in range(rows.shape[1])], names=headers)
    count = rows.count if isinstance(rows, Streamed) else len(rows)
    names = [name if part == 0 else f"{name} {part + 1}" for part in range(max(1, math.ceil(count / EXCEL_DATA_ROWS)))]
    bounds = [(i * EXCEL_DATA_ROWS, min(count, (i + 1) * EXCEL_DATA_ROWS)) for i in range(len(names))]
    if isinstance(rows, pa.Table):
        return [_Sheet(part, rows.slice(start, stop - start), widths) for part, (start, stop) in zip(names, bounds)]
    if count == 0:  # a dict per row would leave out the header row
        return [_Sheet(name, pa.table([pa.array([], pa.string()) for _ in headers], names=headers), widths)]
    if len(set(headers)) != len(headers):
        raise ValueError(f"sheet {name!r} repeats a header: {headers}")
    source = iter(rows.rows if isinstance(rows, Streamed) else rows)
    return [
        _Sheet(part, _records(name, headers, source, stop - start, last=stop == count), widths)
        for part, (start, stop) in zip(names, bounds)
    ]


def _records(
    name: str, headers: list[str], source: Iterator[Sequence[object]], count: int, last: bool
) -> Iterator[dict[str, object]]:
    given = 0
    for values in itertools.islice(source, count):
        given += 1
        yield dict(zip(headers, map(clean_cell, values)))
    if given < count or (last and next(source, None) is not None):
        raise ValueError(f"sheet {name!r}: the rows were not as many as counted beforehand")


def clean_cell(value: object) -> object:
    """A value a workbook keeps as itself: text stays text, <NA>/NaN/NaT become an empty cell, and anything else
    (a time, a uuid) is written as its text."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return _CONTROL_RE.sub("", value)[:EXCEL_CELL_CHARS]
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return None if value != value else value  # NaN
    return clean_cell(str(value))


def _arrow(column: pd.Series) -> pa.Array:
    """A column for the writer: numbers and booleans as they are, everything else (times too) as clean text."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return pa.array(column, from_pandas=True)
    if not isinstance(column.dtype, pd.StringDtype):  # times, uuids, mixed objects: their text, NaT/NaN empty
        column = column.astype("string").mask(column.isna())
    text = pa.array(column, from_pandas=True)
    if _may_hold_control_characters(text):
        text = pc.replace_substring_regex(text, _CONTROL, "")
    if (pc.max(pc.binary_length(text)).as_py() or 0) > EXCEL_CELL_CHARS:  # bytes, known without decoding
        text = pc.utf8_slice_codeunits(text, 0, EXCEL_CELL_CHARS)  # in characters, despite the name
    return text


def _may_hold_control_characters(text: pa.Array | pa.ChunkedArray) -> bool:
    """Whether the text holds a control character other than tab and line breaks, or U+FFFE or U+FFFF (which XML
    cannot carry either): a look at the raw bytes (at least those of the values), far cheaper than a regular
    expression over every value."""
    chunks = text.chunks if isinstance(text, pa.ChunkedArray) else [text]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is None:
            continue
        codes = np.frombuffer(data, dtype=np.uint8)
        low = codes[codes < 0x20]
        if np.any((low != 0x09) & (low != 0x0A) & (low != 0x0D)):
            return True
        lead = np.flatnonzero(codes[:-2] == 0xEF)  # U+FFFE and U+FFFF are EF BF BE and EF BF BF in UTF-8
        if np.any((codes[lead + 1] == 0xBF) & (codes[lead + 2] >= 0xBE)):
            return True
    return False


def _summary(summary: Sequence[tuple[str, object]], outcomes: pd.DataFrame) -> _Sheet:
    """Label/value pairs in bold labels, a blank row, then the outcome counts. The first pair is the sheet's
    header row (the writer always writes one), so the pairs start at the top as a person reads them."""
    counts = _outcome_counts(outcomes)
    lines = [[label, clean_cell(value)] for label, value in summary]
    lines += [[None, None]] if lines else []
    lines += [["Outcome", "Rows"], *([name, count] for name, count in counts.items()), ["Total", sum(counts.values())]]
    header = ["" if cell is None else str(cell) for cell in lines[0]]
    if header[0] != header[1]:
        lines = lines[1:]
    else:  # two equal texts cannot both be header names
        header = ["Field", "Value"]
    widths = [
        _values_width([label for label, _ in lines] + header[:1], "", _MAX_WIDTH),
        _values_width([value for _, value in lines] + header[1:], "Rows", _MAX_WIDTH),
    ]
    data = [dict(zip(header, line)) for line in lines]
    return _Sheet(SHEETS[0], data, widths, bold_header=False, bold_columns=header[:1])


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


def _aligned_outcomes(outcomes: pd.DataFrame, row_numbers: np.ndarray) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Outcome, reason and resolved uuid for each input row (<NA> where there is none), as text."""
    if len(outcomes) == 0 or len(row_numbers) == 0:
        empty = pd.Series(pd.NA, index=range(len(row_numbers)), dtype="string")
        return empty, empty.copy(), empty.copy()
    by_row = outcomes.set_index(outcomes[ROW].astype("int64"))
    if by_row.index.has_duplicates:
        repeated = sorted(set(by_row.index[by_row.index.duplicated()].tolist()))
        raise ValueError(f"more than one outcome for row(s) {repeated[:10]}")
    aligned = by_row.reindex(row_numbers)
    blank = pd.Series(pd.NA, index=aligned.index)
    return (
        aligned["outcome"].astype("string"),
        aligned.get("reason", blank).astype("string"),
        aligned.get("content_uuid", blank).astype("string"),
    )


def _outcome_counts(outcomes: pd.DataFrame) -> dict[str, int]:
    """Every known outcome (0 when absent), then any other outcome found."""
    counts = dict.fromkeys(OUTCOMES, 0)
    if len(outcomes) and "outcome" in outcomes.columns:
        for name, count in outcomes["outcome"].fillna("(none)").astype(str).value_counts(sort=False).items():
            counts[str(name)] = counts.get(str(name), 0) + int(count)
    return counts


def _text_widths(table: pa.Table) -> list[float]:
    """A width per text column of `table`: its header or its longest value in the first rows."""
    sample = table.slice(0, _WIDTH_SAMPLE)
    return [
        _clamp(max(pc.max(pc.utf8_length(column)).as_py() or 0, len(name)))
        for name, column in zip(sample.column_names, sample.columns)
    ]


def _numbers_width(numbers: np.ndarray) -> float:
    return _clamp(max(len("Row"), len(str(int(numbers.max()))) if len(numbers) else 0))


def _values_width(values: Sequence[object], header: str, limit: int = _MAX_WIDTH) -> float:
    longest = max((len(str(v)) for v in values if v is not None and v is not pd.NA), default=0)
    return _clamp(max(longest, len(header)), limit)


def _clamp(characters: int, limit: int = _MAX_WIDTH) -> float:
    return float(min(max(characters + 2, _MIN_WIDTH), limit))
