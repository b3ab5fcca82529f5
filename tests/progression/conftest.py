"""Fixtures of the stage tests: a customer's storage on every backend the DAGs use."""

from __future__ import annotations

import json

import boto3
import pytest

from backends import BUCKET, S3_CONN, Backend, make_backend
from support import loopback_s3


@pytest.fixture(scope="session")
def s3_endpoint():
    """The S3 server, and an `aws` connection to it as the DAGs would have one. One for the session: Airflow's
    object storage keeps one filesystem per connection for the life of the process."""
    with loopback_s3() as endpoint, pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            f"AIRFLOW_CONN_{S3_CONN.upper()}",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": "acme",
                    "password": "secret-key",
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="acme",
            aws_secret_access_key="secret-key",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(params=["path", "file", "s3"])
def backend(request, tmp_path) -> Backend:
    return make_backend(request.param, tmp_path, request)
