"""A customer's storage on every backend the DAGs use: pathlib.Path, ObjectStoragePath file:// and ObjectStoragePath
s3:// (a real S3 protocol server on loopback). Paths are regular files inside the customer's root, never links;
a file is claimed by exactly one run; removing one file's staging leaves every other file's staging alone."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from progression import storage
from backends import Backend, make_backend
from support import drop

SECRET = b"User email,Content uuid\nceo@globex.example,7f0c\n"  # the other customer's file: never read or moved


@pytest.fixture(params=["path", "file"])
def local(request, tmp_path) -> Backend:
    """Local storage, where links exist."""
    return make_backend(request.param, tmp_path, request)


@pytest.fixture
def globex(tmp_path) -> Path:
    """Another customer's storage beside acme's, with a file waiting in its inbox."""
    base = tmp_path / "globex"
    drop(base, "inbox/activities/payroll.csv", SECRET)
    return base


def link(backend: Backend, rel: str, to: Path | str) -> None:
    path = Path(storage._local_folder(backend.root)) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(to)


def assert_refused(call: Callable[[], object], rel: str, reason: str = "is a symbolic link") -> None:
    with pytest.raises(storage.PathRefused) as refused:
        call()
    assert f"{rel} {reason}" in str(refused.value)


def assert_untouched(globex: Path) -> None:
    assert [p.relative_to(globex).as_posix() for p in globex.rglob("*") if p.is_file()] == [
        "inbox/activities/payroll.csv"
    ]
    assert (globex / "inbox/activities/payroll.csv").read_bytes() == SECRET


# --- every backend ------------------------------------------------------------------------------------------------


def test_files_are_written_read_moved_and_copied(backend):
    storage.write_bytes(backend.root, "reports/2026-11-28/r.xlsx", b"report")
    assert backend.get("reports/2026-11-28/r.xlsx") == b"report"
    backend.put("inbox/activities/q3.xlsx", b"q3")
    assert storage.is_file(backend.root, "inbox/activities/q3.xlsx")
    assert not storage.is_file(backend.root, "inbox/activities/q4.xlsx")
    assert storage.read_bytes(backend.root, "inbox/activities/q3.xlsx") == b"q3"
    with pytest.raises(FileNotFoundError, match="inbox/activities/q4.xlsx"):
        storage.read_bytes(backend.root, "inbox/activities/q4.xlsx")

    assert storage.copy_in(backend.root, "inbox/activities/q3.xlsx", "staging/run/0000/q3.xlsx") == b"q3"
    storage.move(backend.root, "inbox/activities/q3.xlsx", "processed/activities/q3.xlsx")
    assert backend.files() == ["processed/activities/q3.xlsx", "reports/2026-11-28/r.xlsx", "staging/run/0000/q3.xlsx"]
    assert backend.get("processed/activities/q3.xlsx") == b"q3"


def test_inbox_lists_files_by_folder(backend):
    assert storage.inbox_files(backend.root) == storage.Inbox(files=[], refused=[])
    for rel in (
        "inbox/b.csv",
        "inbox/a.xlsx",
        "inbox/.hidden",
        "inbox/~$a.xlsx",
        "inbox/journeys/j.xlsx",
        "inbox/activities/z.xlsx",
        "inbox/activities/old/x.xlsx",
        "inbox/elsewhere/e.xlsx",
    ):
        backend.put(rel, b"x")
    assert storage.inbox_files(backend.root) == storage.Inbox(
        files=[
            ("inbox/a.xlsx", None),
            ("inbox/b.csv", None),
            ("inbox/activities/z.xlsx", "activities"),
            ("inbox/journeys/j.xlsx", "journeys"),
        ],
        refused=[],
    )
    assert storage.inbox_files(backend.root, "journeys").files == [
        ("inbox/a.xlsx", None),
        ("inbox/b.csv", None),
        ("inbox/journeys/j.xlsx", "journeys"),
    ]


def test_remove_tree_leaves_sibling_staging_alone(backend):
    """Two files of one run stage side by side; the first to finish must not remove the other's staging."""
    for rel in (
        "staging/run-1/0000/rows.parquet",
        "staging/run-1/0000/deep/more.parquet",
        "staging/run-1/0001/rows.parquet",
        "staging/run-1/00001/rows.parquet",
        "staging/run-2/0000/rows.parquet",
    ):
        backend.put(rel, b"rows")
    storage.remove_tree(backend.root, "staging/run-1/0000")
    assert backend.files() == [
        "staging/run-1/00001/rows.parquet",
        "staging/run-1/0001/rows.parquet",
        "staging/run-2/0000/rows.parquet",
    ]
    storage.remove_tree(backend.root, "staging/run-1/0000")  # already gone: nothing to do
    storage.remove_tree(backend.root, "staging/run-1")  # the run's last task removes the run's staging root
    assert backend.files() == ["staging/run-2/0000/rows.parquet"]


def test_exactly_one_of_two_claims_wins(backend):
    backend.put("inbox/activities/q3.xlsx", b"q3")
    start, outcomes = threading.Barrier(2), {}

    def run(name: str) -> None:
        start.wait()
        try:
            outcomes[name] = storage.claim(backend.root, "inbox/activities/q3.xlsx", f"staging/{name}/0000/q3.xlsx")
        except storage.Gone as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("nightly", "manual")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if outcome == b"q3"]
    assert len(winners) == 1, outcomes
    loser = ({"nightly", "manual"} - set(winners)).pop()
    assert isinstance(outcomes[loser], storage.Gone)
    assert "inbox/activities/q3.xlsx" in str(outcomes[loser]) and "claimed by another run" in str(outcomes[loser])
    assert backend.files() == [f"staging/{winners[0]}/0000/q3.xlsx"]


def test_a_claim_takes_the_bytes_present_and_a_later_upload_waits(backend):
    backend.put("inbox/activities/q3.xlsx", b"first upload")
    backend.put("inbox/activities/q3.xlsx", b"second upload")
    assert storage.claim(backend.root, "inbox/activities/q3.xlsx", "staging/run/0000/q3.xlsx") == b"second upload"
    assert backend.get("staging/run/0000/q3.xlsx") == b"second upload"
    backend.put("inbox/activities/q3.xlsx", b"third upload")
    with pytest.raises(FileNotFoundError):
        storage.move(backend.root, "inbox/activities/q4.xlsx", "processed/q4.xlsx")
    assert storage.inbox_files(backend.root).files == [("inbox/activities/q3.xlsx", "activities")]
    assert backend.get("inbox/activities/q3.xlsx") == b"third upload"


def test_an_s3_file_replaced_after_the_copy_keeps_its_new_bytes_in_the_inbox(request, tmp_path, monkeypatch):
    """S3 has no rename: a claim copies, then deletes only the version it copied."""
    backend = make_backend("s3", tmp_path, request)
    backend.put("inbox/activities/q3.xlsx", b"first upload")
    fs = storage.at(backend.root, "inbox").fs
    call_s3 = fs.call_s3

    def customer_uploads_before_the_delete(method, *args, **kwargs):
        if method == "delete_object":
            backend.put("inbox/activities/q3.xlsx", b"second upload")
        return call_s3(method, *args, **kwargs)

    monkeypatch.setattr(fs, "call_s3", customer_uploads_before_the_delete)
    assert storage.claim(backend.root, "inbox/activities/q3.xlsx", "staging/run/0000/q3.xlsx") == b"first upload"
    assert backend.get("staging/run/0000/q3.xlsx") == b"first upload"
    assert backend.get("inbox/activities/q3.xlsx") == b"second upload"


# --- local storage: links -----------------------------------------------------------------------------------------


def test_inbox_refuses_links_and_odd_entries(local, globex):
    local.put("inbox/activities/q3.xlsx", b"q3")
    link(local, "inbox/activities/theirs.csv", globex / "inbox/activities/payroll.csv")
    link(local, "inbox/activities/passwd.csv", "/etc/passwd")
    link(local, "inbox/journeys", globex / "inbox/activities")
    link(local, "inbox/folder-link", globex / "inbox")
    os.mkfifo(Path(storage._local_folder(local.root)) / "inbox/activities/pipe.csv")
    found = storage.inbox_files(local.root)
    assert found.files == [("inbox/activities/q3.xlsx", "activities")]
    assert found.refused == [
        "inbox/folder-link is a symbolic link: refused and left where it is",
        "inbox/journeys is a symbolic link: refused and left where it is",
        "inbox/activities/passwd.csv is a symbolic link: refused and left where it is",
        "inbox/activities/pipe.csv is not a regular file: refused and left where it is",
        "inbox/activities/theirs.csv is a symbolic link: refused and left where it is",
    ]
    assert storage.inbox_files(local.root, "journeys").files == []
    assert_untouched(globex)


def test_an_inbox_that_is_a_link_is_refused(local, globex):
    link(local, "inbox", globex / "inbox")
    assert storage.inbox_files(local.root) == storage.Inbox(
        files=[], refused=["inbox is a symbolic link: refused and left where it is"]
    )


@pytest.mark.parametrize("rel", ["inbox/activities/theirs.csv", "inbox/journeys/payroll.csv", "inbox/passwd.csv"])
def test_links_are_never_read_claimed_copied_or_moved(local, globex, rel):
    link(local, "inbox/activities/theirs.csv", globex / "inbox/activities/payroll.csv")
    link(local, "inbox/journeys", globex / "inbox/activities")
    link(local, "inbox/passwd.csv", "/etc/passwd")
    refused = rel if rel != "inbox/journeys/payroll.csv" else "inbox/journeys"
    assert_refused(lambda: storage.is_file(local.root, rel), refused)
    assert_refused(lambda: storage.read_bytes(local.root, rel), refused)
    assert_refused(lambda: storage.claim(local.root, rel, "staging/run/0000/f.csv"), refused)
    assert_refused(lambda: storage.copy_in(local.root, rel, "staging/run/0000/f.csv"), refused)
    assert_refused(lambda: storage.move(local.root, rel, "failed/f.csv"), refused)
    assert_refused(lambda: storage.remove_tree(local.root, rel), refused)
    assert local.files() == ["inbox/activities/theirs.csv", "inbox/journeys", "inbox/passwd.csv"]
    assert_untouched(globex)


def test_non_regular_files_are_refused(local):
    local.put("inbox/activities/folder.xlsx/inside.xlsx", b"x")
    os.mkfifo(Path(storage._local_folder(local.root)) / "inbox/pipe.csv")
    assert_refused(lambda: storage.read_bytes(local.root, "inbox/pipe.csv"), "inbox/pipe.csv", "is not a regular file")
    assert_refused(
        lambda: storage.read_bytes(local.root, "inbox/activities/folder.xlsx"),
        "inbox/activities/folder.xlsx",
        "is not a regular file",
    )
    assert_refused(
        lambda: storage.claim(local.root, "inbox/pipe.csv", "staging/run/0000/pipe.csv"),
        "inbox/pipe.csv",
        "is not a regular file",
    )
    assert_refused(
        lambda: storage.write_bytes(local.root, "inbox/activities/folder.xlsx/inside.xlsx/x", b"x"),
        "inbox/activities/folder.xlsx/inside.xlsx",
        "is not a folder",
    )


@pytest.mark.parametrize("folder", ["reports", "failed", "staging"])
def test_nothing_is_written_or_moved_through_a_linked_folder(local, globex, folder):
    local.put("inbox/activities/q3.xlsx", b"q3")
    link(local, folder, globex / "inbox/activities")
    assert_refused(lambda: storage.write_bytes(local.root, f"{folder}/payroll.csv", b"overwritten"), folder)
    assert_refused(lambda: storage.move(local.root, "inbox/activities/q3.xlsx", f"{folder}/payroll.csv"), folder)
    assert_refused(lambda: storage.claim(local.root, "inbox/activities/q3.xlsx", f"{folder}/payroll.csv"), folder)
    assert_refused(lambda: storage.remove_tree(local.root, f"{folder}/payroll.csv"), folder)
    assert local.get("inbox/activities/q3.xlsx") == b"q3"
    assert_untouched(globex)


def test_a_link_at_the_target_is_refused(local, globex):
    local.put("inbox/activities/q3.xlsx", b"q3")
    link(local, "processed/activities/q3.xlsx", globex / "inbox/activities/payroll.csv")
    assert_refused(
        lambda: storage.move(local.root, "inbox/activities/q3.xlsx", "processed/activities/q3.xlsx"),
        "processed/activities/q3.xlsx",
    )
    assert_refused(
        lambda: storage.write_bytes(local.root, "processed/activities/q3.xlsx", b"x"), "processed/activities/q3.xlsx"
    )
    assert local.get("inbox/activities/q3.xlsx") == b"q3"
    assert_untouched(globex)


def test_a_move_is_a_rename(local):
    local.put("inbox/activities/q3.xlsx", b"q3")
    base = Path(storage._local_folder(local.root))
    inode = (base / "inbox/activities/q3.xlsx").stat().st_ino
    storage.move(local.root, "inbox/activities/q3.xlsx", "processed/activities/q3.xlsx")
    assert (base / "processed/activities/q3.xlsx").stat().st_ino == inode


def test_remove_tree_removes_links_inside_without_following_them(local, globex):
    local.put("staging/run/0000/rows.parquet", b"rows")
    link(local, "staging/run/0000/theirs", globex / "inbox")
    link(local, "staging/run/0000/passwd", "/etc/passwd")
    link(local, "staging/run/0001", globex / "inbox")
    storage.remove_tree(local.root, "staging/run/0000")
    assert_refused(lambda: storage.remove_tree(local.root, "staging/run/0001"), "staging/run/0001")
    assert local.files() == ["staging/run/0001"]
    assert_untouched(globex)
    assert Path("/etc/passwd").exists()


def test_writing_makes_the_root_and_its_folders(tmp_path):
    storage.write_bytes(tmp_path / "new-customer", "reports/2026-11-28/r.xlsx", b"report")
    assert (tmp_path / "new-customer/reports/2026-11-28/r.xlsx").read_bytes() == b"report"


def test_the_root_itself_may_be_a_link(tmp_path):
    real = tmp_path / "mounted"
    drop(real, "inbox/activities/q3.xlsx", b"q3")
    (tmp_path / "acme").symlink_to(real)
    assert storage.inbox_files(tmp_path / "acme").files == [("inbox/activities/q3.xlsx", "activities")]
    assert storage.read_bytes(tmp_path / "acme", "inbox/activities/q3.xlsx") == b"q3"
