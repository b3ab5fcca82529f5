"""A customer's template workbooks, `templates/<type>.xlsx`: a sheet to fill, its instructions and the content.

Sheets, in order:
  Completions   the import's three headers, ready to fill. `Content uuid` has a drop-down of the platform's
                items of the template's type (Excel data validation on the whole column, as far down as the
                customer's `max_rows` reaches); what is picked is the uuid itself, so a filled template imports as it
                is. A drop-down shows one column only, so `Title (looked up)` beside it shows the title of the uuid
                picked (a formula of ours over the hidden list; the import ignores the column).
  Instructions  the date forms for the customer's `date_order` and time zone, the limits, where to drop the file.
  Content       every item of the type: uuid, title and, for activities and journeys, the uuids of their parents.
  Lists         hidden: uuid and title by title, what the drop-down and the title formula read.

Written with openpyxl, not the report writer (rustpy-xlsxwriter 0.8): its data validation takes a list only as
inline values (at most 255 characters, about six uuids), not a range of another sheet, and covers only rows it
writes, so an empty sheet to fill would get none. Text from the platform is written as text (a title that starts
with `=` is no formula), cleaned as the report writer cleans it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from progression import ledger, storage
from progression.customers import CONTENT_TYPES, EXCEL_MAX_ROWS, Customer
from progression.export import PARENT_HEADER, content_list, content_parents, local_text
from progression.platform import CONTENT_TYPE_OF, platform_id
from progression.read import CANONICAL_HEADERS, DATE, EMAIL, UUID
from progression.report import clean_cell
from progression.runs import Target

FOLDER = "templates"
FILL_SHEET, INSTRUCTIONS_SHEET, CONTENT_SHEET, LIST_SHEET = "Completions", "Instructions", "Content", "Lists"
HEADERS = [CANONICAL_HEADERS[EMAIL], CANONICAL_HEADERS[UUID], CANONICAL_HEADERS[DATE]]
TITLE_HEADER = "Title (looked up)"  # no alias of the import's columns: the import leaves it alone
LIST_HEADERS = [CANONICAL_HEADERS[UUID], "Title"]
TITLE_ROWS = 1_000  # rows given the title formula; a customer filling more copies it down
_BOLD = Font(bold=True)
_ON_EXISTING = {
    "keep": "that completion is kept",
    "earliest": "the earlier date is kept",
    "latest": "the later date is kept",
    "overwrite": "the file's date replaces it",
}


@dataclass(frozen=True)
class Item:
    uuid: str
    title: str
    parents: str  # `;`-separated parent uuids


def path_of(content_type: str) -> str:
    return f"{FOLDER}/{content_type}.xlsx"


def write_templates(target: Target) -> list[str]:
    """Write the customer's three templates from its platform as it is now; the paths written."""
    customer = target.customer
    with target.engine.connect() as conn:
        platform = platform_id(conn, customer.platform)
        listed = content_list(conn, platform, content_parents(conn, platform))
    written_at = local_text(ledger.utcnow().replace(microsecond=0), customer.tz)
    written = []
    for content_type in CONTENT_TYPES:
        kind = CONTENT_TYPE_OF[content_type]
        items = [Item(uuid, title, parents) for uuid, item_kind, title, parents in listed if item_kind == kind]
        buffer = io.BytesIO()
        template_workbook(customer, content_type, items, written_at).save(buffer)
        storage.write_bytes(target.root, path_of(content_type), buffer.getvalue())
        written.append(path_of(content_type))
    return written


def template_workbook(customer: Customer, content_type: str, items: list[Item], written_at: str) -> Workbook:
    book = Workbook()
    fill = book.active
    fill.title = FILL_SHEET
    last_row = min(customer.max_rows, EXCEL_MAX_ROWS - 1) + 1  # the header takes a row of Excel's
    _header(fill, [*HEADERS, TITLE_HEADER], [34, 40, 20, 48])
    if items:
        lists = f"{LIST_SHEET}!$A$2:$B${len(items) + 1}"
        for row in range(2, min(last_row, TITLE_ROWS + 1) + 1):
            fill.cell(row, 4, f'=IF(B{row}="","",IFERROR(VLOOKUP(B{row},{lists},2,FALSE),"not in the list"))')
        fill.add_data_validation(_uuid_drop_down(content_type, len(items), last_row, written_at))

    instructions = book.create_sheet(INSTRUCTIONS_SHEET)
    _header(instructions, ["Topic", "What to know"], [22, 110])
    _text_rows(instructions, instruction_lines(customer, content_type, bool(items), written_at))

    has_parents = content_type != "programmes"
    content = book.create_sheet(CONTENT_SHEET)
    _header(content, LIST_HEADERS + ([PARENT_HEADER] if has_parents else []), [40, 48, 80])
    _text_rows(content, [[item.uuid, item.title] + ([item.parents] if has_parents else []) for item in items])

    hidden = book.create_sheet(LIST_SHEET)
    hidden.sheet_state = "hidden"
    _header(hidden, LIST_HEADERS, [40, 48])
    _text_rows(
        hidden, [[item.uuid, item.title] for item in sorted(items, key=lambda item: (item.title.casefold(), item.uuid))]
    )
    return book


def _uuid_drop_down(content_type: str, count: int, last_row: int, written_at: str) -> DataValidation:
    """The drop-down on `Content uuid`. A warning, not a stop: content added after the template was written, or a
    uuid pasted in capitals, is still the customer's to enter; the import decides."""
    drop_down = DataValidation(
        type="list",
        formula1=f"{LIST_SHEET}!$A$2:$A${count + 1}",
        allow_blank=True,
        errorStyle="warning",
        showErrorMessage=True,
        showInputMessage=True,
        promptTitle="Content uuid",
        prompt=f"Pick one of the platform's {content_type}; its title shows in the column beside it.",
        errorTitle="Not in the list",
        error=f"This is not one of the platform's {content_type} as of {written_at}. Keep it anyway?",
    )
    drop_down.add(f"B2:B{last_row}")
    return drop_down


def instruction_lines(customer: Customer, content_type: str, has_items: bool, written_at: str) -> list[list[str]]:
    day_first = customer.date_order == "DMY"
    example = "31-03-2024, 31/03/2024 or 31.03.2024" if day_first else "03-31-2024, 03/31/2024 or 03.31.2024"
    lines = [
        [
            "Template",
            f"Completions of {content_type} for platform {customer.platform!r} "
            f"(customer {customer.slug}), written {written_at}.",
        ],
        [
            "How",
            f"Fill the {FILL_SHEET!r} sheet, one completion a row, and keep its headers. Only completions "
            "exist: there is no partial progress.",
        ],
        [HEADERS[0], "Mandatory: the user's e-mail address on the platform."],
        [
            HEADERS[1],
            f"Mandatory: pick from the drop-down, or copy from the {CONTENT_SHEET!r} sheet. "
            f"{TITLE_HEADER!r} shows the title of the uuid picked and is not imported."
            if has_items
            else f"Mandatory. The platform had no {content_type} when this was written.",
        ],
        [HEADERS[2], "Optional. Left blank, it is the day of the import."],
        [
            "Date forms",
            f"A date cell of Excel; {example} "
            f"({'day' if day_first else 'month'} first: date order {customer.date_order}); "
            "2024-03-31; any of these with a time such as 14:30; an Excel date number.",
        ],
        [
            "Time zone",
            f"A date without a time is midnight in {customer.timezone}; a time without an offset is "
            f"{customer.timezone} time. A date in the future rejects the row.",
        ],
        [
            "Limits",
            f"At most {customer.max_rows:,} rows a file. When more than {customer.max_error_rate:.0%} of "
            "the rows are rejected, nothing of the file is imported.",
        ],
        [
            "Existing completions",
            f"When the user has completed the item already, {_ON_EXISTING[customer.on_existing]} "
            f"(on_existing: {customer.on_existing}).",
        ],
        [
            "Where",
            f"Drop the file in inbox/{content_type}/ of your storage to import it; in check/{content_type}/ "
            "to have it checked against the platform without importing anything.",
        ],
        [
            "Report",
            "Every file gets a report in reports/<date>/: every row with its outcome and reason, and a "
            "Rejected sheet to fix and drop again as it is.",
        ],
    ]
    if content_type != "activities":
        lines.insert(
            5,
            [
                "Hierarchy",
                "Completing a journey also completes its activities; completing a programme "
                "also completes its journeys and their activities, with the same date.",
            ],
        )
    return lines


def _header(sheet: Worksheet, headers: list[str], widths: list[float]) -> None:
    _text_rows(sheet, [headers], first_row=1)
    for cell in sheet[1]:
        cell.font = _BOLD
    for column, width in zip("ABCD", widths):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"


def _text_rows(sheet: Worksheet, rows: Sequence[Sequence[object]], first_row: int = 2) -> None:
    """Rows of text cells from `first_row` on: openpyxl takes a string starting with `=` for a formula unless told
    otherwise."""
    for row, values in enumerate(rows, start=first_row):
        for column, value in enumerate(values, start=1):
            cell = sheet.cell(row, column, clean_cell(value))
            if isinstance(cell.value, str):
                cell.data_type = "s"
