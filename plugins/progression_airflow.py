"""Where the plain `progression` package meets Airflow: connections become engines, storage URLs become
ObjectStoragePath roots, and pipeline stages become tasks with a readable map index."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

from progression.customers import Customer, load_registry

if TYPE_CHECKING:  # the DAG files import this module at parse time: keep pandas and SQLAlchemy out of it
    from progression.pipeline import Target

FILE_LABEL = "progression_file"


def platform_url(conn_id: str):
    """The SQLAlchemy URL of the platform database behind an Airflow connection."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    kind = (connection.conn_type or "").lower()
    if kind == "sqlite":
        return f"sqlite:///{connection.host}"
    if kind in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=conn_id).sqlalchemy_url
    raise ValueError(f"connection {conn_id!r} is of type {kind!r}; platform databases are postgres or sqlite")


def platform_engine(conn_id: str):
    from progression.db import engine_for

    return engine_for(platform_url(conn_id))


def storage_root(url: str):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url if "://" in url else f"file://{url}")


def target_for(customer: Customer) -> Target:
    from progression.pipeline import Target

    return Target(customer=customer, root=storage_root(customer.storage),
                  engine=platform_engine(customer.platform_conn_id))


def target_of(slug: str) -> Target:
    return target_for(load_registry().get(slug))


def labelled(fn: Callable) -> Callable:
    """Name a mapped task instance after its file (e.g. `demo/activities/q3.xlsx`) instead of a number."""

    @functools.wraps(fn)
    def wrapper(job: dict, *args, **kwargs):
        from airflow.sdk import get_current_context

        get_current_context()[FILE_LABEL] = f"{job['customer']}/{job['path'].removeprefix('inbox/')}"
        return fn(job, *args, **kwargs)

    return wrapper
