"""Fixtures for the ASGI middleware: a loopback recording server, a client sending to it,
and small helpers to drive Starlette / FastAPI apps and raw ASGI calls."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from tests.support.http_server import Reply, ScriptedServer

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient will move from httpx to httpx2.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def server(_shared_server: ScriptedServer) -> ScriptedServer:
    """A loopback recording server shared by a module, emptied for every test."""
    _shared_server.script.clear()
    _shared_server.requests.clear()
    _shared_server.default = Reply()
    return _shared_server


class Recorder:
    """A real ``posthog.Client`` sending to the loopback server, read back after a flush."""

    def __init__(self, server: ScriptedServer, **kwargs: Any) -> None:
        self.server = server
        kwargs.setdefault("flush_interval", 0.05)
        self.client = posthog.Client("phc_test", host=server.url, **kwargs)

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
    return make_recorder()


@pytest.fixture(autouse=True)
def _reset_module_state() -> Iterator[None]:
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


def client_for(app: Any, **kwargs: Any) -> TestClient:
    """Starlette's test client answering 500s instead of raising them into the test."""
    kwargs.setdefault("raise_server_exceptions", False)
    return TestClient(app, **kwargs)


def http_scope(path: str = "/", **overrides: Any) -> dict[str, Any]:
    """A minimal ASGI ``http`` scope as a server would build it."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "client": ("198.51.100.8", 51000),
        "server": ("10.0.0.2", 8000),
    }
    scope.update(overrides)
    return scope


def call_asgi(app: Any, scope: dict[str, Any], *, body: bytes = b"") -> list[dict[str, Any]]:
    """Run one ASGI call in-process; returns the messages the app sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent
