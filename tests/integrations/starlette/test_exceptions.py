"""Exception capture (spec §1.8, §4.5, §4.6): what is captured, with which status, what not."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import posthog
from posthog_integrations.starlette import (
    PosthogMiddleware,
    capture_handled,
    instrument_exception_handlers,
)
from tests.support.http_server import ScriptedServer

from .conftest import Recorder, call_asgi, client_for, http_scope

DISTINCT = "x-posthog-distinct-id"


def mechanism(event: dict[str, Any]) -> dict[str, Any]:
    return event["properties"]["$exception_list"][0]["mechanism"]  # type: ignore[no-any-return]


def api(recorder: Recorder, **options: Any) -> FastAPI:
    app = FastAPI()
    options.setdefault("capture_exceptions", True)
    app.add_middleware(PosthogMiddleware, client=recorder.client, **options)
    return app


# ---------------------------------------------------------------- unhandled


def test_unhandled_exception_is_captured_once_and_reraised_intact(recorder: Recorder) -> None:
    def view(request: Request) -> Response:
        recorder.client.capture("before")
        raise RuntimeError("checkout failed")

    app = Starlette(routes=[Route("/checkout/{cart}", view)])
    app.add_middleware(PosthogMiddleware, client=recorder.client, capture_exceptions=True)

    with pytest.raises(RuntimeError, match="checkout failed") as raised:
        client_for(app, raise_server_exceptions=True).get(
            "/checkout/7", headers={DISTINCT: "buyer"}
        )
    # the traceback still reaches the raise site: nothing re-raised "from None"
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "view"

    assert client_for(app).get("/checkout/8", headers={DISTINCT: "buyer"}).status_code == 500
    exceptions = recorder.exceptions()
    assert len(exceptions) == 2
    event = exceptions[0]
    props = event["properties"]
    assert event["distinct_id"] == "buyer"
    assert props["$exception_source"] == "asgi.middleware"
    assert props["$exception_level"] == "error"
    assert props["$response_status_code"] == 500
    assert props["$request_path"] == "/checkout/7"
    assert props["$request_route"] == "/checkout/{cart}"
    assert props["$exception_list"][0]["type"] == "RuntimeError"
    assert mechanism(event) == {**mechanism(event), "type": "middleware", "handled": False}
    assert len(recorder.events("before")) == 2


def test_fastapi_exception_handler_for_exception_still_captures(recorder: Recorder) -> None:
    app = api(recorder)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "sorry"}, status_code=500)

    @app.get("/fail/{n}")
    async def fail(n: int) -> dict[str, int]:
        raise RuntimeError(f"failure {n}")

    response = client_for(app).get("/fail/3", headers={DISTINCT: "u"})
    assert response.status_code == 500 and response.json() == {"detail": "sorry"}
    event = recorder.one("$exception")
    assert event["distinct_id"] == "u"
    assert event["properties"]["$request_route"] == "/fail/{n}"
    assert event["properties"]["$response_status_code"] == 500
    assert mechanism(event)["handled"] is False


def test_sync_endpoint_in_threadpool_has_tags_and_is_captured(recorder: Recorder) -> None:
    app = api(recorder)

    @app.get("/sync")
    def sync_view() -> dict[str, str]:
        recorder.client.capture("in thread")
        raise ValueError("sync failure")

    client_for(app).get("/sync", headers={DISTINCT: "t"})
    event = recorder.one("in thread")
    assert event["distinct_id"] == "t"
    assert event["properties"]["$request_route"] == "/sync"
    assert recorder.one("$exception")["distinct_id"] == "t"


def test_streaming_body_exception_keeps_started_status(recorder: Recorder) -> None:
    app = api(recorder)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first chunk"
            recorder.client.capture("chunk")
            raise RuntimeError("stream broke")

        return StreamingResponse(body())

    with pytest.raises(RuntimeError, match="stream broke"):
        client_for(app, raise_server_exceptions=True).get("/stream", headers={DISTINCT: "s"})
    chunk = recorder.one("chunk")
    assert chunk["distinct_id"] == "s"
    assert chunk["properties"]["$request_route"] == "/stream"
    event = recorder.one("$exception")
    assert event["properties"]["$response_status_code"] == 200
    assert event["distinct_id"] == "s"


def test_background_task_runs_inside_the_scope(recorder: Recorder) -> None:
    app = api(recorder)

    def work() -> None:
        recorder.client.capture("background")
        raise KeyError("late")

    @app.post("/jobs", status_code=202)
    async def jobs(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(work)
        return {"queued": "yes"}

    response = client_for(app).post("/jobs", headers={DISTINCT: "b"})
    assert response.status_code == 202
    background = recorder.one("background")
    assert background["distinct_id"] == "b"
    assert background["properties"]["$request_method"] == "POST"
    event = recorder.one("$exception")
    assert event["properties"]["$response_status_code"] == 202
    assert event["properties"]["$exception_list"][0]["type"] == "KeyError"


# ---------------------------------------------------------------- never captured


def test_client_errors_and_validation_errors_are_not_captured(recorder: Recorder) -> None:
    app = api(recorder)

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "nope")

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise StarletteHTTPException(403)

    @app.get("/typed/{n}")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    client = client_for(app)
    assert client.get("/missing").status_code == 404
    assert client.get("/forbidden").status_code == 403
    assert client.get("/typed/abc").status_code == 422
    assert client.get("/no-such-route").status_code == 404
    recorder.client.capture("marker")  # proves the pipeline delivers
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_unhandled_4xx_http_exception_in_raw_app_is_not_captured(recorder: Recorder) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise StarletteHTTPException(400)

    async def raw_500(scope: Any, receive: Any, send: Any) -> None:
        raise StarletteHTTPException(502)

    for inner in (raw, raw_500):
        app = PosthogMiddleware(inner, client=recorder.client, capture_exceptions=True)
        with pytest.raises(StarletteHTTPException):
            call_asgi(app, http_scope("/x"))
    event = recorder.one("$exception")
    assert event["properties"]["$exception_list"][0]["value"] == "Bad Gateway"


def test_client_disconnect_is_not_captured(recorder: Recorder) -> None:
    async def upload(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("read")

    app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    app.add_middleware(PosthogMiddleware, client=recorder.client, capture_exceptions=True)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    with pytest.raises(ClientDisconnect):
        asyncio.run(app(http_scope("/upload", method="POST"), receive, send))
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_capture_exceptions_inherits_client_autocapture(recorder: Recorder) -> None:
    app = api(recorder, capture_exceptions=None)  # the test client has autocapture off

    @app.get("/boom")
    async def boom() -> None:
        recorder.client.capture("view")
        raise RuntimeError("not captured")

    assert client_for(app).get("/boom", headers={DISTINCT: "q"}).status_code == 500
    assert [e["event"] for e in recorder.events()] == ["view"]
    assert recorder.one("view")["properties"]["$request_route"] == "/boom"


def test_ignored_exceptions_option(recorder: Recorder) -> None:
    app = api(recorder, ignored_exceptions=(LookupError,))

    @app.get("/lookup")
    async def lookup() -> None:
        raise KeyError("ignored")

    @app.get("/other")
    async def other() -> None:
        raise ValueError("captured")

    client = client_for(app)
    client.get("/lookup")
    client.get("/other")
    assert [e["properties"]["$exception_list"][0]["type"] for e in recorder.exceptions()] == [
        "ValueError"
    ]


# ---------------------------------------------------------------- handled with a server status


def test_http_exception_503_needs_instrumented_handlers(
    recorder: Recorder, make_recorder: Any
) -> None:
    def build(rec: Recorder, instrument: bool) -> FastAPI:
        app = api(rec)

        @app.get("/down")
        async def down() -> None:
            raise HTTPException(503, "maintenance")

        @app.get("/gone")
        async def gone() -> None:
            raise HTTPException(410, "gone")

        if instrument:
            instrument_exception_handlers(app)
        return app

    plain = client_for(build(recorder, instrument=False))
    assert plain.get("/down").status_code == 503
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]
    recorder.server.requests.clear()

    instrumented = client_for(build(recorder, instrument=True))
    assert instrumented.get("/down", headers={DISTINCT: "ops"}).status_code == 503
    assert instrumented.get("/gone").status_code == 410
    event = recorder.one("$exception")
    assert event["distinct_id"] == "ops"
    assert event["properties"]["$exception_source"] == "asgi.exception_handler"
    assert event["properties"]["$response_status_code"] == 503
    assert event["properties"]["$request_route"] == "/down"
    assert mechanism(event)["handled"] is True


def test_instrumented_class_handlers_judged_by_their_status(recorder: Recorder) -> None:
    class Upstream(Exception):
        pass

    app = api(recorder)

    @app.exception_handler(ValueError)
    def bad_value(request: Request, exc: ValueError) -> JSONResponse:  # sync: threadpool
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Upstream)
    async def upstream(request: Request, exc: Upstream) -> JSONResponse:
        return JSONResponse({"detail": "upstream"}, status_code=502)

    @app.get("/value")
    async def value() -> None:
        raise ValueError("bad input")

    @app.get("/upstream")
    async def call_upstream() -> None:
        raise Upstream("timeout")

    instrument_exception_handlers(app)
    instrument_exception_handlers(app)  # idempotent
    client = client_for(app)
    assert client.get("/value").status_code == 422
    assert client.get("/upstream").status_code == 502
    event = recorder.one("$exception")
    assert event["properties"]["$exception_list"][0]["type"].endswith("Upstream")
    assert event["properties"]["$response_status_code"] == 502


def test_instrument_after_first_call_warns_and_does_nothing(
    recorder: Recorder, posthog_logs: pytest.LogCaptureFixture
) -> None:
    app = api(recorder)

    @app.get("/down")
    async def down() -> None:
        raise HTTPException(503)

    client = client_for(app)
    client.get("/down")
    instrument_exception_handlers(app)
    client.get("/down")
    assert any("already built" in r.getMessage() for r in posthog_logs.records)
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_capture_handled_from_own_handler(recorder: Recorder) -> None:
    app = api(recorder)

    @app.exception_handler(LookupError)
    async def on_lookup(request: Request, exc: LookupError) -> JSONResponse:
        capture_handled(exc, status=404)
        return JSONResponse({"detail": "missing"}, status_code=404)

    @app.get("/find")
    async def find() -> None:
        raise LookupError("no row")

    assert client_for(app).get("/find", headers={DISTINCT: "h"}).status_code == 404
    event = recorder.one("$exception")
    assert event["distinct_id"] == "h"
    assert event["properties"]["$exception_source"] == "asgi.exception_handler"
    assert event["properties"]["$response_status_code"] == 404
    assert mechanism(event)["handled"] is True


# ---------------------------------------------------------------- per-request client


def test_per_request_client_gets_the_exception(server: ScriptedServer, make_recorder: Any) -> None:
    tenant_b = make_recorder()
    posthog.api_key = "phc_global"
    posthog.host = server.url

    def view(request: Request) -> Response:
        posthog.capture("global view")
        raise RuntimeError("tenant failure")

    app = Starlette(routes=[Route("/", view)])
    app.add_middleware(
        PosthogMiddleware,
        client=lambda scope: tenant_b.client if scope["path"] == "/" else None,
        capture_exceptions=True,
    )
    client_for(app).get("/", headers={DISTINCT: "tenant-user"})
    tenant_b.client.flush()
    posthog.flush()
    by_key: dict[str, list[str]] = {}
    for request in server.requests:
        if request.path.startswith("/batch"):
            body = request.json()
            by_key.setdefault(body["api_key"], []).extend(e["event"] for e in body["batch"])
    assert by_key == {"phc_test": ["$exception"], "phc_global": ["global view"]}


def test_instrument_status_codes_widen_the_handled_codes(recorder: Recorder) -> None:
    app = api(recorder)

    @app.exception_handler(LookupError)
    async def on_lookup(request: Request, exc: LookupError) -> JSONResponse:
        return JSONResponse({"detail": "missing"}, status_code=404)

    @app.get("/find")
    async def find() -> None:
        raise LookupError("no row")

    instrument_exception_handlers(app, status_codes={404, *range(500, 600)})
    assert client_for(app).get("/find", headers={DISTINCT: "w"}).status_code == 404
    event = recorder.one("$exception")
    assert event["distinct_id"] == "w"
    assert event["properties"]["$response_status_code"] == 404
    assert event["properties"]["$exception_source"] == "asgi.exception_handler"
    assert mechanism(event)["handled"] is True


def test_instrumented_handlers_still_follow_capture_exceptions(recorder: Recorder) -> None:
    app = api(recorder, capture_exceptions=False)

    @app.get("/down")
    async def down() -> None:
        raise HTTPException(503)

    instrument_exception_handlers(app, status_codes={503})
    assert client_for(app).get("/down").status_code == 503
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]
