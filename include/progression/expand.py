"""Programme -> journeys -> activities: what completing an item completes, and who can see it."""

from __future__ import annotations

import numpy as np
import pandas as pd


def descendants(items: pd.Series, edges: pd.DataFrame) -> pd.DataFrame:
    """Every (item, descendant) pair below the given items, through any depth; shared children appear once."""
    frontier = pd.DataFrame({"item": items.unique(), "parent_id": items.unique()})
    found = []
    seen_depth = 0
    while not frontier.empty and seen_depth < 16:  # the platform nests three levels; the bound stops a cycle
        step = frontier.merge(edges, on="parent_id")[["item", "child_id"]].drop_duplicates()
        found.append(step)
        frontier = step.rename(columns={"child_id": "parent_id"})
        seen_depth += 1
    if not found:
        return pd.DataFrame({"item": pd.Series(dtype="int64"), "descendant": pd.Series(dtype="int64")})
    return pd.concat(found).rename(columns={"child_id": "descendant"}).drop_duplicates().reset_index(drop=True)


def ancestors(items: pd.Series, edges: pd.DataFrame) -> pd.DataFrame:
    """Every (item, ancestor) pair including the item itself."""
    flipped = edges.rename(columns={"parent_id": "child_id", "child_id": "parent_id"})
    above = descendants(items, flipped).rename(columns={"descendant": "ancestor"})
    itself = pd.DataFrame({"item": items.unique(), "ancestor": items.unique()})
    return pd.concat([itself, above]).drop_duplicates().reset_index(drop=True)


def expand_completions(resolved: pd.DataFrame, edges: pd.DataFrame) -> pd.DataFrame:
    """Direct completions plus what they contain, one row per (user, content) with the earliest date.

    Columns: user_id, content_id, completed_at, direct (the file named this item for this user). The derived rows
    are built as index arrays into the file's rows and the descendant pairs, not as a merge: a programmes file
    that completes 6M items keeps one copy of each column instead of three.
    """
    items = resolved["content_id"].to_numpy("int64")
    below = descendants(resolved["content_id"], edges).sort_values("item", kind="stable")
    below_items = below["item"].to_numpy("int64")
    first = np.searchsorted(below_items, items, side="left")
    count = np.searchsorted(below_items, items, side="right") - first
    # Row r of the file completes below's rows first[r] .. first[r] + count[r] - 1, one derived row each.
    of_row = np.repeat(np.arange(len(items)), count)
    at = np.arange(len(of_row))
    at -= np.repeat(np.cumsum(count) - count - first, count)
    users = resolved["user_id"].to_numpy("int64")
    dates = resolved["completed_at"].to_numpy("datetime64[us]")  # UTC
    every = pd.DataFrame(
        {
            "user_id": np.concatenate([users, users[of_row]]),
            "content_id": np.concatenate([items, below["descendant"].to_numpy("int64")[at]]),
            "completed_at": pd.Series(np.concatenate([dates, dates[of_row]]), dtype="datetime64[us]").dt.tz_localize(
                "UTC"
            ),
            "direct": np.concatenate([np.ones(len(items), dtype=bool), np.zeros(len(of_row), dtype=bool)]),
        }
    )
    del of_row, at
    return every.groupby(["user_id", "content_id"], as_index=False, sort=False).agg(
        completed_at=("completed_at", "min"), direct=("direct", "any")
    )


def without_access(resolved: pd.DataFrame, assignments: pd.DataFrame, edges: pd.DataFrame) -> pd.Series:
    """Per resolved row: True when none of the user's groups gives the item or anything containing it."""
    above = ancestors(resolved["content_id"], edges)
    users = pd.Index(assignments["user_id"].unique())
    items = pd.Index(assignments["assigned_id"].unique())
    # Each (user, item) given through a group as one integer, so a million rows are looked up by hashing, not by
    # a merge of every row with each of its item's ancestors.
    given = users.get_indexer(assignments["user_id"]) * len(items) + items.get_indexer(assignments["assigned_id"])
    user_at = users.get_indexer(resolved["user_id"])
    reachable = np.zeros(len(resolved), dtype=bool)
    for _, level in above.groupby(above.groupby("item").cumcount()):  # an item's first ancestor, its second, ...
        level_at = pd.Index(level["item"]).get_indexer(resolved["content_id"])
        ancestor_at = np.append(items.get_indexer(level["ancestor"]), -1)[level_at]  # -1: none, or given to no one
        known = (user_at >= 0) & (ancestor_at >= 0)
        reachable |= known & pd.Index(user_at * len(items) + ancestor_at).isin(given)
    return pd.Series(~reachable, index=resolved.index)
