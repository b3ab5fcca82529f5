"""Engines for the platform databases: PostgreSQL in production, SQLite for the embedded default."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_engines: dict[str, Engine] = {}


def engine_for(url: str | sa.URL) -> Engine:
    """One engine per URL per process. SQLite gets real transactions (BEGIN IMMEDIATE) and WAL."""
    key = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if key in _engines:
        return _engines[key]
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, so DDL and DML share it
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    _engines[key] = engine
    return engine
