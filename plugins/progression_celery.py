"""The Celery workers' configuration (`[celery] celery_config_options`): Airflow's own, plus `progression.preload`
imported when a worker starts. Airflow forks a process per task from the worker, and each fork starts with what
the worker loaded (Airflow preloads its own operators the same way). Kept out of the plugin manager's imports by
`.airflowignore`: only Celery needs it."""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "progression.preload")}
