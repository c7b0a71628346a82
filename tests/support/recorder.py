"""Shared pytest fixtures: a loopback recording server and a real client sending to it.

Conftests import the fixtures they want (``from tests.support.recorder import server, ...``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from tests.support.http_server import Reply, ScriptedServer


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def server(_shared_server: ScriptedServer) -> ScriptedServer:
    """A loopback recording server shared by a test module, emptied for every test."""
    _shared_server.script.clear()
    _shared_server.requests.clear()
    _shared_server.default = Reply()
    return _shared_server


class Recorder:
    """A real ``posthog.Client`` sending to the loopback server, read back after a flush."""

    def __init__(self, server: ScriptedServer, api_key: str = "phc_test", **kwargs: Any) -> None:
        self.server = server
        kwargs.setdefault("flush_interval", 0.05)
        self.client = posthog.Client(api_key, host=server.url, **kwargs)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        self.client.flush()
        return [e for e in self.server.events() if name is None or e["event"] == name]

    def exceptions(self) -> list[dict[str, Any]]:
        return self.events("$exception")

    def one(self, name: str) -> dict[str, Any]:
        found = self.events(name)
        assert len(found) == 1, [(e["event"], e["properties"]) for e in self.events()]
        return found[0]


@pytest.fixture
def make_recorder(server: ScriptedServer) -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**kwargs: Any) -> Recorder:
        recorder = Recorder(server, **kwargs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.client.shutdown(timeout_seconds=2)


@pytest.fixture
def recorder(make_recorder: Callable[..., Recorder]) -> Recorder:
    """A client with exception autocapture settings left at their defaults."""
    return make_recorder()


@pytest.fixture
def restore_module_state() -> Iterator[None]:
    """Restore ``posthog.api_key``/``host``/``default_client``; shut down a client a test made."""
    saved = {k: getattr(posthog, k) for k in ("api_key", "host", "default_client")}
    yield
    if posthog.default_client is not None and posthog.default_client is not saved["default_client"]:
        posthog.default_client.shutdown(timeout_seconds=2)
    for key, value in saved.items():
        setattr(posthog, key, value)


@pytest.fixture
def posthog_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="posthog")
    return caplog
