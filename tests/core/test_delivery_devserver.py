"""The client against the dev server over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import posthog
from posthog_integrations.devserver import DevServer


@pytest.fixture(scope="module")
def devserver() -> Iterator[DevServer]:
    with DevServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _empty(devserver: DevServer) -> None:
    devserver.clear()


@pytest.mark.parametrize("gzip", [False, True])
def test_every_returned_uuid_is_stored_once(devserver: DevServer, gzip: bool) -> None:
    client = posthog.Client("phc_dev", host=devserver.url, gzip=gzip, flush_at=50)
    uuids = [client.capture("bulk", distinct_id=f"u{i % 7}", properties={"i": i})
             for i in range(230)]
    client.shutdown()
    stored = devserver.events(event="bulk")
    assert sorted(e["uuid"] for e in stored) == sorted(uuids)
    assert {e["distinct_id"] for e in stored} == {f"u{i}" for i in range(7)}
    assert devserver.requests[-1]["headers"].get("content-encoding") == ("gzip" if gzip else None)


def test_event_shapes_survive_the_round_trip(devserver: DevServer) -> None:
    client = posthog.Client("phc_dev", host=devserver.url, super_properties={"app": "shop"})
    client.set(distinct_id="u1", properties={"plan": "pro"})
    client.set_once(distinct_id="u1", properties={"first": "yes"})
    client.alias("anon", "u1")
    client.group_identify("company", "acme", {"name": "Acme"})
    client.capture("bought", distinct_id="u1", groups={"company": "acme"})
    client.shutdown()
    by_name = {e["event"]: e for e in devserver.events()}
    assert by_name["$set"]["$set"] == {"plan": "pro"}
    assert by_name["$set_once"]["$set_once"] == {"first": "yes"}
    assert by_name["$create_alias"]["properties"]["alias"] == "u1"
    assert by_name["$groupidentify"]["properties"]["$group_set"] == {"name": "Acme"}
    bought = by_name["bought"]["properties"]
    assert bought["$groups"] == {"company": "acme"} and bought["app"] == "shop"
    assert all(e["api_key"] == "phc_dev" for e in by_name.values())


def test_sync_mode_stores_before_capture_returns(devserver: DevServer) -> None:
    client = posthog.Client("phc_dev", host=devserver.url, sync_mode=True)
    uuid = client.capture("inline", distinct_id="u")
    assert [e["uuid"] for e in devserver.events(event="inline")] == [uuid]
    client.shutdown()


def test_historical_migration_flag_reaches_the_server(devserver: DevServer) -> None:
    client = posthog.Client("phc_dev", host=devserver.url, historical_migration=True)
    client.capture("old", distinct_id="u", timestamp="2020-01-02T03:04:05Z")
    client.shutdown()
    assert devserver.batches[-1]["historical_migration"] is True
    assert devserver.events(event="old")[0]["timestamp"] == "2020-01-02T03:04:05+00:00"


def test_module_api_against_the_dev_server(devserver: DevServer) -> None:
    posthog.api_key = "phc_module"
    posthog.host = devserver.url
    posthog.capture("from-module", distinct_id="m")
    posthog.flush()
    (event,) = devserver.events(event="from-module")
    assert event["api_key"] == "phc_module" and event["distinct_id"] == "m"
