"""Fixtures for the Flask extension: a recording loopback server and a client sending to it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, stream_with_context

import posthog
from posthog_integrations.flask import PostHog
from tests.support.http_server import Reply, ScriptedServer


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
    """A real ``posthog.Client`` sending to the loopback server, with helpers to read it back."""

    def __init__(self, server: ScriptedServer, api_key: str = "phc_test", **kwargs: Any) -> None:
        self.server = server
        kwargs.setdefault("flush_interval", 0.05)
        self.client = posthog.Client(api_key, host=server.url, **kwargs)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        self.client.flush()
        found = self.server.events()
        return [e for e in found if name is None or e["event"] == name]

    def exceptions(self) -> list[dict[str, Any]]:
        return self.events("$exception")

    def one(self, name: str) -> dict[str, Any]:
        found = self.events(name)
        assert len(found) == 1, [e["event"] for e in self.events()]
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
def client(recorder: Recorder) -> posthog.Client:
    return recorder.client


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


def add_routes(app: Flask, client: posthog.Client) -> None:
    """The views most tests share; each event names the view that captured it."""

    @app.get("/event")
    def event() -> str:
        client.capture("view_event")
        return "ok"

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        client.capture("item_event")
        return str(item_id)

    @app.get("/boom")
    def boom() -> str:
        client.capture("before_boom")
        raise ValueError("boom")

    @app.get("/abort/<int:code>")
    def abort_with(code: int) -> str:
        abort(code)

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:
            yield "a"
            client.capture("streamed_event")
            yield "b"

        return Response(stream_with_context(body()))

    @app.get("/plain-stream")
    def plain_stream() -> Response:
        def body() -> Iterator[str]:
            yield "a"
            client.capture("plain_streamed_event")
            yield "b"

        return Response(body())

    @app.get("/stream-error")
    def stream_error() -> Response:
        def body() -> Iterator[str]:
            yield "first"
            client.capture("before_stream_error")
            raise RuntimeError("mid-stream")

        return Response(stream_with_context(body()))

    @app.get("/async")
    async def async_view() -> str:
        client.capture("async_event")
        return "ok"

    @app.get("/async-boom")
    async def async_boom() -> str:
        raise KeyError("async boom")


@pytest.fixture
def make_app(client: posthog.Client) -> Callable[..., Flask]:
    """``make_app(**options)``: a Flask app with the shared views and the extension.

    ``capture_exceptions`` defaults to True here (the client leaves autocapture off);
    ``install=False`` returns the app without the extension.
    """

    def make(*, install: bool = True, testing: bool = False, **options: Any) -> Flask:
        app = Flask("posthog_flask_tests")
        app.testing = testing
        add_routes(app, client)
        if install:
            options.setdefault("capture_exceptions", True)
            PostHog(app, client=client, **options)
        return app

    return make


DISTINCT = "X-POSTHOG-DISTINCT-ID"
SESSION = "X-POSTHOG-SESSION-ID"
WINDOW = "X-POSTHOG-WINDOW-ID"
