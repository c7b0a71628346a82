"""Shared pieces for the request-layer tests: a plain-object adapter and a recording client.

No tests here; the ``test_request*.py`` modules import the fixtures they use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog_integrations._request import TracingIds
from tests.support.http_server import Reply, ScriptedServer

MakeClient = Callable[..., Client]
TRACING_HEADERS = (
    "x-posthog-distinct-id",
    "x-posthog-session-id",
    "x-posthog-window-id",
    "x-posthog-device-id",
)


class User:
    def __init__(self, pk: Any, email: str | None = None) -> None:
        self.pk = pk
        self.email = email


class FakeAdapter:
    """A ``RequestAdapter`` made of plain attributes, counting the calls the layer makes."""

    def __init__(
        self,
        headers: dict[str, Any] | list[tuple[str, str]] | None = None,
        *,
        cookies: dict[str, str] | None = None,
        method: str | None = "GET",
        scheme: str = "https",
        host: str | None = "app.example.com",
        path: str = "/items/42",
        query_string: str = "",
        peer_ip: str | None = "198.51.100.8",
        route: str | None = None,
        user: object | None = None,
    ) -> None:
        self.headers: dict[str, list[str]] = {}
        pairs = headers.items() if isinstance(headers, dict) else (headers or [])
        for name, value in pairs:
            values = value if isinstance(value, list) else [value]
            self.headers.setdefault(name.lower(), []).extend(values)
        self.cookies = dict(cookies or {})
        self.method = method
        self.scheme = scheme
        self.host = host
        self.path = path
        self.url_path: str | None = None
        self.query_string = query_string
        self.peer_ip = peer_ip
        self.raw: object = object()
        self.current_route = route
        self.current_user = user
        self.calls: dict[str, int] = {}
        self.asked_cookies: list[str] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def header(self, name: str) -> list[str]:
        self._count("header")
        return list(self.headers.get(name.lower(), []))

    def tracing_ids(self) -> TracingIds:
        self._count("tracing_ids")
        d, s, w, v = (self.headers.get(name) for name in TRACING_HEADERS)
        return (d or None, s or None, w or None, v or None)

    def cookie(self, name: str) -> str | None:
        self._count("cookie")
        self.asked_cookies.append(name)
        return self.cookies.get(name)

    def route(self) -> str | None:
        self._count("route")
        return self.current_route

    def user(self) -> object | None:
        self._count("user")
        return self.current_user

    def user_id(self, user: object) -> str | None:
        pk = getattr(user, "pk", None)
        return None if pk is None else str(pk)

    def user_email(self, user: object) -> str | None:
        return getattr(user, "email", None)


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def server(_shared_server: ScriptedServer) -> ScriptedServer:
    _shared_server.script.clear()
    _shared_server.requests.clear()
    _shared_server.default = Reply()
    return _shared_server


@pytest.fixture
def make_client(server: ScriptedServer) -> Iterator[MakeClient]:
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


@pytest.fixture
def client(make_client: MakeClient) -> Client:
    return make_client()


@pytest.fixture(autouse=True)
def _reset_module_state() -> Iterator[None]:
    keys = ("api_key", "project_api_key", "host", "send", "disabled", "on_error",
            "enable_exception_autocapture")
    saved = {k: getattr(posthog, k) for k in keys}
    yield
    if posthog.default_client is not None:
        posthog.default_client.shutdown(timeout_seconds=2)
    posthog.default_client = None
    for key, value in saved.items():
        setattr(posthog, key, value)


def sent(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    client.flush()
    return server.events()


def props(client: Client, server: ScriptedServer, event: str = "probe") -> dict[str, Any]:
    """Properties of the single ``event`` the server received (asserting there is one)."""
    found = [e for e in sent(client, server) if e["event"] == event]
    assert len(found) == 1, found
    return found[0]["properties"]  # type: ignore[no-any-return]


def only(client: Client, server: ScriptedServer, event: str = "probe") -> dict[str, Any]:
    found = [e for e in sent(client, server) if e["event"] == event]
    assert len(found) == 1, found
    return found[0]
