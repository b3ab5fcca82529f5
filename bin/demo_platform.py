"""The demo platform generator, outside the production package: `bin/progression-db seed-demo` seeds the demo with it,
the tests build their platforms with it, and the benchmarks (bench/) their data."""

from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import openpyxl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from progression import storage
from progression.platform import (
    completions,
    content,
    content_groups,
    content_items,
    group_members,
    groups,
    platforms,
    users,
)

TOPICS = [
    "Onboarding",
    "Data Privacy",
    "Workplace Safety",
    "Customer Care",
    "Leadership",
    "Agile Basics",
    "Sales Conversations",
    "Information Security",
    "Diversity & Inclusion",
    "Time Management",
    "Feedback Skills",
    "Project Management",
    "Excel Essentials",
    "First Aid",
    "Ethics & Compliance",
]
FIRST = [
    "anna",
    "bram",
    "chloe",
    "daan",
    "emma",
    "finn",
    "iris",
    "jesse",
    "lotte",
    "milan",
    "noa",
    "sem",
    "tess",
    "luuk",
    "sara",
    "thijs",
    "julia",
    "ruben",
    "eva",
    "lars",
]


@dataclass(frozen=True)
class DemoSizes:
    users: int = 120
    programmes: int = 3
    journeys_per_programme: int = 3
    activities_per_journey: int = 4
    shared_items: int = 2  # activities placed in a second journey, journeys in a second programme
    standalone_activities: int = 4
    groups: int = 4
    users_without_group: int = 10
    seed: int = 7


@dataclass
class Platform:
    """What was generated, by kind: ids and the values a file would use."""

    platform_id: int
    emails: list[str] = field(default_factory=list)
    uuids: dict[str, list[str]] = field(default_factory=dict)  # activity | journey | programme -> uuids


def seed_platform(engine: Engine, slug: str, name: str | None = None, sizes: DemoSizes = DemoSizes()) -> bool:
    """Create the platform with users, content, hierarchy and groups. False when it exists already."""
    rng = random.Random(f"{slug}:{sizes.seed}")
    with engine.begin() as conn:
        if conn.execute(sa.select(platforms.c.id).where(platforms.c.slug == slug)).scalar() is not None:
            return False
        pid = conn.execute(
            sa.insert(platforms).values(slug=slug, name=name or slug.title()).returning(platforms.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(users),
            [
                {"platform_id": pid, "email": f"{FIRST[i % len(FIRST)]}.{i:05d}@{slug}.example"}
                for i in range(sizes.users)
            ],
        )

        def new_items(kind: str, count: int) -> list[int]:
            rows = [
                {
                    "platform_id": pid,
                    "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "type": kind,
                    "title": f"{rng.choice(TOPICS)} {kind} {index + 1}",
                }
                for index in range(count)
            ]
            if not rows:
                return []
            conn.execute(sa.insert(content), rows)
            return list(
                conn.execute(
                    sa.select(content.c.id).where(content.c.uuid.in_([r["uuid"] for r in rows])).order_by(content.c.id)
                ).scalars()
            )

        programmes = new_items("programme", sizes.programmes)
        journeys = new_items("journey", sizes.programmes * sizes.journeys_per_programme)
        activities = new_items("activity", len(journeys) * sizes.activities_per_journey)
        new_items("activity", sizes.standalone_activities)
        edges = []
        for p_index, programme in enumerate(programmes):
            for j in range(sizes.journeys_per_programme):
                edges.append((programme, journeys[p_index * sizes.journeys_per_programme + j], j))
        for j_index, journey in enumerate(journeys):
            for a in range(sizes.activities_per_journey):
                edges.append((journey, activities[j_index * sizes.activities_per_journey + a], a))
        taken = set((p, c) for p, c, _ in edges)
        for index in range(sizes.shared_items):
            if len(journeys) > 1:  # an activity of one journey also in the next journey
                pair = (journeys[(index + 1) % len(journeys)], activities[index * sizes.activities_per_journey])
                if pair not in taken:
                    edges.append((*pair, 99))
                    taken.add(pair)
            if len(programmes) > 1:  # a journey of one programme also in the next programme
                pair = (programmes[(index + 1) % len(programmes)], journeys[index * sizes.journeys_per_programme])
                if pair not in taken:
                    edges.append((*pair, 99))
                    taken.add(pair)
        if edges:
            conn.execute(
                sa.insert(content_items), [{"parent_id": p, "child_id": c, "position": pos} for p, c, pos in edges]
            )

        user_ids = list(
            conn.execute(sa.select(users.c.id).where(users.c.platform_id == pid).order_by(users.c.id)).scalars()
        )
        if sizes.groups:
            conn.execute(
                sa.insert(groups),
                [{"platform_id": pid, "name": f"Team {chr(65 + g % 26)}{g // 26 or ''}"} for g in range(sizes.groups)],
            )
            group_ids = list(
                conn.execute(sa.select(groups.c.id).where(groups.c.platform_id == pid).order_by(groups.c.id)).scalars()
            )
            members = user_ids[sizes.users_without_group :]
            conn.execute(
                sa.insert(group_members),
                [{"group_id": group_ids[i % len(group_ids)], "user_id": u} for i, u in enumerate(members)],
            )
            # Each group sees one programme (and so everything in it); the last also sees one loose journey.
            assigned = [
                {"content_id": programmes[g % len(programmes)], "group_id": gid}
                for g, gid in enumerate(group_ids)
                if programmes
            ]
            conn.execute(sa.insert(content_groups), assigned) if assigned else None
    return True


def describe(engine: Engine, slug: str) -> Platform:
    with engine.connect() as conn:
        pid = conn.execute(sa.select(platforms.c.id).where(platforms.c.slug == slug)).scalar_one()
        found = Platform(platform_id=pid)
        found.emails = list(
            conn.execute(sa.select(users.c.email).where(users.c.platform_id == pid).order_by(users.c.id)).scalars()
        )
        for kind in ("activity", "journey", "programme"):
            found.uuids[kind] = [
                str(u)
                for u in conn.execute(
                    sa.select(content.c.uuid)
                    .where(content.c.platform_id == pid, content.c.type == kind)
                    .order_by(content.c.id)
                ).scalars()
            ]
    return found


def workbook_bytes(header: list[str], rows: list[list], title: str | None = None, sheet: str = "Completions") -> bytes:
    book = openpyxl.Workbook()
    sheet_ = book.active
    sheet_.title = sheet
    if title:
        sheet_.append([title])
    sheet_.append(header)
    for row in rows:
        sheet_.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def sample_files(found: Platform, today: date, seed: int = 11) -> dict[str, bytes]:
    """A realistic inbox: every accepted date form, extra columns, and a few bad rows in each file."""
    rng = random.Random(seed)
    emails, acts, journeys, progs = (
        found.emails,
        found.uuids["activity"],
        found.uuids["journey"],
        found.uuids["programme"],
    )
    day = lambda n: datetime.combine(today - timedelta(days=n), datetime.min.time())  # noqa: E731
    forms = [
        lambda d: d,  # a real Excel date cell
        lambda d: d.strftime("%Y-%m-%d"),  # ISO text
        lambda d: d.strftime("%d-%m-%Y"),  # day first text
        lambda d: (d - datetime(1899, 12, 30)).days,  # Excel serial number
        lambda d: d.replace(hour=14, minute=30),  # date-time
        lambda d: None,  # blank: the day of the import
    ]
    activity_rows = []
    for index in range(80):
        email = emails[rng.randrange(len(emails))]
        activity_rows.append(
            [
                email.upper() if index % 9 == 0 else email,
                acts[rng.randrange(len(acts))],
                forms[index % len(forms)](day(rng.randrange(5, 400))),
                "Imported from LMS",
            ]
        )
    activity_rows[3][0] = "ghost.user@nowhere.example"  # unknown user
    activity_rows[10][1] = str(uuid.UUID(int=rng.getrandbits(128), version=4))  # unknown content
    activity_rows[17][1] = journeys[0]  # a journey in an activities file
    activity_rows[24][2] = datetime(2099, 1, 1)  # a date in the future
    activity_rows[31][0] = "not-an-email"  # invalid e-mail
    activity_rows.append(list(activity_rows[5]))  # the same row twice counts once
    journey_rows = [
        [
            emails[rng.randrange(len(emails))],
            journeys[i % len(journeys)],
            day(rng.randrange(5, 200)).strftime("%d/%m/%Y"),
        ]
        for i in range(24)
    ]
    journey_rows[7][2] = "31/02/2025"  # no such date
    programme_lines = ["User e-mail;Content uuid;Completed on"] + [
        f"{emails[rng.randrange(len(emails))]};{progs[i % len(progs)]};{day(rng.randrange(5, 300)):%Y-%m-%d}"
        for i in range(12)
    ]
    return {
        "inbox/activities/lms-export-activities.xlsx": workbook_bytes(
            ["E-mail", "Content UUID", "Completion date", "Note"],
            activity_rows,
            title="Completions exported from the old LMS",
        ),
        "inbox/journeys/journeys-completed.xlsx": workbook_bytes(
            ["User email", "Content uuid", "Completion date"], journey_rows
        ),
        "inbox/programmes/programmes.csv": ("\n".join(programme_lines) + "\n").encode("utf-8"),
    }


def drop_sample_files(engine: Engine, slug: str, root, today: date | None = None) -> list[str]:
    """Write the sample files into the customer's inbox. They are made once and kept under `samples/`, so a
    second drop carries the same bytes, as a customer re-sending the same export would."""
    files = {}
    for rel, data in sample_files(describe(engine, slug), today or date(2026, 11, 1)).items():
        kept = f"samples/{rel.removeprefix('inbox/')}"
        if storage.at(root, kept).exists():
            data = storage.at(root, kept).read_bytes()
        else:
            storage.write_bytes(root, kept, data)
        files[rel] = data
    for rel, data in files.items():
        storage.write_bytes(root, rel, data)
    return list(files)


def transfer_pair(engine: Engine, slug: str) -> tuple[str, str]:
    """The demo's transfer, once the sample files are imported: the first journey anyone completed is replaced by
    the journey after it. That one sits in a single programme, so some users cannot see it and are skipped, and the
    import completed it for others already."""
    with engine.connect() as conn:
        first_journey = (
            sa.select(content.c.id, content.c.uuid)
            .join(platforms, platforms.c.id == content.c.platform_id)
            .where(platforms.c.slug == slug, content.c.type == "journey")
            .order_by(content.c.id)
            .limit(1)
        )
        old = conn.execute(first_journey.where(sa.exists().where(completions.c.content_id == content.c.id))).first()
        new = conn.execute(first_journey.where(content.c.id > old.id)).first() if old else None
    if old is None or new is None:
        raise LookupError(f"platform {slug!r} has no journey with completions to transfer; import the samples first")
    return str(old.uuid), str(new.uuid)
