"""What a Celery worker does once before it forks task processes: the warm-up, and staging writes after a fork."""

from __future__ import annotations

import os

from progression import pipeline, preload


def test_the_warm_up_runs_through():
    """A warm-up that fails is only logged (the worker still works): this is where it would show."""
    preload.warm_up()


def test_a_task_forked_after_its_parent_wrote_staged_frames_still_writes():
    pipeline._writer().submit(int).result()  # the parent's writer thread exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: its exit status is the assertion
        try:
            code = 0 if pipeline._writer().submit(int, "7").result(timeout=10) == 7 else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
