# The project's environment for bin/airflow and bin/progression-db. Variables the caller sets win.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROGRESSION_HOME="${PROGRESSION_HOME:-$root}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$root/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$root/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$root/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# Celery workers load the tasks' libraries once, before they fork a process per task (plugins/progression_celery.py).
export AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS="${AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS:-progression_celery.CELERY_CONFIG}"
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-WARNING}"
export PROGRESSION_CUSTOMERS="${PROGRESSION_CUSTOMERS:-$root/include/customers.yaml}"
# The embedded default: the demo customer's platform database is SQLite under var/.
demo_connection="{\"conn_type\": \"sqlite\", \"host\": \"$root/var/platform.db\"}"
export AIRFLOW_CONN_PROGRESSION_DEMO="${AIRFLOW_CONN_PROGRESSION_DEMO:-$demo_connection}"
export PATH="$root/.venv/bin:$PATH"  # airflow standalone starts its components as `airflow ...`
export PYTHONPATH="$root/include:$root/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
mkdir -p "$AIRFLOW_HOME"
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "$(basename "$0"): no .venv yet; run 'make venv' (or 'make demo') first" >&2
  exit 1
fi
