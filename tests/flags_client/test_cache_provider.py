"""Flag definition cache providers, sync and async (spec §6.12, §1.7)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from posthog import Client, FlagDefinitionCacheProvider
from tests.flags_client.conftest import (
    FlagServer,
    definitions,
    flag_def,
    messages,
)
from tests.support.http_server import Reply

MakeClient = Callable[..., Client]

CACHED = {
    "flags": [flag_def("cached", payloads={"true": '"from-cache"'})],
    "group_type_mapping": {"0": "company"},
    "cohorts": {},
}
FETCHED = definitions(flag_def("fetched"), minimal_flag_called_events=True,
                      property_matching_version=2)


class SyncProvider:
    def __init__(self, fetch: bool = True, data: dict[str, Any] | None = None,
                 fail: tuple[str, ...] = ()) -> None:
        self.fetch = fetch
        self.data = data
        self.fail = fail
        self.calls: list[str] = []
        self.received: list[dict[str, Any]] = []
        self.threads: list[str] = []

    def _note(self, name: str) -> None:
        self.calls.append(name)
        self.threads.append(threading.current_thread().name)
        if name in self.fail:
            raise RuntimeError(f"{name} exploded")

    def should_fetch_flag_definitions(self) -> bool:
        self._note("should_fetch")
        return self.fetch

    def get_flag_definitions(self) -> dict[str, Any] | None:
        self._note("get")
        return self.data

    def on_flag_definitions_received(self, data: dict[str, Any]) -> None:
        self.received.append(data)
        self._note("received")

    def shutdown(self) -> None:
        self._note("shutdown")


class AsyncProvider(SyncProvider):
    async def should_fetch_flag_definitions(self) -> bool:  # type: ignore[override]
        return SyncProvider.should_fetch_flag_definitions(self)

    async def get_flag_definitions(self) -> dict[str, Any] | None:  # type: ignore[override]
        return SyncProvider.get_flag_definitions(self)

    async def on_flag_definitions_received(self, data: dict[str, Any]) -> None:  # type: ignore[override]
        SyncProvider.on_flag_definitions_received(self, data)

    async def shutdown(self) -> None:  # type: ignore[override]
        SyncProvider.shutdown(self)


PROVIDERS = pytest.mark.parametrize("kind", [SyncProvider, AsyncProvider],
                                    ids=["sync", "async"])


def test_providers_satisfy_the_protocol() -> None:
    assert isinstance(SyncProvider(), FlagDefinitionCacheProvider)
    assert isinstance(AsyncProvider(), FlagDefinitionCacheProvider)


@PROVIDERS
def test_cached_definitions_are_used_without_http(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    provider = kind(fetch=False, data=CACHED)
    client = local_client(flag_definition_cache_provider=provider)
    assert client.get_feature_flag("cached", "u", send_feature_flag_events=False) is True
    assert client.get_feature_flag_payload("cached", "u") == "from-cache"
    assert provider.calls[:2] == ["should_fetch", "get"]
    assert "received" not in provider.calls
    assert server.of("definitions") == []
    assert server.of("flags") == []
    assert client.group_type_mapping == {"0": "company"}
    if kind is AsyncProvider:
        # awaitables run on the SDK's private loop, not the caller's thread
        assert threading.current_thread().name not in provider.threads


@PROVIDERS
def test_fetching_worker_hands_definitions_to_the_provider(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.definitions(FETCHED, etag="e1")
    provider = kind(fetch=True, data=CACHED)
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    assert len(server.of("definitions")) == 1
    assert provider.calls == ["should_fetch", "received"]
    [data] = provider.received
    assert set(data) == {"flags", "group_type_mapping", "cohorts",
                         "minimal_flag_called_events", "property_matching_version"}
    assert [f["key"] for f in data["flags"]] == ["fetched"]
    assert data["group_type_mapping"] == {}
    assert data["cohorts"] == {}
    assert data["minimal_flag_called_events"] is True
    assert data["property_matching_version"] == 2
    assert [f["key"] for f in client.feature_flags or []] == ["fetched"]


@PROVIDERS
def test_not_called_back_on_304(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.push("definitions", Reply(200, FETCHED, {"ETag": "e1"}))
    server.set_default("definitions", Reply(304, b""))
    provider = kind(fetch=True)
    client = local_client(flag_definition_cache_provider=provider, poll_interval=0.05)
    client.load_feature_flags()
    server.wait_for("definitions", 3)
    assert len(provider.received) == 1
    assert provider.calls.count("should_fetch") >= 3  # asked before each load


@PROVIDERS
def test_get_returning_none_without_definitions_fetches(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=False, data=None)
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    assert len(server.of("definitions")) == 1
    assert [f["key"] for f in client.feature_flags or []] == ["fetched"]


@PROVIDERS
def test_get_returning_none_with_definitions_keeps_them(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=True)
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    provider.fetch = False
    client.load_feature_flags()
    assert len(server.of("definitions")) == 1
    assert [f["key"] for f in client.feature_flags or []] == ["fetched"]


@PROVIDERS
@pytest.mark.parametrize("failing", ["should_fetch", "get"])
def test_exceptions_in_should_fetch_or_get_mean_fetch(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture,
    kind: type[SyncProvider], failing: str,
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=False, data=CACHED, fail=(failing,))
    client = local_client(flag_definition_cache_provider=provider)
    assert client.get_feature_flag("fetched", "u", send_feature_flag_events=False) is True
    assert len(server.of("definitions")) == 1
    method = {"should_fetch": "should_fetch_flag_definitions",
              "get": "get_flag_definitions"}[failing]
    assert any(method in m for m in messages(caplog, logging.WARNING))


@PROVIDERS
def test_exception_in_on_received_is_logged_and_flags_stay(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture,
    kind: type[SyncProvider],
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=True, fail=("received",))
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    assert [f["key"] for f in client.feature_flags or []] == ["fetched"]
    assert messages(caplog, logging.WARNING)


@PROVIDERS
def test_shutdown_is_called_once(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=True)
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    client.shutdown()
    assert provider.calls.count("shutdown") == 1


@PROVIDERS
def test_join_calls_shutdown_once(
    server: FlagServer, local_client: MakeClient, kind: type[SyncProvider]
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=True)
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    client.join()
    assert provider.calls.count("shutdown") == 1


@PROVIDERS
def test_exception_in_shutdown_is_logged(
    server: FlagServer, local_client: MakeClient, caplog: pytest.LogCaptureFixture,
    kind: type[SyncProvider],
) -> None:
    server.definitions(FETCHED)
    provider = kind(fetch=True, fail=("shutdown",))
    client = local_client(flag_definition_cache_provider=provider)
    client.load_feature_flags()
    client.shutdown()  # does not raise
    assert "shutdown" in provider.calls
    assert messages(caplog, logging.WARNING)
