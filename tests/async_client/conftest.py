"""Fixtures for the asyncio client: a loopback server, clients, and log capture.

pytest-asyncio is not used: each test runs its coroutine with ``asyncio.run`` (a real,
fresh loop per test, as an application would have).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import posthog
from posthog.async_client import AsyncClient
from tests.support.http_server import Reply, ScriptedServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def server(_shared_server: ScriptedServer) -> ScriptedServer:
    """A loopback server shared by a test module, emptied for every test."""
    _shared_server.script.clear()
    _shared_server.requests.clear()
    _shared_server.default = Reply()
    return _shared_server


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[Callable[..., AsyncClient]]:
    """``AsyncPosthog`` pointed at the test server (fast flush interval)."""
    made: list[AsyncClient] = []

    def make(*args: Any, **kwargs: Any) -> AsyncClient:
        kwargs.setdefault("host", server.url)
        kwargs.setdefault("flush_interval", 0.05)
        client = posthog.AsyncPosthog(*(args or ("phc_test",)), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        # A test that left events behind must not have them sent at interpreter exit.
        if not client._closed:
            client._lane.discard()
            client._closing = client._closed = True
            client._unregister()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="posthog")
    return caplog


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "posthog" and r.levelno >= level]


def batch_events(server: ScriptedServer) -> list[dict[str, Any]]:
    return server.events()


def python(code: str, env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Run ``code`` in a fresh interpreter (cwd = repository root); its stdout and stderr."""
    import os

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


async def wait_requests(server: ScriptedServer, count: int, timeout: float = 10.0) -> None:
    """Wait (without blocking the loop) until the server has seen ``count`` requests."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(server.requests) < count:
        if loop.time() > deadline:
            raise AssertionError(f"expected {count} requests, got {len(server.requests)}")
        await asyncio.sleep(0.01)
