"""What the tasks of every progression DAG load before they work: pandas, Arrow, the database drivers, the workbook
reader, Great Expectations (2-3 s alone) and the stages themselves. A process that forks task processes (a
Celery worker) imports this once, so each task starts with them loaded instead of importing them again: about
4 s of every import task's start, and 1 s of every other task's. It then runs the import's in-memory steps once
on a few made-up rows (warm_up)."""

from __future__ import annotations

import gc
import io
import logging
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import fastexcel  # noqa: F401
import pandas as pd
import psycopg  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sqlalchemy  # noqa: F401

from progression import export, health, merge, pipeline, transfer, undo  # noqa: F401
from progression.expand import expand_completions, without_access
from progression.platform import PlatformSnapshot
from progression.read import read_input
from progression.resolve import repeated_rows, resolve_rows
from progression.validate import import_great_expectations, validate_rows

import_great_expectations()

log = logging.getLogger(__name__)

WARM_UP_CSV = b"""User email;Content uuid;Completion date
ann@example.com;0b0e7c3e-6c57-4a39-9a4e-0b1f1d1a0001;2024-03-31 00:00:00
ann@example.com;0b0e7c3e-6c57-4a39-9a4e-0b1f1d1a0002;31-03-2024
bob@example.com;0b0e7c3e-6c57-4a39-9a4e-0b1f1d1a0001;45382
bob@example.com;Onboarding;2024-03-31T09:30:00+02:00
not an e-mail;0b0e7c3e-6c57-4a39-9a4e-0b1f1d1a0002;
"""


def warm_up() -> None:
    """The first call of many library paths sets them up (Arrow's kernels, pandas' string, date and group-by
    paths, the GX context and its metrics): 0.5-1 s over a million-row import's first three tasks. Paid here
    once per worker instead of in every task it forks. Pure: no database, no storage."""
    table = read_input(WARM_UP_CSV, "warm-up.csv")
    valid, _ = validate_rows(
        table.canonical(),
        table.columns,
        tz=ZoneInfo("Europe/Amsterdam"),
        date_order="DMY",
        now=datetime.now(timezone.utc),
    )
    platform = PlatformSnapshot(
        platform_id=1,
        users=pd.DataFrame({"user_id": [1, 2], "email_key": ["ann@example.com", "bob@example.com"]}),
        content=pd.DataFrame(
            {
                "content_id": [10, 11, 12],
                "uuid_key": [f"0b0e7c3e-6c57-4a39-9a4e-0b1f1d1a000{n}" for n in (1, 2, 3)],
                "type": ["activity", "activity", "journey"],
                "title_key": ["first", "second", "onboarding"],
            }
        ),
        edges=pd.DataFrame({"parent_id": [12, 12], "child_id": [10, 11]}),
    )
    resolved, _ = resolve_rows(valid, platform, "activities", "warm-up")
    resolved["duplicate_of"] = repeated_rows(resolved)
    without_access(resolved, pd.DataFrame({"user_id": [1], "assigned_id": [12]}), platform.edges)
    completions = expand_completions(resolved, platform.edges)
    buffer = io.BytesIO()
    completions.to_parquet(buffer, index=False)
    pd.read_parquet(io.BytesIO(buffer.getvalue()))


try:
    warm_up()
except Exception:  # noqa: BLE001 - a worker that did not warm up still works, each task sets up for itself
    log.warning("progression.preload: the warm-up failed; tasks set their libraries up themselves", exc_info=True)

# Out of the collector's sight from here on (in this process and every fork of it): a task's own allocations
# trigger collections, which would otherwise walk all of the above each time (about 0.5 s per collection).
gc.freeze()
