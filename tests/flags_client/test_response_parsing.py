"""Parsing of ``/flags`` answers as seen through the client (spec core §5.3, §1.7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from posthog import Client, FeatureFlag, FeatureFlagResult
from posthog.flag_types import FlagMetadata, LegacyFlagMetadata, parse_flags_response
from tests.flags_client.conftest import FlagServer, flags_response, record

MakeClient = Callable[..., Client]


def v4(key: str, value: Any, **extra: Any) -> dict[str, Any]:
    rec = {"key": key, "value": value, "failed": False,
           "metadata": {"id": 1, "version": 1, "payload": None}}
    rec.update(extra)
    return rec


def test_v4_value_kinds(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({"flags": {
        "t": v4("t", True),
        "f": v4("f", False),
        "s": v4("s", "variant-a"),
        "n": v4("n", 3),
        "x": v4("x", 2.5),
        "o": v4("o", {"k": [1, "two"], "z": None}),
        "z": v4("z", None),
    }, "requestId": "r"})
    client = make_client()
    assert client.get_feature_variants("u") == {
        "t": True, "f": False, "s": "variant-a", "n": True, "x": True, "o": True, "z": False,
    }
    # number/object values become a compact JSON payload
    payloads = client.get_feature_payloads("u")
    assert payloads == {"n": "3", "x": "2.5", "o": '{"k":[1,"two"],"z":null}'}

    def result(key: str) -> FeatureFlagResult:
        found = client.get_feature_flag_result(key, "u", send_feature_flag_events=False)
        assert found is not None
        return found

    assert (result("s").enabled, result("s").variant) == (True, "variant-a")
    assert (result("t").enabled, result("t").variant, result("t").payload) == (True, None, None)
    assert (result("n").enabled, result("n").variant, result("n").payload) == (True, None, 3)
    assert result("o").payload == {"k": [1, "two"], "z": None}
    assert (result("z").enabled, result("z").get_value()) == (False, False)
    assert client.get_feature_flag("f", "u", send_feature_flag_events=False) is False


def test_v4_failed_record_is_disabled_without_payload(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags({"flags": {
        "bad": {"key": "bad", "value": "v", "failed": True,
                "metadata": {"id": 1, "version": 1, "payload": '{"a":1}'}},
        "ok": v4("ok", True),
    }})
    client = make_client()
    decision = client.get_flags_decision("u")
    bad = decision["flags"]["bad"]
    assert bad.enabled is False
    assert bad.variant is None
    assert client.get_feature_variants("u") == {"ok": True}
    assert client.get_feature_payloads("u") == {}
    assert client.get_feature_flag_result("bad", "u", send_feature_flag_events=False) is None


def test_v2_records_without_value(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({"flags": {
        "a": {"key": "a", "enabled": True, "variant": "blue",
              "reason": {"code": "condition_match", "condition_index": 1,
                         "description": "Matched condition set 2"},
              "metadata": {"id": 4, "version": 2, "payload": '{"c": "blue"}'}},
        "b": {"key": "b", "enabled": False, "variant": None,
              "metadata": {"id": 5, "version": 1, "payload": '"hidden"'}},
        "c": {"key": "c", "enabled": True, "failed": True,
              "metadata": {"id": 6, "version": 1, "payload": '"p"'}},
    }, "requestId": "r2"})
    client = make_client()
    assert client.get_feature_variants("u") == {"a": "blue", "b": False}
    assert client.get_feature_payloads("u") == {"a": '{"c": "blue"}'}
    decision = client.get_flags_decision("u")
    a = decision["flags"]["a"]
    assert a.reason is not None
    assert (a.reason.code, a.reason.condition_index, a.reason.description) == (
        "condition_match", 1, "Matched condition set 2"
    )
    assert isinstance(a.metadata, FlagMetadata)
    assert (a.metadata.id, a.metadata.version) == (4, 2)
    assert decision["flags"]["c"].enabled is False
    result = client.get_feature_flag_result("a", "u", send_feature_flag_events=False)
    assert result is not None and result.payload == {"c": "blue"}


def test_malformed_field_makes_only_that_record_failed(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags({"flags": {
        "bad_id": v4("bad_id", True, metadata={"id": "7", "version": 1, "payload": None}),
        "bad_enabled": {"key": "bad_enabled", "enabled": "yes"},
        "bad_reason": v4("bad_reason", True, reason="because"),
        "good": v4("good", "v", metadata={"id": 8, "version": 2, "payload": '{"q":1}'},
                   unknown_field={"anything": [1]}),
    }})
    client = make_client()
    assert client.get_feature_variants("u") == {"good": "v"}
    assert client.get_feature_payloads("u") == {"good": '{"q":1}'}
    for key in ("bad_id", "bad_enabled", "bad_reason"):
        assert client.get_feature_flag(key, "u", send_feature_flag_events=False) is None
    client.get_feature_flag("bad_id", "u2")
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "evaluation_failed"


def test_integral_floats_are_ints(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({"flags": {
        "f": v4("f", True, metadata={"id": 7.0, "version": 3.0, "payload": None},
                reason={"code": "c", "condition_index": 0.0, "description": "d"}),
        "g": v4("g", True, metadata={"id": 7.5, "version": 1, "payload": None}),
    }, "requestId": "r"})
    client = make_client()
    assert client.get_feature_flag("f", "u") is True
    assert client.get_feature_flag("g", "u", send_feature_flag_events=False) is None
    client.flush()
    [event] = server.called_events()
    assert type(event["properties"]["$feature_flag_id"]) is int
    assert event["properties"]["$feature_flag_id"] == 7
    assert type(event["properties"]["$feature_flag_version"]) is int


def test_legacy_v1_shape(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({
        "featureFlags": {"a": True, "b": "var", "c": False},
        "featureFlagPayloads": {"a": '{"x": 1}', "b": "not json", "c": '"ignored"'},
    })
    client = make_client()
    assert client.get_feature_variants("u") == {"a": True, "b": "var", "c": False}
    # payload map: enabled flags with valid JSON only, as the original text
    assert client.get_feature_payloads("u") == {"a": '{"x": 1}'}
    assert client.get_feature_flag("b", "u") == "var"
    assert client.get_feature_flag_payload("a", "u") == {"x": 1}
    assert client.get_feature_flag_payload("b", "u") is None
    decision = client.get_flags_decision("u")
    assert decision["requestId"] is None
    assert isinstance(decision["flags"]["a"].metadata, LegacyFlagMetadata)
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_response"] == "var"
    assert "$feature_flag_request_id" not in event["properties"]


def test_payload_decoding(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(
        record("text", True, payload='"hello"'),
        record("nan", True, payload="NaN"),
        record("inf", True, payload='{"a": Infinity}'),
        record("invalid", True, payload="{oops"),
        record("number", True, payload="12"),
        record("raw", True, payload={"already": "decoded"}),
    ))
    client = make_client()

    def payload(key: str) -> Any:
        return client.get_feature_flag_payload(key, "u")

    assert payload("text") == "hello"
    assert payload("nan") is None
    assert payload("inf") is None
    assert payload("invalid") is None
    assert payload("number") == 12
    assert payload("raw") == {"already": "decoded"}
    payloads = client.get_feature_payloads("u")
    assert payloads["text"] == '"hello"'
    assert payloads["number"] == "12"
    assert "invalid" not in payloads
    assert "nan" not in payloads


def test_public_type_helpers() -> None:
    # §1.7
    assert FeatureFlagResult.from_value_and_payload("k", None, '{"a":1}') is None
    r = FeatureFlagResult.from_value_and_payload("k", "v", '{"a":1}')
    assert r is not None and (r.enabled, r.variant, r.payload, r.get_value()) == (
        True, "v", {"a": 1}, "v"
    )
    off = FeatureFlagResult.from_value_and_payload("k", False, None)
    assert off is not None and off.get_value() is False
    rec = FeatureFlag.from_json(record("k", "v", payload='{"b":2}'))
    assert rec.get_value() == "v"
    over = FeatureFlagResult.from_flag_details(rec, override_match_value="other")
    assert over is not None and over.variant == "other" and over.payload == {"b": 2}
    assert FeatureFlagResult.from_flag_details(None) is None
    failed = FeatureFlag.from_json(record("k", "v", failed=True))
    assert FeatureFlagResult.from_flag_details(failed) is None
    legacy = FeatureFlag.from_value_and_payload("k", "v", '"p"')
    assert legacy.get_value() == "v" and legacy.enabled is True
    parsed = parse_flags_response({"flags": {"k": record("k", True)}})
    assert parsed["requestId"] is None
