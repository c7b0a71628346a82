from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from posthog import Client
from tests.support.http_server import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


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
