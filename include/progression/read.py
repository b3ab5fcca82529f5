"""Workbook or CSV -> one table of input rows: header aliases, the sheet to use, and completion dates."""

from __future__ import annotations

import csv
import faulthandler
import io
import mmap
import os
import re
import resource
import signal
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from progression.customers import EXCEL_MAX_ROWS

if TYPE_CHECKING:
    from fastexcel import ExcelReader

EMAIL, UUID, DATE = "email", "uuid", "completed_raw"
ROW = "row"  # the row number a person sees in Excel (or the line in a CSV)
CANONICAL_HEADERS = {EMAIL: "User email", UUID: "Content uuid", DATE: "Completion date"}
MANDATORY = (EMAIL, UUID)

# Headers are compared with everything but letters and digits removed, lowercased.
_ALIASES = {
    EMAIL: [
        "User email",
        "Email",
        "E-mail",
        "User e-mail",
        "E-mail address",
        "Email address",
        "User email address",
        "User mail",
        "Mail",
        "Login email",
        "Learner email",
        "Employee email",
    ],
    UUID: [
        "Content uuid",
        "Uuid",
        "Content id",
        "Content guid",
        "Activity uuid",
        "Journey uuid",
        "Programme uuid",
        "Program uuid",
        "Course uuid",
        "Content",
    ],
    DATE: [
        "Completion date",
        "Completed at",
        "Completed on",
        "Date completed",
        "Completed date",
        "Completion",
        "Date of completion",
        "Completed",
        "Date",
        "Completion datetime",
    ],
}


def header_key(text: object) -> str:
    return re.sub(r"[^0-9a-z]", "", str(text).strip().lower())


ALIAS_TO_FIELD = {header_key(alias): field for field, aliases in _ALIASES.items() for alias in aliases}
FIELD_OF_COLUMN_KEY = {"email": EMAIL, "uuid": UUID, "date": DATE}  # the registry's `columns` keys
Aliases = dict[str, str]  # header key -> field


def own_aliases(own_headers: dict[str, str]) -> Aliases:
    """The customer's own header names (the registry's `columns`, e.g. `{email: "Werknemer e-mail"}`), matched
    as the built-in spellings are."""
    return {header_key(header): FIELD_OF_COLUMN_KEY[key] for key, header in own_headers.items()}


def _match_headers(cells: list[object], own: Aliases) -> dict[str, int]:
    """field -> position of its column: the customer's own header first, else the first built-in spelling; a
    column is taken for one field only."""
    found: dict[str, int] = {}
    for aliases in (own, ALIAS_TO_FIELD):
        for position, cell in enumerate(cells):
            field = aliases.get(header_key(cell)) if isinstance(cell, str) else None
            if field and field not in found and position not in found.values():
                found[field] = position
    return found


HEADER_SEARCH_ROWS = 10

# A workbook is a zip. As Apache POI's ZipSecureFile: no part may inflate past 100:1 unless it unpacks to under
# 100 KiB, and the whole may not unpack past a cap (1 GiB here).
MIN_INFLATE_RATIO = 0.01
GRACE_PART_SIZE = 100 * 1024
MAX_UNPACKED_SIZE = 1 << 30
# Workbooks have dozens of parts, a few thousand with many sheets or pictures; a million empty parts would take
# zipfile alone seconds and gigabytes to list.
MAX_PARTS = 10_000


class InputError(ValueError):
    """The file as a whole cannot be imported; the message says what and where."""


class ReaderStopped(RuntimeError):
    """The reader's process was stopped from outside (the task being stopped, the machine out of memory): not the
    file's fault, so the file waits for the next try instead of going to failed/."""


@dataclass
class InputTable:
    """Every data row of the file as text, in the file's own layout, plus where the known columns are."""

    rows: pd.DataFrame  # original columns (as text) + ROW
    columns: dict[str, str]  # field -> original header
    sheet: str | None

    def canonical(self) -> pd.DataFrame:
        out = pd.DataFrame({ROW: self.rows[ROW]})
        for name in (EMAIL, UUID, DATE):
            header = self.columns.get(name)
            out[name] = (
                self.rows[header] if header is not None else pd.Series(pd.NA, index=self.rows.index, dtype="string")
            )
        return out


Source = bytes | Path  # a file's bytes, or a private local copy of it (which no one else may change meanwhile)


def read_input(
    source: Source,
    name: str,
    *,
    max_rows: int = EXCEL_MAX_ROWS,
    own_headers: dict[str, str] | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> InputTable:
    """Read a workbook or a CSV file; raises InputError naming what is wrong. A workbook that would
    unpack past the bounds below is refused before it is parsed, and so is a CSV file with more lines than
    `max_rows`; a sheet is refused past Excel's last row or `max_rows` data rows once it is loaded.
    `own_headers`: the customer's own header names, on top of the built-in spellings (see own_aliases).
    `meanwhile`: work of the caller's for this process while the reader's process loads a workbook."""
    if _is_csv(_first_bytes(source), name):
        if meanwhile:
            meanwhile()
        return _read_csv(source if isinstance(source, bytes) else source.read_bytes(), max_rows, own_headers or {})
    return _read_workbook(source, max_rows, own_headers or {}, meanwhile)


def _first_bytes(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source[:8]
    with source.open("rb") as file:
        return file.read(8)


# --- opening files within bounds --------------------------------------------------------------------------------

_NOT_READABLE = "the file is not a workbook (.xlsx, .xlsm, .xlsb, .xls, .ods) or a CSV file"
_ZIP, _OLE2 = b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LISTED_PART = b"PK\x01\x02"
_CHUNK = 1 << 20


def _is_csv(data: bytes, name: str) -> bool:
    """The first bytes say what a file is; a `.csv` name only counts for a file that is no workbook."""
    if not data:
        raise InputError("the file is empty (0 bytes)")
    if data.startswith((_ZIP, _OLE2)):
        return False
    if name.rsplit(".", 1)[-1].lower() == "csv":
        return True
    raise InputError(_NOT_READABLE)


def open_workbook(path: str) -> ExcelReader:
    """A fastexcel reader of the workbook at `path`; InputError when the reader cannot open it. Call it in the
    reading process (see read_sheets): opening already parses parts of the workbook."""
    import fastexcel

    try:
        return fastexcel.read_excel(path)
    except BaseException as exc:
        raise _reader_error(exc, "the workbook cannot be opened") from None


def load_sheet(reader: ExcelReader, sheet: str) -> pa.RecordBatch:
    """Every cell of one sheet as text. skip_rows=0 keeps leading empty rows, so positions are sheet rows."""
    try:
        whole = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string", eager=True)
    except BaseException as exc:
        raise _reader_error(exc, f"sheet {sheet!r} cannot be read") from None
    if whole.num_rows > EXCEL_MAX_ROWS:
        raise InputError(f"sheet {sheet!r} has {whole.num_rows:,} rows, over Excel's {EXCEL_MAX_ROWS:,}")
    return whole


SheetPicker = Callable[["ExcelReader"], list[pa.RecordBatch]]
SHEET_NAME = b"sheet"  # the schema metadata key under which a picker names each batch's sheet
# The reader's address space on top of what the task has mapped already: a sheet of 1,048,576 rows x 7 columns
# takes about 750 MB to load.
READER_MEMORY = 2 << 30


def read_sheets(
    source: Source, pick: SheetPicker, meanwhile: Callable[[], object] | None = None
) -> list[pa.RecordBatch]:
    """The sheets `pick` loads from a workbook, once it is known to stay within the bounds above; InputError
    otherwise.

    The reader runs in a forked process limited to READER_MEMORY: calamine aborts its whole process when an
    allocation fails (a 5 KB sheet with cells at A2 and XFD1048576 asks for hundreds of gigabytes), and a damaged
    file may crash it outright. Such a death is the file's error, not the worker's. `meanwhile` runs in this
    process while the reader loads.

    The checks read the workbook mapped from its file, not as bytes of this process: the forked reader would
    count bytes as its own memory too (a 113 MB workbook beside the 750 MB its sheet takes to load)."""
    with tempfile.TemporaryDirectory(prefix="progression-read-") as folder:
        # The reader takes the workbook from a file: given bytes, it would copy them twice.
        workbook = source if isinstance(source, Path) else Path(folder, "workbook")
        if isinstance(source, bytes):
            workbook.write_bytes(source)
        with _mapped(workbook) as data:
            return _checked_and_read(data, workbook, pick, meanwhile, folder)


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise InputError("the file is empty (0 bytes)")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def _checked_and_read(
    data: mmap.mmap, workbook: Path, pick: SheetPicker, meanwhile: Callable[[], object] | None, folder: str
) -> list[pa.RecordBatch]:
    if data[:8] == _OLE2 and _is_encrypted(workbook):
        raise InputError("the workbook is password protected: remove the password and drop it again")
    parts = _declared_parts(data, workbook) if data[:4] == _ZIP else []
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: what it does is asserted through the parent
        _child_reads(str(workbook), pick, folder)
    try:
        # While the reader loads, what the parts really inflate to (a bomb's reader dies with it: killed below).
        for part in parts:
            _check_inflated_size(data, part)
        if meanwhile:  # after the fork, so nothing it imports is half-imported in the reader
            meanwhile()
        status = os.waitpid(pid, 0)[1]
    except BaseException:  # a bomb, or the task is stopped meanwhile: the reader goes too
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in _READER_CRASHES:
        said = _first_line(Path(folder, "stderr.txt"))
        raise InputError(
            f"the workbook cannot be read: the reader stopped on it "
            f"({signal.Signals(os.WTERMSIG(status)).name}{': ' + said if said else ''}); it is "
            f"damaged, or its cells lie so far apart that a sheet would take over "
            f"{READER_MEMORY >> 30} GiB to load"
        )
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if code == 0:
        batches = sorted(name for name in os.listdir(folder) if name.endswith(".arrow"))
        return [_read_batch(os.path.join(folder, f"{i}.arrow")) for i in range(len(batches))]
    told = Path(folder, "error.txt").read_text(encoding="utf-8") if Path(folder, "error.txt").exists() else ""
    if code == _REFUSED:
        raise InputError(told)
    # Stopped from outside (the task is being stopped, the machine is out of memory) or a fault of this code.
    raise ReaderStopped(f"the workbook reader's process ended with status {status:#x}: {told or 'no message'}")


_REFUSED = 3
# How a reader's process dies on a file: an abort (a failed allocation, a panic in a panic), a bad access.
_READER_CRASHES = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def _child_reads(source: str, pick: SheetPicker, folder: str) -> NoReturn:
    """The forked reader: load, write each batch as an Arrow file, and leave without the parent's exit work."""
    code, told = 1, ""
    try:
        # What the reader says as it dies (Rust prints there before it aborts) is kept for the message.
        os.dup2(os.open(os.path.join(folder, "stderr.txt"), os.O_WRONLY | os.O_CREAT, 0o600), 2)
        faulthandler.disable()  # a crash is told through the exit status, not as a dump into the task's log
        resource.setrlimit(resource.RLIMIT_AS, (_address_space() + READER_MEMORY, resource.RLIM_INFINITY))
        for number, batch in enumerate(pick(open_workbook(source))):
            with (
                pa.OSFile(os.path.join(folder, f"{number}.arrow"), "wb") as sink,
                pa.ipc.new_file(sink, batch.schema) as writer,
            ):
                writer.write_batch(batch)
        code = 0
    except InputError as exc:
        code, told = _REFUSED, str(exc)
    except MemoryError:
        code, told = _REFUSED, f"a sheet of the workbook takes over {READER_MEMORY >> 30} GiB to load"
    except BaseException as exc:
        told = f"{exc.__class__.__name__}: {exc}"
    finally:
        if told:
            Path(folder, "error.txt").write_text(told, encoding="utf-8")
        os._exit(code)


def _first_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    return lines[0][:200] if lines else ""


def _read_batch(path: str) -> pa.RecordBatch:
    # Mapped, not copied: the batch keeps the mapping (and so the unlinked file's pages) alive as long as it lives.
    return pa.ipc.open_file(pa.memory_map(path)).get_batch(0)


def _address_space() -> int:
    """The process's virtual size now: the reader's limit comes on top of what is mapped already."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _reader_error(exc: BaseException, what: str) -> InputError:
    # fastexcel raises its own errors for damaged files; a panic in its Rust code arrives as pyo3's
    # PanicException, a BaseException. Anything else (an interrupt, the task being stopped) goes on.
    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
        raise exc
    return InputError(f"{what} ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def _is_encrypted(workbook: Path) -> bool:
    """An OLE2 container is a legacy .xls, or an Office file encrypted with a password (its EncryptionInfo)."""
    import olefile

    try:
        with olefile.OleFileIO(str(workbook)) as container:
            return container.exists("EncryptionInfo")
    except Exception:  # olefile raises whatever its parsing meets in a damaged container: the reader says so
        return False


def _declared_parts(data: mmap.mmap, workbook: Path) -> list[zipfile.ZipInfo]:
    """A workbook's parts, once what they declare is within the bounds; their real sizes are checked as they are
    inflated (see _check_inflated_size): the reader inflates a part to its end whatever it declares."""
    # Every part zipfile lists starts with this signature, so counting it bounds the listing before it is made.
    listed, found = 0, data.find(_LISTED_PART)
    while found >= 0 and listed <= MAX_PARTS:
        listed, found = listed + 1, data.find(_LISTED_PART, found + 1)
    if listed > MAX_PARTS:
        raise InputError(f"the workbook has more than {MAX_PARTS:,} parts: it is damaged or a zip bomb")
    try:
        with zipfile.ZipFile(workbook) as listing:
            parts = listing.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise InputError(f"the workbook cannot be opened (a damaged zip: {exc})") from None
    declared = sum(part.file_size for part in parts)
    if declared > MAX_UNPACKED_SIZE:
        raise InputError(
            f"the workbook unpacks to {declared / 2**20:,.0f} MiB, over the "
            f"{MAX_UNPACKED_SIZE / 2**20:,.0f} MiB an import reads: it is damaged or a zip bomb"
        )
    for part in parts:
        if part.file_size >= GRACE_PART_SIZE and part.compress_size < part.file_size * MIN_INFLATE_RATIO:
            raise InputError(
                f"part {part.filename!r} of the workbook inflates "
                f"{part.file_size / max(part.compress_size, 1):,.0f} times, over the "
                f"{1 / MIN_INFLATE_RATIO:.0f} an import reads: it is damaged or a zip bomb"
            )
    return parts


def _check_inflated_size(data: mmap.mmap, part: zipfile.ZipInfo) -> None:
    """Inflate the part as the reader will (zipfile would stop at the declared size), a chunk at a time, and
    refuse it as soon as it passes the size it declares."""
    try:
        name_length, extra_length = struct.unpack_from("<HH", data, part.header_offset + 26)
    except struct.error:
        raise InputError(f"the workbook cannot be opened (part {part.filename!r} is cut off)") from None
    start = part.header_offset + 30 + name_length + extra_length
    end = min(start + part.compress_size, len(data))
    if part.compress_type == zipfile.ZIP_STORED:
        produced = max(0, end - start)
    elif part.compress_type == zipfile.ZIP_DEFLATED:
        inflate, produced = zlib.decompressobj(-zlib.MAX_WBITS), 0
        # Slices of the mapping are copies, a chunk at a time: no view of it outlives this function.
        for offset in range(start, end, _CHUNK):
            pending = data[offset : min(offset + _CHUNK, end)]
            while pending and produced <= part.file_size:
                produced += len(inflate.decompress(pending, _CHUNK))
                pending = inflate.unconsumed_tail
    else:
        raise InputError(f"part {part.filename!r} of the workbook is compressed in a way Excel never writes")
    if produced > part.file_size:
        raise InputError(
            f"part {part.filename!r} of the workbook unpacks to more than the {part.file_size:,} "
            "bytes it declares: it is damaged or a zip bomb"
        )


def _find_header(frame: pd.DataFrame, own: Aliases) -> tuple[int, dict[str, int]] | None:
    """The first row among the top few that holds both mandatory headers: (row index, field -> column index)."""
    for index in range(min(HEADER_SEARCH_ROWS, len(frame))):
        found = _match_headers(frame.iloc[index].tolist(), own)
        if all(f in found for f in MANDATORY):
            return index, found
    return None


def _describe_headers(frame: pd.DataFrame) -> str:
    for index in range(min(HEADER_SEARCH_ROWS, len(frame))):
        cells = [str(c).strip() for c in frame.iloc[index].tolist() if isinstance(c, str) and c.strip()]
        if cells:
            return ", ".join(repr(c) for c in cells)
    return "no headers"


def _mandatory(own_headers: dict[str, str]) -> str:
    """The mandatory columns by name, with the customer's own name for each where it has one."""
    own = {FIELD_OF_COLUMN_KEY[key]: header for key, header in own_headers.items()}
    return " and ".join(f"'{CANONICAL_HEADERS[f]}'" + (f" (or '{own[f]}')" if f in own else "") for f in MANDATORY)


def _missing_message(found: list[str], own_headers: dict[str, str]) -> str:
    return f"no sheet has the mandatory columns {_mandatory(own_headers)}; found {'; '.join(found) or 'nothing'}"


def _read_workbook(
    source: Source, max_rows: int, own_headers: dict[str, str], meanwhile: Callable[[], object] | None
) -> InputTable:
    own = own_aliases(own_headers)
    [whole] = read_sheets(source, lambda reader: [_sheet_with_headers(reader, own, own_headers)], meanwhile)
    sheet = whole.schema.metadata[SHEET_NAME].decode()
    top = whole.slice(0, HEADER_SEARCH_ROWS).to_pandas()
    header_index, _ = _find_header(top, own) or (0, {})
    _check_rows(whole.num_rows - header_index - 1, max_rows, f"sheet {sheet!r}")
    headers = [str(c).strip() if isinstance(c, str) else "" for c in top.iloc[header_index].tolist()]
    body = whole.slice(header_index + 1).rename_columns([f"__{i}" for i in range(len(headers))]).to_pandas()
    body.columns = headers
    # Excel row numbers: header at header_index + 1 (1-based), data starts one below.
    return _table(body, header_index + 2, sheet, own)


def _sheet_with_headers(reader: ExcelReader, own: Aliases, own_headers: dict[str, str]) -> pa.RecordBatch:
    """The first sheet with the mandatory headers, named under SHEET_NAME (run by the reader's process)."""
    seen: list[str] = []
    # A report workbook dropped back into the inbox: its Rejected sheet is what is meant to be imported again.
    for sheet in sorted(reader.sheet_names, key=lambda name: name != "Rejected"):
        whole = load_sheet(reader, sheet)
        top = whole.slice(0, HEADER_SEARCH_ROWS).to_pandas()
        if _find_header(top, own) is None:
            seen.append(f"sheet {sheet!r}: {_describe_headers(top)}")
            continue
        return whole.replace_schema_metadata({SHEET_NAME: sheet.encode()})
    raise InputError(_missing_message(seen, own_headers))


def _check_rows(rows: int, max_rows: int, where: str) -> None:
    if rows > max_rows:
        raise InputError(
            f"{where} has {rows:,} data rows, over the {max_rows:,} allowed for this customer "
            "(max_rows): split it into smaller files"
        )


def _read_csv(data: bytes, max_rows: int, own_headers: dict[str, str]) -> InputTable:
    own = own_aliases(own_headers)
    # Lines bound rows (a quoted cell may hold a line break, never the other way round): counted before parsing.
    lines = max(data.count(b"\n"), data.count(b"\r")) + (not data.endswith((b"\n", b"\r")))
    _check_rows(lines - 1, max_rows, "the CSV file")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InputError(_NOT_READABLE)
    # The delimiter is the one under which a header row (possibly below a title line) has the mandatory columns.
    top_lines = text.splitlines()[:HEADER_SEARCH_ROWS]
    if not any(line.strip() for line in top_lines):
        raise InputError("the file is empty (no rows)")
    for delimiter in (";", ",", "\t", "|"):
        top = pd.DataFrame(list(csv.reader(top_lines, delimiter=delimiter)))
        hit = _find_header(top, own)
        if hit is not None:
            break
    else:
        best = max((",", ";", "\t", "|"), key=lambda d: max(line.count(d) for line in top_lines))
        found = _describe_headers(pd.DataFrame(list(csv.reader(top_lines, delimiter=best))))
        raise InputError(f"the mandatory columns {_mandatory(own_headers)} are missing; found columns {found}")
    header_index, _ = hit
    try:
        with warnings.catch_warnings():
            # A row with more cells than headers would otherwise be shifted silently.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            body = pd.read_csv(
                io.StringIO(text),
                sep=delimiter,
                dtype="string",
                keep_default_na=False,
                skiprows=header_index,
                header=0,
                skip_blank_lines=False,
                index_col=False,
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise InputError(f"the CSV file cannot be read ({exc})") from None
    body = body.replace("", pd.NA)
    return _table(body, header_index + 2, None, own)


def _table(raw: pd.DataFrame, first_data_row: int, sheet: str | None, own: Aliases) -> InputTable:
    raw = raw.astype("string")
    raw.columns = [str(c).strip() for c in raw.columns]
    columns = {field: raw.columns[position] for field, position in _match_headers(list(raw.columns), own).items()}
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
_DAY_MONTH = (
    r"^(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<year>\d{4})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?$"
)
_SERIAL = re.compile(r"^\d{1,7}(?:\.\d+)?$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_LAST_SERIAL = 2958465  # 9999-12-31


@dataclass
class ParsedDates:
    completed_at: pd.Series  # datetime64[us, UTC]; NaT where unreadable or future
    error: pd.Series  # text reason or <NA>


def _arrow_text(raw: pd.Series) -> pa.Array:
    """The column as a trimmed Arrow string array: the regex work below runs in Arrow's C++ kernels."""
    array = pa.Array.from_pandas(raw.astype("string"))
    if isinstance(array, pa.ChunkedArray):  # a column read back from Parquet
        array = array.combine_chunks()
    return pc.utf8_trim_whitespace(array.cast(pa.string()))


def _mask(values: pa.Array) -> np.ndarray:
    return values.fill_null(False).to_numpy(zero_copy_only=False)


def parse_dates(
    raw: pd.Series, *, tz: ZoneInfo, date_order: str, now: datetime, import_date: date | None = None
) -> ParsedDates:
    """Every form the import accepts -> UTC. Date-only values mean midnight in the customer's time zone."""
    text = _arrow_text(raw)
    shown = pd.Series(text.to_pandas(), index=raw.index, dtype="string")  # for messages
    blank = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    local = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us]")  # naive, in the customer's zone
    aware = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")  # carried an explicit offset

    iso = _mask(pc.match_substring_regex(text, _ISO.pattern)) & ~blank
    if iso.any():
        has_offset = iso & _mask(pc.match_substring_regex(text, r"(?:Z|[+-]\d{2}:?\d{2})$"))
        plain = iso & ~has_offset
        if plain.any():
            local[plain] = pd.to_datetime(shown[plain], format="ISO8601", errors="coerce").astype("datetime64[us]")
        if has_offset.any():
            aware[has_offset] = pd.to_datetime(shown[has_offset], format="ISO8601", errors="coerce", utc=True).astype(
                "datetime64[us, UTC]"
            )

    day_month = _mask(pc.match_substring_regex(text, _DAY_MONTH)) & ~iso
    if day_month.any():
        parts = pc.extract_regex(text.filter(pa.array(day_month)), _DAY_MONTH)
        number = {
            name: pc.cast(pc.if_else(pc.equal(parts.field(name), ""), "0", parts.field(name)), pa.int64()).to_numpy()
            for name in ("a", "b", "year", "hour", "minute", "second")
        }
        day, month = (number["a"], number["b"]) if date_order == "DMY" else (number["b"], number["a"])
        pieces = pd.DataFrame(
            {
                "year": number["year"],
                "month": month,
                "day": day,
                "hour": number["hour"],
                "minute": number["minute"],
                "second": number["second"],
            }
        )
        local[day_month] = pd.to_datetime(pieces, errors="coerce").astype("datetime64[us]").to_numpy()

    serial = _mask(pc.match_substring_regex(text, _SERIAL.pattern)) & ~iso & ~day_month & ~blank
    if serial.any():
        numbers = pd.Series(pc.cast(text.filter(pa.array(serial)), pa.float64()).to_numpy(zero_copy_only=False))
        days = numbers.where(numbers.between(1, _LAST_SERIAL))
        stamps = _EXCEL_EPOCH + pd.to_timedelta(days * 86400, unit="s").dt.round("s")
        local[serial] = stamps.astype("datetime64[us]").to_numpy()

    # A wall-clock time that occurs twice (autumn DST change) is taken as its first occurrence (summer time).
    localised = local.dt.tz_localize(
        tz, ambiguous=np.ones(len(local), dtype=bool), nonexistent="shift_forward"
    ).dt.tz_convert("UTC")
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


def read_pairs(
    data: bytes, name: str, headers: tuple[str, str], aliases: Mapping[str, tuple[str, ...]] | None = None
) -> pd.DataFrame:
    """A workbook (first sheet with both headers) or `.csv` of pairs: columns ROW and the two `headers`, as trimmed
    text or <NA>, blank rows left out. Headers are matched as the import's are, under a title row if need be;
    `aliases` gives other spellings accepted for a header."""
    if _is_csv(data, name):
        text = data.decode("utf-8-sig", errors="replace")
        grids = [list(csv.reader(io.StringIO(text), delimiter=d)) for d in (";", ",", "\t", "|")]
    else:
        sheets = read_sheets(data, lambda reader: [load_sheet(reader, sheet) for sheet in reader.sheet_names])
        grids = [sheet.to_pandas().astype(object).where(lambda f: f.notna(), None).values.tolist() for sheet in sheets]
    wanted = [{header_key(h), *(header_key(a) for a in (aliases or {}).get(h, ()))} for h in headers]
    for grid in grids:
        for index, cells in enumerate(grid[:HEADER_SEARCH_ROWS]):
            keys = [header_key(c) if isinstance(c, str) else "" for c in cells]
            positions = [next((p for p, key in enumerate(keys) if key in spellings), -1) for spellings in wanted]
            if -1 not in positions:
                body = [
                    [(row[p] or "").strip() if p < len(row) else "" for p in positions] for row in grid[index + 1 :]
                ]
                frame = pd.DataFrame(body, columns=list(headers), dtype="string").replace("", pd.NA)
                frame.insert(0, ROW, np.arange(index + 2, index + 2 + len(frame), dtype="int64"))
                return frame[frame[list(headers)].notna().any(axis=1)].reset_index(drop=True)
    # The widest first row: under the wrong CSV delimiter a header row is one cell.
    found = max(
        (next((cells for cells in grid[:HEADER_SEARCH_ROWS] if any(cells)), []) for grid in grids), key=len, default=[]
    )
    raise InputError(
        "the columns "
        + " and ".join(f"'{h}'" for h in headers)
        + " are missing; found "
        + (", ".join(repr(str(c).strip()) for c in found if c and str(c).strip()) or "nothing")
    )
