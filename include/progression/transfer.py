"""Content replacement: everyone who completed an old activity, journey or programme gets the new one completed.

A run takes one pair (old uuid, new uuid) from the run conf, or a workbook of pairs. Every pair is checked on the
customer's platform before anything is written (same type, both on the platform, not the same item, no cycle);
chains X -> Y, Y -> Z also transfer X -> Z. Only users who completed the old item and have access to the new one get
it, with the old completion's date (or the day of the transfer), and what the new item contains with it. All pairs
are written in one transaction through the one write path, so the journal lets undo revert the run.

Stages, like the import's: plan -> transfer -> report -> archive. The DAG, the tests and the benchmark run these.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from functools import partial

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from progression import ledger, runs, storage
from progression.customers import ON_EXISTING
from progression.expand import ancestors, descendants
from progression.jobs import Job
from progression.ledger import Status
from progression.runs import ConfError, Target
from progression.platform import (
    completions,
    content,
    content_groups,
    group_members,
    load_edges,
    platform_id,
    users,
)
from progression.read import ROW, InputError, read_pairs
from progression.report import Rows, write_sheets
from progression.validate import UUID_PATTERN
from progression.write import write_completions

DAG_ID = "progression_transfer"
COMPLETION_DATES = ("original", "transfer")  # the old completion's date, or midnight of the day of the transfer
TRANSFERS = "transfers"  # the sub-folder of inbox/, processed/ and failed/ for pairs workbooks
PAIR_HEADERS = ("Old content uuid", "New content uuid")
# Other spellings of the headers, matched as the import matches its own: trimmed, case and punctuation ignored.
PAIR_ALIASES = {
    "Old content uuid": ("Old uuid", "From uuid", "From content uuid", "Old content"),
    "New content uuid": ("New uuid", "To uuid", "To content uuid", "New content"),
}
PROBLEMS_IN_MESSAGE = 10
_UUID = re.compile(UUID_PATTERN)


@dataclass
class Pair:
    """One old -> new item to transfer, as checked on the platform, and what the run did for it."""

    old_uuid: str
    new_uuid: str
    type: str
    old_id: int
    new_id: int
    old_title: str
    new_title: str
    row: int | None = None  # the workbook row that asked for it; None for the conf's pair and for a chain
    chain: list[str] = field(default_factory=list)  # X, Y, Z when X -> Z comes from X -> Y and Y -> Z
    completed_old: int = 0
    written_directly: int = 0
    written_through_contents: int = 0
    skipped_without_access: int = 0
    already_had_it: int = 0

    @property
    def label(self) -> str:
        return f"{self.old_uuid} -> {self.new_uuid}"


@dataclass
class Problem:
    """Why a pair, a workbook row or the workbook itself is refused."""

    reason_code: str
    reason: str
    row: int | None = None
    old_uuid: str | None = None
    new_uuid: str | None = None

    @property
    def text(self) -> str:
        pair = f"{self.old_uuid or '(blank)'} -> {self.new_uuid or '(blank)'}"
        if self.row is not None:
            return f"row {self.row} ({pair}): {self.reason}"
        if self.old_uuid or self.new_uuid:
            return f"pair {pair}: {self.reason}"
        return self.reason


@dataclass
class TransferJob(Job):
    customer: str
    path: str | None  # the pairs workbook relative to the storage root; None for the conf's pair
    dry_run: bool = True
    completion_date: str = "original"
    on_existing: str = "keep"
    airflow_run_id: str | None = None
    started: str = ""  # ISO time the run began: "the day of the transfer"
    run_id: str = ""
    subject: str = ""  # the pair or the workbook, as the ledger names the run
    status: Status = Status.PENDING  # pending, ok (the pairs checked), refused
    message: str = ""
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    report: str = ""
    archived_to: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> TransferJob:
        job = super().from_dict(data)
        job.pairs = [Pair(**p) if isinstance(p, dict) else p for p in job.pairs]
        job.problems = [Problem(**p) if isinstance(p, dict) else p for p in job.problems]
        return job

    @property
    def refused(self) -> bool:
        return self.status == Status.REFUSED

    @property
    def staging(self) -> str:
        return f"{storage.STAGING}/{self.run_id}"


# --- plan: the conf, the pairs workbook and every pair checked before any work ---------------------------------


def plan(
    target: Target,
    *,
    old_uuid: str | None = None,
    new_uuid: str | None = None,
    path: str | None = None,
    dry_run: bool,
    completion_date: str,
    on_existing: str | None,
    airflow_run_id: str | None,
    started: datetime,
) -> TransferJob:
    """Check the conf (ConfError: nothing recorded) and every pair on the platform; open the run in the ledger.

    A pair or workbook that cannot be transferred gives a job with status `refused`, recorded as a failed run.
    """
    customer = target.customer
    if completion_date not in COMPLETION_DATES:
        raise ConfError(f"completion_date {completion_date!r} must be one of {', '.join(COMPLETION_DATES)}")
    on_existing = on_existing or customer.on_existing
    if on_existing not in ON_EXISTING:
        raise ConfError(f"on_existing {on_existing!r} must be one of {', '.join(ON_EXISTING)}")
    if path and (old_uuid or new_uuid):
        raise ConfError("give either path (a workbook of pairs) or old_uuid and new_uuid (one pair), not both")
    if not path and (old_uuid or new_uuid) and not (old_uuid and new_uuid):
        raise ConfError(f"{'new_uuid' if old_uuid else 'old_uuid'} is missing: a pair needs old_uuid and new_uuid")
    if not path and not old_uuid:
        raise ConfError(
            "nothing to transfer: give old_uuid and new_uuid (one pair) or path (a workbook of pairs, "
            f"e.g. {storage.INBOX}/{TRANSFERS}/pairs.xlsx)"
        )
    rel = runs.customer_file(target, path) if path else None
    requested: list[tuple[int | None, str | None, str | None]]
    if rel:
        subject = rel
        requested, problems = requested_in(storage.read_bytes(target.root, rel), rel)
    else:
        assert old_uuid and new_uuid  # the checks above refuse a conf without a path or both uuids
        subject = f"{old_uuid.strip().lower()} -> {new_uuid.strip().lower()}"
        requested, problems = [(None, old_uuid, new_uuid)], []
    stamp = started.astimezone(timezone.utc)
    job = TransferJob(
        customer=customer.slug,
        path=rel,
        dry_run=dry_run,
        completion_date=completion_date,
        on_existing=on_existing,
        airflow_run_id=airflow_run_id,
        started=stamp.isoformat(),
        run_id=ledger.new_run_id("transfer", customer.slug, stamp),
        subject=subject,
        problems=problems,
    )
    with target.engine.begin() as conn:
        if requested:
            job.pairs, job.problems = check_pairs(conn, customer.platform, requested)
        ledger.start_run(
            conn,
            run_id=job.run_id,
            customer=job.customer,
            dag_id=DAG_ID,
            subject=job.subject,
            airflow_run_id=airflow_run_id,
            dry_run=dry_run,
            staging=job.staging,
        )
        if job.problems:
            job.status, job.pairs = Status.REFUSED, []
            job.message = refusal_message(job.problems)
            counts = ledger.RunCounts(rejected=len(job.problems), rejected_by_reason=_by_reason(job.problems))
            job.counts = counts.as_dict()
            ledger.record_counts(conn, job.run_id, counts)
            ledger.finish_run(conn, job.run_id, Status.FAILED, message=job.message)
        else:
            job.status = Status.OK
    return job


def refusal_message(problems: list[Problem]) -> str:
    shown = "; ".join(p.text for p in problems[:PROBLEMS_IN_MESSAGE])
    more = len(problems) - PROBLEMS_IN_MESSAGE
    return "refused, nothing written: " + shown + (f"; and {more} more (see the report)" if more > 0 else "")


def _by_reason(problems: list[Problem]) -> dict[str, int]:
    return dict(sorted(Counter(p.reason_code for p in problems).items()))


def requested_in(data: bytes, rel: str) -> tuple[list[tuple[int | None, str | None, str | None]], list[Problem]]:
    """(row, old uuid, new uuid) of every pair in a workbook, or the problem that refuses it whole."""
    try:
        rows = read_pairs(data, rel, PAIR_HEADERS, PAIR_ALIASES)
    except InputError as exc:
        return [], [Problem("unreadable workbook", f"{rel}: {exc}")]
    if rows.empty:
        return [], [Problem("unreadable workbook", f"{rel}: the workbook has the headers but no pairs")]
    return list(
        rows[[ROW, *PAIR_HEADERS]].astype(object).where(rows.notna(), None).itertuples(index=False, name=None)
    ), []


def check_pairs(
    conn: Connection, platform_slug: str, requested: list[tuple[int | None, str | None, str | None]]
) -> tuple[list[Pair], list[Problem]]:
    """The pairs to transfer (chains resolved) and every problem with the requested ones, each naming its row."""
    pid = platform_id(conn, platform_slug)
    wellformed = {u.lower() for _, old, new in requested for u in (old, new) if u and _UUID.match(u.lower())}
    known = {}
    if wellformed:
        query = sa.select(content.c.uuid, content.c.id, content.c.type, content.c.title).where(
            content.c.platform_id == pid, content.c.uuid.in_(sorted(wellformed))
        )
        known = {str(u).lower(): (item, kind, title) for u, item, kind, title in conn.execute(query)}
    pairs, problems, asked = [], [], set()
    for row, old_raw, new_raw in requested:
        old, new = (u.lower() if u else None for u in (old_raw, new_raw))
        problem = _pair_problem(old, new, old_raw, new_raw, known, platform_slug)
        if problem:
            code, reason = problem
            problems.append(Problem(code, reason, row, old_raw, new_raw))
        elif (old, new) not in asked:  # the same pair twice in a workbook is transferred once
            assert old and new  # _pair_problem refuses a missing uuid
            asked.add((old, new))
            (old_id, kind, old_title), (new_id, _, new_title) = known[old], known[new]
            pairs.append(Pair(old, new, kind, old_id, new_id, old_title, new_title, row=row))
    chained, cycles = resolve_chains(pairs)
    return chained, problems + cycles


def _pair_problem(
    old: str | None, new: str | None, old_raw: str | None, new_raw: str | None, known: dict, platform_slug: str
) -> tuple[str, str] | None:
    for side, uuid, raw in (("old", old, old_raw), ("new", new, new_raw)):
        if not uuid:
            return "missing uuid", f"the {side} content uuid is missing"
        if not _UUID.match(uuid):
            return "invalid uuid", f"the {side} content uuid {raw!r} is not a uuid"
    if old == new:
        return "same item", "old and new are the same item"
    for uuid in (old, new):
        if uuid not in known:  # content of another platform is unknown here
            return "unknown content", f"no content with uuid {uuid} on platform {platform_slug}"
    if known[old][1] != known[new][1]:
        return (
            "different types",
            f"the old item is {_a(known[old][1])} and the new one {_a(known[new][1])}: a "
            "transfer goes from activity to activity, journey to journey or programme to programme",
        )
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def resolve_chains(pairs: list[Pair]) -> tuple[list[Pair], list[Problem]]:
    """The pairs plus X -> Z for every chain X -> Y -> Z; a cycle (X -> Y -> X) is a problem naming its uuids."""
    by_uuid = {p.old_uuid: (p.old_id, p.old_title) for p in pairs} | {
        p.new_uuid: (p.new_id, p.new_title) for p in pairs
    }
    onward: dict[str, list[Pair]] = {}
    for pair in pairs:
        onward.setdefault(pair.old_uuid, []).append(pair)
    cycles, in_cycle = [], set()
    chained = []
    for start in onward:
        # Breadth first from each old item: the shortest chain to every item it leads to.
        via = {start: [start]}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for pair in onward.get(here, []):
                if pair.new_uuid == start and start not in in_cycle:
                    loop = via[here] + [start]
                    in_cycle.update(loop)
                    cycles.append(
                        Problem(
                            "cycle",
                            "the pairs form a cycle: " + " -> ".join(loop) + "; a transfer "
                            "cannot complete an item from itself",
                            pair.row,
                            pair.old_uuid,
                            pair.new_uuid,
                        )
                    )
                elif pair.new_uuid not in via:
                    via[pair.new_uuid] = via[here] + [pair.new_uuid]
                    queue.append(pair.new_uuid)
        first = onward[start][0]
        for end, chain in via.items():
            if len(chain) > 2:
                (new_id, new_title) = by_uuid[end]
                chained.append(
                    Pair(start, end, first.type, first.old_id, new_id, first.old_title, new_title, chain=chain)
                )
    return ([] if cycles else pairs + chained), cycles


# --- transfer: who completed the old items, who can see the new ones, written in one transaction --------------


def transfer(target: Target, job: TransferJob) -> TransferJob:
    """Every pair's completions in one transaction: all of them or none. A dry run decides and writes nothing."""
    if job.status != Status.OK:
        return job
    with runs.writing(target) as conn:
        pid = platform_id(conn, target.customer.platform)
        edges = load_edges(conn, pid)
        completed = pd.concat(
            [completed_old(conn, pid, index, pair, edges) for index, pair in enumerate(job.pairs)], ignore_index=True
        )
        if job.completion_date == "transfer":
            completed["completed_at"] = transfer_day(job, target)
        run, by_pair = write_pairs(conn, job, candidate_rows(completed, job.pairs, edges))
        counts = _run_counts(completed, run)
        ledger.record_counts(conn, job.run_id, counts)
        ledger.finish_run(conn, job.run_id, Status.SUCCEEDED)
    _count_pairs(job.pairs, completed, by_pair)
    skipped = completed.loc[~completed["has_access"], ["pair", "email"]].sort_values(["pair", "email"])
    storage.write_frame(target.root, f"{job.staging}/skipped.parquet", skipped)
    job.counts = counts.as_dict()
    return job


Tally = dict[tuple[bool, str], int]  # (direct, outcome) -> completions


def write_pairs(conn: Connection, job: TransferJob, candidates: pd.DataFrame) -> tuple[Tally, dict[int, Tally]]:
    """One row per (user, content) with the earliest date, through the one write path; the outcomes of the run and
    of each pair."""
    key = ["user_id", "content_id"]
    rows = candidates.groupby(key, as_index=False, sort=False).agg(
        completed_at=("completed_at", "min"), direct=("direct", "any")
    )
    write_rows = partial(
        write_completions, conn, run_id=job.run_id, source="transfer", on_existing=job.on_existing, dry_run=job.dry_run
    )
    if len(job.pairs) == 1:  # the write's own totals are the pair's
        result = write_rows(rows)
        run = {
            (direct, outcome): n
            for direct, counts in ((True, result.direct_counts), (False, result.derived_counts))
            for outcome, n in counts.items()
        }
        return run, {0: run}
    # A content item can be reached through more than one pair. Every row goes in as direct, so that the write
    # returns the outcome of each one that is not new, and each pair counts its own.
    result = write_rows(rows.assign(direct=True))
    rows["outcome"] = rows.merge(result.exceptions, on=key, how="left")["outcome"].fillna("imported").to_numpy()
    keyed = candidates.merge(rows[[*key, "outcome"]], on=key)
    return _tally(rows), {int(pair): _tally(group) for pair, group in keyed.groupby(keyed["pair"].astype(int))}


def _tally(rows: pd.DataFrame) -> Tally:
    return {
        (bool(direct), str(outcome)): int(n)
        for direct, outcome, n in rows.groupby(["direct", "outcome"]).size().reset_index().itertuples(index=False)
    }


def completed_old(conn: Connection, pid: int, index: int, pair: Pair, edges: pd.DataFrame) -> pd.DataFrame:
    """Users of the platform who completed the pair's old item, with the date and whether they can see the new one.

    Access is a join in SQL: one of the user's groups is given the new item or a journey/programme containing it.
    """
    above = ancestors(pd.Series([pair.new_id]), edges)["ancestor"].astype("int64").tolist()
    access = (
        sa.select(group_members.c.user_id)
        .join(content_groups, content_groups.c.group_id == group_members.c.group_id)
        .where(group_members.c.user_id == completions.c.user_id, content_groups.c.content_id.in_(above))
        .exists()
    )
    query = (
        sa.select(completions.c.user_id, users.c.email, completions.c.completed_at, access.label("has_access"))
        .join(users, users.c.id == completions.c.user_id)
        .where(completions.c.content_id == pair.old_id, users.c.platform_id == pid)
    )
    rows = conn.execute(query).all()
    # Column by column: a DataFrame built from Row objects costs a Python call per row and cell.
    user_id, email, completed_at, has_access = zip(*rows) if rows else ((), (), (), ())
    return pd.DataFrame(
        {
            "pair": pd.Series(index, index=range(len(rows)), dtype="int64"),
            "user_id": pd.Series(user_id, dtype="int64"),
            "email": pd.Series(email, dtype="string"),
            # SQLite gives naive UTC times, PostgreSQL aware ones: both become aware UTC.
            "completed_at": pd.to_datetime(pd.Series(completed_at, dtype=object), utc=True),
            "has_access": pd.Series(has_access, dtype=bool),
        }
    )


def transfer_day(job: TransferJob, target: Target) -> pd.Timestamp:
    """Midnight of the day the run started, in the customer's time zone, as UTC."""
    tz = target.customer.tz
    return pd.Timestamp(datetime.combine(job.now.astimezone(tz).date(), time.min), tz=tz).tz_convert("UTC")


def candidate_rows(completed: pd.DataFrame, pairs: list[Pair], edges: pd.DataFrame) -> pd.DataFrame:
    """Per pair: the new item for each user with access (direct) and what it contains (not direct), same date."""
    new_ids = pd.Series([p.new_id for p in pairs], dtype="int64")
    reached = completed.loc[completed["has_access"], ["pair", "user_id", "completed_at"]]
    reached = reached.assign(content_id=reached["pair"].map(new_ids).astype("int64"))
    direct = reached.assign(direct=True)
    below = descendants(new_ids, edges)
    derived = (
        reached.merge(below, left_on="content_id", right_on="item")
        .drop(columns=["content_id", "item"])
        .rename(columns={"descendant": "content_id"})
        .assign(direct=False)
    )
    columns = ["pair", "user_id", "content_id", "completed_at", "direct"]
    every = pd.concat([direct[columns], derived[columns]], ignore_index=True)
    every["content_id"] = every["content_id"].astype("int64")
    return every


def _written(tally: Tally, direct: bool) -> int:
    return tally.get((direct, "imported"), 0) + tally.get((direct, "updated"), 0)


def _run_counts(completed: pd.DataFrame, run: Tally) -> ledger.RunCounts:
    """The ledger's counts: rows read are old completions, imported/updated/kept the new items themselves."""
    return ledger.RunCounts(
        rows_read=len(completed),
        skipped_without_access=int((~completed["has_access"]).sum()),
        imported=run.get((True, "imported"), 0),
        updated=run.get((True, "updated"), 0),
        kept=run.get((True, "kept"), 0),
        derived_written=_written(run, direct=False),
    )


def _count_pairs(pairs: list[Pair], completed: pd.DataFrame, by_pair: dict[int, Tally]) -> None:
    """Each pair's own figures. A content item reached through two pairs counts for both."""
    completed_by_pair = completed.groupby("pair").size()
    skipped_by_pair = (~completed["has_access"]).groupby(completed["pair"]).sum()
    for index, pair in enumerate(pairs):
        tally = by_pair.get(index, {})
        pair.completed_old = int(completed_by_pair.get(index, 0))
        pair.skipped_without_access = int(skipped_by_pair.get(index, 0))
        pair.written_directly = _written(tally, direct=True)
        pair.written_through_contents = _written(tally, direct=False)
        pair.already_had_it = tally.get((True, "kept"), 0)


# --- report and archive --------------------------------------------------------------------------------------

PAIRS_SHEET = [
    "Row",
    "Old content uuid",
    "Old title",
    "New content uuid",
    "New title",
    "Type",
    "Chain",
    "Completed old",
    "Written directly",
    "Written through contents",
    "Skipped without access",
    "Already had it",
]


def report(target: Target, job: TransferJob) -> TransferJob:
    """The report workbook in the customer's reports folder (Summary, Pairs, Skipped users); the ledger points to it."""
    job.report = f"{storage.REPORTS}/{job.now:%Y-%m-%d}/transfer.{job.run_id}.xlsx"
    sheets: list[tuple[str, list[str], Rows]] = [("Summary", ["Field", "Value"], summary_lines(target, job))]
    if job.refused:
        sheets.append(
            (
                "Refused",
                ["Row", *PAIR_HEADERS, "Reason"],
                [(p.row, p.old_uuid, p.new_uuid, p.reason) for p in job.problems],
            )
        )
    else:
        sheets.append(
            (
                "Pairs",
                PAIRS_SHEET,
                [
                    (
                        p.row,
                        p.old_uuid,
                        p.old_title,
                        p.new_uuid,
                        p.new_title,
                        p.type,
                        " -> ".join(p.chain) or None,
                        p.completed_old,
                        p.written_directly,
                        p.written_through_contents,
                        p.skipped_without_access,
                        p.already_had_it,
                    )
                    for p in job.pairs
                ],
            )
        )
        skipped = storage.read_frame(target.root, f"{job.staging}/skipped.parquet")
        uuids = pd.DataFrame([(p.old_uuid, p.new_uuid) for p in job.pairs], columns=["old_uuid", "new_uuid"])
        sheets.append(
            (
                "Skipped users",
                [*PAIR_HEADERS, "User email"],
                uuids.iloc[skipped["pair"].to_numpy()].reset_index(drop=True).assign(email=skipped["email"].to_numpy()),
            )
        )
    runs.save_report(
        target,
        job.run_id,
        job.report,
        lambda file: write_sheets(file, sheets),
        Status.FAILED if job.refused else Status.SUCCEEDED,
    )
    return job


def summary_lines(target: Target, job: TransferJob) -> list[tuple[str, object]]:
    counts = job.counts
    when = (
        "the date of the old completion"
        if job.completion_date == "original"
        else f"midnight of {job.now.astimezone(target.customer.tz):%Y-%m-%d} ({target.customer.timezone})"
    )
    lines = runs.report_head(
        target, job, [("Transfer", job.subject)], Status.REFUSED if job.refused else Status.SUCCEEDED
    )
    lines += [
        ("On existing completions", job.on_existing),
        ("Completion date", when),
        ("Pairs", len(job.pairs) if not job.refused else None),
    ]
    if job.refused:
        return lines + [("Refused pairs or rows", len(job.problems))]
    return lines + [
        ("Users who completed the old item", counts.get("rows_read")),
        ("New item completed", counts.get("imported", 0) + counts.get("updated", 0)),
        ("  of which replaced an existing completion", counts.get("updated")),
        ("Completed through the new item's contents", counts.get("derived_written")),
        ("Skipped without access to the new item", counts.get("skipped_without_access")),
        ("Already had the new item, kept", counts.get("kept")),
    ]


def archive(target: Target, job: TransferJob) -> TransferJob:
    """Move the pairs workbook out of the inbox after a real run (a dry run leaves it); clear the staging folder."""
    if job.path and not job.dry_run:
        folder = f"{storage.FAILED if job.refused else storage.PROCESSED}/{TRANSFERS}"
        job.archived_to = storage.free_name(target.root, folder, job.path.rsplit("/", 1)[-1], job.now)
        storage.move(target.root, job.path, job.archived_to)
    runs.release_staging(target, job.run_id, job.staging)
    return job


def run_transfer(target: Target, job: TransferJob) -> TransferJob:
    """Every stage after the plan, in order, in this process (tests and the benchmark use this)."""
    for stage in (transfer, report, archive):
        job = stage(target, job)
    return job
