"""Scope types, lifecycle, double install, hooks, installation forms (spec §1.7, §1.9, §4)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from posthog import contexts
from posthog_integrations._request import RequestScope
from posthog_integrations.starlette import PosthogASGIMiddleware, PosthogMiddleware

from .conftest import Recorder, call_asgi, client_for, http_scope

DISTINCT = "x-posthog-distinct-id"


def view_app(recorder: Recorder, *, raises: bool = False) -> Starlette:
    def view(request: Request) -> Response:
        recorder.client.capture("view")
        if raises:
            raise RuntimeError("view failed")
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", view), Route("/health", view)])


# ---------------------------------------------------------------- websocket and lifespan


def test_websocket_scope_ids_tags_and_errors(recorder: Recorder) -> None:
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        recorder.client.capture("message")
        if text == "fail":
            raise RuntimeError("handler failed")
        await websocket.send_text("echo")
        await websocket.receive_text()  # the client closes: WebSocketDisconnect

    app = Starlette(routes=[WebSocketRoute("/ws/{room}", chat)])
    app.add_middleware(PosthogMiddleware, client=recorder.client, capture_exceptions=True)
    client = client_for(app)
    # The handler's receive after the client closed raises WebSocketDisconnect through us
    # (the test client re-raises it; servers drop it).
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/ws/lobby", headers={DISTINCT: "ws-user"}) as ws,
    ):
        ws.send_text("hello")
        assert ws.receive_text() == "echo"
    with (
        pytest.raises(RuntimeError, match="handler failed"),
        client.websocket_connect("/ws/lobby", headers={DISTINCT: "ws-user"}) as ws,
    ):
        ws.send_text("fail")
        ws.receive_text()

    messages = recorder.events("message")
    assert [m["distinct_id"] for m in messages] == ["ws-user", "ws-user"]
    props = messages[0]["properties"]
    assert props["$current_url"] == "ws://testserver/ws/lobby"
    assert props["$request_route"] == "/ws/{room}"
    assert "$request_method" not in props
    event = recorder.one("$exception")  # the disconnect was not captured
    assert event["properties"]["$exception_list"][0]["type"] == "RuntimeError"
    assert event["properties"]["$exception_source"] == "asgi.middleware"
    assert event["distinct_id"] == "ws-user"


def test_websocket_disconnect_escaping_is_not_captured(recorder: Recorder) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise WebSocketDisconnect(1001)

    app = PosthogMiddleware(raw, client=recorder.client, capture_exceptions=True)
    scope = http_scope("/ws", type="websocket", scheme="ws")
    with pytest.raises(WebSocketDisconnect):
        call_asgi(app, scope)
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_lifespan_passes_through_untouched(recorder: Recorder) -> None:
    seen: list[Any] = []

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, contexts.current_scope(), RequestScope.current()))
        raise RuntimeError("startup failed")

    app = PosthogMiddleware(raw, client=recorder.client, capture_exceptions=True)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    with pytest.raises(RuntimeError):
        call_asgi(app, scope)
    assert seen == [(scope, None, None)]
    assert seen[0][0] is scope and scope == {"type": "lifespan", "asgi": {"version": "3.0"}}
    recorder.client.capture("marker")
    assert [e["event"] for e in recorder.events()] == ["marker"]


def test_starlette_lifespan_runs_with_the_middleware(recorder: Recorder) -> None:
    started: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.append(contexts.current_scope() is None)
        yield

    app = Starlette(routes=[], lifespan=lifespan)
    app.add_middleware(PosthogMiddleware, client=recorder.client)
    with client_for(app):
        pass
    assert started == [True]


# ---------------------------------------------------------------- installation forms


def test_raw_asgi_app_and_scope_not_leaking(recorder: Recorder) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        recorder.client.capture("raw", properties={"n": scope["path"]})
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})
        if scope["path"] == "/fail":
            raise RuntimeError("after the body")

    app = PosthogMiddleware(raw, client=recorder.client, capture_exceptions=True)
    after: list[Any] = []

    async def two_requests() -> None:
        for path, headers in (
            ("/fail", [(b"x-posthog-distinct-id", b"first"), (b"x-posthog-window-id", b"w1")]),
            ("/next", []),
        ):

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: Any) -> None:
                pass

            with contextlib.suppress(RuntimeError):
                await app(http_scope(path, headers=headers), receive, send)
            after.append((contexts.current_scope(), RequestScope.current()))

    asyncio.run(two_requests())
    assert after == [(None, None), (None, None)]
    first, second = recorder.events("raw")
    assert first["distinct_id"] == "first" and first["properties"]["$window_id"] == "w1"
    assert second["properties"]["$process_person_profile"] is False
    assert "$window_id" not in second["properties"]
    assert second["properties"]["$request_path"] == "/next"
    assert recorder.one("$exception")["properties"]["$response_status_code"] == 201


def test_middleware_list_and_positional_alias_and_drop_in_path(recorder: Recorder) -> None:
    from posthog.integrations.asgi import PosthogASGIMiddleware as DropIn

    assert DropIn is PosthogASGIMiddleware
    seen: list[str] = []

    def extra(scope: Any) -> dict[str, str]:
        return {"tenant": "acme"}

    def view(request: Request) -> Response:
        recorder.client.capture("view")
        raise RuntimeError("x")

    def keep(scope: Any) -> bool:
        seen.append(scope["path"])
        return True

    with pytest.warns(DeprecationWarning):
        app = Starlette(
            routes=[Route("/", view)],
            middleware=[Middleware(DropIn, recorder.client, True, keep, extra, True)],
        )
        client_for(app).get("/", headers={DISTINCT: "alias"})
    assert seen == ["/"]
    assert recorder.one("view")["properties"]["tenant"] == "acme"
    assert recorder.one("$exception")["distinct_id"] == "alias"


def test_added_twice_or_nested_gives_one_scope_and_one_capture(recorder: Recorder) -> None:
    calls: list[str] = []

    def keep(scope: Any) -> bool:
        calls.append("filter")
        return True

    inner = view_app(recorder, raises=True)
    inner.add_middleware(PosthogMiddleware, client=recorder.client, capture_exceptions=True)
    app = FastAPI()
    app.mount("/sub", inner)
    app.add_middleware(
        PosthogMiddleware, client=recorder.client, capture_exceptions=True, request_filter=keep
    )
    app.add_middleware(
        PosthogMiddleware, client=recorder.client, capture_exceptions=True, request_filter=keep
    )
    assert client_for(app).get("/sub/", headers={DISTINCT: "once"}).status_code == 500
    assert calls == ["filter"]
    assert len(recorder.exceptions()) == 1
    assert recorder.one("view")["properties"]["$request_route"] == "/sub/"


def test_nested_instance_behind_a_scope_copying_middleware_passes_through(
    recorder: Recorder,
) -> None:
    calls: list[str] = []

    def keep(scope: Any) -> bool:
        calls.append(scope["path"])
        return True

    inner = PosthogMiddleware(
        view_app(recorder, raises=True),
        client=recorder.client,
        capture_exceptions=True,
        request_filter=keep,
    )

    async def copying(scope: Any, receive: Any, send: Any) -> None:
        await inner(dict(scope), receive, send)  # a new scope dict for the same request

    app = PosthogMiddleware(
        copying, client=recorder.client, capture_exceptions=True, request_filter=keep
    )
    assert client_for(app).get("/").status_code == 500
    assert calls == ["/"]
    assert len(recorder.exceptions()) == 1


# ---------------------------------------------------------------- filters and hooks


@pytest.mark.parametrize("is_async", [False, True])
def test_request_filter_sync_or_async_called_once(recorder: Recorder, is_async: bool) -> None:
    calls: list[str] = []

    def decide(scope: Any) -> bool:
        calls.append(scope["path"])
        return scope["path"] != "/health"

    async def adecide(scope: Any) -> bool:
        await asyncio.sleep(0)
        return decide(scope)

    app = view_app(recorder, raises=True)
    app.add_middleware(
        PosthogMiddleware,
        client=recorder.client,
        capture_exceptions=True,
        request_filter=adecide if is_async else decide,
    )
    client = client_for(app)
    client.get("/health", headers={DISTINCT: "probe"})
    client.get("/", headers={DISTINCT: "real"})
    assert calls == ["/health", "/"]
    health, real = recorder.events("view")
    assert "$request_path" not in health["properties"]
    assert health["properties"]["$process_person_profile"] is False
    assert real["distinct_id"] == "real"
    assert [e["distinct_id"] for e in recorder.exceptions()] == ["real"]


def test_exclude_paths_prefixes(recorder: Recorder) -> None:
    app = view_app(recorder, raises=True)
    app.add_middleware(
        PosthogMiddleware,
        client=recorder.client,
        capture_exceptions=True,
        exclude_paths=[re.compile(r"^/heal"), "/metrics"],
    )
    client_for(app).get("/health", headers={DISTINCT: "probe"})
    event = recorder.one("view")
    assert "$request_path" not in event["properties"]
    recorder.client.flush()
    assert recorder.exceptions() == []


def test_async_extra_properties_and_properties_map(recorder: Recorder) -> None:
    async def extra(scope: Any) -> dict[str, Any]:
        return {"tenant": scope["path"].strip("/") or "root", "$request_path": "/overridden"}

    def mapping(tags: dict[str, Any]) -> dict[str, Any]:
        tags.pop("$user_agent", None)
        return tags

    app = view_app(recorder)
    app.add_middleware(
        PosthogMiddleware, client=recorder.client, extra_properties=extra, properties_map=mapping
    )
    client_for(app).get("/")
    props = recorder.one("view")["properties"]
    assert props["tenant"] == "root"
    assert props["$request_path"] == "/overridden"
    assert "$user_agent" not in props and props["$raw_user_agent"] == "testclient"


def test_hooks_that_raise_never_break_the_request(
    recorder: Recorder, posthog_logs: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("hook bug")

    async def abroken(scope: Any) -> Any:
        raise ZeroDivisionError("async hook bug")

    app = view_app(recorder)
    app.add_middleware(
        PosthogMiddleware,
        client=recorder.client,
        request_filter=abroken,
        extra_properties=broken,
        properties_map=broken,
        user_id=broken,
        ip_source=broken,
    )
    client = client_for(app, raise_server_exceptions=True)
    assert client.get("/", headers={DISTINCT: "still"}).text == "ok"
    assert client.get("/", headers={DISTINCT: "still"}).text == "ok"
    first, second = recorder.events("view")
    assert first["distinct_id"] == second["distinct_id"] == "still"
    assert first["properties"]["$request_path"] == "/"  # the default tags survive
    errors = [r for r in posthog_logs.records if "hook" in r.getMessage()]
    assert errors and len(errors) == len({r.getMessage() for r in errors})  # once per hook


# ---------------------------------------------------------------- import without Starlette


def test_import_without_starlette_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, "posthog_integrations.starlette")
    with pytest.raises(ImportError, match=r"pip install 'posthog-integrations\[starlette\]'"):
        importlib.import_module("posthog_integrations.starlette")


def test_mount_with_own_middleware_only_inner(recorder: Recorder) -> None:
    inner = view_app(recorder)
    inner.add_middleware(PosthogMiddleware, client=recorder.client)
    app = Starlette(routes=[Mount("/inner", app=inner)])
    client_for(app).get("/inner/health", headers={DISTINCT: "m"})
    event = recorder.one("view")
    assert event["distinct_id"] == "m"
    assert event["properties"]["$request_path"] == "/inner/health"
    assert event["properties"]["$request_route"] == "/inner/health"


def test_filtered_request_is_not_decided_again_by_an_inner_instance(
    recorder: Recorder,
) -> None:
    outer_calls: list[str] = []
    inner_calls: list[str] = []

    def outer_filter(scope: Any) -> bool:
        outer_calls.append(scope["path"])
        return False

    def inner_filter(scope: Any) -> bool:
        inner_calls.append(scope["path"])
        return True

    inner = PosthogMiddleware(view_app(recorder, raises=True), client=recorder.client,
                              capture_exceptions=True, request_filter=inner_filter)

    async def copying(scope: Any, receive: Any, send: Any) -> None:
        await inner(dict(scope), receive, send)

    app = PosthogMiddleware(copying, client=recorder.client, capture_exceptions=True,
                            request_filter=outer_filter)
    assert client_for(app).get("/", headers={DISTINCT: "filtered"}).status_code == 500
    assert outer_calls == ["/"] and inner_calls == []  # the outer decision stands
    view = recorder.one("view")
    assert "$request_path" not in view["properties"]
    assert recorder.exceptions() == []


def test_deprecated_alias_warning_names_the_constructing_line(recorder: Recorder) -> None:
    import sys

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.warns(DeprecationWarning) as record:
        line = sys._getframe().f_lineno + 1
        PosthogASGIMiddleware(raw, recorder.client, None, None, None, True)
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    with pytest.warns(DeprecationWarning) as record:
        line = sys._getframe().f_lineno + 1
        PosthogMiddleware(raw, client=recorder.client, trust_tracing_headers=True)
    assert (record[0].filename, record[0].lineno) == (__file__, line)


def test_send_wrapper_passes_messages_through_and_notes_the_status(recorder: Recorder) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 207, "headers": []})
        await send({"type": "http.response.body", "body": b"made", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        raise RuntimeError("after the body")

    app = PosthogMiddleware(raw, client=recorder.client, capture_exceptions=True)
    with pytest.raises(RuntimeError, match="after the body"):
        call_asgi(app, http_scope())
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    with pytest.raises(RuntimeError):
        asyncio.run(app(http_scope(), receive, send))
    assert [m["type"] for m in sent] == [
        "http.response.start", "http.response.body", "http.response.body"]
    assert sent[1]["body"] == b"made"
    statuses = [e["properties"]["$response_status_code"] for e in recorder.exceptions()]
    assert statuses == [207, 207]
