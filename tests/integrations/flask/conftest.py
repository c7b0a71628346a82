"""Fixtures for the Flask extension: a recording loopback server and a client sending to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, stream_with_context

import posthog
from posthog_integrations.flask import PostHog
from tests.support.recorder import (  # noqa: F401 - fixtures used by the tests
    Recorder,
    _shared_server,
    make_recorder,
    posthog_logs,
    recorder,
    restore_module_state,
    server,
)


@pytest.fixture
def client(recorder: Recorder) -> posthog.Client:  # noqa: F811 - the fixture
    return recorder.client


@pytest.fixture(autouse=True)
def _reset_module_state(restore_module_state: None) -> None:  # noqa: F811 - fixture
    """Every test leaves the module-level settings as it found them."""


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
