"""A customer whose storage is `s3://<conn_id>@bucket/prefix`, against a real S3 protocol server on loopback (moto in
server mode): files are found, fetched, staged, archived and reported in the bucket through ObjectStoragePath and
the Amazon provider, as they are on AWS or MinIO. Some stages run here without Airflow (an export, the demo's
import) on the same bucket; a file sent again into a bucket: tests/progression/test_pipeline.py (every storage)."""

from __future__ import annotations

import io
import json
import subprocess

import boto3
import openpyxl
import pytest

from dags_support import ROOT, run_dag, summary_line
from demo_platform import describe, seed_platform, workbook_bytes
from progression import ledger
from progression.customers import load_registry
from progression.db import engine_for
from progression.export import run_export
from progression.pipeline import plan, run_file
from progression.platform import create_platform_tables
from progression.runs import Target
from progression_airflow import storage_root
from support import NOW, SMALL, complete, count_completions, loopback_s3, people, write_registry

pytestmark = pytest.mark.airflow
BUCKET, PREFIX = "hooli-files", "lms"


@pytest.fixture(scope="module")
def s3_server():
    with loopback_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_server, world):
    """The `hooli` customer: a SQLite platform, its files in a bucket of the S3 server behind an `aws` connection."""
    client = boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id="hooli", aws_secret_access_key="secret", region_name="us-east-1"
    )
    client.create_bucket(Bucket=BUCKET)
    db = world["dir"] / "hooli.db"
    engine = engine_for(f"sqlite:///{db}")
    create_platform_tables(engine)
    ledger.upgrade(engine)
    seed_platform(engine, "hooli", sizes=SMALL)
    registry = write_registry(
        world["dir"] / "s3-customers.yaml",
        {
            "hooli": {
                "platform_conn_id": "hooli_db",
                "platform": "hooli",
                "storage": f"s3://hooli_files@{BUCKET}/{PREFIX}",
                "timezone": "Europe/Amsterdam",
                "max_error_rate": 0.5,
            }
        },
    )
    env = {
        **world["env"],
        "PROGRESSION_CUSTOMERS": str(registry),
        "AIRFLOW_CONN_HOOLI_DB": json.dumps({"conn_type": "sqlite", "host": str(db)}),
        "AIRFLOW_CONN_HOOLI_FILES": json.dumps(
            {
                "conn_type": "aws",
                "login": "hooli",
                "password": "secret",
                "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
            }
        ),
    }
    yield {**world, "env": env, "client": client, "engine": engine}
    for key in keys(client):
        client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
    client.delete_bucket(Bucket=BUCKET)


def in_process(s3, monkeypatch) -> Target:
    """The `hooli` customer as the stages get it in a task, to run one without Airflow."""
    monkeypatch.setenv("AIRFLOW_CONN_HOOLI_FILES", s3["env"]["AIRFLOW_CONN_HOOLI_FILES"])
    customer = load_registry(s3["env"]["PROGRESSION_CUSTOMERS"]).get("hooli")
    return Target(customer=customer, root=storage_root(customer.storage), engine=s3["engine"])


def keys(client) -> list[str]:
    """Every object under the customer's prefix, relative to it."""
    listed = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return sorted(item["Key"].removeprefix(f"{PREFIX}/") for page in listed for item in page.get("Contents", []))


def put(s3, rel: str, data: bytes) -> None:
    s3["client"].put_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}", Body=data)


def get(s3, rel: str) -> bytes:
    return s3["client"].get_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}")["Body"].read()


def test_the_nightly_import_reads_archives_and_reports_in_the_bucket(s3):
    found = describe(s3["engine"], "hooli")
    good = workbook_bytes(
        ["Email", "Content uuid", "Completion date"],
        [[found.emails[i], found.uuids["activity"][i], "2024-03-31"] for i in range(3)]
        + [["ghost@nowhere.example", found.uuids["activity"][0], "2024-03-31"]],
    )
    bad = workbook_bytes(
        ["Email", "Content uuid", "Completion date"],
        [[f"ghost{i}@nowhere.example", found.uuids["activity"][0], "2024-03-31"] for i in range(3)],
    )
    put(s3, "inbox/activities/q3.xlsx", good)
    put(s3, "inbox/activities/bad.xlsx", bad)
    put(s3, "inbox/journeys/j.csv", f"Email,Content uuid\n{found.emails[5]},{found.uuids['journey'][0]}\n".encode())

    done = run_dag(s3, "progression_import", env=s3["env"])
    summary = summary_line(done, "progression_import")
    assert sorted(summary["succeeded"]) == ["hooli/activities/q3.xlsx", "hooli/journeys/j.csv"]
    assert summary["failed"] == ["hooli/activities/bad.xlsx"]
    assert summary["imported"] == 4 and summary["rejected"] >= 1
    assert count_completions(s3["engine"], "import") == 4 + summary["derived_written"]

    stored = keys(s3["client"])
    assert not [key for key in stored if key.startswith(("inbox/", "staging/"))], stored
    assert get(s3, "processed/activities/q3.xlsx") == good and get(s3, "failed/activities/bad.xlsx") == bad
    assert "processed/journeys/j.csv" in stored
    report = openpyxl.load_workbook(io.BytesIO(get(s3, summary["reports"]["hooli/activities/q3.xlsx"])), read_only=True)
    assert "Rejected" in report.sheetnames
    assert summary["reports"]["hooli/activities/bad.xlsx"] in stored


def test_a_transfer_workbook_and_an_export_in_the_bucket(s3, monkeypatch):
    found = describe(s3["engine"], "hooli")
    journey_0, journey_2 = found.uuids["journey"][0], found.uuids["journey"][2]  # journey 2: the second programme's
    complete(s3["engine"], people(s3["engine"], "hooli").group_1, journey_0, "2024-03-31")
    put(
        s3,
        "inbox/transfers/pairs.xlsx",
        workbook_bytes(["Old content uuid", "New content uuid"], [[journey_0, journey_2]]),
    )
    done = run_dag(
        s3,
        "progression_transfer",
        {"customer": "hooli", "path": "inbox/transfers/pairs.xlsx", "dry_run": False},
        env=s3["env"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert count_completions(s3["engine"], "transfer") >= 1
    assert "processed/transfers/pairs.xlsx" in keys(s3["client"])

    exported = run_export(in_process(s3, monkeypatch), airflow_run_id="manual__export")
    book = openpyxl.load_workbook(io.BytesIO(get(s3, exported["report"])), read_only=True)
    assert book.sheetnames == ["Summary", "#Activities", "#Journeys", "#Programmes", "Content"]
    assert sum(exported["completions"].values()) == count_completions(s3["engine"])


def test_the_demo_seeds_its_sample_files_into_a_bucket(s3, monkeypatch):
    """What the compose file's init service does for the demo customer; its files then import from the bucket (by
    the stages here: the import DAG on a bucket is the first test's)."""
    done = subprocess.run(
        [str(ROOT / "bin/progression-db"), "seed-demo", "hooli"],
        env=s3["env"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    inbox = [key for key in keys(s3["client"]) if key.startswith("inbox/")]
    assert len(inbox) == 3 and "dropped 3 sample file(s)" in done.stdout
    target = in_process(s3, monkeypatch)
    jobs = plan(
        target,
        path=None,
        content_type=None,
        dry_run=False,
        on_existing=None,
        force=False,
        airflow_run_id="manual__demo",
        started=NOW,
    )
    imported = [run_file(target, job) for job in jobs]
    assert [job.status for job in imported] == ["ok"] * 3 and sum(job.counts["imported"] for job in imported) > 0
