"""``evaluate_flags`` and the ``FeatureFlagEvaluations`` snapshot (spec §7.3, §7.1, §7.2; §9 36)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from posthog import Client, FeatureFlagEvaluations, UnresolvedFlagReason
from tests.flags_client.conftest import (
    NEEDS_PLAN,
    FlagServer,
    definitions,
    flag_def,
    flags_response,
    messages,
    record,
)

MakeClient = Callable[..., Client]


@pytest.fixture
def mixed(server: FlagServer) -> FlagServer:
    """Local a (True, payload), off (False), gated (inconclusive); the server knows more."""
    server.definitions(definitions(
        flag_def("a", flag_id=101, version=2, payloads={"true": '{"a": 1}'}),
        flag_def("off", rollout=0, flag_id=102),
        flag_def("gated", properties=NEEDS_PLAN, flag_id=103),
    ))
    server.flags(flags_response(
        record("a", "server-a"),
        record("gated", "srv", flag_id=203, version=9, payload='{"g": 2}',
               description="Matched condition set 3"),
        record("extra", True, flag_id=204),
        record("broken", "x", failed=True),
        request_id="req-snap",
    ))
    return server


def test_local_wins_and_remote_fills_missing(mixed: FlagServer, local_client: MakeClient) -> None:
    client = local_client()
    snap = client.evaluate_flags("u")
    assert isinstance(snap, FeatureFlagEvaluations)
    assert sorted(snap.keys) == ["a", "extra", "gated", "off"]
    assert snap.get_flag("a", send_feature_flag_events=False) is True
    assert snap.get_flag("off", send_feature_flag_events=False) is False
    assert snap.get_flag("gated", send_feature_flag_events=False) == "srv"
    assert snap.get_flag("extra", send_feature_flag_events=False) is True
    assert snap.get_flag("broken", send_feature_flag_events=False) is None
    assert snap.get_flag_payload("a") == {"a": 1}
    assert snap.get_flag_payload("gated") == {"g": 2}
    assert snap.get_flag_payload("broken") is None
    [req] = mixed.of("flags")
    assert "flag_keys_to_evaluate" not in req.json()


def test_is_enabled_defaults(mixed: FlagServer, local_client: MakeClient) -> None:
    snap = local_client().evaluate_flags("u")
    assert snap.is_enabled("a", send_feature_flag_events=False) is True
    assert snap.is_enabled("gated", send_feature_flag_events=False) is True  # variant
    assert snap.is_enabled("off", True, send_feature_flag_events=False) is False
    assert snap.is_enabled("nope", send_feature_flag_events=False) is False
    assert snap.is_enabled("nope", True, send_feature_flag_events=False) is True
    assert snap.is_enabled("broken", True, send_feature_flag_events=False) is True
    assert snap.is_enabled("broken", send_feature_flag_events=False) is False


def test_no_request_when_everything_resolves_locally(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("a"), flag_def("gated", properties=NEEDS_PLAN)))
    client = local_client()
    snap = client.evaluate_flags("u", person_properties={"plan": "pro"})
    assert sorted(snap.keys) == ["a", "gated"]
    scoped = client.evaluate_flags("u", flag_keys=["a"])
    assert scoped.keys == ["a"]
    assert server.of("flags") == []


def test_flag_keys_scope_the_request(mixed: FlagServer, local_client: MakeClient) -> None:
    client = local_client()
    snap = client.evaluate_flags("u", flag_keys=["a", "extra"])
    [req] = mixed.of("flags")
    assert req.json()["flag_keys_to_evaluate"] == ["a", "extra"]
    assert snap.get_flag("a", send_feature_flag_events=False) is True  # local still wins
    assert snap.get_flag("extra", send_feature_flag_events=False) is True
    assert "off" not in snap.keys


def test_empty_flag_keys_is_an_empty_snapshot(mixed: FlagServer, local_client: MakeClient) -> None:
    client = local_client()
    snap = client.evaluate_flags("u", flag_keys=[])
    assert snap.keys == []
    assert snap.is_enabled("a") is False
    assert snap.get_flag("a") is None
    client.flush()
    assert mixed.of("flags") == []
    assert mixed.called_events() == []


def test_without_definitions_it_is_all_remote(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("x", "v"), record("y", False)))
    client = make_client()
    snap = client.evaluate_flags("u", groups={"company": "acme"},
                                 person_properties={"email": "a@b.c"}, disable_geoip=False,
                                 device_id="dev-1")
    assert sorted(snap.keys) == ["x", "y"]
    body = server.of("flags")[0].json()
    assert body["groups"] == {"company": "acme"}
    assert body["person_properties"] == {"email": "a@b.c"}
    assert body["group_properties"] == {"company": {"$group_key": "acme"}}
    assert body["geoip_disable"] is False
    assert body["device_id"] == "dev-1"


def test_only_evaluate_locally_lists_unresolved(
    mixed: FlagServer, local_client: MakeClient
) -> None:
    client = local_client()
    snap = client.evaluate_flags("u", only_evaluate_locally=True)
    assert mixed.of("flags") == []
    assert sorted(snap.keys) == ["a", "off"]
    assert snap.unresolved_flags["gated"] == UnresolvedFlagReason.MISSING_CONTEXT
    with pytest.raises(TypeError):
        snap.unresolved_flags["x"] = UnresolvedFlagReason.MISSING_CONTEXT  # type: ignore[index]


def test_reads_send_events_with_snapshot_metadata(
    mixed: FlagServer, local_client: MakeClient
) -> None:
    client = local_client()
    snap = client.evaluate_flags("u", groups={"company": "acme"})
    assert snap.get_flag_payload("a") == {"a": 1}
    client.flush()
    assert mixed.called_events() == []  # payload reads send nothing
    assert snap.is_enabled("a") is True
    assert snap.get_flag("gated") == "srv"
    assert snap.get_flag("gated") == "srv"  # deduplicated
    client.flush()
    local_ev, remote_ev = mixed.called_events()
    assert local_ev["distinct_id"] == "u"
    local = local_ev["properties"]
    assert local["$feature_flag"] == "a"
    assert local["$feature_flag_response"] is True
    assert local["locally_evaluated"] is True
    assert local["$feature_flag_reason"] == "Evaluated locally"
    assert local["$feature_flag_request_id"] == "req-snap"
    assert "$feature_flag_evaluated_at" not in local
    assert local["$feature_flag_id"] == 101
    assert local["$feature_flag_version"] == 2
    assert local["$feature_flag_payload"] == {"a": 1}
    assert local["$groups"] == {"company": "acme"}
    remote = remote_ev["properties"]
    assert remote["locally_evaluated"] is False
    assert remote["$feature_flag_response"] == "srv"
    assert remote["$feature_flag_request_id"] == "req-snap"
    assert remote["$feature_flag_evaluated_at"] == 1700000000000
    assert remote["$feature_flag_reason"] == "Matched condition set 3"
    assert remote["$feature_flag_id"] == 203
    assert remote["$feature_flag_version"] == 9
    assert len(mixed.of("flags")) == 1  # reads never call the server


def test_reads_of_missing_and_failed_flags(mixed: FlagServer, local_client: MakeClient) -> None:
    client = local_client()
    snap = client.evaluate_flags("u")
    snap.get_flag("nope")
    snap.is_enabled("broken")
    client.flush()
    missing, failed = (e["properties"] for e in mixed.called_events())
    assert missing["$feature_flag_response"] is None
    assert missing["$feature_flag_error"] == "flag_missing"
    assert failed["$feature_flag_error"] == "evaluation_failed"


def test_suppressed_snapshot_reads_do_not_record(
    mixed: FlagServer, local_client: MakeClient
) -> None:
    client = local_client()
    snap = client.evaluate_flags("u")
    snap.is_enabled("a", send_feature_flag_events=False)
    client.flush()
    assert mixed.called_events() == []
    snap.is_enabled("a")
    client.flush()
    assert len(mixed.called_events()) == 1


def test_snapshot_and_single_getter_share_dedupe(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("a")))
    client = local_client()
    client.get_feature_flag("a", "u")
    client.evaluate_flags("u").get_flag("a")
    client.flush()
    assert len(server.called_events()) == 1


def test_only_accessed_and_only(
    mixed: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = local_client()
    snap = client.evaluate_flags("u", only_evaluate_locally=True)
    assert snap.only_accessed().keys == []
    snap.is_enabled("a", send_feature_flag_events=False)
    snap.get_flag("off", send_feature_flag_events=False)
    snap.get_flag_payload("gated")  # not an access
    accessed = snap.only_accessed()
    assert sorted(accessed.keys) == ["a", "off"]
    assert dict(accessed.unresolved_flags) == {}
    assert dict(snap.unresolved_flags) != {}

    picked = snap.only(["a", "does-not-exist"])
    assert picked.keys == ["a"]
    assert picked.get_flag("a", send_feature_flag_events=False) is True
    assert dict(picked.unresolved_flags) == {}
    assert any("does-not-exist" in m for m in messages(caplog, logging.WARNING))
    assert sorted(snap.keys) == ["a", "off"]  # the original is unchanged


def test_copies_still_send_events(mixed: FlagServer, local_client: MakeClient) -> None:
    client = local_client()
    snap = client.evaluate_flags("u")
    copy = snap.only(["gated"])
    assert copy.get_flag("gated") == "srv"
    client.flush()
    [event] = mixed.called_events()
    assert event["properties"]["$feature_flag_request_id"] == "req-snap"


def test_quota_limited_keeps_local_and_tags_reads(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("a"), flag_def("gated", properties=NEEDS_PLAN)))
    server.flags(flags_response(record("gated", "srv"), quotaLimited=["feature_flags"]))
    client = local_client()
    snap = client.evaluate_flags("u")
    assert snap.keys == ["a"]
    snap.is_enabled("a")
    snap.get_flag("gated")
    client.flush()
    for event in server.called_events():
        assert "quota_limited" in event["properties"]["$feature_flag_error"].split(",")


def test_other_remote_errors_keep_local(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.definitions(definitions(flag_def("a"), flag_def("gated", properties=NEEDS_PLAN)))
    server.flags({"detail": "down"}, status=500)
    client = local_client()
    snap = client.evaluate_flags("u")
    assert snap.keys == ["a"]
    assert messages(caplog, logging.WARNING)
    snap.is_enabled("a")
    client.flush()
    [event] = server.called_events()
    assert "$feature_flag_error" not in event["properties"]


def test_errors_while_computing_tag_reads(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("x", True), errorsWhileComputingFlags=True))
    client = make_client()
    snap = client.evaluate_flags("u")
    assert snap.is_enabled("x") is True
    client.flush()
    [event] = server.called_events()
    assert event["properties"]["$feature_flag_error"] == "errors_while_computing_flags"


def test_capture_with_flags_snapshot(mixed: FlagServer, local_client: MakeClient) -> None:
    # §9 behaviour 36
    client = local_client()
    snap = client.evaluate_flags("u")
    requests_before = len(mixed.of("flags"))
    client.capture("purchase", distinct_id="u", flags=snap,
                   properties={"$feature/extra": "mine"})
    client.flush()
    assert len(mixed.of("flags")) == requests_before
    [event] = mixed.events()
    assert event["event"] == "purchase"
    props = event["properties"]
    assert props["$feature/a"] is True
    assert props["$feature/off"] is False
    assert props["$feature/gated"] == "srv"
    assert props["$feature/extra"] == "mine"  # caller properties win
    assert "$feature/broken" not in props
    assert props["$active_feature_flags"] == ["a", "extra", "gated"]


def test_capture_with_flags_sorts_active_flags(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("zeta"), flag_def("mid", rollout=0),
                                   flag_def("alpha")))
    client = local_client()
    snap = client.evaluate_flags("u")
    client.capture("e", distinct_id="u", flags=snap)
    client.capture("e2", distinct_id="u", flags=snap.only(["mid"]))
    client.flush()
    first, second = server.events()
    assert first["properties"]["$active_feature_flags"] == ["alpha", "zeta"]
    assert second["properties"]["$feature/mid"] is False
    assert "$active_feature_flags" not in second["properties"]


def test_capture_with_flags_ignores_send_feature_flags(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.definitions(definitions(flag_def("a")))
    client = local_client()
    snap = client.evaluate_flags("u")
    client.capture("e", distinct_id="u", flags=snap,
                   send_feature_flags={"only_evaluate_locally": False})
    client.flush()
    assert server.of("flags") == []
    assert messages(caplog, logging.WARNING)
    [event] = server.events()
    assert event["properties"]["$active_feature_flags"] == ["a"]


@pytest.mark.parametrize("has_experiment", [False, True, None])
def test_remote_minimal_mode(
    server: FlagServer, make_client: MakeClient, has_experiment: bool | None
) -> None:
    # §7.2: minimal only when the response says so AND has_experiment is false
    server.flags(flags_response(
        record("beta", "test", payload='{"a": 1}', has_experiment=has_experiment),
        minimalFlagCalledEvents=True,
    ))
    client = make_client(super_properties={"team": "x"})
    with client.new_context():
        client.set_context_session("sess-1")
        client.tag("tagged", 1)
        assert client.get_feature_flag("beta", "u", groups={"company": "acme"}) == "test"
    client.flush()
    [event] = server.called_events()
    props = event["properties"]
    allow = {
        "$feature_flag", "$feature_flag_response", "$feature_flag_has_experiment",
        "$feature_flag_id", "$feature_flag_version", "$feature_flag_reason",
        "$feature_flag_request_id", "$feature_flag_evaluated_at", "$feature_flag_error",
        "locally_evaluated", "$groups", "$process_person_profile", "$session_id", "$lib",
        "$lib_version", "$is_server", "$geoip_disable", "$os", "$os_version", "$os_distro",
        "$python_runtime", "$python_version",
    }
    if has_experiment is False:
        assert set(props) <= allow
        for key in ("$feature_flag", "$feature_flag_response", "$feature_flag_request_id",
                    "$feature_flag_id", "$groups", "$session_id", "$lib"):
            assert key in props
    else:
        assert props["$feature/beta"] == "test"
        assert ("$feature_flag_has_experiment" in props) is (has_experiment is not None)
        assert props["$feature_flag_payload"] == {"a": 1}
        assert props["team"] == "x"
        assert props["tagged"] == 1


def test_snapshot_minimal_mode(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("plain", True, has_experiment=False),
                                record("exp", True, has_experiment=True),
                                minimalFlagCalledEvents=True))
    client = make_client()
    snap = client.evaluate_flags("u")
    snap.is_enabled("plain")
    snap.is_enabled("exp")
    client.flush()
    plain, exp = (e["properties"] for e in server.called_events())
    assert "$feature/plain" not in plain
    assert exp["$feature/exp"] is True


def test_disabled_or_anonymous_snapshots_never_send(
    server: FlagServer, make_client: MakeClient
) -> None:
    disabled = make_client(disabled=True)
    snap = disabled.evaluate_flags("u")
    snap.is_enabled("x")
    snap.get_flag("y")
    anon = make_client()
    empty = anon.evaluate_flags(None)
    assert empty.keys == []
    empty.is_enabled("x")
    anon.flush()
    assert server.requests == []
