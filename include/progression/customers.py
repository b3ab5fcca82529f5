"""The customer registry: which platforms exist, where their files live and how their imports behave."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

CONTENT_TYPES = ("activities", "journeys", "programmes")
ON_EXISTING = ("keep", "earliest", "latest", "overwrite")
DATE_ORDERS = ("DMY", "MDY")
COLUMN_KEYS = ("email", "uuid", "date")  # the registry's `columns`: the customer's own header for each
DEFAULT_SCHEDULE = "0 2 * * *"
EXCEL_MAX_ROWS = 1_048_576  # Excel's last row: the default bound on the rows of one file
# Top-level registry keys that are settings, not customers.
SETTINGS_KEYS = ("schedule",)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DURATION = re.compile(r"^([1-9][0-9]*)([hdw])$")
_DURATION_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


class RegistryError(ValueError):
    """The registry file is missing or one of its entries is wrong."""


@dataclass(frozen=True)
class Customer:
    slug: str
    platform_conn_id: str
    platform: str
    storage: str
    timezone: str = "UTC"
    date_order: str = "DMY"
    on_existing: str = "keep"
    max_error_rate: float = 0.1
    max_rows: int = EXCEL_MAX_ROWS
    active: bool = True
    expect_files_every: str | None = None  # e.g. "1d": late when the last successful import is older
    notify: dict = field(default_factory=dict, hash=False)  # email, smtp_conn_id, slack_webhook_conn_id
    columns: dict = field(default_factory=dict, hash=False)  # email, uuid, date -> the customer's own header

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def expected_every(self) -> timedelta | None:
        return None if self.expect_files_every is None else parse_duration(self.expect_files_every)


def parse_duration(text: str) -> timedelta:
    """`12h`, `1d`, `7d`, `2w`: a whole number of hours, days or weeks."""
    found = _DURATION.match(str(text).strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 12h, 1d, 7d or 2w")
    return timedelta(**{_DURATION_UNITS[found[2]]: int(found[1])})


@dataclass(frozen=True)
class Registry:
    path: str
    customers: dict[str, Customer]
    schedule: str | None = DEFAULT_SCHEDULE  # None: no nightly run, manual triggers only

    def get(self, slug: str) -> Customer:
        try:
            return self.customers[slug]
        except KeyError:
            known = ", ".join(sorted(self.customers)) or "none"
            raise RegistryError(f"unknown customer {slug!r} (registry {self.path} has: {known})") from None

    def active(self) -> list[Customer]:
        return [c for c in self.customers.values() if c.active]


def registry_path() -> Path:
    default = Path(__file__).resolve().parent.parent / "customers.yaml"
    return Path(os.environ.get("PROGRESSION_CUSTOMERS") or default)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read the registry; `${VAR}` in values is expanded from the environment (e.g. `${PROGRESSION_HOME}`)."""
    path = Path(path) if path else registry_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RegistryError(f"customer registry {path} does not exist (set PROGRESSION_CUSTOMERS)") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"customer registry {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"customer registry {path} must map customer slugs to their settings")
    schedule = raw.get("schedule", DEFAULT_SCHEDULE)  # an explicit null: manual triggers only
    schedule = None if schedule is None else str(schedule)
    customers = {
        str(slug): _customer(path, str(slug), entry) for slug, entry in raw.items() if slug not in SETTINGS_KEYS
    }
    return Registry(path=str(path), customers=customers, schedule=schedule)


def _customer(path: Path, slug: str, entry: object) -> Customer:
    where = f"customer {slug!r} in {path}"
    if not _SLUG.match(slug):
        raise RegistryError(f"{where}: a slug is lowercase letters, digits, '-' and '_'")
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: expected a mapping of settings")
    missing = [k for k in ("platform_conn_id", "platform", "storage") if not entry.get(k)]
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(missing)}")
    known = set(Customer.__dataclass_fields__) - {"slug"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise RegistryError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {
        k: os.path.expandvars(v) if isinstance(v, str) else v for k, v in entry.items() if k in known
    }
    notify = values.get("notify") or {}
    if not isinstance(notify, dict) or set(notify) - {"email", "smtp_conn_id", "slack_webhook_conn_id"}:
        raise RegistryError(
            f"{where}: notify takes `email` (one address or a list), `smtp_conn_id` and `slack_webhook_conn_id`"
        )
    if isinstance(notify.get("email"), str):
        notify = {**notify, "email": [notify["email"]]}
    values["notify"] = notify
    columns = values.get("columns") or {}
    if (
        not isinstance(columns, dict)
        or set(columns) - set(COLUMN_KEYS)
        or not all(isinstance(header, str) and header.strip() for header in columns.values())
        or len({header.strip().lower() for header in columns.values()}) < len(columns)
    ):
        raise RegistryError(
            f"{where}: columns maps {', '.join(COLUMN_KEYS)} each to its own header the customer "
            'uses, e.g. {email: "Werknemer e-mail", uuid: "Cursus", date: "Afgerond op"}'
        )
    values["columns"] = columns
    customer = Customer(slug=slug, **values)
    if customer.date_order not in DATE_ORDERS:
        raise RegistryError(f"{where}: date_order must be one of {', '.join(DATE_ORDERS)}")
    if customer.on_existing not in ON_EXISTING:
        raise RegistryError(f"{where}: on_existing must be one of {', '.join(ON_EXISTING)}")
    try:
        rate = float(customer.max_error_rate)
    except (TypeError, ValueError):
        raise RegistryError(f"{where}: max_error_rate must be a number between 0 and 1") from None
    if not 0 <= rate <= 1:
        raise RegistryError(f"{where}: max_error_rate must be between 0 and 1")
    if isinstance(customer.max_rows, bool) or not isinstance(customer.max_rows, int) or customer.max_rows < 1:
        raise RegistryError(f"{where}: max_rows must be a whole number of rows above 0")
    if customer.expect_files_every is not None:
        try:
            customer.expected_every
        except ValueError as exc:
            raise RegistryError(f"{where}: expect_files_every: {exc}") from None
    try:
        customer.tz
    except (ZoneInfoNotFoundError, ValueError):
        raise RegistryError(f"{where}: unknown time zone {customer.timezone!r}") from None
    return customer
