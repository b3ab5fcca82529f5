"""Row checks: Great Expectations for the column rules, then dates; every failing row gets its reason."""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import types
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from progression.read import DATE, EMAIL, ROW, UUID, parse_dates

# Python's \s spelt out (the characters str.isspace() accepts, none above U+3000): so spelt, pandas hands the
# pattern to Arrow's RE2 instead of matching row by row in Python (1M rows: 2.7 s -> 0.6 s).
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
EMAIL_PATTERN = f"^[^@{_WHITESPACE}]+@[^@{_WHITESPACE}]+\\.[^@{_WHITESPACE}]+$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Checked in this order; a row is rejected for the first rule it breaks. (column, GX expectation, kwargs, reason)
# The content column may name content by its uuid, its title or the customer's code: resolving decides which.
COLUMN_RULES: tuple[tuple[str, str, dict[str, str], str], ...] = (
    ("email_key", "ExpectColumnValuesToNotBeNull", {}, "missing e-mail"),
    ("email_key", "ExpectColumnValuesToMatchRegex", {"regex": EMAIL_PATTERN}, "invalid e-mail"),
    ("uuid_key", "ExpectColumnValuesToNotBeNull", {}, "missing content uuid"),
)
FIELD_OF_KEY = {"email_key": EMAIL, "uuid_key": UUID}

# Valid rows: ROW, email_key, uuid_key, completed_at. Rejected rows: ROW, reason_code, reason.
VALID_COLUMNS = [ROW, "email_key", "uuid_key", "completed_at"]


def normalised(rows: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({ROW: rows[ROW]})
    for key, field in FIELD_OF_KEY.items():
        text = rows[field].astype("string").str.strip().str.lower()
        out[key] = text.mask(text.eq(""))
    return out


# Great Expectations imports every expectation it ships. One of them, the KL divergence, imports scipy.stats and
# altair (2 s of the 4-5 s GX takes to import here), which the column rules above never use: they stand in as
# placeholders, imported on first use, so a task that uses them still works.
UNUSED_BY_THE_RULES = ("scipy.stats", "altair")


def import_great_expectations() -> Any:
    """GX, imported once per process. What the process holds once GX is in, its libraries and theirs, lives as
    long as the process: it is frozen out of the collector's sight, so that a full collection (a task's own, and
    the interpreter's last one as `airflow dags test` exits: 2-3 s of a one-row file's run) walks only what came
    after."""
    first = "great_expectations" not in sys.modules
    for name in UNUSED_BY_THE_RULES:
        _import_on_first_use(name)
    import great_expectations as gx  # slow import: only inside the task or a worker's preload

    if first:
        gc.freeze()
    return gx


_importing = threading.RLock()  # the import itself may read the stand-in again


class _ImportedOnFirstUse(types.ModuleType):
    """A module's stand-in in sys.modules until one of its attributes is read, which imports the module and makes
    this stand-in a view of it (those who imported the stand-in keep it)."""

    def __getattr__(self, attribute: str) -> Any:
        name = self.__name__
        with _importing:
            if sys.modules.get(name) is self:
                parent, _, child = name.rpartition(".")
                del sys.modules[name]
                if parent and getattr(sys.modules[parent], child, None) is self:
                    delattr(sys.modules[parent], child)  # else the package's own imports would find the stand-in
                self.__dict__.update(vars(importlib.import_module(name)))
        return getattr(sys.modules[name], attribute)


def _import_on_first_use(name: str) -> None:
    if name in sys.modules:
        return
    stand_in = _ImportedOnFirstUse(name)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # `from scipy import stats` takes the package's attribute
        setattr(importlib.import_module(parent), child, stand_in)


# Per thread: a GX data source's execution engine holds the batch it is validating, so two threads validating
# through one engine at once check each other's rows (seen: 24 of 60 concurrent validations wrong).
_column_checks = threading.local()


def prepare_column_checks():
    """The GX suite and the batch definition it validates, made once per thread."""
    if not hasattr(_column_checks, "prepared"):
        _column_checks.prepared = _column_checks_of_a_new_context()
    return _column_checks.prepared


def _column_checks_of_a_new_context():
    gx = import_great_expectations()

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("input_rows").add_dataframe_asset("rows")
    batch_definition = asset.add_batch_definition_whole_dataframe("file")
    suite = gx.ExpectationSuite(name="completion_rows")
    for column, expectation, kwargs, _reason in COLUMN_RULES:
        suite.add_expectation(getattr(gx.expectations, expectation)(column=column, **kwargs))
    return batch_definition, suite


def column_failures(keys: pd.DataFrame) -> pd.DataFrame:
    """Run the GX suite; one row per (row position, rule index) that failed."""
    from great_expectations.validator.v1_validator import Validator

    batch_definition, suite = prepare_column_checks()
    frame = keys.reset_index(drop=True)
    # One validator over the batch: Batch.validate would load (and fingerprint) the frame a second time.
    validator = Validator(
        batch_definition=batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE"},
    )
    result = validator.validate_expectation_suite(suite)
    failures = []
    for outcome in result.results:
        config = outcome.expectation_config
        assert config is not None, "a suite's results each name their expectation"
        rule = next(
            i
            for i, (col, exp, _k, _r) in enumerate(COLUMN_RULES)
            if col == config.kwargs["column"] and _snake(exp) == config.type
        )
        for position in outcome.result.get("unexpected_index_list") or []:
            failures.append((position, rule))
    return pd.DataFrame(failures, columns=["position", "rule"], dtype="int64")


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def validate_rows(
    rows: pd.DataFrame,
    headers: dict[str, str],
    *,
    tz: ZoneInfo,
    date_order: str,
    now: datetime,
    import_date: date | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split canonical input rows into (valid, rejected). `headers` maps field -> the file's own header."""
    keys = normalised(rows).reset_index(drop=True)
    reason_code = pd.Series(pd.NA, index=keys.index, dtype="string")
    reason = pd.Series(pd.NA, index=keys.index, dtype="string")

    failures = column_failures(keys).sort_values(["position", "rule"]).drop_duplicates("position")
    for rule, group in failures.groupby(failures["rule"].astype(int)):
        column, _exp, _kw, code = COLUMN_RULES[rule]
        positions = group["position"].to_numpy()
        values = rows[FIELD_OF_KEY[column]].reset_index(drop=True).iloc[positions].fillna("")
        header = headers.get(FIELD_OF_KEY[column], FIELD_OF_KEY[column])
        reason_code.iloc[positions] = code
        reason.iloc[positions] = (
            f"{code} in column '{header}'" + values.map(lambda v: f": {v!r}" if v else "")
        ).to_numpy()

    dates = parse_dates(
        rows[DATE].reset_index(drop=True), tz=tz, date_order=date_order, now=now, import_date=import_date
    )
    date_failed = dates.error.notna() & reason_code.isna()
    if date_failed.any():
        header = headers.get(DATE, "Completion date")
        reason_code[date_failed] = dates.error[date_failed].str.extract(r"^(unreadable date|date in the future)")[0]
        reason[date_failed] = dates.error[date_failed] + f" in column '{header}'"

    keys["completed_at"] = dates.completed_at
    rejected_mask = reason_code.notna()
    valid = keys.loc[~rejected_mask, VALID_COLUMNS].reset_index(drop=True)
    rejected = pd.DataFrame(
        {ROW: keys.loc[rejected_mask, ROW], "reason_code": reason_code[rejected_mask], "reason": reason[rejected_mask]}
    ).reset_index(drop=True)
    return valid, rejected
