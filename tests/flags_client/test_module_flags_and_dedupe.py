"""Module-level flag functions (spec §1.4; §9 behaviour 38) and the dedupe map bound (§7.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog.flags.called import MAX_DISTINCT_IDS, CalledTracker
from tests.flags_client.conftest import (
    SECRET,
    FlagServer,
    definitions,
    flag_def,
    flags_response,
    record,
)

MakeClient = Callable[..., Client]


@pytest.mark.usefixtures("module_client")
def test_module_payload_getter_sends_the_event_by_default(server: FlagServer) -> None:
    # §9 behaviour 38 (module half)
    server.flags(flags_response(record("beta", True, payload='{"p": 1}')))
    assert posthog.get_feature_flag_payload("beta", "u") == {"p": 1}
    posthog.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag"] == "beta"
    assert event["properties"]["$feature_flag_payload"] == {"p": 1}
    assert posthog.get_feature_flag_payload("beta", "v", send_feature_flag_events=False) == {
        "p": 1
    }
    posthog.flush()
    assert len(server.called_events()) == 1


@pytest.mark.usefixtures("module_client")
def test_module_functions_forward_to_the_default_client(server: FlagServer) -> None:
    server.flags(flags_response(record("beta", "v", payload='{"p": 1}'), request_id="req-m"))
    assert posthog.get_feature_flag("beta", "u") == "v"
    assert posthog.feature_enabled("beta", "u") is True
    result = posthog.get_feature_flag_result("beta", "u")
    assert result is not None and result.variant == "v"
    assert posthog.get_all_flags("u") == {"beta": "v"}
    assert posthog.get_all_flags_and_payloads("u") == {
        "featureFlags": {"beta": "v"}, "featureFlagPayloads": {"beta": '{"p": 1}'}
    }
    snap = posthog.evaluate_flags("u", flag_keys=["beta"])
    assert snap.get_flag("beta") == "v"
    assert posthog.feature_flag_definitions() is None
    assert posthog.get_feature_flag_evaluation_runtime("beta") is None
    assert posthog.get_feature_flag_keys_by_evaluation_runtime("all") == []
    assert posthog.get_remote_config_payload("cfg") is None  # no secret key
    assert posthog.default_client is not None
    bodies = [r.json() for r in server.of("flags")]
    # None → {} for groups / person_properties / group_properties
    assert all(b["groups"] == {} and b["person_properties"] == {} and
               b["group_properties"] == {} for b in bodies)
    assert bodies[-1]["flag_keys_to_evaluate"] == ["beta"]


@pytest.mark.usefixtures("module_client")
def test_module_functions_keyword_arguments(server: FlagServer) -> None:
    server.flags(flags_response(record("beta", True)))
    posthog.get_feature_flag("beta", "u", groups={"company": "acme"},
                             group_properties={"company": {"n": 1}}, device_id="d1",
                             disable_geoip=False, send_feature_flag_events=False)
    body = server.of("flags")[0].json()
    assert body["groups"] == {"company": "acme"}
    assert body["group_properties"] == {"company": {"$group_key": "acme", "n": 1}}
    assert body["device_id"] == "d1"
    assert body["geoip_disable"] is False


def test_module_load_and_definitions(
    server: FlagServer, module_client: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(posthog, "secret_key", SECRET)
    server.definitions(definitions(flag_def("beta", evaluation_runtime="server")))
    assert posthog.load_feature_flags() is None
    defs = posthog.feature_flag_definitions()
    assert defs is not None and [f["key"] for f in defs] == ["beta"]
    runtime = posthog.FeatureFlagEvaluationRuntime
    assert posthog.get_feature_flag_evaluation_runtime("beta") is runtime.SERVER
    assert posthog.get_feature_flag_keys_by_evaluation_runtime("server") == ["beta"]
    assert posthog.get_feature_flag("beta", "u", send_feature_flag_events=False) is True
    assert server.of("flags") == []
    [req] = server.of("definitions")
    assert req.headers["authorization"] == f"Bearer {SECRET}"


def test_module_disabled(
    server: FlagServer, module_client: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(posthog, "disabled", True)
    assert posthog.get_feature_flag("beta", "u") is None
    assert posthog.get_all_flags("u") is None
    assert posthog.evaluate_flags("u").keys == []
    posthog.flush()
    assert server.requests == []


def test_dedupe_map_is_bounded_and_evicts_the_oldest_insert() -> None:
    assert MAX_DISTINCT_IDS == 50_000
    assert CalledTracker().limit == 50_000
    tracker = CalledTracker(limit=3)
    for name in ("a", "b", "c"):
        assert tracker.first_time(name, "flag", True, None) is True
    # a new tuple for an existing id does not reorder or evict anything
    assert tracker.first_time("a", "flag", False, None) is True
    assert tracker.first_time("d", "flag", True, None) is True  # evicts "a" (oldest insert)
    assert tracker.first_time("c", "flag", True, None) is False
    assert tracker.first_time("b", "flag", True, None) is False
    assert tracker.first_time("a", "flag", True, None) is True  # forgotten; evicts "b"
    assert tracker.first_time("b", "flag", True, None) is True


def test_dedupe_key_parts() -> None:
    tracker = CalledTracker()
    assert tracker.first_time("u", "f", "v", {"b": 2, "a": 1}) is True
    assert tracker.first_time("u", "f", "v", {"a": "1", "b": "2"}) is False  # sorted, str()
    assert tracker.first_time("u", "f", "v", {}) is True
    assert tracker.first_time("u", "f", "v", None) is False
    assert tracker.first_time("u", "f", None, None) is True
    assert tracker.first_time("u", "g", "v", None) is True
    assert tracker.first_time(5, "f", "v", None) is True
    assert tracker.first_time("5", "f", "v", None) is True
    tracker.clear()
    assert tracker.first_time("u", "f", "v", None) is True


def test_tuple_is_recorded_even_when_the_capture_fails(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(record("beta", True)))
    attempts: list[str] = []

    def explode(event: dict[str, Any]) -> dict[str, Any]:
        attempts.append(event["event"])
        raise RuntimeError("no")

    client = make_client(before_send=explode)
    client.get_feature_flag("beta", "u")
    client.get_feature_flag("beta", "u")
    assert attempts == ["$feature_flag_called"]
