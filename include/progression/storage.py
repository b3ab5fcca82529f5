"""A customer's storage: inbox, staging, archive and reports, on any pathlib-like root (ObjectStoragePath, Path)."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from progression.customers import CONTENT_TYPES

INBOX, PROCESSED, FAILED, REPORTS, STAGING = "inbox", "processed", "failed", "reports", "staging"
READABLE_SUFFIXES = (".xlsx", ".csv")
Root = Any  # ObjectStoragePath in the DAGs, pathlib.Path in tests: both are pathlib-like


class PathRefused(ValueError):
    """A path in a run conf that points outside the customer's storage root."""


def relative(path: str) -> str:
    """A clean relative path inside the root, or PathRefused."""
    if not path or "://" in path or path.startswith(("/", "\\", "~")):
        raise PathRefused(f"path {path!r} must be relative to the customer's storage root, e.g. "
                          "'inbox/activities/file.xlsx'")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if any(part in ("..", ".") for part in parts):
        raise PathRefused(f"path {path!r} leaves the customer's storage root")
    return "/".join(parts)


def at(root: Root, rel: str) -> Root:
    target = root
    for part in rel.split("/"):
        target = target / part
    return target


def is_candidate(name: str) -> bool:
    """Files to import: not hidden, not an Excel lock file (`~$book.xlsx`)."""
    return not name.startswith((".", "~$"))


def inbox_files(root: Root, content_type: str | None = None) -> list[tuple[str, str | None]]:
    """(relative path, content type from its folder) for every file waiting in the inbox, oldest name first."""
    inbox = at(root, INBOX)
    if not inbox.exists():
        return []
    found: list[tuple[str, str | None]] = []
    folders = [content_type] if content_type else list(CONTENT_TYPES)
    for entry in sorted(inbox.iterdir(), key=lambda p: p.name):
        if entry.is_file() and is_candidate(entry.name):
            found.append((f"{INBOX}/{entry.name}", None))
    for folder in folders:
        directory = inbox / folder
        if directory.exists():
            for entry in sorted(directory.iterdir(), key=lambda p: p.name):
                if entry.is_file() and is_candidate(entry.name):
                    found.append((f"{INBOX}/{folder}/{entry.name}", folder))
    return found


def type_from_folder(rel: str) -> str | None:
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == INBOX and parts[1] in CONTENT_TYPES else None


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_name(root: Root, folder: str, name: str, stamp: datetime) -> str:
    """`folder/name`, or with the run's time before the suffix when a file of that name is already there."""
    rel = f"{folder}/{name}"
    if not at(root, rel).exists():
        return rel
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if dot else (name, "")
    return f"{folder}/{stem}.{stamp:%Y%m%dT%H%M%S}{suffix}"


def move(root: Root, source_rel: str, target_rel: str) -> None:
    source, target = at(root, source_rel), at(root, target_rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy-then-delete works on every backend (a rename is a copy on object stores anyway).
    target.write_bytes(source.read_bytes())
    source.unlink()


def write_bytes(root: Root, rel: str, data: bytes) -> None:
    target = at(root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def write_frame(root: Root, rel: str, frame: pd.DataFrame) -> None:
    """A table as Parquet: how stages hand their data to the next task."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(root, rel, buffer.getvalue())


def read_frame(root: Root, rel: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(at(root, rel).read_bytes()))


def remove_tree(root: Root, rel: str) -> None:
    target = at(root, rel)
    if not target.exists():
        return
    for entry in list(target.iterdir()):
        if entry.is_dir():
            remove_tree(root, f"{rel}/{entry.name}")
        else:
            entry.unlink()
    for folder in (target, target.parent):  # the run's folder goes with its last file
        try:
            folder.rmdir()
        except (OSError, NotImplementedError):
            break  # not empty yet, or an object store, which has no real directories


class Gone(FileNotFoundError):
    """The file is no longer where the run found it: another run claimed it, or it was removed."""


def claim(root: Root, source_rel: str, dest_rel: str) -> bytes:
    source, dest = at(root, source_rel), at(root, dest_rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        source.rename(dest)
    except FileNotFoundError:
        raise Gone(f"{source_rel}: claimed by another run or removed") from None
    return dest.read_bytes()


def copy_in(root: Root, source_rel: str, dest_rel: str) -> bytes:
    try:
        data = at(root, source_rel).read_bytes()
    except FileNotFoundError:
        raise Gone(f"{source_rel}: claimed by another run or removed") from None
    write_bytes(root, dest_rel, data)
    return data
