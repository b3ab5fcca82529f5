"""The learning platform's own tables (owned by the platform, read and written here) and what we read from them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()

# Native uuid on PostgreSQL; lowercase 36-character text elsewhere.
Uuid = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcTime = sa.DateTime(timezone=True)

CONTENT_TYPE_OF = {"activities": "activity", "journeys": "journey", "programmes": "programme"}

platforms = sa.Table(
    "platforms",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("slug", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
)
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("platform_id", Id, sa.ForeignKey("platforms.id"), nullable=False, index=True),
    sa.Column("email", sa.String(320), nullable=False),
)
content = sa.Table(
    "content",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("platform_id", Id, sa.ForeignKey("platforms.id"), nullable=False, index=True),
    sa.Column("uuid", Uuid, nullable=False, unique=True),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("title", sa.String(300), nullable=False),
)
content_items = sa.Table(
    "content_items",
    metadata,
    sa.Column("parent_id", Id, sa.ForeignKey("content.id"), primary_key=True),
    sa.Column("child_id", Id, sa.ForeignKey("content.id"), primary_key=True, index=True),
    sa.Column("position", sa.Integer, nullable=False, default=0),
)
groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("platform_id", Id, sa.ForeignKey("platforms.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
)
group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", Id, sa.ForeignKey("groups.id"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), primary_key=True, index=True),
)
content_groups = sa.Table(
    "content_groups",
    metadata,
    sa.Column("content_id", Id, sa.ForeignKey("content.id"), primary_key=True),
    sa.Column("group_id", Id, sa.ForeignKey("groups.id"), primary_key=True, index=True),
)
# No foreign keys on completions: the contract names only its primary key, and per-row RI checks would triple the
# cost of a bulk upsert. Every writer here resolves ids against the platform's own users and content first.
completions = sa.Table(
    "completions",
    metadata,
    sa.Column("user_id", Id, primary_key=True),
    sa.Column("content_id", Id, primary_key=True, index=True),
    sa.Column("completed_at", UtcTime, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("run_id", sa.String(100), nullable=True),
)
# E-mails are unique per platform, compared trimmed and case-insensitively.
sa.Index("users_platform_email", users.c.platform_id, sa.func.lower(sa.func.trim(users.c.email)), unique=True)


class UnknownPlatform(LookupError):
    pass


def create_platform_tables(engine: Engine) -> None:
    """For the embedded default, demos and tests only: in production the platform owns these tables."""
    metadata.create_all(engine)


def platform_id(conn: Connection, slug: str) -> int:
    found = conn.execute(sa.select(platforms.c.id).where(platforms.c.slug == slug)).scalar()
    if found is None:
        raise UnknownPlatform(f"platform {slug!r} does not exist in this database")
    return found


def normalise_email(emails: pd.Series) -> pd.Series:
    return emails.astype("string").str.strip().str.lower()


def _frame(conn: Connection, query, columns: list[str]) -> pd.DataFrame:
    """A query's rows as columns: building a DataFrame from Row objects costs a Python call per row and cell."""
    rows = conn.execute(query).all()
    values = list(zip(*rows)) if rows else [()] * len(columns)
    return pd.DataFrame({name: list(column) for name, column in zip(columns, values)})


def load_users(conn: Connection, platform: int) -> pd.DataFrame:
    """The platform's users keyed by normalised e-mail: columns `user_id`, `email_key`."""
    frame = _frame(
        conn, sa.select(users.c.id, users.c.email).where(users.c.platform_id == platform), ["user_id", "email"]
    )
    frame["email_key"] = normalise_email(frame["email"])
    return frame[["user_id", "email_key"]]


def load_content(conn: Connection, platform: int) -> pd.DataFrame:
    """The platform's content: columns `content_id`, `uuid_key` (lowercase text), `type`, `title_key` (the title
    trimmed and lowercase: a file may name content by its title)."""
    frame = _frame(
        conn,
        sa.select(content.c.id, content.c.uuid, content.c.type, content.c.title).where(
            content.c.platform_id == platform
        ),
        ["content_id", "uuid", "type", "title"],
    )
    frame["uuid_key"] = frame["uuid"].astype("string").str.lower()
    frame["title_key"] = frame["title"].astype("string").str.strip().str.lower()
    return frame[["content_id", "uuid_key", "type", "title_key"]]


def load_edges(conn: Connection, platform: int) -> pd.DataFrame:
    """Parent -> child edges among the platform's content: columns `parent_id`, `child_id`."""
    parent = content.alias("parent")
    return _frame(
        conn,
        sa.select(content_items.c.parent_id, content_items.c.child_id)
        .join(parent, parent.c.id == content_items.c.parent_id)
        .where(parent.c.platform_id == platform),
        ["parent_id", "child_id"],
    )


def load_assignments(conn: Connection, platform: int) -> pd.DataFrame:
    """Which user is given which item through a group: columns `user_id`, `assigned_id`."""
    query = (
        sa.select(group_members.c.user_id, content_groups.c.content_id)
        .join(content_groups, content_groups.c.group_id == group_members.c.group_id)
        .join(groups, groups.c.id == group_members.c.group_id)
        .where(groups.c.platform_id == platform)
        .distinct()
    )
    return _frame(conn, query, ["user_id", "assigned_id"])


@dataclass(frozen=True)
class PlatformSnapshot:
    """What one import needs to know of one platform, read once."""

    platform_id: int
    users: pd.DataFrame
    content: pd.DataFrame
    edges: pd.DataFrame


def snapshot(conn: Connection, slug: str) -> PlatformSnapshot:
    pid = platform_id(conn, slug)
    return PlatformSnapshot(pid, load_users(conn, pid), load_content(conn, pid), load_edges(conn, pid))
