from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from posthog import Client
from tests.support.http_server import ScriptedServer
from tests.support.recorder import _shared_server, server  # noqa: F401 - fixtures


@pytest.fixture
def module_client(server: ScriptedServer) -> Client:  # noqa: F811 - fixture
    """The global client, configured to send to the test server."""
    posthog.api_key = "phc_module"
    posthog.host = server.url
    return posthog.setup()


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[Callable[..., Client]]:  # noqa: F811
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
