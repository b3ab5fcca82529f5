"""progression_merge_users through Airflow itself: `bin/airflow dags test` with the test's own registry and
platform databases, then the completions, the ledger and the report checked. Refusals (an unknown account, a bad
pair) and dry runs: tests/progression/test_merge.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dags_support import engine_of, run_dag, summary_line
from demo_platform import describe
from progression import ledger
from progression.platform import completions, users
from support import complete

pytestmark = pytest.mark.airflow


def held_by(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                sa.select(users.c.email, sa.func.count())
                .join(completions, completions.c.user_id == users.c.id)
                .group_by(users.c.email)
            ).all()
        )


def test_a_merge_moves_one_accounts_completions_onto_the_other(world):
    engine = engine_of(world, "acme")
    found = describe(engine, "acme")
    source, into = found.emails[0], found.emails[1]
    for uuid in found.uuids["activity"][:3]:
        complete(engine, source, uuid, "2024-03-01")
    complete(engine, into, found.uuids["activity"][0], "2024-01-01")
    done = run_dag(
        world, "progression_merge_users", {"customer": "acme", "from_email": source, "to_email": into, "mode": "move"}
    )
    summary = summary_line(done, "progression_merge_users")
    assert (summary["copied"], summary["kept"], summary["replaced"], summary["removed"]) == (2, 1, 0, 3)
    assert summary["status"] == "succeeded" and not summary["dry_run"]
    assert held_by(engine) == {into: 3}
    assert (world["dir"] / "acme" / summary["report"]).exists()
    with engine.connect() as conn:
        assert ledger.get_run(conn, summary["run_id"])["dag_id"] == "progression_merge_users"
