# Progression pipelines. `make demo` and `make test` work from a fresh clone with only Python 3.11.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make test spreads its tests over one process per core (pytest-xdist): each has its own Airflow home and
# PostgreSQL schemas. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= auto

.PHONY: venv demo test lint e2e airflow bench clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first time only; log: var/logs/pip-install.log)..."
	@mkdir -p var/logs
	@$(VENV)/bin/pip install --disable-pip-version-check -r requirements.txt > var/logs/pip-install.log 2>&1 \
		|| (tail -30 var/logs/pip-install.log; exit 1)
	@touch $(STAMP)

var/airflow/.migrated: $(STAMP)
	@mkdir -p var/airflow var/logs
	@bin/airflow db migrate > var/logs/airflow-db-migrate.log 2>&1 || (tail -30 var/logs/airflow-db-migrate.log; exit 1)
	@touch $@

demo: var/airflow/.migrated
	@bin/progression-db upgrade progression_demo --with-platform-tables
	@bin/progression-db seed-demo demo
	@echo "running progression_import as the nightly run would (log: var/logs/demo-import.log)..."
	@bin/airflow dags test progression_import > var/logs/demo-import.log 2>&1 || (tail -40 var/logs/demo-import.log; exit 1)
	@bin/progression-db summary demo
	@echo "running progression_transfer, a journey replaced by another: first a dry run, then for real..."
	@bin/airflow dags test progression_transfer --conf "$$(bin/progression-db demo-transfer demo)" \
		> var/logs/demo-transfer-dry-run.log 2>&1 || (tail -40 var/logs/demo-transfer-dry-run.log; exit 1)
	@bin/progression-db summary demo
	@bin/airflow dags test progression_transfer --conf "$$(bin/progression-db demo-transfer demo --real)" \
		> var/logs/demo-transfer.log 2>&1 || (tail -40 var/logs/demo-transfer.log; exit 1)
	@bin/progression-db summary demo
	@echo "undoing the demo's latest run with progression_undo (log: var/logs/demo-undo.log)..."
	@bin/airflow dags test progression_undo --conf "$$(source bin/env.sh && python bin/progression_undo_demo.py conf demo)" \
		> var/logs/demo-undo.log 2>&1 || (tail -40 var/logs/demo-undo.log; exit 1)
	@source bin/env.sh && python bin/progression_undo_demo.py show demo

airflow: var/airflow/.migrated
	bin/airflow standalone

test: $(STAMP)
	@$(VENV)/bin/python -m pytest --ignore=tests/e2e -n $(TEST_WORKERS) $(PYTEST_ARGS)

# ruff (lint and format) over the code and its tests; mypy over the code, with the paths and settings in
# pyproject.toml. `ruff format` with the same paths rewrites what the format check refuses.
PY_PATHS := dags plugins include bin/progression_db.py bin/progression_undo_demo.py bin/demo_platform.py bench tests
lint: $(STAMP)
	@$(VENV)/bin/ruff check $(PY_PATHS)
	@$(VENV)/bin/ruff format --check $(PY_PATHS)
	@$(VENV)/bin/mypy

# Airflow as a cluster, on loopback: api-server, scheduler, dag-processor and a Celery worker with PostgreSQL
# metadata and the local Redis as broker (tests/e2e; stops what it started).
e2e: $(STAMP)
	@$(VENV)/bin/python -m pytest tests/e2e $(PYTEST_ARGS)

clean-demo:
	rm -rf var/

bench: $(STAMP)
	@PYTHONWARNINGS=ignore $(VENV)/bin/python bench/run.py $(BENCH_ARGS)
	@PYTHONWARNINGS=ignore $(VENV)/bin/python bench/small_files.py $(SMALL_FILES_ARGS)
