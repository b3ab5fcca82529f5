"""E-mails and uuids -> the platform's user and content ids, for one platform; unknowns get their reason."""

from __future__ import annotations

import pandas as pd

from progression.platform import CONTENT_TYPE_OF, PlatformSnapshot
from progression.read import ROW

RESOLVED_COLUMNS = [ROW, "user_id", "content_id", "completed_at"]


def resolve_rows(valid: pd.DataFrame, platform: PlatformSnapshot, content_type: str, platform_slug: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(resolved, rejected). Content of another platform is simply not in the snapshot: unknown content."""
    merged = valid.merge(platform.users, on="email_key", how="left").merge(
        platform.content, on="uuid_key", how="left")
    wanted_type = CONTENT_TYPE_OF[content_type]
    unknown_user = merged["user_id"].isna()
    unknown_content = ~unknown_user & merged["content_id"].isna()
    wrong_type = ~unknown_user & ~unknown_content & merged["type"].ne(wanted_type)

    reason_code = pd.Series(pd.NA, index=merged.index, dtype="string")
    reason = pd.Series(pd.NA, index=merged.index, dtype="string")
    reason_code[unknown_user] = "unknown user"
    reason[unknown_user] = "no user with e-mail " + merged.loc[unknown_user, "email_key"] + \
        f" on platform {platform_slug}"
    reason_code[unknown_content] = "unknown content"
    reason[unknown_content] = "no content with uuid " + merged.loc[unknown_content, "uuid_key"] + \
        f" on platform {platform_slug}"
    reason_code[wrong_type] = "wrong content type"
    reason[wrong_type] = ("content " + merged.loc[wrong_type, "uuid_key"] + " is a " + merged.loc[wrong_type, "type"]
                          + f", this file holds {content_type}")

    rejected_mask = reason_code.notna()
    rejected = pd.DataFrame({ROW: merged.loc[rejected_mask, ROW], "reason_code": reason_code[rejected_mask],
                             "reason": reason[rejected_mask]}).reset_index(drop=True)
    resolved = merged.loc[~rejected_mask, RESOLVED_COLUMNS].reset_index(drop=True)
    resolved["user_id"] = resolved["user_id"].astype("int64")
    resolved["content_id"] = resolved["content_id"].astype("int64")
    return resolved, rejected
