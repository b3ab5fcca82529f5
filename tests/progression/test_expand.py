"""What completing an item completes, and who can see what: on a small hierarchy written out by hand."""

from __future__ import annotations

import pandas as pd

from progression.expand import expand_completions, without_access

# Programme 1 holds journeys 10 and 11; journey 10 holds activities 100 and 101, journey 11 holds 101 (shared) and
# 110. Activity 200 is in nothing.
EDGES = pd.DataFrame({"parent_id": [1, 1, 10, 10, 11, 11], "child_id": [10, 11, 100, 101, 101, 110]})
AT = pd.Timestamp("2026-03-01", tz="UTC")


def rows(*pairs: tuple[int, int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": range(2, 2 + len(pairs)),
            "user_id": [user for user, _ in pairs],
            "content_id": [item for _, item in pairs],
            "completed_at": AT,
        }
    )


def test_access_comes_from_the_item_or_anything_above_it_and_only_for_the_user_given_it():
    assignments = pd.DataFrame(
        {
            "user_id": [7, 8, 9, 9],
            "assigned_id": [1, 11, 200, 100],  # 7: the programme; 8: journey 11; 9: activities 200 and 100
        }
    )
    completed = rows(
        (7, 100),  # under the programme: seen
        (7, 1),  # the programme itself: seen
        (7, 200),  # outside it: not seen
        (8, 101),  # shared activity, reached through journey 11: seen
        (8, 100),  # only under journey 10: not seen
        (8, 1),  # the programme above the journey: not seen
        (9, 200),  # given directly: seen
        (9, 101),  # a sibling of what 9 was given: not seen
        (6, 100),  # a user in no group: not seen
    )
    assert without_access(completed, assignments, EDGES).tolist() == [
        False,
        False,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
    ]


def test_without_any_group_everything_is_without_access():
    empty = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "assigned_id": pd.Series(dtype="int64")})
    assert without_access(rows((7, 100), (7, 1)), empty, EDGES).tolist() == [True, True]


def test_a_journey_completes_its_activities_once_each_with_the_earliest_date():
    completed = rows((7, 10), (7, 11)).assign(
        completed_at=[pd.Timestamp("2026-03-05", tz="UTC"), pd.Timestamp("2026-03-02", tz="UTC")]
    )
    every = expand_completions(completed, EDGES).sort_values("content_id").reset_index(drop=True)
    assert every["content_id"].tolist() == [10, 11, 100, 101, 110]
    assert every["direct"].tolist() == [True, True, False, False, False]
    # 101 sits in both journeys: the earlier of the two dates.
    assert every.set_index("content_id").loc[101, "completed_at"] == pd.Timestamp("2026-03-02", tz="UTC")
