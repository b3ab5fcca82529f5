"""Which rows of a file repeat another's completion."""

from __future__ import annotations

import pandas as pd

from progression.resolve import repeated_rows


def test_a_repeat_points_at_the_earliest_row_of_its_user_and_content():
    resolved = pd.DataFrame(
        {
            "row": [2, 3, 4, 5, 6, 7],
            "user_id": [1, 1, 1, 2, 1, 2],
            "content_id": [10, 10, 11, 10, 10, 10],
            "completed_at": pd.to_datetime(
                ["2024-05-01", "2024-03-01", "2024-01-01", "2024-02-01", "2024-03-01", "2024-02-01"], utc=True
            ),
        }
    )
    # (1, 10): row 3 and row 6 share the earliest date, row 3 comes first; (2, 10): same date, row 5 first.
    assert repeated_rows(resolved).tolist() == [3, pd.NA, pd.NA, pd.NA, 3, 5]
