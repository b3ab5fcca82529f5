"""Where the package meets Airflow: which customers an asset-triggered run is about."""

from __future__ import annotations

from types import SimpleNamespace

from progression_airflow import customers_of_events


def event(uri: str):
    return SimpleNamespace(asset=SimpleNamespace(uri=uri))


def test_an_asset_triggered_export_is_for_the_customers_the_events_name():
    events = {"alias": [event("progression://acme/completions"), event("progression://globex/completions"),
                        event("progression://acme/completions"), event("s3://bucket/other")]}
    assert customers_of_events(events) == ["acme", "globex"]


def test_a_run_triggered_by_hand_has_no_event_customers():
    assert customers_of_events(None) == [] and customers_of_events({}) == []
