"""Single-flag getters on the remote path: the /flags request, events, retries, failures.

Spec core §3.1, §3.3, §5.1-§5.5, §7.1, §7.2; §9 behaviours 27-31.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from posthog import Client
from posthog.version import VERSION
from tests.flags_client.conftest import (
    FlagServer,
    closed_port,
    flags_response,
    messages,
    record,
)
from tests.support.http_server import Reply

BETA = record("beta", "test", payload='{"a": 1}')

MakeClient = Callable[..., Client]


def test_disabled_client_never_touches_the_network(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §9 behaviour 27
    client = make_client(disabled=True, secret_key="phs_secret")
    assert client.capture("e", distinct_id="u") is None
    assert client.get_feature_flag("beta", "u") is None
    assert client.feature_enabled("beta", "u") is None
    assert client.get_feature_flag_result("beta", "u") is None
    assert client.get_feature_flag_payload("beta", "u") is None
    assert client.get_all_flags("u") is None
    assert client.get_all_flags_and_payloads("u") == {
        "featureFlags": None, "featureFlagPayloads": None
    }
    snapshot = client.evaluate_flags("u")
    assert snapshot.keys == []
    assert snapshot.is_enabled("beta") is False
    assert snapshot.get_flag("beta") is None
    assert client.get_flags_decision("u") == {"flags": {}, "requestId": None}
    assert client.get_feature_variants("u") == {}
    assert client.get_feature_payloads("u") == {}
    assert client.get_remote_config_payload("cfg") is None
    client.flush()
    time.sleep(0.1)
    assert server.requests == []


def test_remote_get_feature_flag_request_and_event(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §9 behaviour 28, §5.2, §3.3
    server.flags(flags_response(BETA, request_id="req-1"))
    client = make_client()
    before = datetime.now().astimezone()
    assert client.get_feature_flag("beta", "u") == "test"
    client.flush()

    [req] = server.of("flags")
    assert req.method == "POST"
    assert req.path == "/flags/?v=4"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == f"posthog-python/{VERSION}"
    assert "content-encoding" not in req.headers
    body = req.json()
    assert set(body) == {
        "distinct_id", "groups", "person_properties", "group_properties", "geoip_disable",
        "device_id", "flag_keys_to_evaluate", "sent_at", "api_key",
    }
    assert body["distinct_id"] == "u"
    assert body["groups"] == {}
    assert body["person_properties"] == {}
    assert body["group_properties"] == {}
    assert body["geoip_disable"] is True
    assert body["device_id"] is None
    assert body["flag_keys_to_evaluate"] == ["beta"]
    assert body["api_key"] == "phc_test"
    assert "token" not in body
    sent_at = datetime.fromisoformat(body["sent_at"])
    assert sent_at.utcoffset() is not None and sent_at.utcoffset().total_seconds() == 0
    assert abs((sent_at - before).total_seconds()) < 5

    [event] = server.called_events()
    assert event["distinct_id"] == "u"
    props = event["properties"]
    assert props["$feature_flag"] == "beta"
    assert props["$feature_flag_response"] == "test"
    assert props["$feature/beta"] == "test"
    assert props["locally_evaluated"] is False
    assert props["$feature_flag_request_id"] == "req-1"
    assert props["$feature_flag_id"] == 7
    assert props["$feature_flag_version"] == 3
    assert props["$feature_flag_reason"] == "Matched condition set 1"
    assert props["$feature_flag_evaluated_at"] == 1700000000000
    assert props["$feature_flag_payload"] == {"a": 1}
    assert props["$feature_flag_has_experiment"] is False
    assert "$feature_flag_error" not in props


def test_geoip_and_device_arguments_reach_the_body(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(BETA))
    client = make_client(disable_geoip=False)
    client.get_feature_flag("beta", "u", send_feature_flag_events=False)
    client.get_feature_flag("beta", "u", disable_geoip=True, device_id="dev-9",
                            send_feature_flag_events=False)
    first, second = (r.json() for r in server.of("flags"))
    assert first["geoip_disable"] is False
    assert first["device_id"] is None
    assert second["geoip_disable"] is True
    assert second["device_id"] == "dev-9"


def test_distinct_id_is_sent_as_given(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA))
    client = make_client()
    client.get_feature_flag("beta", 5)
    client.get_feature_flag("beta", "5")
    client.flush()
    bodies = [r.json() for r in server.of("flags")]
    assert bodies[0]["distinct_id"] == 5
    assert bodies[1]["distinct_id"] == "5"
    # The dedupe map is keyed by the id as given: 5 and "5" are two people (§7.2).
    assert len(server.called_events()) == 2


def test_repeated_reads_are_deduplicated_but_new_groups_send_again(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §9 behaviour 29
    server.flags(flags_response(BETA))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "test"
    assert client.get_feature_flag("beta", "u") == "test"
    assert client.feature_enabled("beta", "u") is True
    client.flush()
    assert len(server.called_events()) == 1
    assert client.get_feature_flag("beta", "u", groups={"company": "acme"}) == "test"
    assert client.get_feature_flag("beta", "u", groups={"company": "acme"}) == "test"
    client.flush()
    events = server.called_events()
    assert len(events) == 2
    assert events[1]["properties"]["$groups"] == {"company": "acme"}


def test_a_different_response_sends_a_new_event(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.push("flags", Reply(200, flags_response(record("beta", "control"))))
    server.flags(flags_response(record("beta", "test")))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "control"
    assert client.get_feature_flag("beta", "u") == "test"
    assert client.get_feature_flag("beta", "u") == "test"
    client.flush()
    assert [e["properties"]["$feature_flag_response"] for e in server.called_events()] == [
        "control", "test"
    ]


def test_suppressed_reads_neither_send_nor_record(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(BETA))
    client = make_client()
    client.get_feature_flag("beta", "u", send_feature_flag_events=False)
    client.get_feature_flag_result("beta", "u", send_feature_flag_events=False)
    client.flush()
    assert server.called_events() == []
    client.get_feature_flag("beta", "u")
    client.flush()
    assert len(server.called_events()) == 1


def test_missing_flag_gives_none_and_flag_missing_error(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §9 behaviour 30
    server.flags(flags_response(record("other", True), request_id="req-2"))
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert client.feature_enabled("beta", "u") is None
    client.flush()
    [event] = server.called_events()
    props = event["properties"]
    assert props["$feature_flag_response"] is None
    assert props["$feature/beta"] is None
    assert props["$feature_flag_error"] == "flag_missing"
    assert props["$feature_flag_request_id"] == "req-2"


def test_502_is_retried_once_after_300ms(server: FlagServer, make_client: MakeClient) -> None:
    # §9 behaviour 31, §5.4
    server.push("flags", Reply(502, {"detail": "bad gateway"}))
    server.flags(flags_response(BETA))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "test"
    first, second = server.of("flags")
    assert 0.25 <= second.at - first.at < 1.0
    # sent_at is rebuilt for each attempt (§3.3)
    assert first.json()["sent_at"] != second.json()["sent_at"]
    client.flush()
    [event] = server.called_events()
    assert "$feature_flag_error" not in event["properties"]


def test_504_is_retried_and_persistent_failure_reports_the_status(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags({"detail": "gateway timeout"}, status=504)
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert len(server.of("flags")) == 2  # default feature_flags_request_max_retries = 1
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "api_error_504"


def test_more_retries_back_off_exponentially(server: FlagServer, make_client: MakeClient) -> None:
    server.push("flags", Reply(502), Reply(502))
    server.flags(flags_response(BETA))
    client = make_client(feature_flags_request_max_retries=2)
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) == "test"
    a, b, c = server.of("flags")
    assert 0.25 <= b.at - a.at < 0.55
    assert 0.55 <= c.at - b.at < 1.2


def test_negative_max_retries_means_no_retry(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({}, status=502)
    client = make_client(feature_flags_request_max_retries=-3)
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) is None
    assert len(server.of("flags")) == 1


def test_500_is_not_retried(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # §9 behaviour 31, §5.5
    server.flags({"detail": "boom"}, status=500)
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert len(server.of("flags")) == 1
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "api_error_500"
    assert event["properties"]["$feature_flag_response"] is None
    assert any(m.startswith("[PostHog] ") for m in messages(caplog, logging.WARNING))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 503])
def test_other_statuses_are_not_retried(
    server: FlagServer, make_client: MakeClient, status: int
) -> None:
    server.flags({"detail": "no"}, status=status)
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert len(server.of("flags")) == 1
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == f"api_error_{status}"


def test_quota_limited_response(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.flags(flags_response(BETA, quotaLimited=["feature_flags"]))
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert client.get_feature_flag_result("beta", "u2") is None
    assert len(server.of("flags")) == 2  # never retried
    client.flush()
    events = server.called_events()
    assert [e["properties"]["$feature_flag_error"] for e in events] == [
        "quota_limited", "quota_limited"
    ]
    assert any("quota" in m.lower() for m in messages(caplog, logging.WARNING))


def test_other_quota_limited_resources_do_not_matter(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(BETA, quotaLimited=["recordings"]))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "test"


def test_timeout_is_retried_then_reported(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA))
    server.push("flags", Reply(200, flags_response(BETA), delay=0.6),
                Reply(200, flags_response(BETA), delay=0.6))
    client = make_client(feature_flags_request_timeout_seconds=0.2)
    started = time.monotonic()
    assert client.get_feature_flag("beta", "u") is None
    elapsed = time.monotonic() - started
    assert len(server.of("flags")) == 2
    assert elapsed < 1.5
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "timeout"


def test_timeout_then_success(server: FlagServer, make_client: MakeClient) -> None:
    server.push("flags", Reply(200, flags_response(BETA), delay=0.6))
    server.flags(flags_response(BETA))
    client = make_client(feature_flags_request_timeout_seconds=0.2)
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) == "test"
    assert len(server.of("flags")) == 2


def test_refused_connection_is_not_retried() -> None:
    # §5.4 [changed since 7.42]: a refused connection is not retried.
    seen: list[dict[str, Any]] = []

    def keep(event: dict[str, Any]) -> None:
        seen.append(event)
        return None

    client = Client("phc_test", host=f"http://127.0.0.1:{closed_port()}", send=False,
                    before_send=keep, flush_interval=0.05)
    try:
        started = time.monotonic()
        assert client.get_feature_flag("beta", "u") is None
        elapsed = time.monotonic() - started
        # A retry would sleep 0.3 s first.
        assert elapsed < 0.25
        [event] = [e for e in seen if e["event"] == "$feature_flag_called"]
        assert event["properties"]["$feature_flag_error"] == "connection_error"
        assert client.get_flags_decision("u") == {"flags": {}, "requestId": None}
    finally:
        client.shutdown(timeout_seconds=2)


def test_invalid_json_body_is_an_unknown_error(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(b"<html>not json</html>")
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert len(server.of("flags")) == 1
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "unknown_error"


def test_errors_while_computing_flags_keeps_the_value(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(BETA, errorsWhileComputingFlags=True))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "test"
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "errors_while_computing_flags"
    assert event["properties"]["$feature_flag_response"] == "test"


def test_errors_while_computing_and_missing_are_comma_joined(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(errorsWhileComputingFlags=True))
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    client.flush()
    [event] = server.called_events()
    errors = event["properties"]["$feature_flag_error"].split(",")
    assert sorted(errors) == ["errors_while_computing_flags", "flag_missing"]


def test_server_failed_flag_is_none_with_evaluation_failed(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(record("beta", "test", failed=True, payload='{"a": 1}')))
    client = make_client()
    assert client.get_feature_flag("beta", "u") is None
    assert client.get_feature_flag_result("beta", "u2") is None
    client.flush()
    events = server.called_events()
    assert events[0]["properties"]["$feature_flag_error"] == "evaluation_failed"
    assert "$feature_flag_payload" not in events[0]["properties"]


def test_missing_request_id_is_omitted(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA, request_id=None))
    client = make_client()
    assert client.get_feature_flag("beta", "u") == "test"
    client.flush()
    [event] = server.called_events()
    assert "$feature_flag_request_id" not in event["properties"]


def test_events_carry_call_groups_and_geoip(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA))
    client = make_client(disable_geoip=False)
    client.get_feature_flag("beta", "u", groups={"company": "acme"}, disable_geoip=True)
    client.get_feature_flag("beta", "v")
    client.flush()
    first, second = server.called_events()
    assert first["properties"]["$groups"] == {"company": "acme"}
    assert first["properties"]["$geoip_disable"] is True
    assert "$groups" not in second["properties"]
    assert "$geoip_disable" not in second["properties"]


def test_feature_flag_result_and_payload_on_the_remote_path(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(BETA, record("on", True, payload="[1, 2]"),
                                record("off", False)))
    client = make_client()
    result = client.get_feature_flag_result("beta", "u")
    assert result is not None
    assert (result.key, result.enabled, result.variant) == ("beta", True, "test")
    assert result.payload == {"a": 1}
    assert result.reason == "Matched condition set 1"
    assert result.get_value() == "test"
    assert client.get_feature_flag_payload("on", "u") == [1, 2]
    off = client.get_feature_flag_result("off", "u")
    assert off is not None and off.enabled is False and off.get_value() is False
    assert client.feature_enabled("off", "u") is False


def test_match_value_on_the_remote_path_only_overrides_the_value(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §6.11: the payload stays the server's payload for the value it evaluated.
    server.flags(flags_response(BETA))
    client = make_client()
    assert client.get_feature_flag_payload("beta", "u", match_value="control") == {"a": 1}


def test_client_payload_getter_sends_no_event_by_default(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §9 behaviour 38 (Client half)
    server.flags(flags_response(BETA))
    client = make_client()
    assert client.get_feature_flag_payload("beta", "u") == {"a": 1}
    client.flush()
    assert server.called_events() == []
    assert client.get_feature_flag_payload("beta", "u", send_feature_flag_events=True) == {
        "a": 1
    }
    client.flush()
    assert len(server.called_events()) == 1


def test_context_device_id_and_distinct_id(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA))
    client = make_client()
    with client.new_context():
        client.identify_context("ctx-user")
        client.set_context_device_id("dev-ctx")
        assert client.get_feature_flag("beta", None) == "test"
        client.get_feature_flag("beta", "explicit", device_id="dev-arg")
        client.get_flags_decision(None)
        snapshot = client.evaluate_flags()
        assert snapshot.get_flag("beta", send_feature_flag_events=False) == "test"
    client.flush()
    bodies = [r.json() for r in server.of("flags")]
    assert (bodies[0]["distinct_id"], bodies[0]["device_id"]) == ("ctx-user", "dev-ctx")
    assert (bodies[1]["distinct_id"], bodies[1]["device_id"]) == ("explicit", "dev-arg")
    assert (bodies[2]["distinct_id"], bodies[2]["device_id"]) == ("ctx-user", "dev-ctx")
    assert (bodies[3]["distinct_id"], bodies[3]["device_id"]) == ("ctx-user", "dev-ctx")
    events = server.called_events()
    assert events[0]["distinct_id"] == "ctx-user"


def test_nested_context_inherits_device_id(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(BETA))
    client = make_client()
    with client.new_context():
        client.set_context_device_id("dev-outer")
        with client.new_context():
            client.get_feature_flag("beta", "u", send_feature_flag_events=False)
        with client.new_context(fresh=True):
            client.get_feature_flag("beta", "u", send_feature_flag_events=False)
    client.get_feature_flag("beta", "u", send_feature_flag_events=False)
    devices = [r.json()["device_id"] for r in server.of("flags")]
    assert devices == ["dev-outer", None, None]


def test_no_distinct_id_and_no_context_means_no_request(
    server: FlagServer, make_client: MakeClient
) -> None:
    client = make_client()
    assert client.get_feature_flag("beta", None) is None
    snapshot = client.evaluate_flags()
    assert snapshot.keys == []
    assert snapshot.is_enabled("beta") is False
    client.flush()
    assert server.of("flags") == []
    assert server.called_events() == []


def test_single_getters_inject_group_key(server: FlagServer, make_client: MakeClient) -> None:
    # §5.2: single getters, get_all_flags* and evaluate_flags add $group_key and drop
    # groups that are not in ``groups``; the lower-level calls send them as given.
    server.flags(flags_response(BETA))
    client = make_client()
    groups = {"company": "acme", "project": "p1"}
    given = {"company": {"size": 5}, "other": {"x": 1}}
    client.get_feature_flag("beta", "u", groups=groups, group_properties=given,
                            person_properties={"plan": "pro"})
    client.get_all_flags("u", groups=groups, group_properties=given)
    client.evaluate_flags("u", groups=groups, group_properties=given)
    client.get_flags_decision("u", groups, None, given)
    client.get_feature_variants("u", groups=groups, group_properties=given)
    client.get_feature_payloads("u", groups=groups, group_properties=given)
    client.get_feature_flags_and_payloads("u", groups=groups, group_properties=given)
    bodies = [r.json() for r in server.of("flags")]
    keyed = {"company": {"$group_key": "acme", "size": 5}, "project": {"$group_key": "p1"}}
    assert bodies[0]["group_properties"] == keyed
    assert bodies[0]["person_properties"] == {"plan": "pro"}
    assert bodies[0]["groups"] == groups
    assert bodies[1]["group_properties"] == keyed
    assert bodies[2]["group_properties"] == keyed
    for body in bodies[3:]:
        assert body["group_properties"] == given
        assert body["groups"] == groups
    assert "flag_keys_to_evaluate" not in bodies[1]
    assert "flag_keys_to_evaluate" not in bodies[3]


def test_remote_only_helpers(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(
        BETA, record("on", True, payload='{"p": 1}'), record("off", False, payload='"x"'),
        record("bad", "v", failed=True), request_id="req-h",
    ))
    client = make_client(secret_key="phs_secret")
    server.definitions({"flags": [], "group_type_mapping": {}, "cohorts": {}})
    assert client.get_feature_variants("u", flag_keys_to_evaluate=["beta", "on"]) == {
        "beta": "test", "on": True, "off": False
    }
    assert client.get_feature_payloads("u") == {"beta": '{"a": 1}', "on": '{"p": 1}'}
    assert client.get_feature_flags_and_payloads("u") == {
        "featureFlags": {"beta": "test", "on": True, "off": False},
        "featureFlagPayloads": {"beta": '{"a": 1}', "on": '{"p": 1}'},
    }
    decision = client.get_flags_decision("u")
    assert decision["requestId"] == "req-h"
    assert set(decision["flags"]) == {"beta", "on", "off", "bad"}
    assert decision["flags"]["beta"].get_value() == "test"
    assert server.of("flags")[0].json()["flag_keys_to_evaluate"] == ["beta", "on"]
    # remote-only: never local, never definitions, never events
    client.flush()
    assert server.of("definitions") == []
    assert server.called_events() == []


def test_remote_only_helpers_never_raise(server: FlagServer, make_client: MakeClient) -> None:
    server.flags({"detail": "boom"}, status=500)
    client = make_client()
    assert client.get_flags_decision("u") == {"flags": {}, "requestId": None}
    assert client.get_feature_variants("u") == {}
    assert client.get_feature_payloads("u") == {}
    assert client.get_feature_flags_and_payloads("u") == {
        "featureFlags": {}, "featureFlagPayloads": {}
    }


def test_default_flags_timeout_allows_a_slow_answer(
    server: FlagServer, make_client: MakeClient
) -> None:
    # §3.4: /flags waits feature_flags_request_timeout_seconds (default 3 s)
    server.push("flags", Reply(200, flags_response(BETA), delay=0.5))
    client = make_client()
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) == "test"
    assert len(server.of("flags")) == 1
