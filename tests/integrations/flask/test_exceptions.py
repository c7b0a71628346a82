"""Exception capture policy for Flask (spec §1.8, §3.2-§3.3, §8 items 32 and 34)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, abort
from werkzeug.exceptions import HTTPException

import posthog
from posthog_integrations.flask import PostHog, capture_handled
from tests.integrations.flask.conftest import DISTINCT, SESSION, Recorder

SESSION_ID = "0190b6f4-6a8e-7b2c-9d1e-2f3a4b5c6d7e"


def mechanism(event: dict[str, Any]) -> dict[str, Any]:
    return event["properties"]["$exception_list"][0]["mechanism"]  # type: ignore[no-any-return]


def exception_type(event: dict[str, Any]) -> str:
    return event["properties"]["$exception_list"][0]["type"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- unhandled


@pytest.mark.parametrize(
    ("testing", "propagate"), [(False, None), (True, None), (True, False), (False, True)]
)
def test_unhandled_exception_captured_once(
    make_app: Callable[..., Flask],
    recorder: Recorder,
    testing: bool,
    propagate: bool | None,
) -> None:
    app = make_app(testing=testing)
    if propagate is not None:
        app.config["PROPAGATE_EXCEPTIONS"] = propagate
    raises = propagate if propagate is not None else testing
    headers = {DISTINCT: "user-500", SESSION: SESSION_ID}
    if raises:
        with pytest.raises(ValueError, match="boom"):
            app.test_client().get("/boom", headers=headers)
    else:
        assert app.test_client().get("/boom", headers=headers).status_code == 500
    [event] = recorder.exceptions()
    props = event["properties"]
    assert event["distinct_id"] == "user-500"
    assert props["$session_id"] == SESSION_ID
    assert props["$exception_source"] == "flask.got_request_exception"
    assert props["$response_status_code"] == 500
    assert props["$request_route"] == "/boom"
    assert props["$request_path"] == "/boom"
    assert props["$exception_level"] == "error"
    assert exception_type(event) == "ValueError"
    assert mechanism(event)["type"] == "middleware"
    assert mechanism(event)["handled"] is False
    # the event captured before the exception carries the same request
    assert recorder.one("before_boom")["distinct_id"] == "user-500"


def test_unhandled_with_500_errorhandler_still_captured(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.errorhandler(500)
    def server_error(e: Exception) -> tuple[str, int]:
        return "custom 500", 500

    response = app.test_client().get("/boom", headers={DISTINCT: "u"})
    assert response.status_code == 500
    assert response.data == b"custom 500"
    [event] = recorder.exceptions()
    assert event["properties"]["$exception_source"] == "flask.got_request_exception"
    assert mechanism(event)["handled"] is False


def test_before_request_registered_before_extension_raising_is_captured(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("early-raise")

    @app.before_request
    def auth() -> None:
        raise PermissionError("auth backend down")

    @app.get("/private/<name>")
    def private(name: str) -> str:
        return name

    PostHog(app, client=client, capture_exceptions=True)
    response = app.test_client().get("/private/x", headers={DISTINCT: "early"})
    assert response.status_code == 500
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "early"
    assert event["properties"]["$request_route"] == "/private/<name>"
    assert exception_type(event) == "PermissionError"


def test_async_view_exception_and_event(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app()
    test_client = app.test_client()
    assert test_client.get("/async", headers={DISTINCT: "async-user"}).status_code == 200
    assert test_client.get("/async-boom", headers={DISTINCT: "async-user"}).status_code == 500
    event = recorder.one("async_event")
    assert event["distinct_id"] == "async-user"
    assert event["properties"]["$request_route"] == "/async"
    [exc] = recorder.exceptions()
    assert exc["distinct_id"] == "async-user"
    assert exception_type(exc) == "KeyError"


# ---------------------------------------------------------------- never captured


@pytest.mark.parametrize("code", [400, 403, 404, 405, 409])
@pytest.mark.parametrize("handled_errors", [False, True])
def test_abort_below_500_never_captured(
    make_app: Callable[..., Flask], recorder: Recorder, code: int, handled_errors: bool
) -> None:
    app = make_app(capture_handled_errors=handled_errors, capture_status_codes=set(range(400, 600)))
    assert app.test_client().get(f"/abort/{code}").status_code == code
    assert app.test_client().get("/missing").status_code == 404
    recorder.client.capture("marker", distinct_id="m")  # the flush below sees it arrive
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_errorhandler_4xx_response_not_captured(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(capture_handled_errors=True)

    @app.errorhandler(ValueError)
    def invalid(e: ValueError) -> tuple[str, int]:
        return "invalid", 422

    assert app.test_client().get("/boom").status_code == 422
    assert recorder.exceptions() == []
    assert len(recorder.events("before_boom")) == 1


def test_errorhandler_5xx_not_captured_by_default(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.errorhandler(ValueError)
    def unavailable(e: ValueError) -> tuple[str, int]:
        return "later", 503

    assert app.test_client().get("/boom").status_code == 503
    assert recorder.exceptions() == []


@pytest.mark.parametrize(
    ("returned", "status"),
    [
        (lambda: ("later", 503), 503),
        (lambda: ("later", "502 BAD GATEWAY"), 502),
        (lambda: ("later", 500, {"X-A": "1"}), 500),
    ],
)
def test_errorhandler_5xx_captured_as_handled_when_enabled(
    make_app: Callable[..., Flask],
    recorder: Recorder,
    returned: Callable[[], Any],
    status: int,
) -> None:
    app = make_app(capture_handled_errors=True)

    @app.errorhandler(ValueError)
    def unavailable(e: ValueError) -> Any:
        return returned()

    response = app.test_client().get("/boom", headers={DISTINCT: "handled-user"})
    assert response.status_code == status
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "handled-user"
    assert event["properties"]["$exception_source"] == "flask.handled"
    assert event["properties"]["$response_status_code"] == status
    assert event["properties"]["$request_route"] == "/boom"
    assert mechanism(event) == {**mechanism(event), "type": "middleware", "handled": True}


def test_handled_errors_from_config_and_http_exception_5xx(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("handled-config")
    app.config["POSTHOG_CAPTURE_HANDLED_ERRORS"] = True
    app.config["POSTHOG_CAPTURE_EXCEPTIONS"] = True

    @app.get("/unavailable")
    def unavailable() -> str:
        abort(503)

    PostHog(app, client=client)
    assert app.test_client().get("/unavailable").status_code == 503
    [event] = recorder.exceptions()
    assert event["properties"]["$exception_source"] == "flask.handled"
    assert event["properties"]["$response_status_code"] == 503
    assert exception_type(event) == "ServiceUnavailable"


def test_capture_status_codes_limits_handled_capture(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(capture_handled_errors=True, capture_status_codes={502})

    @app.errorhandler(ValueError)
    def unavailable(e: ValueError) -> tuple[str, int]:
        return "later", 503

    @app.errorhandler(KeyError)
    def bad_gateway(e: KeyError) -> tuple[str, int]:
        return "gateway", 502

    @app.get("/key")
    def key() -> str:
        raise KeyError("k")

    test_client = app.test_client()
    assert test_client.get("/boom").status_code == 503
    assert test_client.get("/key").status_code == 502
    [event] = recorder.exceptions()
    assert exception_type(event) == "KeyError"
    assert event["properties"]["$response_status_code"] == 502


def test_capture_exceptions_none_inherits_client_autocapture(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(capture_exceptions=None)  # the client's enable_exception_autocapture: off
    assert app.test_client().get("/boom", headers={DISTINCT: "u"}).status_code == 500
    assert recorder.exceptions() == []
    event = recorder.one("before_boom")  # ids and tags are still set
    assert event["distinct_id"] == "u"
    assert event["properties"]["$request_route"] == "/boom"


def test_capture_exceptions_none_with_autocapture_client(
    make_recorder: Callable[..., Recorder],
) -> None:
    recorder = make_recorder(enable_exception_autocapture=True)
    app = Flask("autocapture")

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("boom")

    PostHog(app, client=recorder.client)
    assert app.test_client().get("/boom").status_code == 500
    [event] = recorder.exceptions()
    assert event["properties"]["$exception_source"] == "flask.got_request_exception"


def test_capture_exceptions_false_and_ignored_exceptions(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    off = make_app(capture_exceptions=False)
    ignored = make_app(ignored_exceptions=(ValueError,))
    assert off.test_client().get("/boom").status_code == 500
    assert ignored.test_client().get("/boom").status_code == 500
    assert ignored.test_client().get("/async-boom").status_code == 500
    [event] = recorder.exceptions()
    assert exception_type(event) == "KeyError"


def test_capture_handled_helper(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(capture_exceptions=False)

    @app.errorhandler(ValueError)
    def invalid(e: ValueError) -> tuple[str, int]:
        capture_handled(e, status=400)
        return "bad", 400

    assert app.test_client().get("/boom", headers={DISTINCT: "helper"}).status_code == 400
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "helper"
    assert event["properties"]["$exception_source"] == "flask.handled"
    assert event["properties"]["$response_status_code"] == 400
    assert event["properties"]["$request_route"] == "/boom"
    assert mechanism(event)["handled"] is True


def test_errors_in_the_extension_never_break_requests(
    make_app: Callable[..., Flask], recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posthog_integrations import _flask_adapter, _request

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken")

    app = make_app()
    test_client = app.test_client()
    monkeypatch.setattr(_request.RequestScope, "_open", classmethod(broken))
    assert test_client.get("/event").status_code == 200
    monkeypatch.setattr(_flask_adapter.WSGIAdapter, "__init__", broken)
    assert test_client.get("/event").status_code == 200
    assert test_client.get("/stream").data == b"ab"
    assert test_client.get("/boom").status_code == 500
    assert test_client.get("/async").status_code == 200
    assert recorder.exceptions() == []  # nothing tracked, nothing broken
    assert len(recorder.events("view_event")) == 2


def test_http_exception_below_500_reaching_the_signal_is_not_captured(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.errorhandler(404)
    def broken_404(e: HTTPException) -> str:
        abort(403)  # raised inside error handling: Flask sends it to got_request_exception

    assert app.test_client().get("/abort/404").status_code == 500
    recorder.client.capture("marker", distinct_id="m")
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_exception_escaping_wsgi_app_without_the_signal_is_captured(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("teardown-raise")

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.teardown_request
    def broken_teardown(exc: BaseException | None) -> None:
        raise OSError("teardown failed")

    PostHog(app, client=client, capture_exceptions=True)
    with pytest.raises(OSError, match="teardown failed"):
        app.test_client().get("/", headers={DISTINCT: "td"})
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "td"
    assert event["properties"]["$exception_source"] == "flask.wsgi_app"
    assert event["properties"]["$response_status_code"] == 500
    assert mechanism(event)["handled"] is False


def test_streamed_500_page_that_fails_is_captured_with_status_500(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    from flask import Response

    app = make_app()

    @app.errorhandler(500)
    def streamed_error_page(e: Exception) -> Response:
        def body() -> Any:
            yield "sorry"
            raise RuntimeError("error page broke")

        return Response(body(), status=500)

    response = app.test_client().get("/boom", headers={DISTINCT: "u"})
    assert response.status_code == 500
    with pytest.raises(RuntimeError, match="error page broke"):
        response.get_data()
    events = {exception_type(e): e["properties"] for e in recorder.exceptions()}
    assert events["ValueError"]["$exception_source"] == "flask.got_request_exception"
    assert events["RuntimeError"]["$exception_source"] == "flask.streaming_response"
    assert events["RuntimeError"]["$response_status_code"] == 500


def test_failure_before_dispatch_is_captured_with_the_request(
    client: posthog.Client, recorder: Recorder
) -> None:
    from flask.sessions import SecureCookieSessionInterface

    class BrokenSessions(SecureCookieSessionInterface):
        def open_session(self, app: Flask, request: Any) -> Any:
            raise ConnectionError("session store down")

    app = Flask("session-down")
    app.session_interface = BrokenSessions()

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return "never"

    PostHog(app, client=client, capture_exceptions=True)
    response = app.test_client().get("/items/1", headers={DISTINCT: "early-fail"})
    assert response.status_code == 500
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "early-fail"
    assert event["properties"]["$request_path"] == "/items/1"
    assert exception_type(event) == "ConnectionError"
