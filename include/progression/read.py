"""Workbook or CSV -> one table of input rows: header aliases, the sheet to use, and completion dates."""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

EMAIL, UUID, DATE = "email", "uuid", "completed_raw"
ROW = "row"  # the row number a person sees in Excel (or the line in a CSV)
CANONICAL_HEADERS = {EMAIL: "User email", UUID: "Content uuid", DATE: "Completion date"}
MANDATORY = (EMAIL, UUID)

# Headers are compared with everything but letters and digits removed, lowercased.
_ALIASES = {
    EMAIL: ["User email", "Email", "E-mail", "User e-mail", "E-mail address", "Email address", "User email address",
            "User mail", "Mail", "Login email", "Learner email", "Employee email"],
    UUID: ["Content uuid", "Uuid", "Content id", "Content guid", "Activity uuid", "Journey uuid", "Programme uuid",
           "Program uuid", "Course uuid", "Content"],
    DATE: ["Completion date", "Completed at", "Completed on", "Date completed", "Completed date", "Completion",
           "Date of completion", "Completed", "Date", "Completion datetime"],
}


def header_key(text: object) -> str:
    return re.sub(r"[^0-9a-z]", "", str(text).strip().lower())


ALIAS_TO_FIELD = {header_key(alias): field for field, aliases in _ALIASES.items() for alias in aliases}
HEADER_SEARCH_ROWS = 10


class InputError(ValueError):
    """The file as a whole cannot be imported; the message says what and where."""


@dataclass
class InputTable:
    """Every data row of the file as text, in the file's own layout, plus where the known columns are."""

    rows: pd.DataFrame          # original columns (as text) + ROW
    columns: dict[str, str]     # field -> original header
    sheet: str | None

    def canonical(self) -> pd.DataFrame:
        out = pd.DataFrame({ROW: self.rows[ROW]})
        for name in (EMAIL, UUID, DATE):
            header = self.columns.get(name)
            out[name] = self.rows[header] if header is not None else pd.Series(pd.NA, index=self.rows.index,
                                                                               dtype="string")
        return out


def read_input(data: bytes, name: str) -> InputTable:
    """Read a `.xlsx` or `.csv` file's bytes; raises InputError naming what is wrong."""
    if not data:
        raise InputError("the file is empty (0 bytes)")
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix == "csv":
        return _read_csv(data)
    if data[:4] == b"\xd0\xcf\x11\xe0":
        raise InputError("the workbook is password protected or in the old .xls format: "
                         "save it as .xlsx without a password")
    if data[:4] != b"PK\x03\x04":
        raise InputError("the file is not an Excel workbook (.xlsx) or CSV file")
    return _read_xlsx(data)


def _find_header(frame: pd.DataFrame) -> tuple[int, dict[str, int]] | None:
    """The first row among the top few that holds both mandatory headers: (row index, field -> column index)."""
    for index in range(min(HEADER_SEARCH_ROWS, len(frame))):
        found: dict[str, int] = {}
        for col, cell in enumerate(frame.iloc[index].tolist()):
            field = ALIAS_TO_FIELD.get(header_key(cell)) if isinstance(cell, str) else None
            if field and field not in found:
                found[field] = col
        if all(f in found for f in MANDATORY):
            return index, found
    return None


def _describe_headers(frame: pd.DataFrame) -> str:
    for index in range(min(HEADER_SEARCH_ROWS, len(frame))):
        cells = [str(c).strip() for c in frame.iloc[index].tolist() if isinstance(c, str) and c.strip()]
        if cells:
            return ", ".join(repr(c) for c in cells)
    return "no headers"


def _missing_message(found: list[str]) -> str:
    wanted = " and ".join(f"'{CANONICAL_HEADERS[f]}'" for f in MANDATORY)
    return f"no sheet has the mandatory columns {wanted}; found {'; '.join(found) or 'nothing'}"


def _read_xlsx(data: bytes) -> InputTable:
    import fastexcel

    try:
        reader = fastexcel.read_excel(data)
    except Exception as exc:  # fastexcel raises its own error types for damaged or encrypted files
        raise InputError(f"the workbook cannot be opened ({exc.__class__.__name__}: {exc})") from None
    seen: list[str] = []
    # A report workbook dropped back into the inbox: its Rejected sheet is what is meant to be imported again.
    for sheet in sorted(reader.sheet_names, key=lambda name: name != "Rejected"):
        # One load per sheet (the reader parses the whole sheet whatever n_rows says). skip_rows=0 keeps
        # leading empty rows, so positions are sheet rows.
        whole = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string").to_arrow()
        top = whole.slice(0, HEADER_SEARCH_ROWS).to_pandas()
        hit = _find_header(top)
        if hit is None:
            seen.append(f"sheet {sheet!r}: {_describe_headers(top)}")
            continue
        header_index, _ = hit
        headers = [str(c).strip() if isinstance(c, str) else "" for c in top.iloc[header_index].tolist()]
        body = whole.slice(header_index + 1).rename_columns([f"__{i}" for i in range(len(headers))]).to_pandas()
        body.columns = headers
        # Excel row numbers: header at header_index + 1 (1-based), data starts one below.
        return _table(body, header_index + 2, sheet)
    raise InputError(_missing_message(seen))


def _read_csv(data: bytes) -> InputTable:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InputError("the file is not an Excel workbook (.xlsx) or CSV file")
    # The delimiter is the one under which a header row (possibly below a title line) has the mandatory columns.
    top_lines = text.splitlines()[:HEADER_SEARCH_ROWS]
    if not any(line.strip() for line in top_lines):
        raise InputError("the file is empty (no rows)")
    for delimiter in (";", ",", "\t", "|"):
        top = pd.DataFrame(list(csv.reader(top_lines, delimiter=delimiter)))
        hit = _find_header(top)
        if hit is not None:
            break
    else:
        best = max((",", ";", "\t", "|"), key=lambda d: max(line.count(d) for line in top_lines))
        found = _describe_headers(pd.DataFrame(list(csv.reader(top_lines, delimiter=best))))
        raise InputError(f"the mandatory columns '{CANONICAL_HEADERS[EMAIL]}' and '{CANONICAL_HEADERS[UUID]}' "
                         f"are missing; found columns {found}")
    header_index, _ = hit
    try:
        with warnings.catch_warnings():
            # A row with more cells than headers would otherwise be shifted silently.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            body = pd.read_csv(io.StringIO(text), sep=delimiter, dtype="string", keep_default_na=False,
                               skiprows=header_index, header=0, skip_blank_lines=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise InputError(f"the CSV file cannot be read ({exc})") from None
    body = body.replace("", pd.NA)
    return _table(body, header_index + 2, None)


def _table(raw: pd.DataFrame, first_data_row: int, sheet: str | None) -> InputTable:
    raw = raw.astype("string")
    raw.columns = [str(c).strip() for c in raw.columns]
    columns: dict[str, str] = {}
    for header in raw.columns:
        field = ALIAS_TO_FIELD.get(header_key(header))
        if field and field not in columns:
            columns[field] = header
    raw[ROW] = np.arange(first_data_row, first_data_row + len(raw), dtype="int64")
    known = [columns[f] for f in (EMAIL, UUID, DATE) if f in columns]
    blank = np.ones(len(raw), dtype=bool)
    for header in known:
        text = _arrow_text(raw[header])
        blank &= _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    rows = raw[~blank].reset_index(drop=True) if not blank.all() else raw.iloc[0:0]
    if rows.empty:
        raise InputError("the file has the headers but no data rows")
    return InputTable(rows=rows, columns=columns, sheet=sheet)


# --- completion dates -------------------------------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_DAY_MONTH = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_DAY_MONTH_NAMED = (r"^(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<year>\d{4})"
                    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?$")
_SERIAL = re.compile(r"^\d{1,7}(?:\.\d+)?$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_LAST_SERIAL = 2958465  # 9999-12-31


@dataclass
class ParsedDates:
    completed_at: pd.Series  # datetime64[us, UTC]; NaT where unreadable or future
    error: pd.Series         # text reason or <NA>


def _arrow_text(raw: pd.Series) -> pa.Array:
    """The column as a trimmed Arrow string array: the regex work below runs in Arrow's C++ kernels."""
    array = pa.Array.from_pandas(raw.astype("string"))
    if isinstance(array, pa.ChunkedArray):  # a column read back from Parquet
        array = array.combine_chunks()
    return pc.utf8_trim_whitespace(array.cast(pa.string()))


def _mask(values: pa.Array) -> np.ndarray:
    return values.fill_null(False).to_numpy(zero_copy_only=False)


def parse_dates(raw: pd.Series, *, tz: ZoneInfo, date_order: str, now: datetime,
                import_date: date | None = None) -> ParsedDates:
    """Every form the import accepts -> UTC. Date-only values mean midnight in the customer's time zone."""
    text = _arrow_text(raw)
    shown = pd.Series(text.to_pandas(), index=raw.index, dtype="string")  # for messages
    blank = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    local = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us]")   # naive, in the customer's zone
    aware = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")  # carried an explicit offset

    iso = _mask(pc.match_substring_regex(text, _ISO.pattern)) & ~blank
    if iso.any():
        has_offset = iso & _mask(pc.match_substring_regex(text, r"(?:Z|[+-]\d{2}:?\d{2})$"))
        plain = iso & ~has_offset
        if plain.any():
            local[plain] = pd.to_datetime(shown[plain], format="ISO8601", errors="coerce").astype("datetime64[us]")
        if has_offset.any():
            aware[has_offset] = pd.to_datetime(shown[has_offset], format="ISO8601", errors="coerce",
                                               utc=True).astype("datetime64[us, UTC]")

    day_month = _mask(pc.match_substring_regex(text, _DAY_MONTH.pattern)) & ~iso
    if day_month.any():
        parts = pc.extract_regex(text.filter(pa.array(day_month)), _DAY_MONTH_NAMED)
        number = {name: pc.cast(pc.if_else(pc.equal(parts.field(name), ""), "0", parts.field(name)),
                                pa.int64()).to_numpy() for name in ("a", "b", "year", "hour", "minute", "second")}
        day, month = (number["a"], number["b"]) if date_order == "DMY" else (number["b"], number["a"])
        pieces = pd.DataFrame({"year": number["year"], "month": month, "day": day, "hour": number["hour"],
                               "minute": number["minute"], "second": number["second"]})
        local[day_month] = pd.to_datetime(pieces, errors="coerce").astype("datetime64[us]").to_numpy()

    serial = _mask(pc.match_substring_regex(text, _SERIAL.pattern)) & ~iso & ~day_month & ~blank
    if serial.any():
        numbers = pd.Series(pc.cast(text.filter(pa.array(serial)), pa.float64()).to_numpy(zero_copy_only=False))
        days = numbers.where(numbers.between(1, _LAST_SERIAL))
        stamps = _EXCEL_EPOCH + pd.to_timedelta(days * 86400, unit="s").dt.round("s")
        local[serial] = stamps.astype("datetime64[us]").to_numpy()

    # A wall-clock time that occurs twice (autumn DST change) is taken as its first occurrence (summer time).
    localised = local.dt.tz_localize(tz, ambiguous=np.ones(len(local), dtype=bool),
                                     nonexistent="shift_forward").dt.tz_convert("UTC")
    completed = aware.where(aware.notna(), localised.astype("datetime64[us, UTC]"))
    if blank.any():
        day = import_date or now.astimezone(tz).date()
        completed[blank] = pd.Timestamp(datetime.combine(day, time.min, tzinfo=tz)).tz_convert("UTC")

    now_utc = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    unreadable = completed.isna()
    future = ~unreadable & (completed > now_utc)
    error = pd.Series(pd.NA, index=raw.index, dtype="string")
    error[unreadable] = "unreadable date " + shown[unreadable].fillna("").map(repr)
    error[future] = "date in the future: " + shown[future].fillna("")
    completed[unreadable | future] = pd.NaT
    return ParsedDates(completed_at=completed, error=error)



# --- workbooks of pairs (merges, transfers) ---------------------------------------------------------------------

def read_pairs(data: bytes, name: str, headers: tuple[str, str],
               aliases: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """A `.xlsx` (first sheet with both headers) or `.csv` of pairs: columns ROW and the two `headers`, as trimmed
    text or <NA>, blank rows left out. Headers are matched as the import's are, under a title row if need be;
    `aliases` gives other spellings accepted for a header."""
    if not data:
        raise InputError("the file is empty (0 bytes)")
    if name.rsplit(".", 1)[-1].lower() == "csv":
        text = data.decode("utf-8-sig", errors="replace")
        grids = [(None, list(csv.reader(io.StringIO(text), delimiter=d))) for d in (";", ",", "\t", "|")]
    elif data[:4] == b"PK\x03\x04":
        import fastexcel

        try:
            reader = fastexcel.read_excel(data)
        except Exception as exc:  # fastexcel raises its own error types for damaged or encrypted files
            raise InputError(f"the workbook cannot be opened ({exc.__class__.__name__}: {exc})") from None
        grids = [(sheet, reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string").to_pandas()
                  .astype(object).where(lambda f: f.notna(), None).values.tolist()) for sheet in reader.sheet_names]
    else:
        raise InputError("the file is not an Excel workbook (.xlsx) or CSV file")
    wanted = [{header_key(h), *(header_key(a) for a in (aliases or {}).get(h, ()))} for h in headers]
    for _sheet, grid in grids:
        for index, cells in enumerate(grid[:HEADER_SEARCH_ROWS]):
            keys = [header_key(c) if isinstance(c, str) else "" for c in cells]
            positions = [next((p for p, key in enumerate(keys) if key in spellings), None) for spellings in wanted]
            if None not in positions:
                body = [[(row[p] or "").strip() if p < len(row) else "" for p in positions]
                        for row in grid[index + 1:]]
                frame = pd.DataFrame(body, columns=list(headers), dtype="string").replace("", pd.NA)
                frame.insert(0, ROW, np.arange(index + 2, index + 2 + len(frame), dtype="int64"))
                return frame[frame[list(headers)].notna().any(axis=1)].reset_index(drop=True)
    # The widest first row: under the wrong CSV delimiter a header row is one cell.
    found = max((next((cells for cells in grid[:HEADER_SEARCH_ROWS] if any(cells)), []) for _sheet, grid in grids),
                key=len, default=[])
    raise InputError("the columns " + " and ".join(f"'{h}'" for h in headers) + " are missing; found "
                     + (", ".join(repr(str(c).strip()) for c in found if c and str(c).strip()) or "nothing"))
