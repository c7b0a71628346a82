"""Django for these tests, configured here (no ``DJANGO_SETTINGS_MODULE`` in the project).

``pytest_configure`` of this conftest runs when pytest collects this directory, before any
test runs, so pytest-django's fixtures (``client``, ``async_client``, ``rf``, ``settings``,
``django_db``) find Django configured. Other test directories never import Django.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings as django_settings
from django.test import AsyncClient, Client

import posthog
from tests.support.http_server import ScriptedServer


def pytest_configure(config: pytest.Config) -> None:
    if not django_settings.configured:
        from tests.integrations.django import settings as test_settings

        values = {k: getattr(test_settings, k) for k in dir(test_settings) if k.isupper()}
        django_settings.configure(**values)
        django.setup()


class Recorder:
    """The client the middleware sends to, and what reached the loopback server."""

    def __init__(self, client: posthog.Client, server: ScriptedServer) -> None:
        self.client = client
        self.server = server

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        self.client.flush()
        found = self.server.events()
        return [e for e in found if name is None or e["event"] == name]

    def one(self, name: str) -> dict[str, Any]:
        found = self.events(name)
        assert len(found) == 1, f"expected one {name!r}, got {len(found)}: {found}"
        return found[0]

    def props(self, name: str) -> dict[str, Any]:
        return self.one(name)["properties"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def ph_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def make_client(server: ScriptedServer, **kwargs: Any) -> posthog.Client:
    kwargs.setdefault("flush_interval", 0.05)
    return posthog.Client(kwargs.pop("api_key", "phc_test"), host=server.url, **kwargs)


@pytest.fixture
def ph(ph_server: ScriptedServer, settings: Any) -> Iterator[Recorder]:
    """A recording client: ``POSTHOG_MW_CLIENT`` and the default client (``posthog.capture``)."""
    ph_server.requests.clear()
    client = make_client(ph_server)
    saved = posthog.default_client
    posthog.default_client = client
    settings.POSTHOG_MW_CLIENT = client
    try:
        yield Recorder(client, ph_server)
    finally:
        posthog.default_client = saved
        client.shutdown(timeout_seconds=2)


@pytest.fixture
def quiet_client() -> Client:
    """A test client that answers 500 instead of re-raising the view's exception."""
    return Client(raise_request_exception=False)


@pytest.fixture
def quiet_async_client() -> AsyncClient:
    return AsyncClient(raise_request_exception=False)
