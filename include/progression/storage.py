"""A customer's storage: inbox, staging, archive and reports, on any pathlib-like root (ObjectStoragePath, Path).

Every path the project reads, moves, writes or deletes in a customer's storage goes through this module, which holds
two rules on every backend:
- a path is a regular file (or folder) inside the root with no symbolic link on the way (the root itself may be a
  link an operator made); anything else is refused with PathRefused and left where it is. On local storage (a Path
  or a file:// ObjectStoragePath) each path is opened one part at a time from its folder's descriptor with
  O_NOFOLLOW, so a link swapped in between a check and its use is not followed either. Object stores have no links.
- an inbox file belongs to the run that claims it (`claim`): of runs claiming one file at once exactly one gets it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath, PurePosixPath
from typing import Any, BinaryIO

import pandas as pd

from progression.customers import CONTENT_TYPES

INBOX, PROCESSED, FAILED, REPORTS, STAGING = "inbox", "processed", "failed", "reports", "staging"
CHECK, CHECKED = "check", "checked"  # files a customer wants checked against the platform, never imported
CROSSWALK = "mappings/content.xlsx"  # the customer's own codes for its content: `Code`, `Content uuid`
Root = Any  # ObjectStoragePath in the DAGs, pathlib.Path in tests: both are pathlib-like

# O_NONBLOCK: opening a FIFO someone left in the inbox returns at once (and is then refused) instead of hanging.
_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE, _FOLDER, _LINK, _OTHER = "file", "folder", "link", "other"


class PathRefused(ValueError):
    """A path outside the customer's storage root, or one that is not a plain file or folder (a link, a device)."""


class Gone(FileNotFoundError):
    """An inbox file that another run claimed first, or that its customer removed."""


@dataclass
class Inbox:
    files: list[tuple[str, str | None]] = field(default_factory=list)  # (path, content type from its folder)
    refused: list[str] = field(default_factory=list)  # why each entry that is not imported is left where it is


def relative(path: str) -> str:
    """A clean relative path inside the root, or PathRefused."""
    if not path or "://" in path or path.startswith(("/", "\\", "~")):
        raise PathRefused(
            f"path {path!r} must be relative to the customer's storage root, e.g. 'inbox/activities/file.xlsx'"
        )
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


def inbox_files(root: Root, content_type: str | None = None, tops: tuple[str, ...] = (INBOX, CHECK)) -> Inbox:
    """Every regular file waiting in the inbox and the check folder (`tops`), with the content type of its folder,
    by folder and name, and every link or other odd entry refused (links to folders too, including a link as
    `inbox/activities`)."""
    inbox = Inbox()
    wanted = [content_type] if content_type else list(CONTENT_TYPES)
    for top in tops:
        folders = _take_folder(root, top, None, wanted, inbox)
        for folder in wanted:
            if folder in folders:
                _take_folder(root, f"{top}/{folder}", folder, [], inbox)
    return inbox


def _take_folder(root: Root, rel: str, content_type: str | None, wanted: list[str], inbox: Inbox) -> set[str]:
    """Add the files of folder `rel` to the inbox and refuse its odd entries; the wanted sub-folders it holds."""
    try:
        entries = _listing(root, rel)
    except FileNotFoundError:
        return set()
    except PathRefused as exc:
        inbox.refused.append(str(exc))
        return set()
    folders = set()
    for name, kind in entries:
        if not is_candidate(name):
            continue
        if kind == _FILE:
            inbox.files.append((f"{rel}/{name}", content_type))
        elif kind != _FOLDER:
            inbox.refused.append(str(_refusal(f"{rel}/{name}", kind)))
        elif name in wanted:
            folders.add(name)
    return folders


def files_in(root: Root, rel: str) -> list[str]:
    """The regular files directly in folder `rel`, by name (none when it does not exist); links are left out."""
    try:
        entries = _listing(root, rel)
    except FileNotFoundError:
        return []
    return [f"{rel}/{name}" for name, kind in entries if kind == _FILE]


def type_from_folder(rel: str) -> str | None:
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] in (INBOX, CHECK) and parts[1] in CONTENT_TYPES else None


def is_check(rel: str) -> bool:
    """A file the customer put in the check folder: read, validated and decided as an import, never written."""
    return rel.startswith(f"{CHECK}/")


def archive_folder(rel: str, failed: bool, content_type: str | None) -> str:
    """Where a file ends once its run has decided: `checked/` for a check, else `failed/` or `processed/`; in the
    sub-folder of its content type when it has one."""
    folder = CHECKED if is_check(rel) else FAILED if failed else PROCESSED
    return f"{folder}/{content_type}" if content_type else folder


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


# --- files --------------------------------------------------------------------------------------------------------


def is_file(root: Root, rel: str) -> bool:
    """Whether a regular file is at rel (False when nothing is); PathRefused for a link or anything else."""
    rel = relative(rel)
    base = _local_folder(root)
    if base is None:
        return at(root, rel).is_file()
    try:
        with _parent(base, rel) as (dir_fd, name):
            return _regular_file_at(dir_fd, name, rel)
    except FileNotFoundError:
        return False


def read_bytes(root: Root, rel: str) -> bytes:
    """The bytes of the regular file at rel; PathRefused for a link or anything else, never followed."""
    rel = relative(rel)
    base = _local_folder(root)
    if base is None:
        return at(root, rel).read_bytes()
    with _parent(base, rel) as (dir_fd, name), os.fdopen(_open_at(dir_fd, name, rel, os.O_RDONLY, _FILE), "rb") as file:
        return file.read()


@contextmanager
def writer(root: Root, rel: str) -> Iterator[BinaryIO]:
    """A binary file open for writing at rel, its folders made; PathRefused when a link or anything but a regular
    file is on the way (a `reports` folder linked to another customer's is never written through)."""
    rel = relative(rel)
    base = _local_folder(root)
    if base is None:
        target = at(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as file:
            yield file
        return
    with _parent(base, rel, create=True) as (dir_fd, name):
        fd = _open_at(dir_fd, name, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE)
        with os.fdopen(fd, "wb") as file:
            yield file


def write_bytes(root: Root, rel: str, data: bytes) -> None:
    with writer(root, rel) as file:
        file.write(data)


def write_frame(root: Root, rel: str, frame: pd.DataFrame) -> None:
    """A table as Parquet: how stages hand their data to the next task."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(root, rel, buffer.getvalue())


def read_frame(root: Root, rel: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(read_bytes(root, rel)))


def move(root: Root, source_rel: str, target_rel: str) -> None:
    """Move a regular file: an atomic rename on local storage, copy then delete on an object store (where a rename
    is a copy anyway). A link at either end, or on the way to it, is refused."""
    source_rel, target_rel = relative(source_rel), relative(target_rel)
    base = _local_folder(root)
    if base is None:
        write_bytes(root, target_rel, read_bytes(root, source_rel))
        at(root, source_rel).unlink()
        return
    with (
        _parent(base, source_rel) as (source_fd, source_name),
        _parent(base, target_rel, create=True) as (target_fd, target_name),
    ):
        if not _regular_file_at(source_fd, source_name, source_rel):
            raise _missing(source_rel)
        _regular_file_at(target_fd, target_name, target_rel)
        try:
            os.rename(source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
        except FileNotFoundError:
            raise _missing(source_rel) from None


def claim(root: Root, source_rel: str, dest_rel: str) -> bytes:
    """Move an inbox file into the run's staging, so that of runs claiming it at once exactly one gets it (the others
    get Gone); the bytes now at dest. On local storage a rename takes exactly the bytes present at that moment."""
    if getattr(root, "protocol", None) in ("s3", "s3a"):
        return _claim_s3(root, relative(source_rel), relative(dest_rel))
    try:
        move(root, source_rel, dest_rel)
    except FileNotFoundError:
        raise _gone(source_rel) from None
    return read_bytes(root, dest_rel)


def _claim_s3(root: Root, source_rel: str, dest_rel: str) -> bytes:
    """Copy to dest, then delete the source only while its ETag is still the one copied (DeleteObject IfMatch): a
    customer who uploaded new bytes under the same name meanwhile keeps them in the inbox for the next run.

    The bytes are read and written by this process rather than copied on the server, so dest holds exactly the
    version the ETag names on every S3 server (moto ignores CopySourceIfMatch; s3fs pins its reads with If-Match).
    A server that ignores IfMatch on DeleteObject cannot tell two claims apart."""
    source = at(root, source_rel)
    fs = source.fs
    try:
        with fs.open(source.path, "rb") as file:
            etag, data = file.details["ETag"], file.read()
    except FileNotFoundError:
        raise _gone(source_rel) from None
    write_bytes(root, dest_rel, data)
    bucket, key, _version = fs.split_path(source.path)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    except FileNotFoundError:  # another run deleted it first: that run's claim won
        remove_tree(root, dest_rel)
        raise _gone(source_rel) from None
    except OSError as exc:  # PreconditionFailed: new bytes under that name since the read, left for the next run
        if getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    fs.invalidate_cache(source.path)
    return data


def copy_in(root: Root, source_rel: str, dest_rel: str) -> bytes:
    """Copy a file into the run's staging without claiming it (a dry run leaves the inbox as it is); the bytes."""
    data = read_bytes(root, source_rel)
    write_bytes(root, dest_rel, data)
    return data


def remove_tree(root: Root, rel: str) -> None:
    """Remove rel and everything under it, and nothing else (never its parent: the run's staging root goes only
    when asked for by name). A link inside is removed itself, never followed; rel itself being a link is refused."""
    rel = relative(rel)
    base = _local_folder(root)
    if base is None:
        target = at(root, rel)
        with suppress(FileNotFoundError):  # nothing there: nothing to do
            target.fs.rm(target.path, recursive=True)
        return
    with suppress(FileNotFoundError), _parent(base, rel) as (dir_fd, name):
        kind = _kind(os.lstat(name, dir_fd=dir_fd).st_mode)
        if kind == _LINK:
            raise _refusal(rel, kind)
        _remove_entry(dir_fd, name, rel, kind)


def _remove_entry(dir_fd: int, name: str, rel: str, kind: str) -> None:
    if kind != _FOLDER:
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = _open_at(dir_fd, name, rel, os.O_RDONLY | os.O_DIRECTORY, _FOLDER)
    try:
        with os.scandir(fd) as listed:
            entries = [(entry.name, _entry_kind(entry)) for entry in listed]
        for entry_name, entry_kind in entries:
            _remove_entry(fd, entry_name, f"{rel}/{entry_name}", entry_kind)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


# --- local storage: every part opened without following links -----------------------------------------------------


def _local_folder(root: Root) -> str | None:
    """The root's folder on this machine, or None for an object store."""
    if isinstance(root, PurePath):
        return str(root)
    return root.path if getattr(root, "protocol", None) in ("file", "local") else None


@contextmanager
def _parent(base: str, rel: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """A descriptor of the folder that holds rel (see _folder), and rel's name in it."""
    folder, _, name = rel.rpartition("/")
    with _folder(base, folder, create=create) as fd:
        yield fd, name


@contextmanager
def _folder(base: str, rel: str, *, create: bool = False) -> Iterator[int]:
    """A descriptor of folder rel under base (made when `create`), opened one part at a time without following a
    link; FileNotFoundError naming the first part that is missing."""
    if create:
        os.makedirs(base, exist_ok=True)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself may be a link
    try:
        parts = rel.split("/") if rel else []
        for depth, name in enumerate(parts, 1):
            if create:
                with suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fd)
            inner = _open_at(fd, name, "/".join(parts[:depth]), os.O_RDONLY | os.O_DIRECTORY, _FOLDER)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _open_at(dir_fd: int, name: str, rel: str, flags: int, wanted: str) -> int:
    """A descriptor of entry `name` of the folder, which must be of the `wanted` kind (a file or a folder)."""
    try:
        fd = os.open(name, flags | _NO_FOLLOW, 0o666, dir_fd=dir_fd)
    except FileNotFoundError:
        raise _missing(rel) from None
    except OSError:  # a link (ELOOP), a file where a folder belongs (ENOTDIR), a socket (ENXIO), ...
        kind = _kind(os.lstat(name, dir_fd=dir_fd).st_mode)
        if kind != wanted:
            raise _refusal(rel, kind, wanted) from None
        raise
    kind = _kind(os.fstat(fd).st_mode)
    if kind != wanted:
        os.close(fd)
        raise _refusal(rel, kind, wanted)
    return fd


def _regular_file_at(dir_fd: int, name: str, rel: str) -> bool:
    """Whether a regular file `name` is in the folder (False when nothing is); PathRefused for anything else."""
    try:
        kind = _kind(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return False
    if kind != _FILE:
        raise _refusal(rel, kind)
    return True


def _listing(root: Root, rel: str) -> list[tuple[str, str]]:
    """(name, kind) of every entry of folder rel, by name, without following links."""
    base = _local_folder(root)
    if base is None:
        folder = at(root, rel)
        # refresh: s3fs caches listings for the life of the process, and a new upload must show
        listed = folder.fs.ls(folder.path, detail=True, refresh=True)
        kinds = {"file": _FILE, "directory": _FOLDER}
        return sorted(
            (entry["name"].rstrip("/").rsplit("/", 1)[-1], kinds.get(entry["type"], _OTHER)) for entry in listed
        )
    with _folder(base, rel) as fd, os.scandir(fd) as listed:
        return sorted((entry.name, _entry_kind(entry)) for entry in listed)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return _LINK
    return _FILE if stat.S_ISREG(mode) else _FOLDER if stat.S_ISDIR(mode) else _OTHER


def _entry_kind(entry: os.DirEntry) -> str:
    return _kind(entry.stat(follow_symlinks=False).st_mode)


def _refusal(rel: str, kind: str, wanted: str = _FILE) -> PathRefused:
    reason = (
        "is a symbolic link" if kind == _LINK else "is not a folder" if wanted == _FOLDER else "is not a regular file"
    )
    return PathRefused(f"{rel} {reason}: refused and left where it is")


def _missing(rel: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)


def _gone(rel: str) -> Gone:
    return Gone(errno.ENOENT, "claimed by another run or removed", rel)
