# Progression pipelines. `make demo` and `make test` work from a fresh clone with only Python 3.11.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test airflow bench clean-demo

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

airflow: var/airflow/.migrated
	bin/airflow standalone

test: $(STAMP)
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf var/

bench: $(STAMP)
	@PYTHONWARNINGS=ignore $(VENV)/bin/python bench/run.py $(BENCH_ARGS)
