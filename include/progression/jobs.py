"""What a run's tasks hand each other: a small dataclass that travels between them as a dict (an XCom)."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, TypeVar

J = TypeVar("J", bound="Job")

# The tasks of one imported file and the stages each runs. Stages that nobody would retry or watch apart share a
# task: fewer processes to start and fewer hand-offs through staging. Here, not in the pipeline, so the DAG file
# can name its tasks without loading pandas at parse time.
IMPORT_TASKS: dict[str, tuple[str, ...]] = {
    "fetch_validate": ("fetch", "validate"),
    "resolve_expand": ("resolve", "expand"),
    "write": ("write", "outcomes"),
    "report_archive": ("report", "archive"),
}


class Job:
    """Mixed into the job dataclasses of the import, transfer, merge and undo. `started` is the ISO time the run
    began: it fixes "today" for every task of the run."""

    started: str
    # Declared so type checkers know every Job is a dataclass (each subclass is one), as asdict and fields need.
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def as_dict(self) -> dict:
        """Plain values only (a status as its text), as an XCom carries them."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[J], data: dict) -> J:
        from progression.ledger import Status  # not at the top: the DAG files import this module at parse time

        names = {f.name for f in fields(cls)}
        job = cls(**{k: v for k, v in data.items() if k in names})
        if "status" in names:
            job.status = Status(job.status)  # type: ignore[attr-defined]
        return job

    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(self.started)
