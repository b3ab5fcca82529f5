"""docker-compose.yml as `docker compose up` without a .env reads it: for the tests that check the file and the
one that runs its init service here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict] = COMPOSE["services"]
COMMON_ENV: dict[str, str] = COMPOSE["x-airflow-common"]["environment"]
# What compose reads from the environment: `${NAME}`, `${NAME:-default}`, `${NAME-default}` or `$NAME`;
# `$$` is a literal `$` left for the container's shell.
VARIABLE = re.compile(r"(?<!\$)\$(?:\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))")


def interpolated(value: str) -> str:
    """A compose value as `docker compose up` without a .env sees it."""
    return VARIABLE.sub(lambda m: m["default"] or "", value).replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    """A service's environment, interpolated."""
    return {name: interpolated(str(value)) for name, value in SERVICES[service].get("environment", {}).items()}
