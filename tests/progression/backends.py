"""A customer's storage on every backend the DAGs use (pathlib.Path, ObjectStoragePath
file:// and ObjectStoragePath s3:// against a real S3 protocol server on loopback)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import drop

BUCKET, S3_CONN = "storage-tests", "storage_tests"


@dataclass
class Backend:
    """A customer's root as storage.py gets it, and the customer's own view of the same files."""

    root: Any
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]
    files: Callable[[], list[str]]  # every file (and link) under the root, relative, sorted


def local_backend(base: Path, root: Any) -> Backend:
    def files() -> list[str]:
        found = []
        for folder, dirs, names in os.walk(base):  # does not descend into linked folders
            found += [os.path.relpath(os.path.join(folder, name), base) for name in names]
            found += [
                os.path.relpath(os.path.join(folder, name), base)
                for name in dirs
                if os.path.islink(os.path.join(folder, name))
            ]
        return sorted(found)

    def put(rel: str, data: bytes) -> None:
        drop(base, rel, data)

    return Backend(root=root, put=put, get=lambda rel: (base / rel).read_bytes(), files=files)


def s3_backend(client, prefix: str) -> Backend:
    from airflow.sdk import ObjectStoragePath

    def files() -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
        return sorted(item["Key"].removeprefix(f"{prefix}/") for page in pages for item in page.get("Contents", []))

    def put(rel: str, data: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{rel}", Body=data)

    return Backend(
        root=ObjectStoragePath(f"s3://{S3_CONN}@{BUCKET}/{prefix}"),
        put=put,
        get=lambda rel: client.get_object(Bucket=BUCKET, Key=f"{prefix}/{rel}")["Body"].read(),
        files=files,
    )


def make_backend(kind: str, tmp_path: Path, request) -> Backend:
    if kind == "s3":
        return s3_backend(request.getfixturevalue("s3_endpoint"), f"acme-{uuid.uuid4().hex[:8]}")
    base = tmp_path / "acme"
    base.mkdir()
    if kind == "path":
        return local_backend(base, base)
    from airflow.sdk import ObjectStoragePath

    return local_backend(base, ObjectStoragePath(f"file://{base}"))
