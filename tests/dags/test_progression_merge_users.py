"""progression_merge_users through Airflow itself: `bin/airflow dags test` with the test's own registry and
platform databases, then the completions, the ledger and the report checked."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from dags_support import engine_of, run_dag, summary_line
from progression import ledger
from demo_platform import describe
from progression.platform import completions, content, users

pytestmark = pytest.mark.airflow


def complete(engine, email: str, uuid: str, at: str) -> None:
    with engine.begin() as conn:
        user_id = conn.execute(sa.select(users.c.id).where(users.c.email == email)).scalar_one()
        content_id = conn.execute(sa.select(content.c.id).where(content.c.uuid == uuid)).scalar_one()
        conn.execute(sa.insert(completions).values(
            user_id=user_id, content_id=content_id, source="platform",
            completed_at=datetime.fromisoformat(at).replace(tzinfo=timezone.utc)))


def held_by(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(users.c.email, sa.func.count()).join(
            completions, completions.c.user_id == users.c.id).group_by(users.c.email)).all())


def test_a_merge_moves_one_accounts_completions_onto_the_other(world):
    engine = engine_of(world, "acme")
    found = describe(engine, "acme")
    source, into = found.emails[0], found.emails[1]
    for uuid in found.uuids["activity"][:3]:
        complete(engine, source, uuid, "2024-03-01")
    complete(engine, into, found.uuids["activity"][0], "2024-01-01")
    done = run_dag(world, "progression_merge_users",
                   {"customer": "acme", "from_email": source, "to_email": into, "mode": "move"})
    summary = summary_line(done, "progression_merge_users")
    assert (summary["copied"], summary["kept"], summary["replaced"], summary["removed"]) == (2, 1, 0, 3)
    assert summary["status"] == "succeeded" and not summary["dry_run"]
    assert held_by(engine) == {into: 3}
    assert (world["dir"] / "acme" / summary["report"]).exists()
    with engine.connect() as conn:
        assert ledger.get_run(conn, summary["run_id"])["dag_id"] == "progression_merge_users"


def test_a_merge_of_an_unknown_account_is_refused_naming_the_field(world):
    engine = engine_of(world, "acme")
    found = describe(engine, "acme")
    complete(engine, found.emails[0], found.uuids["activity"][0], "2024-03-01")
    done = run_dag(world, "progression_merge_users",
                   {"customer": "acme", "from_email": found.emails[0], "to_email": "nobody@acme.example"})
    assert "to_email 'nobody@acme.example': no user with this e-mail on platform acme" in done.stdout + done.stderr
    assert held_by(engine) == {found.emails[0]: 1}
