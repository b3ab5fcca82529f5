"""A customer's health at a glance, from its ledger and its storage: when it last imported, whether its feed is late
or failing, what waits in its inbox, and which files look unusual; and the alerts that follow, each told once.

`customer_health(target, now)` is one customer's picture (bin/progression-db health, the health DAG and the overview
page call it per customer); `watch` tells a customer's `notify` what became true since the last check and remembers
it in `progression_alerts`. Times are passed in, so a check is the same whenever it runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression import ledger, notify, storage
from progression.ledger import WRITTEN, Status, runs
from progression.runs import IMPORT_DAG, Target

DAG_ID = "progression_health"
STATES = ("failing", "late", "unusual", "ok", "no_expectation")  # worst first
FAILED = (Status.FAILED, Status.ABANDONED)
BASELINE = 10  # a file is judged against the median rows read of this many succeeded imports before it,
MIN_BASELINE = 3  # and only when there are at least this many
UNUSUAL_FACTOR = 10  # below a tenth or above ten times that median
UNUSUAL_WINDOW = timedelta(days=7)  # files imported this recently are judged
LATE, UNUSUAL = "late", "unusual"

Tell = Callable[[str, str, str], bool]  # (subject, HTML body, plain text) -> whether anyone was told


@dataclass(frozen=True)
class CustomerHealth:
    customer: str
    last_success: dict | None  # the last real import that succeeded: at, file, run_id, completions it wrote
    late: bool
    expected_every: str | None
    waiting_files: int
    failing_streak: int  # real imports that failed or were abandoned since the last that succeeded
    last_failure: dict | None  # at, file, run_id, message
    written_7d: int  # completions written by every kind of run in the last 7 and 30 days
    written_30d: int
    unusual_files: list[dict] = field(default_factory=list)  # at, file, run_id, content_type, rows_read, median

    @property
    def state(self) -> str:
        if self.failing_streak:
            return "failing"
        if self.late:
            return "late"
        if self.unusual_files:
            return "unusual"
        return "ok" if self.expected_every else "no_expectation"

    def as_dict(self) -> dict:
        return {
            "customer": self.customer,
            "last_success": self.last_success,
            "late": self.late,
            "expected_every": self.expected_every,
            "waiting_files": self.waiting_files,
            "failing_streak": self.failing_streak,
            "state": self.state,
            "last_failure": self.last_failure,
            "written_7d": self.written_7d,
            "written_30d": self.written_30d,
            "unusual_files": self.unusual_files,
        }


def worst_first(healths: list[CustomerHealth]) -> list[CustomerHealth]:
    return sorted(healths, key=lambda h: (STATES.index(h.state), h.customer))


def customer_health(target: Target, now: datetime) -> CustomerHealth:
    """One customer's health as of `now` (runs started later are not seen)."""
    customer, now = target.customer, ledger.as_utc(now)
    with target.engine.connect() as conn:
        last_success = _latest(conn, customer.slug, now, (Status.SUCCEEDED,))
        last_failure = _latest(conn, customer.slug, now, FAILED)
        since = ledger.as_utc(last_success["started_at"]) if last_success else None
        streak = conn.execute(
            sa.select(sa.func.count())
            .select_from(runs)
            .where(
                *_real_imports(customer.slug, now),
                runs.c.status.in_(FAILED),
                *([runs.c.started_at > since] if since else []),
            )
        ).scalar()
        written_7d, written_30d = (_written(conn, customer.slug, now - timedelta(days=days), now) for days in (7, 30))
        unusual = _unusual_files(conn, customer.slug, now)
    every = customer.expected_every
    success_at = _finished(last_success) if last_success else None
    return CustomerHealth(
        customer=customer.slug,
        last_success=_described(last_success, completions=_written_by(last_success)) if last_success else None,
        late=every is not None and (success_at is None or now - success_at > every),
        expected_every=customer.expect_files_every,
        waiting_files=len(storage.inbox_files(target.root).files),
        failing_streak=int(streak or 0),
        last_failure=_described(last_failure, message=last_failure["message"]) if last_failure else None,
        written_7d=written_7d,
        written_30d=written_30d,
        unusual_files=unusual,
    )


def _described(run: Mapping, **more) -> dict:
    """A ledger run as the health shows it: when it finished, its file and run id, and `more`."""
    return {"at": _finished(run).isoformat(), "file": run["subject"], "run_id": run["run_id"], **more}


def _real_imports(customer: str, now: datetime) -> list:
    return [
        runs.c.customer == customer,
        runs.c.dag_id == IMPORT_DAG,
        runs.c.dry_run.is_(False),
        runs.c.started_at <= now,
    ]


def _latest(conn: Connection, customer: str, now: datetime, statuses: tuple[str, ...]) -> dict | None:
    row = (
        conn.execute(
            sa.select(runs)
            .where(*_real_imports(customer, now), runs.c.status.in_(statuses))
            .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _finished(run: Mapping) -> datetime:
    return ledger.as_utc(run["finished_at"] or run["started_at"])


def _written_by(run: Mapping) -> int:
    return sum(int(run[name] or 0) for name in WRITTEN)


def _written(conn: Connection, customer: str, since: datetime, now: datetime) -> int:
    """Completions written (inserted, changed, completed through the hierarchy) by the customer's real runs that
    succeeded and started in [since, now]: imports, transfers and merges (an undo restores, see ledger.COUNTS)."""
    total = sa.func.coalesce(sa.func.sum(runs.c.imported + runs.c.updated + runs.c.derived_written), 0)
    return int(
        conn.execute(
            sa.select(total).where(
                runs.c.customer == customer,
                runs.c.status == Status.SUCCEEDED,
                runs.c.dry_run.is_(False),
                runs.c.started_at >= since,
                runs.c.started_at <= now,
            )
        ).scalar()
        or 0
    )


def _unusual_files(conn: Connection, customer: str, now: datetime) -> list[dict]:
    """Files imported in the window whose rows read fall below a tenth or above ten times the median of the
    customer's previous succeeded imports of the same content type (a programmes file is not judged by activities)."""
    succeeded = [*_real_imports(customer, now), runs.c.status == Status.SUCCEEDED]
    recent = (
        conn.execute(
            sa.select(runs)
            .where(*succeeded, runs.c.started_at >= now - UNUSUAL_WINDOW)
            .order_by(runs.c.started_at, runs.c.run_id)
        )
        .mappings()
        .all()
    )
    found = []
    for run in recent:
        before = (
            conn.execute(
                sa.select(runs.c.rows_read)
                .where(
                    *succeeded,
                    runs.c.content_type == run["content_type"],
                    sa.or_(
                        runs.c.started_at < run["started_at"],
                        sa.and_(runs.c.started_at == run["started_at"], runs.c.run_id < run["run_id"]),
                    ),
                )
                .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
                .limit(BASELINE)
            )
            .scalars()
            .all()
        )
        if len(before) < MIN_BASELINE:
            continue
        median = statistics.median(before)
        if run["rows_read"] * UNUSUAL_FACTOR < median or run["rows_read"] > median * UNUSUAL_FACTOR:
            found.append(
                _described(
                    run,
                    content_type=run["content_type"],
                    rows_read=run["rows_read"],
                    median=median,
                    judged_by=len(before),
                )
            )
    return found


def watch(target: Target, now: datetime, tell: Tell, *, dry_run: bool = False) -> dict:
    """Check one customer and tell its `notify` what became true since the last check: a lateness episode that
    began, a file that looks unusual. What was told is remembered, so the next check tells it no more; an alert
    whose condition ended (the customer imported again, the file left the window) is cleared, so the same condition
    arising later is told again. A dry run tells and remembers nothing and says what it would have done."""
    now = ledger.as_utc(now)
    health = customer_health(target, now)
    slug, data = health.customer, health.as_dict()
    holding = {}  # (kind, key) -> the line telling it
    if health.late:
        holding[(LATE, health.last_success["run_id"] if health.last_success else "never")] = notify.lateness_line(data)
    for unusual in health.unusual_files:
        holding[(UNUSUAL, unusual["run_id"])] = notify.unusual_line(unusual)
    with target.engine.begin() as conn:
        told_before = {(a["kind"], a["key"]): a for a in ledger.open_alerts(conn, slug)}
        ended = [a for key, a in told_before.items() if key not in holding]
        if not dry_run:
            for alert in ended:
                ledger.clear_alert(conn, alert["id"], now)
    new = {key: line for key, line in holding.items() if key not in told_before}
    told = False
    if new and not dry_run:
        told = tell(*notify.health_message(data, [(kind, line) for (kind, _), line in new.items()]))
    if told:
        with target.engine.begin() as conn:
            for (kind, key), line in new.items():
                ledger.record_alert(conn, slug, kind, key, line, now)
    return {
        "customer": slug,
        "state": health.state,
        "new": [_label(kind, key, data) for kind, key in new],
        "told": told,
        "cleared": [_label(a["kind"], a["key"], data) for a in ended],
    }


def _label(kind: str, key: str, health: dict) -> str:
    if kind == UNUSUAL:
        files = {f["run_id"]: f["file"] for f in health["unusual_files"]}
        return f"unusual {files.get(key, key)}"
    return kind


def summarise(checks: list[dict], *, dry_run: bool) -> dict:
    """The health run's one-line summary from the checks of every customer it covered."""
    return {
        "dag": DAG_ID,
        "dry_run": dry_run,
        "customers": len(checks),
        "states": {check["customer"]: check["state"] for check in checks},
        "told": {check["customer"]: check["new"] for check in checks if check["told"]},
        "untold": {check["customer"]: check["new"] for check in checks if check["new"] and not check["told"]},
        "recovered": sorted(check["customer"] for check in checks if LATE in check["cleared"]),
    }
