"""The Docker deployment read as files (docker-compose.yml, Dockerfile, .env.example, deploy/customers.yaml and
the README's Production section): what a user would trip over, checked without Docker or Airflow running."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from compose import COMMON_ENV, COMPOSE, ROOT, SERVICES, VARIABLE, interpolated
from progression.customers import load_registry

AIRFLOW = {name: service for name, service in SERVICES.items() if "build" in service}  # built from the Dockerfile
PROJECT_MOUNTS = ("./dags:/opt/airflow/dags", "./plugins:/opt/airflow/plugins", "./include:/opt/airflow/include")


def host(url: str) -> str | None:
    return urlsplit(interpolated(url)).hostname


def strings(node) -> list[str]:
    """Every string value of the parsed compose file (compose interpolates values; comments are not read)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def env_example() -> dict[str, tuple[str, list[str]]]:
    """NAME -> (value, the comment lines right above it)."""
    entries, comments = {}, []
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif "=" in line:
            name, value = line.split("=", 1)
            entries[name.strip()] = (value.strip(), comments)
            comments = []
        else:
            comments = []
    return entries


def test_the_readme_lists_the_services_of_the_compose_file():
    section = re.search(r"^## Production\n(.*?)(?=^## )", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)
    assert section, "README.md has no '## Production' section"
    listed = re.findall(r"^- `([a-z0-9-]+)`", section[1], re.M)
    assert listed, "the Production section lists no services"
    assert sorted(set(listed) - set(SERVICES)) == [], "the README names services docker-compose.yml does not have"
    assert sorted(set(SERVICES) - set(listed)) == [], "docker-compose.yml has services the README does not list"


def test_airflow_runs_celery_with_every_component_and_reaches_its_services():
    assert COMMON_ENV["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    commands = {str(service.get("command")) for service in AIRFLOW.values()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert component in commands, f"no Airflow service runs `airflow {component}`"
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        assert host(COMMON_ENV[key]) in SERVICES, f"{key} points at {host(COMMON_ENV[key])!r}, not a service"
    assert COMMON_ENV["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")


def test_every_airflow_service_mounts_the_project_and_finds_the_registry():
    assert {"airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-worker"} <= set(AIRFLOW)
    for name, service in AIRFLOW.items():
        missing = [mount for mount in PROJECT_MOUNTS if mount not in service["volumes"]]
        assert not missing, f"{name} does not mount {missing}"
    for mount in PROJECT_MOUNTS:
        assert (ROOT / mount.split(":")[0]).is_dir(), mount
    # PROGRESSION_CUSTOMERS, seen through the mounts, is a file of this repository.
    registry = COMMON_ENV["PROGRESSION_CUSTOMERS"]
    on_host = [
        ROOT / source / registry.removeprefix(target + "/")
        for source, target, *_ in (m.split(":") for m in COMPOSE["x-airflow-common"]["volumes"])
        if source.startswith("./") and registry.startswith(target + "/")
    ]
    assert on_host and on_host[0].is_file(), f"PROGRESSION_CUSTOMERS={registry} is no file mounted from the repository"


def test_the_image_is_the_airflow_and_python_of_the_pins():
    base = re.search(r"^FROM\s+apache/airflow:(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert base, "the Dockerfile does not start from the official apache/airflow image"
    pin = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.M)
    assert pin, "requirements.txt pins no apache-airflow"
    version, _, python = base[1].partition("-python")
    assert version == pin[1], f"the image is Airflow {version}, requirements.txt pins {pin[1]}"
    requires = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert python == requires[1], f"the image has Python {python or '(unpinned)'}, the project {requires[1]}"


def test_every_variable_compose_reads_has_a_default_and_is_in_env_example():
    found = [m for value in strings(COMPOSE) for m in VARIABLE.finditer(value)]
    assert found, "docker-compose.yml reads no variable at all"
    bare = sorted({m["bare"] for m in found if m["bare"]})
    assert not bare, f"use ${{NAME:-default}}, not ${bare[0]}: compose reads these without a default: {bare}"
    defaults: dict[str, set[str | None]] = {}
    for m in found:
        defaults.setdefault(m["name"], set()).add(m["default"])
    documented = env_example()
    for name, values in sorted(defaults.items()):
        assert None not in values, f"${{{name}}} has no default: `docker compose up` without a .env breaks"
        assert len(values) == 1, f"${{{name}}} has different defaults: {sorted(values)}"
        assert name in documented, f"{name} is read by docker-compose.yml but not in .env.example"
        value, comments = documented[name]
        assert value == next(iter(values)), f".env.example sets {name}={value}, compose defaults to {values}"
        assert any("Default:" in line for line in comments), f"no comment with its default above {name}"
    assert sorted(set(documented) - set(defaults)) == [], ".env.example has variables compose never reads"


def test_long_running_services_are_health_checked_and_airflow_waits_for_init():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on a missing service {dependency}"
        if service.get("restart") == "no":
            continue  # one-shot
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        if name in AIRFLOW:
            assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
    init = SERVICES["airflow-init"]
    assert init.get("restart") == "no"
    for dependency in ("airflow-db", "platform-db", "minio"):
        assert init["depends_on"][dependency] == {"condition": "service_healthy"}, dependency


def test_the_api_server_publishes_8080():
    api = SERVICES["airflow-api-server"]
    assert "8080:8080" in api["ports"]
    assert "http://localhost:8080/" in " ".join(api["healthcheck"]["test"])


def test_the_compose_registry_loads_and_its_connections_are_defined():
    registry = load_registry(ROOT / "deploy" / "customers.yaml")
    assert registry.customers, "deploy/customers.yaml has no customer"
    for customer in registry.customers.values():
        platform = f"AIRFLOW_CONN_{customer.platform_conn_id.upper()}"
        assert platform in COMMON_ENV, f"{customer.slug}: no {platform} in x-airflow-common"
        if COMMON_ENV[platform].lstrip().startswith("{"):
            assert json.loads(interpolated(COMMON_ENV[platform]))["conn_type"] == "postgres"
        else:
            assert urlsplit(COMMON_ENV[platform]).scheme in ("postgres", "postgresql"), platform
            assert host(COMMON_ENV[platform]) in SERVICES, f"{platform} points at no service"
        storage = urlsplit(customer.storage)
        assert storage.scheme == "s3" and storage.username and storage.hostname, (
            f"{customer.slug}: storage {customer.storage} is not s3://<conn id>@<bucket>/<prefix>, which every "
            "worker can reach"
        )
        bucket = f"AIRFLOW_CONN_{storage.username.upper()}"
        assert bucket in COMMON_ENV, f"{customer.slug}: no {bucket} in x-airflow-common"
        connection = json.loads(interpolated(COMMON_ENV[bucket]))
        assert connection["conn_type"] == "aws", bucket
        endpoint = connection.get("extra", {}).get("endpoint_url")
        assert endpoint is None or urlsplit(endpoint).hostname in SERVICES, f"{bucket}: {endpoint} is no service"
