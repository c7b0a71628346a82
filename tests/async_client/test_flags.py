"""evaluate_flags (remote and local), snapshot events, remote config (spec async §5)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import posthog
from posthog.async_client import AsyncClient
from posthog_integrations.devserver import DevServer
from tests.async_client.conftest import messages
from tests.support.http_server import Reply, ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = json.loads((ROOT / "example_projects" / "flags.json").read_text())

FLAGS_ANSWER = {
    "flags": {
        "beta": {"key": "beta", "enabled": True, "variant": "test",
                 "reason": {"code": "condition_match", "condition_index": 0,
                            "description": "Matched condition set 1"},
                 "metadata": {"id": 7, "version": 3, "payload": "{\"a\": 1}"}},
        "off": {"key": "off", "enabled": False, "variant": None,
                "metadata": {"id": 8, "version": 1}},
        "extra": {"key": "extra", "enabled": True, "variant": None},
    },
    "requestId": "req-1",
    "evaluatedAt": 1700000000000,
}


def _flag_requests(server: ScriptedServer) -> list[Any]:
    return [r for r in server.requests if r.path.startswith("/flags")]


def test_flags_request_body(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> None:
        await client.evaluate_flags(
            5, groups={"company": "acme"},
            group_properties={"company": {"size": 10}, "other": {"x": 1}}, flag_keys=["beta"],
        )
        with posthog.new_context():
            posthog.identify_context("c")
            posthog.set_context_device_id("d")
            await client.evaluate_flags()
        await client.shutdown()

    asyncio.run(main())
    first, second = _flag_requests(server)
    assert first.method == "POST" and first.path == "/flags/?v=4"
    assert "content-encoding" not in first.headers
    body = first.json()
    assert list(body) == ["distinct_id", "groups", "person_properties", "group_properties",
                          "geoip_disable", "device_id", "flag_keys_to_evaluate", "sent_at",
                          "token"]
    assert body["distinct_id"] == 5 and body["token"] == "phc_test"
    assert body["groups"] == {"company": "acme"} and body["person_properties"] == {}
    assert body["group_properties"] == {"company": {"size": 10}, "other": {"x": 1}}
    assert body["geoip_disable"] is True and body["device_id"] is None
    assert body["flag_keys_to_evaluate"] == ["beta"]
    context_body = second.json()
    assert (context_body["distinct_id"], context_body["device_id"]) == ("c", "d")
    assert "flag_keys_to_evaluate" not in context_body


def test_snapshot_reads_send_flag_called_once_and_capture_flags(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    server.push(Reply(200, FLAGS_ANSWER))
    client = make_client()

    async def main() -> None:
        flags = await client.evaluate_flags("u", flag_keys=["beta", "off", "missing"])
        assert sorted(flags.keys) == ["beta", "off"]  # "extra" was not asked for
        assert flags.get_flag("beta") == "test"
        assert flags.is_enabled("off") is False
        assert flags.get_flag("missing") is None
        assert flags.get_flag_payload("beta") == {"a": 1}
        flags.get_flag("beta")
        flags.is_enabled("off")
        client.capture("bought", distinct_id="u", flags=flags)
        await client.shutdown()

    asyncio.run(main())
    events = server.events()
    called = [e for e in events if e["event"] == "$feature_flag_called"]
    assert [e["properties"]["$feature_flag"] for e in called] == ["beta", "off", "missing"]
    beta, off, missing = (e["properties"] for e in called)
    assert beta["$feature_flag_response"] == "test" and beta["$feature/beta"] == "test"
    assert beta["$feature_flag_request_id"] == "req-1"
    assert beta["$feature_flag_evaluated_at"] == 1700000000000
    assert beta["$feature_flag_id"] == 7 and beta["$feature_flag_version"] == 3
    assert beta["$feature_flag_reason"] == "Matched condition set 1"
    assert beta["locally_evaluated"] is False and beta["$feature_flag_payload"] == {"a": 1}
    assert off["$feature_flag_response"] is False
    assert missing["$feature_flag_response"] is None
    assert missing["$feature_flag_error"] == "flag_missing"
    (bought,) = [e for e in events if e["event"] == "bought"]
    assert bought["properties"]["$feature/beta"] == "test"
    assert bought["properties"]["$feature/off"] is False
    assert bought["properties"]["$active_feature_flags"] == ["beta"]


def test_flags_retries_and_failures(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client()

    async def main() -> None:
        server.push(Reply(502), Reply(200, FLAGS_ANSWER))
        flags = await client.evaluate_flags("u")
        assert flags.get_flag("beta", send_feature_flag_events=False) == "test"
        requests = _flag_requests(server)
        assert len(requests) == 2 and 0.25 <= requests[1].at - requests[0].at <= 0.6

        for status in (500, 429):
            server.requests.clear()
            server.push(Reply(status))
            flags = await client.evaluate_flags("u")
            assert flags.keys == [] and len(_flag_requests(server)) == 1

        server.push(Reply(200, {"flags": {}, "quotaLimited": ["feature_flags"]}))
        limited = await client.evaluate_flags("quota-user")
        assert limited.get_flag("beta") is None
        await client.shutdown()

    asyncio.run(main())
    (called,) = [e for e in server.events() if e["distinct_id"] == "quota-user"]
    assert called["properties"]["$feature_flag_error"] == "quota_limited,flag_missing"
    logged = messages(logs)
    assert "[PostHog] [FEATURE FLAGS] Async evaluation failed (APIError, status=500)" in logged
    assert "[PostHog] [FEATURE FLAGS] Feature flag evaluation was quota limited" in logged


@pytest.mark.parametrize(("retries", "low", "high"), [(0, 0.0, 0.25), (1, 0.28, 0.6),
                                                      (2, 0.85, 1.3)])
def test_refused_connections_are_retried(
    make_client: Callable[..., AsyncClient], retries: int, low: float, high: float
) -> None:
    client = make_client(host="http://127.0.0.1:9",
                         feature_flags_request_max_retries=retries)

    async def main() -> float:
        await client._http_client()  # built beforehand: only the retries are timed
        started = time.monotonic()
        flags = await client.evaluate_flags("u")
        took = time.monotonic() - started
        assert flags.keys == []
        await client.shutdown()
        return took

    assert low <= asyncio.run(main()) <= high


def test_no_request_without_distinct_id_or_keys(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()
    disabled = make_client(disabled=True)

    async def main() -> None:
        empty = await client.evaluate_flags()
        assert empty.keys == [] and repr(empty) == "FeatureFlagEvaluations(distinct_id='', " \
                                                   "keys=[])"
        empty.get_flag("anything")  # reads of an id-less snapshot send nothing
        assert (await client.evaluate_flags("u", flag_keys=[])).keys == []
        assert (await disabled.evaluate_flags("u")).keys == []
        assert (await client.evaluate_flags(0)).keys == []  # 0 is a valid id: one request
        await client.shutdown()

    asyncio.run(main())
    flag_requests = _flag_requests(server)
    assert len(flag_requests) == 1 and flag_requests[0].json()["distinct_id"] == 0
    assert not [e for e in server.events() if e["event"] == "$feature_flag_called"]


def test_remote_config(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client("phc key&1", secret_key="phs_secret")
    no_secret = make_client()

    async def main() -> None:
        server.push(Reply(200, {"color": "green", "quotaLimited": ["feature_flags"]}))
        assert await client.get_remote_config_payload("my/flag key") == {
            "color": "green", "quotaLimited": ["feature_flags"]}
        server.push(Reply(500))
        assert await client.get_remote_config_payload("k") is None
        assert await no_secret.get_remote_config_payload("k") is None
        await client.shutdown()

    asyncio.run(main())
    first, failing = server.requests
    assert failing.path.endswith("/k/remote_config?token=phc+key%261")
    assert first.method == "GET"
    assert first.path == ("/api/projects/@current/feature_flags/my%2Fflag%20key/remote_config"
                          "?token=phc+key%261")
    assert first.headers["authorization"] == "Bearer phs_secret"
    assert first.headers["user-agent"].startswith("posthog-python/")
    assert "[PostHog] [FEATURE FLAGS] secret_key is required to fetch remote config" in (
        messages(logs))
    assert "[PostHog] [FEATURE FLAGS] Async remote config failed (APIError, status=500)" in (
        messages(logs, logging.ERROR))


# ---------------------------------------------------------------- local evaluation (addition)


@pytest.fixture
def devserver() -> Iterator[DevServer]:
    with DevServer() as srv:
        srv.set_flags(DEFINITIONS)
        yield srv


def _paths(dev: DevServer) -> list[str]:
    return [r["path"] for r in dev.requests]


def test_local_evaluation_answers_without_requests(devserver: DevServer) -> None:
    client = posthog.AsyncPosthog("phc_local", host=devserver.url, secret_key="phs_secret",
                                  flush_interval=0.05)

    async def main() -> tuple[Any, float]:
        async with client:
            first = await client.evaluate_flags("user-1", person_properties={"plan": "pro"})
            started = time.perf_counter()
            for i in range(200):
                flags = await client.evaluate_flags(f"user-{i}",
                                                    person_properties={"plan": "pro"})
            per_call = (time.perf_counter() - started) / 200
            assert first.get_flag("new-checkout") is True
            assert first.get_flag_payload("new-checkout") == {"button_color": "green"}
            assert first.get_flag("checkout-copy") in ("control", "urgent")
            assert flags.unresolved_flags == {}
        return first, per_call

    _, per_call = asyncio.run(main())
    paths = _paths(devserver)
    assert paths.count("/flags/definitions") == 1
    assert not [p for p in paths if p.rstrip("/") == "/flags"]
    assert per_call < 0.002  # microseconds in practice; generous for a busy CI machine
    called = [e for e in devserver.events("$feature_flag_called")]
    assert {e["properties"]["$feature_flag"] for e in called} == {"new-checkout",
                                                                  "checkout-copy"}
    for event in called:
        assert event["properties"]["locally_evaluated"] is True
        assert event["properties"]["$feature_flag_reason"] == "Evaluated locally"


def test_local_evaluation_falls_back_for_unknown_keys_and_uses_etag(devserver: DevServer) -> None:
    client = posthog.AsyncPosthog("phc_local", host=devserver.url, secret_key="phs_secret",
                                  poll_interval=0.2)

    async def main() -> None:
        flags = await client.evaluate_flags("user-1", person_properties={"plan": "free"},
                                            flag_keys=["new-checkout", "not-defined"])
        assert "new-checkout" in flags.keys
        await asyncio.sleep(0.5)  # the poller asks again, with the ETag
        await client.shutdown()

    asyncio.run(main())
    flag_calls = [r for r in devserver.requests if r["path"].rstrip("/") == "/flags"]
    assert len(flag_calls) == 1
    definitions = [r for r in devserver.requests if r["path"] == "/flags/definitions"]
    assert len(definitions) >= 2
    assert "if-none-match" not in definitions[0]["headers"]
    assert definitions[1]["headers"]["if-none-match"]
    assert definitions[1]["status"] == 304
    assert definitions[0]["headers"]["authorization"] == "Bearer phs_secret"


class SyncProvider:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def should_fetch_flag_definitions(self) -> bool:
        self.calls.append("should_fetch")
        return False

    def get_flag_definitions(self) -> dict[str, Any]:
        self.calls.append("get")
        return DEFINITIONS

    def on_flag_definitions_received(self, data: dict[str, Any]) -> None:
        self.calls.append("received")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


class AsyncProvider(SyncProvider):
    async def should_fetch_flag_definitions(self) -> bool:  # type: ignore[override]
        self.calls.append("should_fetch")
        return True

    async def on_flag_definitions_received(self, data: dict[str, Any]) -> None:  # type: ignore[override]
        assert sorted(data) == ["cohorts", "flags", "group_type_mapping",
                                "minimal_flag_called_events", "property_matching_version"]
        self.calls.append("received")

    async def shutdown(self) -> None:  # type: ignore[override]
        self.calls.append("shutdown")


@pytest.mark.parametrize("provider_cls", [SyncProvider, AsyncProvider])
def test_flag_definition_cache_provider(devserver: DevServer,
                                        provider_cls: type[SyncProvider]) -> None:
    provider = provider_cls()
    client = posthog.AsyncPosthog("phc_local", host=devserver.url, secret_key="phs_secret",
                                  flag_definition_cache_provider=provider,
                                  enable_local_evaluation=False)

    async def main() -> None:
        flags = await client.evaluate_flags("u", person_properties={"plan": "pro"})
        assert flags.get_flag("new-checkout", send_feature_flag_events=False) is True
        await client.shutdown()

    asyncio.run(main())
    fetched = _paths(devserver).count("/flags/definitions")
    if provider_cls is SyncProvider:
        assert provider.calls == ["should_fetch", "get", "shutdown"] and fetched == 0
    else:
        assert provider.calls == ["should_fetch", "received", "shutdown"] and fetched == 1
    assert not [p for p in _paths(devserver) if p.rstrip("/") == "/flags"]


def test_experience_continuity_goes_to_the_server(devserver: DevServer) -> None:
    definitions = json.loads(json.dumps(DEFINITIONS))
    definitions["flags"][0]["ensure_experience_continuity"] = True
    devserver.set_flags(definitions)
    client = posthog.AsyncPosthog("phc_local", host=devserver.url, secret_key="phs_secret")

    async def main() -> Any:
        flags = await client.evaluate_flags("u", person_properties={"plan": "pro"})
        await client.shutdown()
        return flags

    flags = asyncio.run(main())
    flag_calls = [r for r in devserver.requests if r["path"].rstrip("/") == "/flags"]
    assert len(flag_calls) == 1
    assert "new-checkout" in flags.keys and flags.unresolved_flags == {}
