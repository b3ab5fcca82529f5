"""The customer registry: what a data engineer writes in customers.yaml and what a mistake in it says."""

from __future__ import annotations

from datetime import timedelta

import pytest

from progression.customers import DEFAULT_SCHEDULE, RegistryError, load_registry

ACME = """
acme:
  platform_conn_id: acme_db
  platform: acme
  storage: s3://acme_files@acme-bucket/lms
  timezone: Europe/Amsterdam
"""


def registry(tmp_path, text: str):
    path = tmp_path / "customers.yaml"
    path.write_text(text)
    return load_registry(path)


def test_a_customer_with_defaults_and_the_nightly_schedule(tmp_path):
    found = registry(tmp_path, ACME)
    acme = found.get("acme")
    assert (acme.storage, acme.on_existing, acme.max_error_rate, acme.max_rows, acme.active) == (
        "s3://acme_files@acme-bucket/lms",
        "keep",
        0.1,
        1_048_576,
        True,
    )
    assert registry(tmp_path, ACME + "  max_rows: 50000\n").get("acme").max_rows == 50_000
    assert found.schedule == DEFAULT_SCHEDULE


def test_an_expected_file_interval_is_a_duration_and_absent_means_no_expectation(tmp_path):
    assert registry(tmp_path, ACME).get("acme").expected_every is None
    assert registry(tmp_path, ACME + "  expect_files_every: 12h\n").get("acme").expected_every == timedelta(hours=12)
    assert registry(tmp_path, ACME + "  expect_files_every: 7d\n").get("acme").expected_every == timedelta(days=7)
    assert registry(tmp_path, ACME + "  expect_files_every: 2w\n").get("acme").expected_every == timedelta(days=14)


def test_a_customer_may_name_its_own_columns(tmp_path):
    text = ACME + '  columns: {email: "Werknemer e-mail", uuid: Cursus, date: "Afgerond op"}\n'
    assert registry(tmp_path, text).get("acme").columns == {
        "email": "Werknemer e-mail",
        "uuid": "Cursus",
        "date": "Afgerond op",
    }
    assert registry(tmp_path, ACME).get("acme").columns == {}


def test_the_schedule_can_be_changed_or_switched_off_for_manual_runs(tmp_path):
    assert registry(tmp_path, 'schedule: "30 4 * * *"\n' + ACME).schedule == "30 4 * * *"
    assert registry(tmp_path, "schedule: null\n" + ACME).schedule is None


def test_values_are_expanded_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_BUCKET", "acme-prod")
    text = ACME.replace("acme-bucket", "${ACME_BUCKET}")
    assert registry(tmp_path, text).get("acme").storage == "s3://acme_files@acme-prod/lms"


@pytest.mark.parametrize(
    "text, message",
    [
        ("acme:\n  platform: acme\n  storage: file:///x\n", "customer 'acme' in .*: missing platform_conn_id"),
        (ACME + "  timezone_name: UTC\n", "unknown setting\\(s\\) timezone_name"),
        (ACME.replace("Europe/Amsterdam", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (ACME + "  max_error_rate: 2\n", "max_error_rate must be between 0 and 1"),
        (ACME + "  max_rows: 0\n", "customer 'acme' in .*: max_rows must be a whole number of rows above 0"),
        (ACME + "  max_rows: lots\n", "customer 'acme' in .*: max_rows must be a whole number"),
        (ACME + "  max_rows: 1000.5\n", "customer 'acme' in .*: max_rows must be a whole number"),
        (
            ACME + "  expect_files_every: daily\n",
            "customer 'acme' in .*: expect_files_every: 'daily' is not a duration",
        ),
        (
            ACME + "  expect_files_every: 7\n",
            "customer 'acme' in .*: expect_files_every: 7 is not a duration such as 12h",
        ),
        (ACME + "  expect_files_every: 0d\n", "customer 'acme' in .*: expect_files_every: '0d' is not a duration"),
        (ACME + "  on_existing: never\n", "on_existing must be one of keep, earliest, latest, overwrite"),
        (ACME.replace("acme:", "Acme Corp:"), "a slug is lowercase letters"),
        ("acme: [1, 2]\n", "expected a mapping of settings"),
        (
            ACME + "  columns: {mail: Werknemer}\n",
            "customer 'acme' in .*: columns maps email, uuid, date each to its own",
        ),
        (ACME + "  columns: {email: Cursus, uuid: cursus}\n", "columns maps email, uuid, date each to its own header"),
        (ACME + "  columns: {email: ''}\n", "columns maps email, uuid, date each to its own header"),
    ],
)
def test_a_mistake_names_the_customer_and_the_setting(tmp_path, text, message):
    with pytest.raises(RegistryError, match=message):
        registry(tmp_path, text)


def test_an_unknown_customer_lists_the_known_ones(tmp_path):
    with pytest.raises(RegistryError, match="unknown customer 'globex' .* has: acme"):
        registry(tmp_path, ACME).get("globex")
