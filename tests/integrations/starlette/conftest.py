"""Fixtures for the ASGI middleware: a loopback recording server, a client sending to it,
and small helpers to drive Starlette / FastAPI apps and raw ASGI calls."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from tests.support.recorder import (  # noqa: F401 - fixtures used by the tests
    Recorder,
    _shared_server,
    make_recorder,
    posthog_logs,
    recorder,
    restore_module_state,
    server,
)

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient will move from httpx to httpx2.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(autouse=True)
def _reset_module_state(restore_module_state: None) -> None:  # noqa: F811 - fixture
    """Every test leaves the module-level settings as it found them."""


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
