"""``capture(send_feature_flags=...)`` (spec §7.4) and the DeprecationWarnings of §1.6."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import pytest

from posthog import Client
from tests.flags_client.conftest import (
    SECRET,
    FlagServer,
    definitions,
    flag_def,
    flags_response,
    messages,
    record,
)

MakeClient = Callable[..., Client]


def deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


def test_send_feature_flags_without_definitions_is_remote(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(record("zeta", True), record("off", False),
                                record("alpha", "v"), record("bad", True, failed=True)))
    client = make_client()
    with pytest.warns(DeprecationWarning):
        uuid = client.capture("e", distinct_id="u", send_feature_flags=True)
    assert uuid is not None
    client.flush()
    [req] = server.of("flags")
    body = req.json()
    assert body["distinct_id"] == "u"
    assert "flag_keys_to_evaluate" not in body
    [event] = server.events()  # no $feature_flag_called
    props = event["properties"]
    assert props["$feature/zeta"] is True
    assert props["$feature/off"] is False
    assert props["$feature/alpha"] == "v"
    assert "$feature/bad" not in props
    # evaluation order, not sorted
    assert props["$active_feature_flags"] == ["zeta", "alpha"]


def test_send_feature_flags_options_are_sent_as_given(
    server: FlagServer, make_client: MakeClient
) -> None:
    server.flags(flags_response(record("a", True)))
    client = make_client()
    given = {"company": {"size": 5}}
    client.capture("e", distinct_id="u", send_feature_flags={
        "person_properties": {"plan": "pro"}, "group_properties": given,
        "flag_keys_filter": ["a"],
    })
    body = server.of("flags")[0].json()
    assert body["person_properties"] == {"plan": "pro"}
    assert body["group_properties"] == given
    assert body["flag_keys_to_evaluate"] == ["a"]


def test_send_feature_flags_uses_local_definitions_when_loaded(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(definitions(flag_def("zeta"), flag_def("off", rollout=0),
                                   flag_def("alpha", variants=[("v", 100)])))
    client = local_client()
    client.load_feature_flags()
    client.capture("e", distinct_id="u", send_feature_flags=True)
    client.flush()
    assert server.of("flags") == []
    [event] = server.events()
    props = event["properties"]
    assert props["$feature/zeta"] is True
    assert props["$feature/off"] is False
    assert props["$feature/alpha"] == "v"
    assert props["$active_feature_flags"] == ["zeta", "alpha"]


def test_send_feature_flags_explicit_modes(server: FlagServer, local_client: MakeClient) -> None:
    server.definitions(definitions(flag_def("local-only")))
    server.flags(flags_response(record("remote-only", True)))
    client = local_client()
    client.load_feature_flags()
    client.capture("remote", distinct_id="u",
                   send_feature_flags={"only_evaluate_locally": False})
    client.capture("local", distinct_id="u",
                   send_feature_flags={"only_evaluate_locally": True})
    client.flush()
    assert len(server.of("flags")) == 1
    remote, local = server.events()
    assert remote["properties"]["$active_feature_flags"] == ["remote-only"]
    assert local["properties"]["$active_feature_flags"] == ["local-only"]


def test_send_feature_flags_local_only_without_definitions_sends_nothing_extra(
    server: FlagServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.capture("e", distinct_id="u", send_feature_flags={"only_evaluate_locally": True})
    client.flush()
    assert server.of("flags") == []
    [event] = server.events()
    assert not [k for k in event["properties"] if k.startswith("$feature")]
    assert "$active_feature_flags" not in event["properties"]


def test_send_feature_flags_failure_still_sends_the_event(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.flags({"detail": "down"}, status=500)
    client = make_client()
    assert client.capture("e", distinct_id="u", send_feature_flags=True) is not None
    client.flush()
    [event] = server.events()
    assert event["event"] == "e"
    assert "$active_feature_flags" not in event["properties"]
    assert messages(caplog, logging.WARNING)


@pytest.mark.parametrize("bad", ["yes", 1, ["a"]])
def test_send_feature_flags_bad_type(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    client = make_client()
    assert client.capture("e", distinct_id="u", send_feature_flags=bad) is None
    client.flush()
    assert server.events() == []
    assert server.of("flags") == []
    assert any("Error in capture" in m for m in messages(caplog, logging.ERROR))


def test_deprecated_getters_warn(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("beta", True, payload='"p"')))
    client = make_client()
    for call in (
        lambda: client.feature_enabled("beta", "u"),
        lambda: client.get_feature_flag("beta", "u"),
        lambda: client.get_feature_flag_payload("beta", "u"),
        lambda: client.capture("e", distinct_id="u", send_feature_flags=True),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert len(deprecations(caught)) == 1


def test_payload_with_send_events_warns_twice(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("beta", True, payload='"p"')))
    client = make_client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.get_feature_flag_payload("beta", "u", send_feature_flag_events=True) == "p"
    assert len(deprecations(caught)) == 2


def test_current_api_does_not_warn(server: FlagServer, make_client: MakeClient) -> None:
    server.flags(flags_response(record("beta", True, payload='"p"')))
    client = make_client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.get_feature_flag_result("beta", "u")
        client.get_all_flags("u")
        client.get_all_flags_and_payloads("u")
        snap = client.evaluate_flags("u")
        snap.is_enabled("beta")
        client.capture("e", distinct_id="u", flags=snap)
        client.capture("e", distinct_id="u")
        client.get_feature_variants("u")
    assert deprecations(caught) == []


def test_personal_api_key_is_deprecated(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.warns(DeprecationWarning):
        client = make_client(personal_api_key="phs_personal")
    assert client.secret_key == "phs_personal"
    assert client.personal_api_key == "phs_personal"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both = make_client(personal_api_key="phs_personal", secret_key=SECRET)
    assert deprecations(caught) == []
    assert both.secret_key == SECRET
    assert messages(caplog, logging.WARNING)
