"""The ``Client`` capture family against a real loopback server (spec core §2, §9)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog.events import system_properties
from posthog.transport.http import normalize_host
from posthog.version import VERSION
from tests.support.http_server import Reply, ScriptedServer

MakeClient = Callable[..., Client]
UTC = timezone.utc
MESSAGE_KEYS = {"event", "distinct_id", "properties", "timestamp", "uuid"}
SDK_PROPS = {"$lib", "$lib_version", "$geoip_disable", "$is_server"}


@pytest.fixture(autouse=True)
def _no_release_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTHOG_RELEASE_ID", raising=False)


def sent(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    client.flush()
    return server.events()


def only_event(client: Client, server: ScriptedServer) -> dict[str, Any]:
    events = sent(client, server)
    assert len(events) == 1, events
    return events[0]


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "posthog" and r.levelno >= level]


def is_v4(text: Any) -> bool:
    return isinstance(text, str) and uuid.UUID(text).version == 4


# ---------------------------------------------------------------- message shape and ids


def test_capture_message_shape(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    returned = client.capture("order completed", distinct_id="user-123", properties={"a": 1})
    event = only_event(client, server)
    assert set(event) == MESSAGE_KEYS
    assert "type" not in event
    assert event["event"] == "order completed"
    assert event["distinct_id"] == "user-123"
    assert event["uuid"] == returned
    assert event["properties"]["a"] == 1
    assert "$process_person_profile" not in event["properties"]
    assert datetime.fromisoformat(event["timestamp"]).utcoffset() == timedelta(0)


def test_batch_body_keys_and_headers(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 23, §3.3
    client = make_client(project_api_key="phc_key")
    client.capture("e", distinct_id="u")
    client.flush()
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/batch/"
    body = request.json()
    assert set(body) == {"api_key", "batch", "historical_migration", "sent_at"}
    assert body["api_key"] == "phc_key"
    assert body["historical_migration"] is False
    assert datetime.fromisoformat(body["sent_at"]).utcoffset() == timedelta(0)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"posthog-python/{VERSION}"


def test_historical_migration_in_body(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client(historical_migration=True)
    client.capture("e", distinct_id="u")
    client.flush()
    assert server.requests[0].json()["historical_migration"] is True


def test_personless_event_without_distinct_id(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # spec §9 behaviour 2
    client = make_client()
    client.capture("e")
    client.capture("e")
    first, second = sent(client, server)
    assert is_v4(first["distinct_id"]) and is_v4(second["distinct_id"])
    assert first["distinct_id"] != second["distinct_id"]
    assert first["properties"]["$process_person_profile"] is False


@pytest.mark.parametrize("given", [None, ""])
def test_empty_distinct_id_is_personless(
    server: ScriptedServer, make_client: MakeClient, given: Any
) -> None:
    client = make_client()
    client.capture("e", distinct_id=given)
    event = only_event(client, server)
    assert is_v4(event["distinct_id"])
    assert event["properties"]["$process_person_profile"] is False


def test_personless_marker_respects_caller_value(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.capture("e", properties={"$process_person_profile": True})
    event = only_event(client, server)
    assert event["properties"]["$process_person_profile"] is True


def test_non_string_distinct_ids_become_strings(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # spec §9 behaviour 3
    client = make_client()
    ident = uuid.UUID("0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11")
    client.capture("e", distinct_id=5)
    client.capture("e", distinct_id=ident)
    first, second = sent(client, server)
    assert first["distinct_id"] == "5"
    assert second["distinct_id"] == str(ident)


def test_capture_returns_the_sent_uuid(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 4
    client = make_client()
    mine = "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"
    as_obj = uuid.uuid1()
    returned = [
        client.capture("e", distinct_id="u"),
        client.capture("e", distinct_id="u", uuid=mine),
        client.capture("e", distinct_id="u", uuid=as_obj),
    ]
    events = sent(client, server)
    assert [e["uuid"] for e in events] == returned
    assert is_v4(returned[0])
    assert returned[1] == mine
    assert returned[2] == str(as_obj)


def test_invalid_uuid_argument_is_replaced(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    returned = client.capture("e", distinct_id="u", uuid="not-a-uuid")
    event = only_event(client, server)
    assert is_v4(returned)
    assert event["uuid"] == returned
    assert logged(caplog), "an invalid uuid must be logged as an error"


def test_timestamp_with_compact_offset(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 5
    client = make_client()
    client.capture("e", distinct_id="u", timestamp="2021-02-03T04:05:06+0530")
    assert only_event(client, server)["timestamp"] == "2021-02-02T22:35:06+00:00"


def test_date_only_timestamp_uses_current_time(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    before = datetime.now(UTC)
    client.capture("e", distinct_id="u", timestamp="2021-02-03")
    after = datetime.now(UTC)
    sent_at = datetime.fromisoformat(only_event(client, server)["timestamp"])
    assert before <= sent_at <= after
    assert logged(caplog, logging.WARNING)


def test_naive_datetime_timestamp_is_utc(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 6
    client = make_client()
    client.capture("e", distinct_id="u", timestamp=datetime(2020, 1, 1, 12))
    assert only_event(client, server)["timestamp"] == "2020-01-01T12:00:00+00:00"


def test_aware_datetime_timestamp(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    when = datetime(2020, 1, 1, 12, 30, tzinfo=timezone(timedelta(hours=-2)))
    client.capture("e", distinct_id="u", timestamp=when)
    assert only_event(client, server)["timestamp"] == "2020-01-01T14:30:00+00:00"


# ---------------------------------------------------------------- standard properties


def test_default_standard_properties(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 7, §2.3
    client = make_client()
    client.capture("e", distinct_id="u")
    props = only_event(client, server)["properties"]
    assert props["$geoip_disable"] is True
    assert props["$is_server"] is True
    assert props["$lib"] == "posthog-python"
    assert props["$lib_version"] == VERSION == posthog.VERSION
    for key, value in system_properties().items():
        assert props[key] == value
    assert "$release_id" not in props
    assert "$groups" not in props
    assert "$context_tags" not in props
    assert "$session_id" not in props


def test_is_server_false_and_geoip_enabled(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 8
    client = make_client(is_server=False, disable_geoip=False)
    client.capture("e", distinct_id="u")
    client.capture("e", distinct_id="u", disable_geoip=True)
    first, second = sent(client, server)
    assert "$is_server" not in first["properties"]
    assert "$geoip_disable" not in first["properties"]
    assert second["properties"]["$geoip_disable"] is True
    assert "$is_server" not in second["properties"]


def test_disable_geoip_per_call_false_overrides_client(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()  # disable_geoip=True by default
    client.capture("e", distinct_id="u", disable_geoip=False)
    client.capture("e", distinct_id="u", disable_geoip=None)
    first, second = sent(client, server)
    assert "$geoip_disable" not in first["properties"]
    assert second["properties"]["$geoip_disable"] is True


def test_groups_property(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    client.capture("e", distinct_id="u", groups={"company": "42", "team": "t1"})
    client.capture("e", distinct_id="u", groups={})
    first, second = sent(client, server)
    assert first["properties"]["$groups"] == {"company": "42", "team": "t1"}
    assert "$groups" not in second["properties"]


def test_caller_groups_property_is_kept(server: ScriptedServer, make_client: MakeClient) -> None:
    # §2.4 item 6: $groups only if absent
    client = make_client()
    client.capture("e", distinct_id="u", properties={"$groups": {"a": "1"}}, groups={"b": "2"})
    assert only_event(client, server)["properties"]["$groups"] == {"a": "1"}


# ---------------------------------------------------------------- property precedence (§2.4)


def test_system_properties_override_caller(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 9 (first half)
    client = make_client()
    client.capture("e", distinct_id="u", properties={"$os": "mine", "$python_version": "0"})
    props = only_event(client, server)["properties"]
    assert props["$os"] == system_properties()["$os"] != "mine"
    assert props["$python_version"] == system_properties()["$python_version"]


def test_super_properties_override_everything_but_is_server(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # spec §9 behaviour 9 (second half), §2.3
    client = make_client(
        super_properties={
            "$lib": "x",
            "a": "super",
            "$geoip_disable": False,
            "$os": "super-os",
            "$is_server": False,
            "plan": "pro",
        }
    )
    client.capture("e", distinct_id="u", properties={"a": "caller", "b": "caller"})
    props = only_event(client, server)["properties"]
    assert props["$lib"] == "x"
    assert props["a"] == "super"
    assert props["b"] == "caller"
    assert props["$geoip_disable"] is False
    assert props["$os"] == "super-os"
    assert props["plan"] == "pro"
    assert props["$is_server"] is True


def test_super_properties_are_read_at_each_call(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.capture("e", distinct_id="u")
    client.super_properties = {"env": "prod"}
    client.capture("e", distinct_id="u")
    first, second = sent(client, server)
    assert "env" not in first["properties"]
    assert second["properties"]["env"] == "prod"


def test_release_id_from_environment(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTHOG_RELEASE_ID", "  rel-1  ")
    client = make_client()
    monkeypatch.setenv("POSTHOG_RELEASE_ID", "rel-2")  # read once, at creation
    client.capture("e", distinct_id="u")
    client.capture("e", distinct_id="u", properties={"$release_id": "mine"})
    first, second = sent(client, server)
    assert first["properties"]["$release_id"] == "rel-1"
    assert second["properties"]["$release_id"] == "mine"


def test_release_id_from_super_properties_wins(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTHOG_RELEASE_ID", "rel-1")
    client = make_client(super_properties={"$release_id": "super"})
    client.capture("e", distinct_id="u")
    assert only_event(client, server)["properties"]["$release_id"] == "super"


def test_blank_release_id_is_unset(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTHOG_RELEASE_ID", "   ")
    client = make_client()
    client.capture("e", distinct_id="u")
    assert "$release_id" not in only_event(client, server)["properties"]


def test_context_identity_tags_and_session(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 16
    client = make_client()
    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.tag("shared", "tag")
        posthog.identify_context("u")
        posthog.set_context_session("s")
        client.capture("e")
        client.capture("e", properties={"shared": "caller"})
    first, second = sent(client, server)
    assert first["distinct_id"] == "u"
    props = first["properties"]
    assert props["t"] == 1
    assert sorted(props["$context_tags"]) == ["shared", "t"]
    assert props["$session_id"] == "s"
    assert "$process_person_profile" not in props
    assert second["properties"]["shared"] == "caller"


def test_explicit_distinct_id_beats_context(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx")
        client.capture("e", distinct_id="explicit")
    assert only_event(client, server)["distinct_id"] == "explicit"


def test_tags_lose_to_system_properties(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("$os", "tag-os")
        posthog.tag("$lib", "tag-lib")
        client.capture("e", distinct_id="u")
    props = only_event(client, server)["properties"]
    assert props["$os"] == system_properties()["$os"]
    assert props["$lib"] == "posthog-python"
    assert sorted(props["$context_tags"]) == ["$lib", "$os"]


def test_context_tags_present_in_an_empty_context(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        client.capture("e", distinct_id="u")
    props = only_event(client, server)["properties"]
    assert props["$context_tags"] == []
    assert "$session_id" not in props


def test_caller_session_id_beats_context(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.set_context_session("ctx-session")
        client.capture("e", distinct_id="u", properties={"$session_id": "mine"})
    assert only_event(client, server)["properties"]["$session_id"] == "mine"


def test_child_tags_override_parent_tags(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("level", "parent")
        posthog.tag("parent_only", True)
        posthog.identify_context("parent-user")
        with posthog.new_context():
            posthog.tag("level", "child")
            client.capture("e")
    event = only_event(client, server)
    assert event["distinct_id"] == "parent-user"
    assert event["properties"]["level"] == "child"
    assert event["properties"]["parent_only"] is True
    assert sorted(event["properties"]["$context_tags"]) == ["level", "parent_only"]


def test_fresh_context_inherits_nothing(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 17
    client = make_client()
    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.identify_context("u")
        posthog.set_context_session("s")
        with posthog.new_context(fresh=True):
            assert posthog.get_tags() == {}
            client.capture("e")
    event = only_event(client, server)
    assert event["distinct_id"] != "u"
    assert event["properties"]["$process_person_profile"] is False
    assert "t" not in event["properties"]
    assert "$session_id" not in event["properties"]
    assert event["properties"]["$context_tags"] == []


def test_context_does_not_leak_after_exit(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.identify_context("u")
    client.capture("e")
    event = only_event(client, server)
    assert event["distinct_id"] != "u"
    assert "t" not in event["properties"]
    assert "$context_tags" not in event["properties"]


# ---------------------------------------------------------------- value cleaning end to end


def test_values_are_cleaned_before_sending(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 10
    client = make_client()
    client.capture(
        "e",
        distinct_id="u",
        properties={
            "a": {1, 2},
            "b": b"\xff",
            "c": object(),
            "d": float("nan"),
            "e": Decimal("1.5"),
            "f": float("-inf"),
            "g": uuid.UUID(int=7),
            "h": datetime(2020, 1, 1, tzinfo=UTC),
            "i": (1, [float("inf")]),
            "j": Decimal("Infinity"),
        },
    )
    props = only_event(client, server)["properties"]
    assert props["a"] == [1, 2]
    assert props["b"] is None
    assert props["c"] is None
    assert props["d"] is None
    assert props["e"] == 1.5
    assert props["f"] is None
    assert props["g"] == str(uuid.UUID(int=7))
    assert props["h"] == "2020-01-01T00:00:00+00:00"
    assert props["i"] == [1, [None]]
    assert props["j"] is None


def test_caller_properties_are_not_mutated(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    mine = {"s": {1}}
    client.capture("e", distinct_id="u", properties=mine)
    only_event(client, server)
    assert mine == {"s": {1}}


def test_huge_string_under_the_limit_is_delivered_intact(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    text = "abc" * 250_000  # 750 kB
    client.capture("e", distinct_id="u", properties={"big": text})
    assert only_event(client, server)["properties"]["big"] == text


def test_non_ascii_is_sent_escaped(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    client.capture("e", distinct_id="u", properties={"name": "Zoë 😀"})
    client.flush()
    assert server.requests[0].body.isascii()
    assert server.events()[0]["properties"]["name"] == "Zoë 😀"


@pytest.mark.parametrize(
    "bad_value",
    [complex(1, 2), {(1, 2): "tuple key"}],
    ids=["complex", "tuple-key"],
)
def test_unserialisable_event_is_dropped_and_reported(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    bad_value: Any,
) -> None:
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    client = make_client(on_error=lambda exc, batch: errors.append((exc, batch)))
    bad = client.capture("bad", distinct_id="u", properties={"v": bad_value})
    good = client.capture("good", distinct_id="u")
    events = sent(client, server)
    assert [e["event"] for e in events] == ["good"]
    assert events[0]["uuid"] == good
    assert any("bad" in m for m in logged(caplog)), logged(caplog)
    assert len(errors) == 1
    exc, batch = errors[0]
    assert isinstance(exc, Exception)
    assert [m["event"] for m in batch] == ["bad"]
    assert batch[0]["uuid"] == bad


# ---------------------------------------------------------------- bad input and error policy


@pytest.mark.parametrize("name", [None, 123, "", ["e"]])
def test_invalid_event_names_are_rejected(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    name: Any,
) -> None:
    client = make_client()
    assert client.capture(name, distinct_id="u") is None
    assert sent(client, server) == []
    assert any(m.startswith("[PostHog] Error in capture") for m in logged(caplog))


@pytest.mark.parametrize("props", [["a"], "a=1", 5])
def test_non_dict_properties_are_rejected(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    props: Any,
) -> None:
    client = make_client()
    assert client.capture("e", distinct_id="u", properties=props) is None
    assert sent(client, server) == []
    assert any(m.startswith("[PostHog] Error in capture") for m in logged(caplog))


def test_debug_reraises_capture_errors(make_client: MakeClient) -> None:
    client = make_client(debug=True)
    with pytest.raises(TypeError):
        client.capture("e", distinct_id="u", properties=["not", "a", "dict"])
    with pytest.raises(TypeError):
        client.set(distinct_id="u", properties=["x"])


def test_client_capture_with_positional_distinct_id(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # spec §9 behaviour 44 (Client half)
    client = make_client()
    assert client.capture("id", "event") is None  # type: ignore[misc]
    assert any(m.startswith("[PostHog] Error in capture") for m in logged(caplog))
    assert sent(client, server) == []


def test_client_capture_with_positional_distinct_id_debug(make_client: MakeClient) -> None:
    client = make_client(debug=True)
    with pytest.raises(TypeError):
        client.capture("id", "event")  # type: ignore[misc]


# ---------------------------------------------------------------- before_send (§2.7)


def test_before_send_mutating_in_place(server: ScriptedServer, make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message)
        message["properties"]["added"] = Decimal("2.5")
        message["properties"].pop("secret", None)
        return message

    client = make_client(before_send=hook)
    returned = client.capture("e", distinct_id="u", properties={"secret": 1, "s": {1}})
    event = only_event(client, server)
    assert event["properties"]["added"] == 2.5
    assert "secret" not in event["properties"]
    assert event["uuid"] == returned
    # the hook sees the complete, cleaned message
    (message,) = seen
    assert message["uuid"] == returned
    assert message["event"] == "e"
    assert message["distinct_id"] == "u"
    assert isinstance(message["timestamp"], str)
    assert datetime.fromisoformat(message["timestamp"]).utcoffset() == timedelta(0)
    assert message["properties"]["$lib"] == "posthog-python"


def test_before_send_receives_cleaned_values(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    seen: list[Any] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message["properties"]["s"])
        seen.append(message["properties"]["d"])
        return message

    client = make_client(before_send=hook)
    client.capture("e", distinct_id="u", properties={"s": {1}, "d": Decimal("1.5")})
    only_event(client, server)
    assert seen == [[1], 1.5]


def test_before_send_returning_a_new_dict(server: ScriptedServer, make_client: MakeClient) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "event": "renamed",
            "distinct_id": "other",
            "properties": {"only": {"x"}},
            "timestamp": message["timestamp"],
            "uuid": message["uuid"],
        }

    client = make_client(before_send=hook)
    returned = client.capture("e", distinct_id="u", properties={"a": 1})
    event = only_event(client, server)
    assert event["event"] == "renamed"
    assert event["distinct_id"] == "other"
    assert event["properties"] == {"only": ["x"]}
    assert event["uuid"] == returned


def test_before_send_result_is_cleaned_again(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        message["properties"]["added"] = {"set-value"}
        message["properties"]["raw"] = b"bytes"
        message["properties"]["dec"] = Decimal("0.5")
        return message

    # sync mode sends exactly what before_send returned, with no later cleaning pass
    client = make_client(before_send=hook, sync_mode=True)
    returned = client.capture("e", distinct_id="u")
    assert returned is not None
    (event,) = server.events()
    assert event["properties"]["added"] == ["set-value"]
    assert event["properties"]["raw"] == "bytes"
    assert event["properties"]["dec"] == 0.5


def test_before_send_returning_none_drops(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 11
    client = make_client(before_send=lambda message: None)
    assert client.capture("e", distinct_id="u") is None
    client.flush()
    assert server.requests == []


@pytest.mark.parametrize("debug", [False, True])
def test_before_send_raising_drops_and_logs(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("hook failed")

    client = make_client(before_send=hook, debug=debug)
    assert client.capture("e", distinct_id="u") is None  # not re-raised, even in debug
    client.flush()
    assert server.requests == []
    errors = [r for r in caplog.records if r.name == "posthog" and r.levelno >= logging.ERROR]
    assert errors
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in errors), (
        "the error is logged with the hook's traceback"
    )


@pytest.mark.parametrize("result", ["a string", ["list"], 42, True])
def test_before_send_returning_a_non_dict_drops(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    result: Any,
) -> None:
    client = make_client(before_send=lambda message: result)
    assert client.capture("e", distinct_id="u") is None
    client.flush()
    assert server.requests == []
    assert logged(caplog)


@pytest.mark.parametrize("new_uuid", ["not-a-uuid", None, "delete"])
def test_before_send_breaking_the_uuid_gets_a_fresh_one(
    server: ScriptedServer, make_client: MakeClient, new_uuid: Any
) -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        if new_uuid == "delete":
            del message["uuid"]
        else:
            message["uuid"] = new_uuid
        return message

    client = make_client(before_send=hook)
    original = "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"
    returned = client.capture("e", distinct_id="u", uuid=original)
    event = only_event(client, server)
    assert returned != original
    assert is_v4(returned)
    assert event["uuid"] == returned


def test_before_send_changing_the_uuid_to_a_valid_one(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    replacement = "11111111-2222-4333-8444-555555555555"

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        message["uuid"] = replacement
        return message

    client = make_client(before_send=hook)
    returned = client.capture("e", distinct_id="u")
    assert returned == replacement
    assert only_event(client, server)["uuid"] == replacement


def test_before_send_applies_to_the_identify_family(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    seen: list[str] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message["event"])
        message["properties"]["hooked"] = True
        return message

    client = make_client(before_send=hook)
    client.set(distinct_id="u", properties={"x": 1})
    client.set_once(distinct_id="u", properties={"y": 1})
    client.alias("old", "new")
    client.group_identify("company", "42")
    client.capture("e", distinct_id="u")
    events = sent(client, server)
    expected = ["$set", "$set_once", "$create_alias", "$groupidentify", "e"]
    assert seen == expected
    assert [e["event"] for e in events] == expected
    assert all(e["properties"]["hooked"] is True for e in events)


def test_before_send_dropping_identify_family(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(before_send=lambda message: None)
    assert client.set(distinct_id="u", properties={"x": 1}) is None
    assert client.alias("old", "new") is None
    assert client.group_identify("company", "42") is None
    client.flush()
    assert server.requests == []


def test_non_callable_before_send_is_ignored(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(before_send="not callable")
    assert logged(caplog, logging.WARNING)
    returned = client.capture("e", distinct_id="u")
    assert returned is not None
    assert only_event(client, server)["uuid"] == returned


def test_before_send_can_be_set_at_runtime(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    client.capture("kept", distinct_id="u")
    client.before_send = lambda message: None
    client.capture("dropped", distinct_id="u")
    assert [e["event"] for e in sent(client, server)] == ["kept"]


# ---------------------------------------------------------------- send / sync / disabled


def test_send_false_returns_uuid_without_request(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # spec §9 behaviour 26
    client = make_client(send=False)
    returned = client.capture("e", distinct_id="u")
    assert is_v4(returned)
    assert client.set(distinct_id="u", properties={"x": 1}) is not None
    client.flush()
    client.shutdown()
    assert server.requests == []


def test_disabled_client_captures_nothing(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 27 (capture side)
    client = make_client(disabled=True)
    assert client.capture("e", distinct_id="u") is None
    assert client.set(distinct_id="u", properties={"x": 1}) is None
    assert client.set_once(distinct_id="u", properties={"x": 1}) is None
    assert client.alias("old", "new") is None
    assert client.group_identify("company", "42") is None
    client.flush()
    client.shutdown()
    assert server.requests == []


def test_disabled_can_be_toggled_at_runtime(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.disabled = True
    assert client.capture("off", distinct_id="u") is None
    client.disabled = False
    assert client.capture("on", distinct_id="u") is not None
    assert [e["event"] for e in sent(client, server)] == ["on"]


def test_blank_api_key_disables_the_client(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(project_api_key="   ")
    assert client.disabled is True
    assert logged(caplog)
    assert client.capture("e", distinct_id="u") is None
    client.flush()
    assert server.requests == []


def test_sync_mode_posts_before_capture_returns(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(sync_mode=True)
    returned = client.capture("e", distinct_id="u", properties={"s": {1}})
    assert len(server.requests) == 1  # no flush: already sent
    body = server.requests[0].json()
    assert set(body) == {"api_key", "batch", "historical_migration", "sent_at"}
    (event,) = body["batch"]
    assert event["uuid"] == returned
    assert event["properties"]["s"] == [1]


def test_sync_mode_failure_returns_none_and_logs(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Any] = []
    client = make_client(sync_mode=True, on_error=lambda exc, batch: errors.append(exc))
    server.push(Reply(status=500))
    assert client.capture("e", distinct_id="u") is None
    assert len(server.requests) == 1, "sync mode makes no SDK-level retry"
    assert any(m.startswith("[PostHog] Error in capture") for m in logged(caplog))
    assert errors == [], "sync mode does not call on_error"


def test_sync_mode_failure_raises_in_debug(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client(sync_mode=True, debug=True)
    server.push(Reply(status=500))
    with pytest.raises(Exception) as info:
        client.capture("e", distinct_id="u")
    assert getattr(info.value, "status", None) == 500


# ---------------------------------------------------------------- set / set_once (§2.8)


def test_set_message_shape(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 12
    client = make_client()
    returned = client.set(distinct_id="u", properties={"x": 1})
    event = only_event(client, server)
    assert set(event) == MESSAGE_KEYS | {"$set"}
    assert event["event"] == "$set"
    assert event["distinct_id"] == "u"
    assert event["$set"] == {"x": 1}
    assert event["uuid"] == returned
    assert set(event["properties"]) == SDK_PROPS


def test_set_once_message_shape(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    returned = client.set_once(distinct_id=7, properties={"first_seen": "2020"})
    event = only_event(client, server)
    assert set(event) == MESSAGE_KEYS | {"$set_once"}
    assert event["event"] == "$set_once"
    assert event["distinct_id"] == "7"
    assert event["$set_once"] == {"first_seen": "2020"}
    assert event["uuid"] == returned
    assert set(event["properties"]) == SDK_PROPS


def test_set_values_are_cleaned(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    client.set(distinct_id="u", properties={"tags": {"a"}, "n": Decimal("2")})
    assert only_event(client, server)["$set"] == {"tags": ["a"], "n": 2.0}


def test_set_without_identity_is_skipped(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 13
    client = make_client()
    assert client.set(properties={"x": 1}) is None
    assert client.set_once(properties={"x": 1}) is None
    client.flush()
    assert server.requests == []


@pytest.mark.parametrize("props", [None, {}])
def test_set_without_properties_is_skipped(
    server: ScriptedServer, make_client: MakeClient, props: Any
) -> None:
    client = make_client()
    assert client.set(distinct_id="u", properties=props) is None
    assert client.set_once(distinct_id="u", properties=props) is None
    client.flush()
    assert server.requests == []


def test_set_in_context(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.tag("t", 1)
        posthog.tag("x", "from-tag")
        posthog.set_context_session("s")
        returned = client.set(properties={"x": 1})
    assert returned is not None
    event = only_event(client, server)
    assert event["distinct_id"] == "ctx-user"
    values = event["$set"]
    assert values["x"] == 1  # caller beats tags
    assert values["t"] == 1
    assert sorted(values["$context_tags"]) == ["t", "x"]
    assert values["$session_id"] == "s"
    assert set(event["properties"]) == SDK_PROPS


def test_set_in_context_with_only_tags(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.tag("plan", "pro")
        assert client.set() is not None
    assert only_event(client, server)["$set"]["plan"] == "pro"


def test_set_in_context_with_nothing_to_set_is_skipped(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # "nothing to set" is judged before $context_tags / $session_id are added
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.set_context_session("s")
        assert client.set() is None
        assert client.set_once(properties={}) is None
    client.flush()
    assert server.requests == []


# ---------------------------------------------------------------- alias (§2.8)


def test_alias_message_shape(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 14
    client = make_client()
    returned = client.alias("old", "new")
    event = only_event(client, server)
    assert set(event) == MESSAGE_KEYS
    assert event["event"] == "$create_alias"
    assert event["distinct_id"] == "old"
    assert event["uuid"] == returned
    props = event["properties"]
    assert props["distinct_id"] == "old"
    assert props["alias"] == "new"
    assert set(props) == SDK_PROPS | {"distinct_id", "alias"}


def test_alias_in_context(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.set_context_session("s")
        posthog.tag("t", 1)
        client.alias("anon")
    event = only_event(client, server)
    assert event["distinct_id"] == "anon"
    assert event["properties"]["alias"] == "ctx-user"
    assert event["properties"]["$session_id"] == "s"
    assert "t" not in event["properties"]
    assert "$context_tags" not in event["properties"]


@pytest.mark.parametrize("previous", ["", None])
def test_alias_without_previous_id(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    previous: Any,
) -> None:
    client = make_client()
    assert client.alias(previous, "new") is None
    assert logged(caplog, logging.WARNING)
    client.flush()
    assert server.requests == []


def test_alias_without_distinct_id(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    assert client.alias("old") is None
    assert logged(caplog, logging.WARNING)
    client.flush()
    assert server.requests == []


# ---------------------------------------------------------------- group_identify (§2.8)


def test_group_identify_message_shape(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 15
    client = make_client()
    returned = client.group_identify("company", "42", {"n": 1})
    event = only_event(client, server)
    assert set(event) == MESSAGE_KEYS
    assert event["event"] == "$groupidentify"
    assert event["uuid"] == returned
    assert is_v4(event["distinct_id"])
    props = event["properties"]
    assert props["$group_type"] == "company"
    assert props["$group_key"] == "42"
    assert props["$group_set"] == {"n": 1}
    assert "$process_person_profile" not in props
    assert set(props) == SDK_PROPS | {"$group_type", "$group_key", "$group_set"}


def test_group_identify_details(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    client.group_identify("company", 42, distinct_id="admin")
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.set_context_session("s")
        client.group_identify("team", "t1", {"tags": {"x"}})
    first, second = sent(client, server)
    assert first["distinct_id"] == "admin"
    assert first["properties"]["$group_key"] == "42"
    assert first["properties"]["$group_set"] == {}
    assert second["distinct_id"] == "ctx-user"
    assert second["properties"]["$session_id"] == "s"
    assert second["properties"]["$group_set"] == {"tags": ["x"]}


@pytest.mark.parametrize(("group_type", "group_key"), [("", "42"), ("company", ""), (None, "1")])
def test_group_identify_requires_type_and_key(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    group_type: Any,
    group_key: Any,
) -> None:
    client = make_client()
    assert client.group_identify(group_type, group_key, {"n": 1}) is None
    assert logged(caplog, logging.WARNING)
    client.flush()
    assert server.requests == []


# ---------------------------------------------------------------- host normalisation (§3.2)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "https://us.i.posthog.com"),
        ("", "https://us.i.posthog.com"),
        ("   ", "https://us.i.posthog.com"),
        ("https://us.posthog.com/", "https://us.i.posthog.com"),
        ("https://us.posthog.com", "https://us.i.posthog.com"),
        ("https://app.posthog.com", "https://us.i.posthog.com"),
        ("https://app.posthog.com/", "https://us.i.posthog.com"),
        ("https://eu.posthog.com", "https://eu.i.posthog.com"),
        ("https://eu.posthog.com/", "https://eu.i.posthog.com"),
        ("  https://eu.posthog.com  ", "https://eu.i.posthog.com"),
        ("https://eu.i.posthog.com", "https://eu.i.posthog.com"),
        ("https://ph.example.com/", "https://ph.example.com"),
        ("http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_normalize_host(given: Any, expected: str) -> None:
    # spec §9 behaviour 22
    assert normalize_host(given) == expected


def test_host_with_trailing_slash_reaches_batch(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(host=server.url + "/")
    client.capture("e", distinct_id="u")
    client.flush()
    assert [r.path for r in server.requests] == ["/batch/"]
