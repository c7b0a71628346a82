"""The client around the local evaluator: fallback to /flags, payloads, get_all_flags merge,
evaluation runtimes and remote config (spec §5.1, §6.2, §6.10, §6.11, §7.5; §9 33, 35, 37).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from posthog import Client, FeatureFlagEvaluationRuntime, UnresolvedFlagReason
from posthog.version import VERSION
from tests.flags_client.conftest import (
    NEEDS_PLAN,
    SECRET,
    FlagServer,
    definitions,
    flag_def,
    flags_response,
    messages,
    record,
)
from tests.support.http_server import Reply

MakeClient = Callable[..., Client]

VARIANTS = [("first", 50), ("second", 20), ("third", 20), ("fourth", 5), ("fifth", 5)]


def test_local_flag_needs_no_request_and_reports_definition_metadata(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(
        flag_def("beta", flag_id=42, version=6, payloads={"true": '{"p": 1}'},
                 has_experiment=True),
    ))
    client = local_client()
    assert client.get_feature_flag("beta", "u") is True
    assert client.feature_enabled("beta", "u") is True
    client.flush()
    assert server.of("flags") == []
    [event] = server.called_events()
    props = event["properties"]
    assert props["locally_evaluated"] is True
    assert props["$feature_flag_response"] is True
    assert props["$feature_flag_id"] == 42
    assert props["$feature_flag_version"] == 6
    assert props["$feature_flag_payload"] == {"p": 1}
    assert props["$feature_flag_has_experiment"] is True
    assert "$feature_flag_request_id" not in props
    assert "$feature_flag_error" not in props


def test_simple_flag_bucketing_through_the_client(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §9 behaviour 1, through the client
    server.definitions(definitions(flag_def("simple-flag", rollout=50)))
    client = local_client()
    assert client.get_feature_flag("simple-flag", "some-distinct-id") is True
    assert client.get_feature_flag("simple-flag", "test-id-1") is False
    assert server.of("flags") == []


def test_unknown_key_and_inconclusive_flags_go_to_the_server(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("gated", properties=NEEDS_PLAN)))
    server.flags(flags_response(record("gated", "srv"), record("unknown", True)))
    client = local_client()
    assert client.get_feature_flag("gated", "u") == "srv"
    assert client.get_feature_flag("unknown", "u") is True
    # with the property given it is decided locally
    assert client.get_feature_flag("gated", "u", person_properties={"plan": "pro"}) is True
    bodies = [r.json() for r in server.of("flags")]
    assert [b["flag_keys_to_evaluate"] for b in bodies] == [["gated"], ["unknown"]]
    client.flush()
    events = server.called_events()
    assert [e["properties"]["locally_evaluated"] for e in events] == [False, False, True]


def test_only_evaluate_locally_never_calls_the_server(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("gated", properties=NEEDS_PLAN)))
    client = local_client()
    assert client.get_feature_flag("gated", "u", only_evaluate_locally=True) is None
    assert client.get_feature_flag("unknown", "u", only_evaluate_locally=True) is None
    assert client.get_feature_flag_result("gated", "u", only_evaluate_locally=True) is None
    assert client.get_all_flags("u", only_evaluate_locally=True) == {}
    assert server.of("flags") == []


def test_only_evaluate_locally_without_definitions_warns(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    assert client.get_feature_flag("beta", "u", only_evaluate_locally=True) is None
    assert server.of("flags") == []
    assert messages(caplog, logging.WARNING)


def test_experience_continuity_is_always_remote(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §9 behaviour 33
    server.definitions(definitions(flag_def("cont", ensure_experience_continuity=True),
                                   flag_def("plain")))
    server.flags(flags_response(record("cont", "from-server")))
    client = local_client()
    assert client.get_feature_flag("cont", "u") == "from-server"
    assert len(server.of("flags")) == 1
    assert client.get_feature_flag("cont", "u", only_evaluate_locally=True) is None
    snapshot = client.evaluate_flags("u", only_evaluate_locally=True)
    assert snapshot.unresolved_flags["cont"] == UnresolvedFlagReason.EXPERIENCE_CONTINUITY
    assert snapshot.get_flag("cont", send_feature_flag_events=False) is None
    assert snapshot.get_flag("plain", send_feature_flag_events=False) is True
    assert "cont" not in snapshot.keys
    assert len(server.of("flags")) == 1


def test_group_flag_without_its_group_is_false_without_a_request(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §9 behaviour 35
    server.definitions(definitions(flag_def("grp", aggregation_group_type_index=0),
                                   group_type_mapping={"0": "company"}))
    client = local_client()
    assert client.get_feature_flag("grp", "u") is False
    assert client.get_feature_flag("grp", "u", groups={"project": "p"}) is False
    assert client.get_feature_flag("grp", "u", groups={"company": "acme"}) is True
    assert client.get_all_flags("u") == {"grp": False}
    assert server.of("flags") == []


def test_local_payload_with_match_value(server: FlagServer, local_client: MakeClient) -> None:
    # §6.11
    server.definitions(definitions(flag_def(
        "multivariate-flag", variants=VARIANTS,
        payloads={"first": '{"v": 1}', "second": '{"v": 2}', "true": '"t"'},
    )))
    client = local_client()
    # some-distinct-id buckets into first-variant per §9
    assert client.get_feature_flag("multivariate-flag", "some-distinct-id",
                                   send_feature_flag_events=False) == "first"
    assert client.get_feature_flag_payload("multivariate-flag", "some-distinct-id") == {"v": 1}
    assert client.get_feature_flag_payload("multivariate-flag", "some-distinct-id",
                                           match_value="second") == {"v": 2}
    assert client.get_feature_flag_payload("multivariate-flag", "some-distinct-id",
                                           match_value="fourth") is None
    assert client.get_feature_flag_payload("multivariate-flag", "some-distinct-id",
                                           match_value=True) == "t"
    assert server.of("flags") == []


def test_payload_strings_vs_decoded_locally(server: FlagServer, local_client: MakeClient) -> None:
    # §9 behaviour 37, local path; §6.11 disabled flag's "false" payload
    server.definitions(definitions(
        flag_def("on", payloads={"true": '{"p":1}'}),
        flag_def("off", rollout=0, payloads={"false": '{"off": true}', "true": '"no"'}),
        flag_def("broken", payloads={"true": "{nope"}),
    ))
    client = local_client()
    both = client.get_all_flags_and_payloads("u")
    assert both["featureFlags"] == {"on": True, "off": False, "broken": True}
    assert both["featureFlagPayloads"] == {"on": '{"p":1}', "off": '{"off": true}'}
    assert client.get_feature_flag_payload("on", "u") == {"p": 1}
    assert client.get_feature_flag_payload("broken", "u") is None
    assert server.of("flags") == []


def test_payload_strings_vs_decoded_remotely(server: FlagServer, make_client: MakeClient) -> None:
    # §9 behaviour 37, remote path
    server.flags(flags_response(record("on", True, payload='{"p":1}'),
                                record("off", False, payload='{"x":0}')))
    client = make_client()
    both = client.get_all_flags_and_payloads("u")
    assert both == {"featureFlags": {"on": True, "off": False},
                    "featureFlagPayloads": {"on": '{"p":1}'}}
    assert client.get_feature_flag_payload("on", "u") == {"p": 1}
    client.flush()
    assert server.called_events() == []  # get_all_flags* sends no events (§7.1)


def test_get_all_flags_remote_replaces_local(server: FlagServer, local_client: MakeClient) -> None:
    # §7.5
    server.definitions(definitions(
        flag_def("a", payloads={"true": '"local-a"'}),
        flag_def("b", properties=NEEDS_PLAN),
        flag_def("c", payloads={"true": '"local-c"'}),
        flag_def("d"),
    ))
    server.flags(flags_response(
        record("a", False),
        record("b", "srv-b", payload='"remote-b"'),
        record("c", "srv-c", failed=True),
    ))
    client = local_client()
    both = client.get_all_flags_and_payloads("u")
    assert both["featureFlags"] == {"a": False, "b": "srv-b", "c": True}
    assert both["featureFlagPayloads"] == {"b": '"remote-b"', "c": '"local-c"'}
    assert client.get_all_flags("u") == {"a": False, "b": "srv-b", "c": True}
    [first, _] = server.of("flags")
    assert "flag_keys_to_evaluate" not in first.json()
    client.flush()
    assert server.called_events() == []


def test_get_all_flags_remote_failure_returns_local(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.definitions(definitions(flag_def("a"), flag_def("b", properties=NEEDS_PLAN),
                                   flag_def("off", rollout=0)))
    server.flags({"detail": "down"}, status=500)
    client = local_client()
    assert client.get_all_flags("u") == {"a": True, "off": False}
    assert messages(caplog, logging.WARNING)


def test_get_all_flags_all_local_makes_no_request(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("a"), flag_def("b", properties=NEEDS_PLAN)))
    client = local_client()
    assert client.get_all_flags("u", person_properties={"plan": "pro"}) == {"a": True, "b": True}
    assert client.get_all_flags("u", flag_keys_to_evaluate=["a"]) == {"a": True}
    assert server.of("flags") == []


def test_get_all_flags_without_definitions_is_remote(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(record("x", "v"), record("y", True, failed=True)))
    client = make_client()
    assert client.get_all_flags("u", flag_keys_to_evaluate=["x", "y"]) == {"x": "v"}
    assert server.of("flags")[0].json()["flag_keys_to_evaluate"] == ["x", "y"]


def test_evaluation_runtime_helpers(server: FlagServer, local_client: MakeClient) -> None:
    server.definitions(definitions(
        flag_def("srv", evaluation_runtime="server"),
        flag_def("cli", evaluation_runtime="client"),
        flag_def("any", evaluation_runtime="all"),
        flag_def("none"),
        flag_def("odd", evaluation_runtime="toaster"),
    ))
    client = local_client()
    assert client.get_feature_flag_evaluation_runtime("srv") is None  # not loaded yet
    client.load_feature_flags()
    rt = FeatureFlagEvaluationRuntime
    assert client.get_feature_flag_evaluation_runtime("srv") is rt.SERVER
    assert client.get_feature_flag_evaluation_runtime("cli") is rt.CLIENT
    assert client.get_feature_flag_evaluation_runtime("any") is rt.ALL
    assert client.get_feature_flag_evaluation_runtime("none") is rt.ALL
    assert client.get_feature_flag_evaluation_runtime("odd") is rt.ALL
    assert client.get_feature_flag_evaluation_runtime("missing") is None
    assert sorted(client.get_feature_flag_keys_by_evaluation_runtime(rt.SERVER)) == [
        "any", "none", "odd", "srv"
    ]
    assert sorted(client.get_feature_flag_keys_by_evaluation_runtime(rt.CLIENT)) == [
        "any", "cli", "none", "odd"
    ]
    assert sorted(client.get_feature_flag_keys_by_evaluation_runtime(rt.ALL)) == [
        "any", "cli", "none", "odd", "srv"
    ]


def test_remote_config_payload(server: FlagServer, local_client: MakeClient) -> None:
    # §6.11, §3.1
    server.push("remote_config", Reply(200, {"colour": "blue", "n": [1, 2]}))
    client = local_client()
    assert client.get_remote_config_payload("my-config") == {"colour": "blue", "n": [1, 2]}
    [req] = server.of("remote_config")
    assert req.method == "GET"
    assert req.path == "/api/projects/@current/feature_flags/my-config/remote_config?token=phc_test"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["user-agent"] == f"posthog-python/{VERSION}"
    client.flush()
    assert server.called_events() == []
    assert server.of("flags") == []


def test_remote_config_scalar_body(server: FlagServer, local_client: MakeClient) -> None:
    server.push("remote_config", Reply(200, '{"encrypted": "decoded"}'))
    client = local_client()
    assert client.get_remote_config_payload("cfg") == '{"encrypted": "decoded"}'


def test_remote_config_without_secret_key(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    assert client.get_remote_config_payload("cfg") is None
    assert server.requests == []
    assert messages(caplog, logging.WARNING)


def test_remote_config_errors_return_none(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("remote_config", Reply(500, {"detail": "boom"}), Reply(200, b"{bad json"),
                Reply(200, {"x": 1}, delay=0.6))
    client = local_client(feature_flags_request_timeout_seconds=0.2)
    assert client.get_remote_config_payload("cfg") is None
    assert client.get_remote_config_payload("cfg") is None
    started = time.monotonic()
    assert client.get_remote_config_payload("cfg") is None
    assert time.monotonic() - started < 0.55
    assert len(messages(caplog, logging.ERROR)) >= 3


def test_remote_config_disabled(server: FlagServer, local_client: MakeClient) -> None:
    client = local_client(disabled=True)
    assert client.get_remote_config_payload("cfg") is None
    assert server.requests == []


def test_lazy_load_happens_once(server: FlagServer, local_client: MakeClient) -> None:
    server.definitions(definitions(flag_def("a")))
    client = local_client()
    client.get_feature_flag("a", "u")
    client.get_all_flags("u")
    client.evaluate_flags("u")
    client.get_feature_flag_result("a", "v")
    assert len(server.of("definitions")) == 1
    assert server.of("flags") == []


def test_failed_lazy_load_falls_back_to_remote(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.set_default("definitions", Reply(500, {"detail": "down"}))
    server.flags(flags_response(record("a", "srv")))
    client = local_client()
    assert client.get_feature_flag("a", "u") == "srv"
    assert len(server.of("flags")) == 1


@pytest.mark.parametrize("minimal", [True, False])
def test_local_minimal_mode(server: FlagServer, local_client: MakeClient, minimal: bool) -> None:
    # §7.2 on the single-flag path with definitions' minimal_flag_called_events
    server.definitions(definitions(
        flag_def("plain", has_experiment=False, payloads={"true": '"p"'}),
        flag_def("exp", has_experiment=True, payloads={"true": '"p"'}),
        minimal_flag_called_events=minimal,
    ))
    client = local_client(super_properties={"team": "x"})
    client.get_feature_flag("plain", "u")
    client.get_feature_flag("exp", "u")
    client.flush()
    plain, exp = (e["properties"] for e in server.called_events())
    assert ("$feature/plain" in plain) is not minimal
    assert ("$feature_flag_payload" in plain) is not minimal
    assert ("team" in plain) is not minimal
    assert plain["$feature_flag"] == "plain"
    assert plain["$feature_flag_response"] is True
    assert plain["locally_evaluated"] is True
    assert plain["$lib"] == "posthog-python"
    assert exp["$feature/exp"] is True
    assert exp["team"] == "x"


def test_minimal_switch_is_the_last_value_seen_client_wide(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §7.2: for a locally evaluated flag the switch is whatever the last definitions load
    # or /flags response said.
    server.definitions(definitions(flag_def("plain", has_experiment=False)))
    server.push("flags", Reply(200, flags_response(minimalFlagCalledEvents=True)))
    server.flags(flags_response(minimalFlagCalledEvents=False))
    client = local_client()
    client.get_feature_flag("plain", "u1")
    client.get_flags_decision("someone")  # answers minimalFlagCalledEvents: true
    client.get_feature_flag("plain", "u2")
    client.get_flags_decision("someone")  # answers minimalFlagCalledEvents: false
    client.get_feature_flag("plain", "u3")
    client.flush()
    full1, minimal, full2 = (e["properties"] for e in server.called_events())
    assert "$feature/plain" in full1
    assert "$feature/plain" not in minimal
    assert minimal["$feature_flag"] == "plain"
    assert "$feature/plain" in full2


def test_definitions_ignore_the_flags_request_timeout(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §3.4: the definitions GET has a fixed 10 s timeout
    server.push("definitions", Reply(200, definitions(flag_def("a")), delay=0.5))
    client = local_client(feature_flags_request_timeout_seconds=0.2)
    assert client.get_feature_flag("a", "u", send_feature_flag_events=False) is True
    assert server.of("flags") == []
