"""Streamed bodies keep the request scope; nothing leaks to the next request (spec §1.9, §3.4)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, send_file
from werkzeug.test import EnvironBuilder

import posthog
from posthog.contexts import current_scope
from tests.integrations.flask.conftest import DISTINCT, WINDOW, Recorder


def test_stream_with_context_events_carry_the_request(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    response = app.test_client().get("/stream", headers={DISTINCT: "streamer", WINDOW: "w-1"})
    assert response.data == b"ab"
    event = recorder.one("streamed_event")
    assert event["distinct_id"] == "streamer"
    assert event["properties"]["$request_route"] == "/stream"
    assert event["properties"]["$window_id"] == "w-1"
    assert current_scope() is None


def test_plain_generator_events_carry_the_request(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    assert app.test_client().get("/plain-stream", headers={DISTINCT: "plain"}).data == b"ab"
    event = recorder.one("plain_streamed_event")
    assert event["distinct_id"] == "plain"
    assert event["properties"]["$request_route"] == "/plain-stream"


def test_error_mid_stream_is_captured_with_the_started_status(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    response = app.test_client().get("/stream-error", headers={DISTINCT: "s-user"})
    assert response.status_code == 200
    with pytest.raises(RuntimeError, match="mid-stream"):
        response.get_data()
    [event] = recorder.exceptions()
    props = event["properties"]
    assert event["distinct_id"] == "s-user"
    assert props["$exception_source"] == "flask.streaming_response"
    assert props["$response_status_code"] == 200
    assert props["$request_route"] == "/stream-error"
    assert props["$exception_list"][0]["mechanism"]["handled"] is False
    assert recorder.one("before_stream_error")["distinct_id"] == "s-user"
    assert current_scope() is None


def test_close_callbacks_run_inside_the_scope(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.get("/on-close")
    def on_close() -> Response:
        response = Response("done")
        response.call_on_close(lambda: client.capture("closed_event"))
        return response

    response = app.test_client().get("/on-close", headers={DISTINCT: "closer"})
    assert response.data == b"done"
    response.close()
    event = recorder.one("closed_event")
    assert event["distinct_id"] == "closer"
    assert event["properties"]["$request_route"] == "/on-close"


def test_streamed_events_see_a_flask_login_user_loaded_in_the_view(
    client: posthog.Client, recorder: Recorder
) -> None:
    from flask_login import LoginManager, UserMixin, current_user

    from posthog_integrations.flask import PostHog

    class User(UserMixin):
        id = "streaming-user"

    app = Flask("login-stream")
    app.secret_key = "k"
    LoginManager(app).request_loader(lambda req: User())

    @app.get("/")
    def index() -> Response:
        assert current_user.is_authenticated

        def body() -> Iterator[str]:
            yield "x"
            client.capture("late_streamed")

        return Response(body())

    PostHog(app, client=client)
    app.test_client().get("/").get_data()
    assert recorder.one("late_streamed")["distinct_id"] == "streaming-user"


def test_no_leak_to_the_next_request_on_the_same_thread(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(testing=True)
    test_client = app.test_client()
    # 1: a stream whose iterable is never consumed nor closed
    test_client.get("/stream", headers={DISTINCT: "first", WINDOW: "w1"}, buffered=False)
    assert current_scope() is None
    # 2: a stream that raised mid-way
    with pytest.raises(RuntimeError):
        test_client.get("/stream-error", headers={DISTINCT: "first"}).get_data()
    assert current_scope() is None
    # 3: an exception escaping the app (testing mode propagates)
    with pytest.raises(ValueError):
        test_client.get("/boom", headers={DISTINCT: "first"})
    assert current_scope() is None
    # the next request on this thread, without ids
    test_client.get("/event")
    event = recorder.one("view_event")
    assert event["distinct_id"] != "first"
    assert event["properties"]["$process_person_profile"] is False
    assert "$window_id" not in event["properties"]
    assert event["properties"]["$request_route"] == "/event"


def test_stale_outer_scope_does_not_lend_identity(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    with posthog.new_context(fresh=True):
        posthog.identify_context("stale-outer")
        posthog.tag("outer_tag", "x")
        app.test_client().get("/event")
    event = recorder.one("view_event")
    assert event["distinct_id"] != "stale-outer"
    assert "outer_tag" not in event["properties"]


def test_concurrent_requests_keep_their_own_ids(client: posthog.Client, recorder: Recorder) -> None:
    from posthog_integrations.flask import PostHog

    app = Flask("threads")
    barrier = threading.Barrier(4)

    @app.get("/")
    def index() -> str:
        barrier.wait(timeout=5)
        client.capture("threaded")
        return "ok"

    PostHog(app, client=client)

    def call(n: int) -> None:
        app.test_client().get("/", headers={DISTINCT: f"t-{n}"})

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = sorted(e["distinct_id"] for e in recorder.events("threaded"))
    assert ids == ["t-0", "t-1", "t-2", "t-3"]


def test_server_file_wrapper_is_returned_unchanged(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    class FileWrapper:
        def __init__(self, f: Any, block_size: int = 8192) -> None:
            self.f = f

        def __iter__(self) -> Iterator[bytes]:
            return iter([self.f.read()])

        def close(self) -> None:
            self.f.close()

    app = make_app()

    @app.get("/file")
    def file() -> Response:
        return send_file(io.BytesIO(b"payload"), mimetype="text/plain")

    environ = EnvironBuilder("/file", headers={DISTINCT: "f"}).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert isinstance(body, FileWrapper)
    assert b"".join(body) == b"payload"
    body.close()
    assert current_scope() is None


def test_buffered_body_and_streamed_body_are_both_valid_wsgi_iterables(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    for path, expected in (("/event", b"ok"), ("/stream", b"ab"), ("/abort/404", None)):
        body = app(EnvironBuilder(path).get_environ(), start_response)
        data = b"".join(body)
        getattr(body, "close", lambda: None)()
        if expected is not None:
            assert data == expected
    assert [s[:3] for s in statuses] == ["200", "200", "404"]
    assert current_scope() is None


def test_stream_with_context_and_preserved_test_client_context(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    from flask import request

    app = make_app()
    with app.test_client() as test_client:
        assert test_client.get("/stream", headers={DISTINCT: "kept"}).data == b"ab"
        assert request.path == "/stream"
    assert recorder.one("streamed_event")["distinct_id"] == "kept"


def test_streamed_body_is_suspended_then_finished_on_close(
    client: posthog.Client, recorder: Recorder
) -> None:
    from posthog_integrations._request import RequestScope
    from posthog_integrations.flask import PostHog, capture_handled

    app = Flask("suspend-finish")
    seen: list[Any] = []

    @app.get("/")
    def index() -> Response:
        def body() -> Iterator[str]:
            seen.append(RequestScope.current())
            capture_handled(ValueError("reported from the stream"), status=299)
            yield "x"

        return Response(body())

    PostHog(app, client=client)
    environ = EnvironBuilder("/", headers={DISTINCT: "streamer"}).get_environ()
    body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert current_scope() is None  # the call returned: the thread is left
    assert b"".join(body) == b"x"
    rs = seen[0]
    assert rs is not None and not rs._finished  # current inside each chunk
    body.close()  # type: ignore[attr-defined]
    assert rs._finished
    event = recorder.one("$exception")
    assert event["distinct_id"] == "streamer"
    assert event["properties"]["$response_status_code"] == 299
    assert event["properties"]["$request_route"] == "/"


def test_body_without_close_is_finished_by_the_wrapper(
    client: posthog.Client, recorder: Recorder
) -> None:
    from posthog_integrations.flask import _ScopedBody

    finished: list[bool] = []

    class Scope:
        def activated(self) -> Any:
            raise AssertionError("nothing to close: no activation")

        def finish(self) -> None:
            finished.append(True)

    _ScopedBody(iter([b"a"]), Scope()).close()  # type: ignore[arg-type]
    assert finished == [True]
