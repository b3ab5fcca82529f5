"""The benchmark's data: the large platform and the large completions workbooks (bench/run.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import openpyxl

from demo_platform import DemoSizes, Platform

BENCHMARK_SIZES = DemoSizes(
    users=50_000,
    programmes=40,
    journeys_per_programme=5,
    activities_per_journey=8,
    shared_items=20,
    standalone_activities=160,
    groups=50,
    users_without_group=2_000,
    seed=2026,
)


def large_workbook(
    found: Platform,
    kind: str,
    rows: int,
    path,
    *,
    bad_share: float = 0.01,
    blank_share: float = 0.05,
    seed: int = 5,
    distinct: bool = False,
) -> None:
    """A big completions workbook for the benchmark: real date cells and text dates, `bad_share` rows that must
    be rejected (unknown users, malformed uuids, unreadable dates) and `blank_share` blank dates. With
    `distinct`, every (user, item) pair appears once, so a programmes file multiplies fully."""
    import numpy as np

    rng = np.random.default_rng(seed)
    emails = np.array(found.emails, dtype=object)
    items = np.array(found.uuids[kind], dtype=object)
    if distinct:
        picks = rng.choice(len(emails) * len(items), size=rows, replace=False)
        user_index, item_index = picks // len(items), picks % len(items)
    else:
        user_index, item_index = rng.integers(0, len(emails), rows), rng.integers(0, len(items), rows)
    base = datetime(2025, 6, 30)
    days = rng.integers(1, 700, rows)
    kind_of_row = rng.random(rows)
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Completions")
    sheet.append(["User email", "Content uuid", "Completion date"])
    for i in range(rows):
        email, item = emails[user_index[i]], items[item_index[i]]
        day = base - timedelta(days=int(days[i]))
        when: datetime | str | None = day
        r = kind_of_row[i]
        if r < bad_share / 3:
            email = f"unknown.{i}@nowhere.example"
        elif r < 2 * bad_share / 3:
            item = item[:-4] + "zzzz"
        elif r < bad_share:
            when = "not a date"
        elif r < bad_share + blank_share:
            when = None
        elif i % 3 == 1:
            when = day.strftime("%d-%m-%Y")
        sheet.append([email, item, when])
    book.save(path)


def wide_workbook(found, rows: int, path: Path) -> None:
    """An activity workbook with four free-text columns beside the three it needs, as customers' exports carry:
    about 100 MB at 1,048,575 rows (the size the memory bound of an import is stated for)."""
    import numpy as np
    import pyarrow as pa
    import rustpy_xlsxwriter

    rng = np.random.default_rng(7)
    emails = np.array(found.emails, dtype=object)[rng.integers(0, len(found.emails), rows)]
    items = np.array(found.uuids["activity"], dtype=object)[rng.integers(0, len(found.uuids["activity"]), rows)]
    days = np.datetime64("2025-06-30") - rng.integers(1, 700, rows).astype("timedelta64[D]")
    notes = [
        pa.array([f"note {a:x} {b:x}" for a, b in zip(rng.integers(0, 2**40, rows), rng.integers(0, 2**30, rows))])
        for _ in range(4)
    ]
    table = pa.table(
        [pa.array(emails, pa.string()), pa.array(items, pa.string()), pa.array(days.astype(str)), *notes],
        names=["User email", "Content uuid", "Completion date", "Team", "Cost centre", "Manager", "Note"],
    )
    with path.open("wb") as file:
        rustpy_xlsxwriter.write_worksheets([("Completions", table)], file)
