"""Airflow as a cluster runs it, on loopback: api-server, scheduler, dag-processor and a Celery worker as separate
processes, PostgreSQL for the metadata, the local Redis as broker. Started with `bin/airflow`, as a person would,
and stopped by process group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
ADMIN, ADMIN_PASSWORD = "admin", "e2e-admin-password"
COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{api_port}"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    # Two workers, as `docker compose up --scale airflow-worker=2` gives: the files of a run spread over both.
    "worker-1": ["celery", "worker", "--concurrency", "2", "--celery-hostname", "worker-1@%h"],
    "worker-2": ["celery", "worker", "--concurrency", "2", "--celery-hostname", "worker-2@%h"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_environment(home: Path, metadata: sa.URL, broker: str, api_port: int) -> dict[str, str]:
    """What every component shares, as the compose file's common block sets it."""
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN: ADMIN_PASSWORD}))
    sql = metadata.render_as_string(hide_password=False)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sql,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


@dataclass
class Cluster:
    env: dict[str, str]
    api: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str = ""

    def start(self, api_port: int) -> None:
        for name, args in COMPONENTS.items():
            log = (self.logs / f"{name}.log").open("w")
            command = [str(ROOT / "bin/airflow"), *(a.format(api_port=api_port) for a in args)]
            # Each worker serves its task logs on a port of its own (on one host they would collide).
            env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            self.processes[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def stop(self) -> dict[str, int]:
        """SIGTERM to each component's process group, SIGKILL to what is left after 30 s; their exit codes."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.processes.values():
            _signal_group(process, signal.SIGKILL)  # children a component left behind
        return {name: process.returncode for name, process in self.processes.items()}

    def dead(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def tail(self, lines: int = 40) -> str:
        parts = []
        for name in self.processes:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def wait_for(self, what: str, check, timeout: float = 180, every: float = 1.0):
        """Poll `check` until it returns something truthy; fail with the components' logs otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead():
                raise AssertionError(f"{', '.join(self.dead())} exited while waiting for {what}\n{self.tail()}")
            try:
                found = check()
            except (httpx.ConnectError, httpx.TimeoutException):
                found = None  # not listening yet, or busy
            if found:
                return found
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tail()}")

    def login(self) -> None:
        response = httpx.post(f"{self.api}/auth/token", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Airflow's REST API (`/api/v2...`), or another app of the API server with a path starting elsewhere."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = f"{self.api}{path}" if path.startswith("/progression") else f"{self.api}/api/v2{path}"
        return httpx.request(method, url, headers=headers, timeout=30, **kwargs)

    def tasks_received(self, worker: str) -> int:
        """Task instances a Celery worker was handed, from its log."""
        return (self.logs / f"{worker}.log").read_text(errors="replace").count("] received")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
