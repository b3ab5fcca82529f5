"""The compose file's `airflow-init`, run here as docker compose would run it in its container: its own script and
environment, with the services it names (airflow-db, platform-db, minio) replaced by their local twins (the local
PostgreSQL, an S3 server on loopback). Then the demo it prepared is imported by the compose registry."""

from __future__ import annotations

import json
import subprocess

import boto3
import pytest
import sqlalchemy as sa

from compose import ROOT, SERVICES, environment, interpolated
from support import PG_URL, drop_database, loopback_s3, recreate_database, require_postgres

pytestmark = pytest.mark.e2e
DATABASES = {"metadata": "progression_compose_airflow", "platform": "progression_compose_platform"}


@pytest.fixture
def local_twins(tmp_path):
    """The init service's environment pointing at this machine: (environment, S3 endpoint, database URLs)."""
    require_postgres()
    admin = sa.make_url(PG_URL)
    urls = {key: recreate_database(admin, name) for key, name in DATABASES.items()}
    env = environment("airflow-init")
    storage = json.loads(env["AIRFLOW_CONN_PROGRESSION_STORAGE"])
    with loopback_s3() as endpoint:
        storage["extra"]["endpoint_url"] = endpoint  # minio:9000
        platform = urls["platform"]
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": urls["metadata"].render_as_string(hide_password=False),
                "AIRFLOW_CONN_PROGRESSION_DEMO": f"postgresql://{platform.username}@{platform.host}:{platform.port}/"
                f"{platform.database}",
                "AIRFLOW_CONN_PROGRESSION_STORAGE": json.dumps(storage),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "passwords.json"),
                "PROGRESSION_CUSTOMERS": str(ROOT / "deploy/customers.yaml"),
                "AIRFLOW_HOME": str(tmp_path),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}",
                "PATH": f"{ROOT / '.venv/bin'}:/usr/bin:/bin",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            }
        )
        yield env, endpoint, urls
    for name in DATABASES.values():
        drop_database(admin, name)


def init_script() -> list[str]:
    """The init service's command with the image's paths as they are in this repository."""
    command = [interpolated(part) for part in SERVICES["airflow-init"]["command"]]
    return [part.replace("/opt/airflow/bin/", f"{ROOT}/bin/") for part in command]


def test_the_init_service_prepares_airflow_and_the_demo_and_is_harmless_the_second_time(local_twins, tmp_path):
    env, endpoint, urls = local_twins
    first = subprocess.run(init_script(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert json.loads((tmp_path / "passwords.json").read_text()) == {"admin": env["AIRFLOW_ADMIN_PASSWORD"]}
    assert "created bucket progression-demo" in first.stdout

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1"
    )
    inbox = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="progression-demo", Prefix="demo/inbox/")["Contents"])
    assert len(inbox) == 3, inbox
    metadata = sa.create_engine(urls["metadata"])
    platform = sa.create_engine(urls["platform"])
    with metadata.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    with platform.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {"completions", "progression_runs", "progression_journal"} <= tables
        assert conn.execute(sa.text("SELECT slug FROM platforms")).scalars().all() == ["demo"]

    # What the nightly run does with the compose registry: the demo's samples land.
    done = subprocess.run(
        [str(ROOT / ".venv/bin/airflow"), "dags", "test", "progression_import"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with platform.connect() as conn:
        imported = conn.execute(sa.text("SELECT count(*) FROM completions WHERE source = 'import'")).scalar()
    assert imported > 0

    again = subprocess.run(init_script(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "bucket progression-demo exists" in again.stdout
    # The samples are dropped again, with the same bytes: the next nightly run skips them.
    done = subprocess.run(
        [str(ROOT / ".venv/bin/airflow"), "dags", "test", "progression_import"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with platform.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM completions WHERE source = 'import'")).scalar() == imported
        assert conn.execute(sa.text("SELECT count(*) FROM progression_runs WHERE status = 'skipped'")).scalar() == 3
    metadata.dispose()
    platform.dispose()
