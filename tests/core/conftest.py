from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from posthog import Client
from tests.support.http_server import Reply, ScriptedServer


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
def module_client(server: ScriptedServer) -> Client:
    """The global client, configured to send to the test server."""
    posthog.api_key = "phc_module"
    posthog.host = server.url
    return posthog.setup()


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**kwargs: Any) -> Client:
        kwargs.setdefault("host", server.url)
        kwargs.setdefault("flush_interval", 0.05)
        client = Client(kwargs.pop("project_api_key", "phc_test"), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout_seconds=2)


@pytest.fixture(autouse=True)
def _reset_module_state() -> Iterator[None]:
    saved = {k: getattr(posthog, k) for k in ("api_key", "project_api_key", "host", "debug",
                                              "send", "sync_mode", "disabled", "before_send",
                                              "super_properties", "on_error")}
    yield
    if posthog.default_client is not None:
        posthog.default_client.shutdown(timeout_seconds=2)
    posthog.default_client = None
    for key, value in saved.items():
        setattr(posthog, key, value)
