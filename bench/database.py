"""The PostgreSQL database a benchmark runs in, with the platform's and the project's tables."""

from __future__ import annotations

import sqlalchemy as sa


def benchmark_database(url: str, recreate: bool):
    """Create the database (dropped first with `recreate`) and its tables; the engine to use."""
    from progression import ledger
    from progression.db import engine_for
    from progression.platform import create_platform_tables

    database = sa.make_url(url).database
    admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
        if exists and recreate:
            conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        if not exists or recreate:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    engine = engine_for(url)
    create_platform_tables(engine)
    ledger.upgrade(engine)
    return engine
