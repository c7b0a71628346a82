"""Loading flag definitions: request, ETag, status rules, poller, lazy load (spec §6.1, §6.2)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from posthog import Client
from posthog.flags.poller import DefinitionsLoader
from posthog.version import VERSION
from tests.flags_client.conftest import (
    EMPTY_DEFINITIONS,
    SECRET,
    FlagServer,
    definitions,
    flag_def,
    messages,
)
from tests.support.http_server import Reply

MakeClient = Callable[..., Client]

BETA_DEFS = definitions(flag_def("beta", flag_id=11, version=4))


def test_first_flag_call_fetches_definitions_then_polls_with_etag(
    server: FlagServer, local_client: MakeClient
) -> None:
    # §9 behaviour 32, §3.1, §3.3
    server.push("definitions", Reply(200, BETA_DEFS, {"ETag": '"etag-1"'}))
    server.set_default("definitions", Reply(304, b""))
    client = local_client(poll_interval=0.1)
    assert client.feature_flags is None
    assert server.requests == []  # construction does not load (§1.5)
    assert client.get_feature_flag("beta", "u") is True
    first = server.of("definitions")[0]
    assert first.method == "GET"
    assert first.path == "/flags/definitions?token=phc_test&send_cohorts"
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert first.headers["user-agent"] == f"posthog-python/{VERSION}"
    assert "if-none-match" not in first.headers
    assert server.of("flags") == []  # evaluated locally

    second = server.wait_for("definitions", 2)[1]
    assert second.headers["if-none-match"] == '"etag-1"'
    assert second.headers["authorization"] == f"Bearer {SECRET}"
    # 304 keeps what was loaded
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    assert client.get_feature_flag("beta", "v") is True
    assert server.of("flags") == []


def test_304_with_a_new_etag_replaces_the_old_one(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.push("definitions", Reply(200, BETA_DEFS, {"ETag": "e1"}),
                Reply(304, b"", {"ETag": "e2"}))
    server.set_default("definitions", Reply(304, b""))
    client = local_client(poll_interval=0.05)
    client.load_feature_flags()
    reqs = server.wait_for("definitions", 4)
    assert reqs[1].headers["if-none-match"] == "e1"
    assert reqs[2].headers["if-none-match"] == "e2"
    assert reqs[3].headers["if-none-match"] == "e2"  # 304 without ETag keeps the old one
    assert client.feature_flags is not None and len(client.feature_flags) == 1


def test_new_200_replaces_definitions(server: FlagServer, local_client: MakeClient) -> None:
    server.push("definitions", Reply(200, BETA_DEFS, {"ETag": "e1"}))
    server.definitions(definitions(flag_def("beta", rollout=0), flag_def("gamma")), etag="e2")
    client = local_client(poll_interval=0.05)
    client.load_feature_flags()
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) is True
    server.wait_for("definitions", 3)
    assert sorted(client.feature_flags_by_key) == ["beta", "gamma"]
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) is False


def test_feature_flags_is_none_until_the_first_successful_load(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("definitions", Reply(500, {"detail": "down"}))
    server.definitions(definitions(flag_def("beta"), group_type_mapping={"0": "company"},
                                   cohorts={"5": {"type": "OR", "values": []}}))
    client = local_client()
    assert client.feature_flags is None
    assert client.feature_flag_definitions() is None
    assert client.feature_flags_by_key == {}
    client.load_feature_flags()
    assert client.feature_flags is None  # the failed load installs nothing
    assert any("Error loading feature flags" in m for m in messages(caplog, logging.ERROR))
    client.load_feature_flags()
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    assert client.feature_flag_definitions() == client.feature_flags
    assert client.group_type_mapping == {"0": "company"}
    assert client.cohorts == {"5": {"type": "OR", "values": []}}
    assert set(client.feature_flags_by_key) == {"beta"}


def test_other_api_errors_keep_definitions(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("definitions", Reply(200, BETA_DEFS, {"ETag": "e1"}),
                Reply(500, {"detail": "oops"}), Reply(403, {"detail": "forbidden"}))
    client = local_client()
    client.load_feature_flags()
    client.load_feature_flags()
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    errors = messages(caplog, logging.ERROR)
    assert any("Error loading feature flags" in m and "oops" in m for m in errors)
    assert all(m.startswith("[PostHog] ") for m in errors)
    client.load_feature_flags()  # 403
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    assert len(messages(caplog, logging.ERROR)) > len(errors)


def test_401_clears_definitions_logs_once_and_forgets_the_etag(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("definitions", Reply(200, BETA_DEFS, {"ETag": "e1"}))
    server.set_default("definitions", Reply(401, {"detail": "invalid key"}))
    client = local_client()
    client.load_feature_flags()
    assert client.get_feature_flag("beta", "u", send_feature_flag_events=False) is True
    for _ in range(4):
        client.load_feature_flags()
    assert client.feature_flags == []
    assert client.feature_flags_by_key == {}
    assert client.group_type_mapping == {}
    assert client.cohorts == {}
    reqs = server.of("definitions")
    assert reqs[1].headers["if-none-match"] == "e1"
    assert all("if-none-match" not in r.headers for r in reqs[2:])
    auth_logs = [m for m in messages(caplog, logging.ERROR) if "401" in m]
    assert len(auth_logs) == 1
    # With definitions cleared, the flag now goes to the server.
    client.get_feature_flag("beta", "u", send_feature_flag_events=False)
    assert len(server.of("flags")) == 1


def test_401_on_the_poller_logs_once_and_backs_off(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.set_default("definitions", Reply(401, {"detail": "invalid key"}))
    client = local_client(poll_interval=0.05)
    client.load_feature_flags()
    time.sleep(0.8)
    polls = len(server.of("definitions"))
    # Without backing off the poller would have made about 16 requests by now.
    assert 2 <= polls < 8
    assert len([m for m in messages(caplog, logging.ERROR) if "401" in m]) == 1
    assert client.feature_flags == []


def test_401_raises_in_debug(server: FlagServer, local_client: MakeClient) -> None:
    server.set_default("definitions", Reply(401, {"detail": "invalid key"}))
    client = local_client(debug=True)
    with pytest.raises(Exception) as info:
        client.load_feature_flags()
    assert getattr(info.value, "status", None) == 401


def test_402_clears_definitions_with_a_quota_warning(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("definitions", Reply(200, BETA_DEFS), Reply(402, {"detail": "pay up"}))
    client = local_client()
    client.load_feature_flags()
    client.load_feature_flags()
    assert client.feature_flags == []
    assert any("quota" in m.lower() for m in messages(caplog, logging.WARNING))


def test_quota_limited_200_keeps_definitions(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    limited = dict(EMPTY_DEFINITIONS, quotaLimited=["feature_flags"])
    server.push("definitions", Reply(200, BETA_DEFS), Reply(200, limited))
    client = local_client()
    client.load_feature_flags()
    client.load_feature_flags()
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    assert any("quota" in m.lower() for m in messages(caplog, logging.ERROR))


@pytest.mark.parametrize("missing", ["cohorts", "group_type_mapping"])
def test_200_missing_a_required_member_is_rejected(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture,
    missing: str,
) -> None:
    body = dict(BETA_DEFS)
    del body[missing]
    server.definitions(body)
    client = local_client()
    client.load_feature_flags()
    assert client.feature_flags is None
    warnings_ = messages(caplog, logging.WARNING)
    assert any("will retry in" in m for m in warnings_)


def test_bad_json_keeps_definitions(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.push("definitions", Reply(200, BETA_DEFS), Reply(200, b"{not json"))
    client = local_client()
    client.load_feature_flags()
    client.load_feature_flags()
    assert [f["key"] for f in client.feature_flags or []] == ["beta"]
    assert any("will retry in" in m for m in messages(caplog, logging.WARNING))


def test_load_without_secret_key_warns_and_installs_nothing(
    server: FlagServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    assert client.load_feature_flags() is None
    assert client.feature_flags == []
    assert messages(caplog, logging.WARNING)
    assert server.requests == []


def test_load_when_disabled_sets_empty_definitions(
    server: FlagServer, local_client: MakeClient
) -> None:
    client = local_client(disabled=True)
    client.load_feature_flags()
    assert client.feature_flags == []
    assert server.requests == []


def test_poller_is_not_started_without_local_evaluation(
    server: FlagServer, local_client: MakeClient
) -> None:
    server.definitions(BETA_DEFS)
    client = local_client(poll_interval=0.05, enable_local_evaluation=False)
    client.load_feature_flags()
    time.sleep(0.3)
    assert len(server.of("definitions")) == 1


def test_poller_stops_on_shutdown(server: FlagServer, local_client: MakeClient) -> None:
    server.definitions(BETA_DEFS)
    client = local_client(poll_interval=0.05)
    client.load_feature_flags()
    server.wait_for("definitions", 3)
    client.shutdown()
    time.sleep(0.1)
    count = len(server.of("definitions"))
    time.sleep(0.3)
    assert len(server.of("definitions")) == count


def test_feature_flags_setter_rebuilds_by_key(local_client: MakeClient) -> None:
    client = local_client()
    client.feature_flags = [flag_def("a"), flag_def("b", rollout=0)]
    assert sorted(client.feature_flags_by_key) == ["a", "b"]
    assert client.get_feature_flag("b", "u", send_feature_flag_events=False) is False


def test_out_of_order_responses_are_ignored(server: FlagServer) -> None:
    old = definitions(flag_def("old"))
    new = definitions(flag_def("new"))
    server.push("definitions", Reply(200, old, delay=0.5), Reply(200, new))
    loader = DefinitionsLoader(host=server.url, api_key="phc_test",
                               secret_key=lambda: SECRET, poll_interval=30)
    slow = threading.Thread(target=loader.fetch)
    slow.start()
    server.wait_for("definitions", 1)
    loader.fetch()
    assert loader.definitions is not None and set(loader.definitions.by_key) == {"new"}
    slow.join(timeout=5)
    assert set(loader.definitions.by_key) == {"new"}
    loader.shutdown()


def test_unresolvable_definitions_are_logged_once(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.definitions(definitions(flag_def("cont", ensure_experience_continuity=True),
                                   flag_def("weird", aggregation_group_type_index=9)))
    client = local_client()
    caplog.set_level(logging.INFO, logger="posthog")
    for _ in range(3):
        client.load_feature_flags()
    mentions_cont = [m for m in messages(caplog, logging.INFO) if "'cont'" in m]
    mentions_weird = [m for m in messages(caplog, logging.INFO) if "'weird'" in m]
    assert len(mentions_cont) == 1
    assert len(mentions_weird) == 1
