"""Ids from tracing headers, request tags, routes, ``$ip`` and the user (spec §1, §4.4, §4.7)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from posthog_integrations.starlette import PosthogMiddleware

from .conftest import Recorder, call_asgi, client_for, http_scope

DISTINCT = "x-posthog-distinct-id"


def recording_app(recorder: Recorder, **options: Any) -> Starlette:
    """A Starlette app whose views capture one ``view`` event."""

    def view(request: Request) -> Response:
        recorder.client.capture("view")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/", view),
            Route("/items/{item_id:int}", view, methods=["GET"]),
        ]
    )
    app.add_middleware(PosthogMiddleware, client=recorder.client, **options)
    return app


def view_event(recorder: Recorder) -> dict[str, Any]:
    return recorder.one("view")


# ---------------------------------------------------------------- ids


def test_header_ids_reach_events_in_the_view(recorder: Recorder) -> None:
    client = client_for(recording_app(recorder))
    response = client.get(
        "/",
        headers={
            "X-POSTHOG-DISTINCT-ID": "user-1",
            "X-POSTHOG-SESSION-ID": "0190-session",
            "X-POSTHOG-WINDOW-ID": "0190-window",
        },
    )
    assert response.status_code == 200
    event = view_event(recorder)
    assert event["distinct_id"] == "user-1"
    assert event["properties"]["$session_id"] == "0190-session"
    assert event["properties"]["$window_id"] == "0190-window"
    assert "$process_person_profile" not in event["properties"]


def test_missing_headers_give_a_personless_event_without_session(recorder: Recorder) -> None:
    client_for(recording_app(recorder)).get("/")
    props = view_event(recorder)["properties"]
    assert props["$process_person_profile"] is False
    assert "$session_id" not in props
    assert "$window_id" not in props
    assert props["$request_path"] == "/"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-posthog-distinct-id", b"  user\t-42 ")], "user-42"),
        ([(b"x-posthog-distinct-id", b"caf\xe9")], "café"),
        ([(b"X-PostHog-Distinct-Id", b"upper")], "upper"),
        ([(b"x-posthog-distinct-id", b"undefined"), (b"x-posthog-distinct-id", b"u2")], "u2"),
        ([(b"x-posthog-distinct-id", b"\r\n"), (b"x-posthog-distinct-id", b"u3")], "u3"),
        ([(b"broken",), (b"x-posthog-distinct-id", b"after-junk")], "after-junk"),
        ([(b"x-posthog-distinct-id", 42), (b"x-posthog-distinct-id", b"u4")], "u4"),
    ],
)
def test_raw_header_values_are_sanitised(
    recorder: Recorder, headers: list[Any], expected: str
) -> None:
    app = recording_app(recorder)
    sent = call_asgi(app, http_scope("/", headers=[(b"host", b"example.com"), *headers]))
    assert sent[0]["status"] == 200
    assert view_event(recorder)["distinct_id"] == expected


def test_oversized_and_junk_headers_never_break_the_request(recorder: Recorder) -> None:
    junk = [
        (b"x-posthog-distinct-id", b"a" * 1500),
        (b"x-posthog-session-id", b"\x00\x01\x7f"),
        (b"x-posthog-window-id", b"null"),
        (b"user-agent", b"Agent\x00/1.0 \x85 " + b"z" * 2000),
        (b"x-forwarded-for", b"\xff\xfe, ,,"),
        (b"host", b"evil.com/path?x=1"),
        (b"authorization", b"Bearer secret-token"),
        (b"cookie", b"sessionid=secret-cookie"),
    ]
    sent = call_asgi(recording_app(recorder), http_scope("/", headers=junk))
    assert sent[0]["status"] == 200
    event = view_event(recorder)
    props = event["properties"]
    assert event["distinct_id"] == "a" * 1000
    assert "$session_id" not in props and "$window_id" not in props
    assert props["$user_agent"] == props["$raw_user_agent"]
    assert props["$user_agent"].startswith("Agent/1.0  ") and len(props["$user_agent"]) == 1000
    # an unsafe Host header gives no URL at all (never a URL built from it)
    assert "$current_url" not in props
    assert props["$request_path"] == "/"
    assert props["$ip"] == "198.51.100.8"
    text = repr(event)
    assert "secret-token" not in text and "secret-cookie" not in text


def test_capture_tracing_headers_false_ignores_them(recorder: Recorder) -> None:
    client_for(recording_app(recorder, capture_tracing_headers=False)).get(
        "/", headers={DISTINCT: "header-user", "x-posthog-session-id": "s"}
    )
    props = view_event(recorder)["properties"]
    assert props["$process_person_profile"] is False
    assert "$session_id" not in props


# ---------------------------------------------------------------- URL and path


def test_current_url_has_no_query_string_by_default(recorder: Recorder) -> None:
    client_for(recording_app(recorder)).get("/items/7?token=secret")
    props = view_event(recorder)["properties"]
    assert props["$current_url"] == "http://testserver/items/7"
    assert props["$request_method"] == "GET"
    assert "secret" not in repr(props)


def test_capture_query_string_keeps_it(recorder: Recorder) -> None:
    client_for(recording_app(recorder, capture_query_string=True)).get("/items/7?q=shoes")
    assert view_event(recorder)["properties"]["$current_url"] == "http://testserver/items/7?q=shoes"


@pytest.mark.parametrize("url", ["/api/items/7", "/items/7"])
def test_root_path_is_counted_once(recorder: Recorder, url: str) -> None:
    # New servers put root_path inside path (/api/items/7); older ones do not (/items/7).
    client = client_for(recording_app(recorder), root_path="/api")
    assert client.get(url).status_code == 200
    props = view_event(recorder)["properties"]
    assert props["$request_path"] == "/api/items/7"
    assert props["$current_url"] == "http://testserver/api/items/7"
    assert props["$request_route"] == "/items/{item_id:int}"


def test_server_address_when_no_host_header(recorder: Recorder) -> None:
    scope = http_scope("/", headers=[], scheme="https", server=("2001:db8::1", 443))
    call_asgi(recording_app(recorder), scope)
    assert view_event(recorder)["properties"]["$current_url"] == "https://[2001:db8::1]/"


# ---------------------------------------------------------------- routes


def fastapi_app(recorder: Recorder) -> FastAPI:
    app = FastAPI()
    api = APIRouter(prefix="/api")
    inner = APIRouter(prefix="/inner")
    outer = APIRouter(prefix="/outer")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        recorder.client.capture("view")
        return {"id": item_id}

    @api.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        recorder.client.capture("view")
        return {"id": thing_id}

    @inner.get("/deep/{deep_id}")
    async def deep(deep_id: str) -> dict[str, str]:
        recorder.client.capture("view")
        return {"id": deep_id}

    app.include_router(api)
    outer.include_router(inner)
    app.include_router(outer, prefix="/v1")

    sub = FastAPI()

    @sub.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        recorder.client.capture("view")
        return {"id": order_id}

    app.mount("/tenants/{tenant}", sub)
    app.add_middleware(PosthogMiddleware, client=recorder.client)
    return app


@pytest.mark.parametrize(
    ("url", "route"),
    [
        ("/items/42", "/items/{item_id}"),
        ("/api/things/a", "/api/things/{thing_id}"),  # the router's own prefix
        ("/v1/outer/inner/deep/b", "/v1/outer/inner/deep/{deep_id}"),  # include prefixes
        ("/tenants/acme/orders/9", "/tenants/{tenant}/orders/{order_id}"),  # mounted app
    ],
)
def test_fastapi_route_templates(recorder: Recorder, url: str, route: str) -> None:
    response = client_for(fastapi_app(recorder)).get(url, headers={DISTINCT: "u"})
    assert response.status_code == 200
    event = view_event(recorder)
    assert event["properties"]["$request_route"] == route
    assert event["properties"]["$request_path"] == url
    assert event["distinct_id"] == "u"


def test_starlette_mount_prefix_and_405_and_404(recorder: Recorder) -> None:
    def view(request: Request) -> Response:
        recorder.client.capture("view", properties={"n": request.url.path})
        return PlainTextResponse("ok")

    def boom(request: Request) -> Response:
        raise RuntimeError("in mounted app")

    inner = Starlette(routes=[Route("/files/{name}", view), Route("/boom", boom)])
    app = Starlette(
        routes=[
            Route("/only-get", view, methods=["GET"]),
            Mount("/v2", routes=[Route("/users/{uid}", view)]),
            Mount("/sub", app=inner),
        ]
    )
    app.add_middleware(PosthogMiddleware, client=recorder.client, capture_exceptions=True)
    client = client_for(app)
    assert client.get("/v2/users/5").status_code == 200
    assert client.get("/sub/files/a.txt").status_code == 200
    assert client.post("/only-get").status_code == 405
    assert client.get("/sub/nope").status_code == 404
    assert client.get("/sub/boom").status_code == 500
    routes = {
        e["properties"]["n"]: e["properties"].get("$request_route") for e in recorder.events("view")
    }
    assert routes == {"/v2/users/5": "/v2/users/{uid}", "/sub/files/a.txt": "/sub/files/{name}"}
    exception = recorder.one("$exception")["properties"]
    assert exception["$request_route"] == "/sub/boom"


def test_route_tag_on_405_and_not_on_404(recorder: Recorder) -> None:
    async def app_with_probe(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)
        recorder.client.capture("after", properties={"path": scope["path"]})

    inner = Starlette(routes=[Route("/only-get", lambda r: PlainTextResponse("x"))])
    client = client_for(PosthogMiddleware(app_with_probe, client=recorder.client))
    assert client.post("/only-get").status_code == 405
    assert client.get("/missing").status_code == 404
    routes = {
        e["properties"]["path"]: e["properties"].get("$request_route")
        for e in recorder.events("after")
    }
    assert routes == {"/only-get": "/only-get", "/missing": None}


# ---------------------------------------------------------------- $ip


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "203.0.113.5"),
        ({"ip_source": 1}, "10.0.0.1"),
        ({"ip_source": "peer"}, "198.51.100.8"),
        ({"ip_source": lambda scope: scope["client"][0]}, "198.51.100.8"),
    ],
)
def test_ip_modes_with_spoofed_forwarded_for(
    recorder: Recorder, options: dict[str, Any], expected: str
) -> None:
    client = client_for(recording_app(recorder, **options), client=("198.51.100.8", 4000))
    client.get("/", headers={"X-Forwarded-For": "203.0.113.5, 10.0.0.1"})
    assert view_event(recorder)["properties"]["$ip"] == expected


@pytest.mark.parametrize(
    ("options", "forwarded", "expected"),
    [
        ({}, "unknown, 1.2.3.4:8080", "1.2.3.4"),
        ({}, "not-an-ip", "198.51.100.8"),
        ({"capture_ip": False}, "203.0.113.5", None),
    ],
)
def test_ip_validation_and_opt_out(
    recorder: Recorder, options: dict[str, Any], forwarded: str, expected: str | None
) -> None:
    client = client_for(recording_app(recorder, **options), client=("198.51.100.8", 4000))
    client.get("/", headers={"X-Forwarded-For": forwarded})
    assert view_event(recorder)["properties"].get("$ip") == expected


# ---------------------------------------------------------------- the authenticated user


class AccountUser(SimpleUser):
    """A user whose ``identity`` (the default distinct id) differs from its username."""

    def __init__(self, username: str) -> None:
        super().__init__(username)
        self.email = f"{username}@example.com"

    @property
    def identity(self) -> str:
        return f"account-{self.username}"


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        if not name:
            return None
        if conn.headers.get("x-plain"):
            return AuthCredentials(["authenticated"]), SimpleUser(name)  # no identity: username
        return AuthCredentials(["authenticated"]), AccountUser(name)


def auth_app(recorder: Recorder, **options: Any) -> Starlette:
    def view(request: Request) -> Response:
        recorder.client.capture("view")
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/", view)],
        middleware=[
            Middleware(PosthogMiddleware, client=recorder.client, **options),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
        ],
    )


def test_user_from_authentication_middleware_inside_ours(recorder: Recorder) -> None:
    client = client_for(auth_app(recorder, capture_user_email=True))
    client.get("/", headers={"x-user": "alice"})
    client.get("/")  # anonymous: AuthenticationMiddleware sets an UnauthenticatedUser
    client.get("/", headers={"x-user": "bob", "x-plain": "1"})
    alice, anonymous, bob = recorder.events("view")
    assert alice["distinct_id"] == "account-alice"
    assert alice["properties"]["email"] == "alice@example.com"
    assert anonymous["properties"]["$process_person_profile"] is False
    assert "email" not in anonymous["properties"]
    assert bob["distinct_id"] == "bob"
    assert "email" not in bob["properties"]


@pytest.mark.parametrize(
    ("precedence", "expected"), [("header", "browser"), ("user", "account-alice")]
)
def test_identity_precedence(recorder: Recorder, precedence: str, expected: str) -> None:
    client = client_for(auth_app(recorder, identity_precedence=precedence))
    client.get("/", headers={"x-user": "alice", DISTINCT: "browser"})
    assert view_event(recorder)["distinct_id"] == expected


def test_user_id_option_reads_the_scope(recorder: Recorder) -> None:
    def user_id(scope: Any, user: Any) -> str | None:
        return f"from-{scope['type']}" if user is None else None

    client_for(recording_app(recorder, user_id=user_id)).get("/")
    assert view_event(recorder)["distinct_id"] == "from-http"


def test_route_found_without_scope_route_as_on_old_starlette(recorder: Recorder) -> None:
    def view(request: Request) -> Response:
        request.scope.pop("route")  # Starlette releases before scope["route"] existed
        recorder.client.capture("view")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/other", view), Route("/orders/{oid:int}", view)])
    app.add_middleware(PosthogMiddleware, client=recorder.client)
    client_for(app).get("/orders/5", headers={DISTINCT: "old"})
    assert view_event(recorder)["properties"]["$request_route"] == "/orders/{oid:int}"


# ---------------------------------------------------------------- the adapter


def test_adapter_tracing_ids_fast_and_careful_paths() -> None:
    from posthog_integrations._asgi_adapter import ASGIAdapter

    fast = ASGIAdapter(http_scope(headers=[
        (b"host", b"example.com"),
        (b"x-posthog-distinct-id", b"d\xe9"),
        (b"x-posthog-window-id", b"w"),
    ]))
    assert fast.tracing_ids() == ("d\xe9", None, "w", None)  # latin-1
    careful = ASGIAdapter(http_scope(headers=[
        (b"X-PostHog-Distinct-Id", b"undefined"),  # upper case: the careful path
        (b"x-posthog-distinct-id", b"second"),
        (b"x-posthog-device-id", b"dev"),
        ("broken",),  # malformed: skipped
    ]))
    assert careful.tracing_ids() == (["undefined", "second"], None, None, ["dev"])


def test_adapter_reads_the_rest_when_asked() -> None:
    from posthog_integrations._asgi_adapter import ASGIAdapter

    scope = http_scope("/items", query_string=b"q=1", method="POST", scheme="https",
                       root_path="/api")
    adapter = ASGIAdapter(scope)
    assert adapter.raw is scope
    assert adapter.path == "/api/items"
    scope["root_path"] = "/api/mounted"  # a router updates the scope in place later
    assert adapter.path == "/api/items"  # the path as the middleware saw it
    assert (adapter.method, adapter.scheme, adapter.host) == ("POST", "https", "example.com")
    assert (adapter.query_string, adapter.peer_ip, adapter.url_path) == (
        "q=1", "198.51.100.8", None)


def test_uppercase_ids_sent_twice_take_the_first_usable(recorder: Recorder) -> None:
    def view(request: Request) -> Response:
        recorder.client.capture("view")
        return PlainTextResponse("ok")

    app = PosthogMiddleware(Starlette(routes=[Route("/", view)]), client=recorder.client)
    call_asgi(app, http_scope(headers=[
        (b"host", b"example.com"),
        (b"X-POSTHOG-DISTINCT-ID", b"null"),
        (b"x-posthog-distinct-id", b"real-user"),
    ]))
    assert recorder.one("view")["distinct_id"] == "real-user"
