"""What the tasks of every progression DAG load before they work: pandas, Arrow, the database drivers, the workbook
reader, Great Expectations (about 3 s alone) and the stages themselves. A process that forks task processes (a
Celery worker) imports this once, so each task starts with them loaded instead of importing them again: about
4 s of every import task's start, and 1 s of every other task's."""

from __future__ import annotations

import gc

import fastexcel  # noqa: F401
import great_expectations  # noqa: F401
import pandas  # noqa: F401
import psycopg  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sqlalchemy  # noqa: F401

from progression import export, health, merge, pipeline, transfer, undo  # noqa: F401

# Out of the collector's sight from here on (in this process and every fork of it): a task's own allocations
# trigger collections, which would otherwise walk all of the above each time (about 0.5 s per collection).
gc.freeze()
