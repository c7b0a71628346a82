"""Request scope, ids and tags of ``PosthogContextMiddleware`` under WSGI and ASGI (spec §1, §2)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

import posthog
from posthog import contexts
from posthog_integrations.django import DjangoAdapter, PosthogContextMiddleware
from tests.integrations.django.conftest import Recorder

DISTINCT = "HTTP_X_POSTHOG_DISTINCT_ID"
SESSION = "HTTP_X_POSTHOG_SESSION_ID"
WINDOW = "HTTP_X_POSTHOG_WINDOW_ID"


def test_header_ids_and_default_tags(client: Any, ph: Recorder) -> None:
    response = client.get(
        "/capture/?token=secret",
        headers={
            "X-POSTHOG-DISTINCT-ID": "  user\t-42 ",
            "X-POSTHOG-SESSION-ID": "sess-1",
            "X-POSTHOG-WINDOW-ID": "win-1",
            "User-Agent": "Mozilla/5.0 (X11)",
            "Authorization": "Bearer top-secret",
            "Cookie": "sessionid=cookie-secret",
        },
    )
    assert response.status_code == 200
    event = ph.one("view_event")
    props = event["properties"]
    assert event["distinct_id"] == "user-42"
    assert props["$session_id"] == "sess-1"
    assert props["$window_id"] == "win-1"
    assert props["$current_url"] == "http://testserver/capture/"
    assert props["$request_method"] == "GET"
    assert props["$request_path"] == "/capture/"
    assert props["$request_route"] == "/capture/"
    assert props["$user_agent"] == props["$raw_user_agent"] == "Mozilla/5.0 (X11)"
    assert props["$ip"] == "127.0.0.1"
    assert props["from"] == "view"
    text = repr(event)
    for secret in ("top-secret", "cookie-secret", "token=secret"):
        assert secret not in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\r\n", None),
        ("undefined", None),
        ("NULL", None),
        ("x" * 1500, "x" * 1000),
        ("caf\xe9", "caf\xe9"),
    ],
)
def test_distinct_id_sanitised(client: Any, ph: Recorder, value: str, expected: str | None) -> None:
    assert client.get("/capture/", **{DISTINCT: value}).status_code == 200
    event = ph.one("view_event")
    if expected is None:
        assert event["properties"]["$process_person_profile"] is False
    else:
        assert event["distinct_id"] == expected


def test_query_string_only_when_enabled(client: Any, ph: Recorder, settings: Any) -> None:
    client.get("/capture/?token=secret")
    assert ph.props("view_event")["$current_url"] == "http://testserver/capture/"
    ph.server.requests.clear()
    settings.POSTHOG_MW_CAPTURE_QUERY_STRING = True
    client.get("/capture/?token=secret")
    assert ph.props("view_event")["$current_url"] == "http://testserver/capture/?token=secret"


def test_non_ascii_path_is_percent_encoded_in_url(client: Any, ph: Recorder) -> None:
    client.get("/caf%C3%A9/")
    props = ph.props("view_event")
    assert props["$request_path"] == "/caf\xe9/"
    assert props["$current_url"] == "http://testserver/caf%C3%A9/"


def test_script_name_is_part_of_path_and_url(client: Any, ph: Recorder) -> None:
    with override_settings(FORCE_SCRIPT_NAME="/app"):
        client.get("/capture/", SCRIPT_NAME="/app")
    props = ph.props("view_event")
    assert props["$request_path"] == "/app/capture/"
    assert props["$current_url"] == "http://testserver/app/capture/"


@pytest.mark.parametrize(
    ("url", "route"),
    [
        ("/items/7/", "/items/<int:pk>/"),
        ("/articles/2024/", "/articles/(?P<year>[0-9]{4})/"),
        ("/api/legacy/abc/", "/api/legacy/(?P<slug>[a-z]+)/"),
    ],
)
def test_route_templates(client: Any, ph: Recorder, url: str, route: str) -> None:
    assert client.get(url).status_code == 200
    assert ph.props("view_event")["$request_route"] == route


def test_route_off(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_CAPTURE_ROUTE = False
    client.get("/items/7/")
    assert "$request_route" not in ph.props("view_event")


@pytest.mark.parametrize(
    ("source", "expected"),
    [(None, "203.0.113.5"), (1, "10.0.0.1"), ("peer", "127.0.0.1")],
)
def test_ip_sources(
    client: Any, ph: Recorder, settings: Any, source: object, expected: str
) -> None:
    if source is not None:
        settings.POSTHOG_MW_IP_SOURCE = source
    client.get("/capture/", HTTP_X_FORWARDED_FOR="203.0.113.5, 10.0.0.1")
    assert ph.props("view_event")["$ip"] == expected


def test_ip_invalid_entries_skipped_and_capture_ip_off(
    client: Any, ph: Recorder, settings: Any
) -> None:
    client.get("/capture/", HTTP_X_FORWARDED_FOR="unknown, 1.2.3.4:8080")
    assert ph.props("view_event")["$ip"] == "1.2.3.4"
    ph.server.requests.clear()
    client.get("/capture/", HTTP_X_FORWARDED_FOR="not-an-ip", REMOTE_ADDR="198.51.100.8")
    assert ph.props("view_event")["$ip"] == "198.51.100.8"
    ph.server.requests.clear()
    settings.POSTHOG_MW_CAPTURE_IP = False
    client.get("/capture/", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert "$ip" not in ph.props("view_event")


def test_tracing_headers_off(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_CAPTURE_TRACING_HEADERS = False
    client.get("/capture/", **{DISTINCT: "header-user", SESSION: "s1"})
    event = ph.one("view_event")
    assert event["distinct_id"] != "header-user"
    assert "$session_id" not in event["properties"]


def test_legacy_trust_setting_still_read(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_TRUST_TRACING_HEADERS = False
    with pytest.warns(DeprecationWarning):
        client.get("/capture/", **{DISTINCT: "header-user"})
    assert ph.one("view_event")["distinct_id"] != "header-user"


# ---------------------------------------------------------------- Host


def test_disallowed_host_answers_400_and_captures_nothing(
    quiet_client: Any, ph: Recorder
) -> None:
    response = quiet_client.get("/capture/", HTTP_HOST="evil.example.net")
    assert response.status_code == 400
    assert ph.events() == []


def test_disallowed_host_never_raises_from_middleware(rf: Any, ph: Recorder) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        posthog.capture("view_event")
        return HttpResponse("ok")

    request = rf.get("/capture/", HTTP_HOST="evil.example.net\r\nX: y")
    response = PosthogContextMiddleware(view)(request)
    assert response.status_code == 200
    props = ph.props("view_event")
    assert "$current_url" not in props
    assert props["$request_path"] == "/capture/"


# ---------------------------------------------------------------- hooks and filters


def test_hooks_raising_never_break_the_request(
    client: Any, ph: Recorder, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: Any) -> Any:
        raise RuntimeError("hook exploded")

    settings.POSTHOG_MW_EXTRA_PROPERTIES = explode
    settings.POSTHOG_MW_REQUEST_FILTER = explode
    settings.POSTHOG_MW_USER_ID = explode
    with caplog.at_level(logging.ERROR, logger="posthog"):
        for _ in range(2):
            assert client.get("/capture/", **{DISTINCT: "u1"}).status_code == 200
    events = ph.events("view_event")
    assert len(events) == 2
    assert all(e["properties"]["$request_path"] == "/capture/" for e in events)
    assert all(e["distinct_id"] == "u1" for e in events)
    logged = [r for r in caplog.records if "hook raised" in r.getMessage()]
    assert len(logged) == 2  # extra_properties and request_filter, once each


def test_properties_map_can_delete_and_extra_properties_add(
    client: Any, ph: Recorder, settings: Any
) -> None:
    settings.POSTHOG_MW_EXTRA_PROPERTIES = lambda request: {"tenant": request.GET.get("t")}

    def drop_agent(tags: dict[str, Any]) -> dict[str, Any]:
        tags.pop("$user_agent", None)
        return tags

    settings.POSTHOG_MW_PROPERTIES_MAP = drop_agent
    client.get("/capture/?t=acme", HTTP_USER_AGENT="agent")
    props = ph.props("view_event")
    assert props["tenant"] == "acme"
    assert "$user_agent" not in props
    assert props["$raw_user_agent"] == "agent"


def test_legacy_tag_settings_and_new_name_wins(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_EXTRA_TAGS = lambda request: {"legacy": 1}
    client.get("/capture/")
    assert ph.props("view_event")["legacy"] == 1
    ph.server.requests.clear()
    settings.POSTHOG_MW_EXTRA_PROPERTIES = None
    client.get("/capture/")
    assert "legacy" not in ph.props("view_event")


def test_request_filter_false_means_no_scope_and_no_capture(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    calls: list[str] = []

    def keep(request: HttpRequest) -> bool:
        calls.append(request.path)
        return not request.path.startswith("/boom")

    settings.POSTHOG_MW_REQUEST_FILTER = keep
    response = quiet_client.get("/boom/", **{DISTINCT: "u1"})
    assert response.status_code == 500
    assert calls == ["/boom/"]  # once, even though the view raised
    event = ph.one("before_boom")
    assert "$request_path" not in event["properties"]
    assert event["distinct_id"] != "u1"
    assert ph.events("$exception") == []


def test_exclude_paths(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_EXCLUDE_PATHS = ["/health", re.compile(r"^/items/\d+")]
    client.get("/health/")
    client.get("/items/3/")
    client.get("/capture/")
    paths = [e["properties"].get("$request_path") for e in ph.events("view_event")]
    assert paths == [None, None, "/capture/"]


def test_no_scope_leaks_between_requests(client: Any, ph: Recorder) -> None:
    client.get("/capture/", **{DISTINCT: "first", SESSION: "s-first"})
    assert contexts.current_scope() is None
    client.get("/capture/")
    first, second = ph.events("view_event")
    assert first["distinct_id"] == "first"
    assert second["distinct_id"] != "first"
    assert "$session_id" not in second["properties"]


def test_override_settings_respected_after_first_request(
    client: Any, ph: Recorder
) -> None:
    client.get("/capture/")
    assert ph.props("view_event")["$ip"] == "127.0.0.1"
    ph.server.requests.clear()
    with override_settings(POSTHOG_MW_CAPTURE_IP=False):
        client.get("/capture/")
    assert "$ip" not in ph.props("view_event")


def test_client_resolver_chooses_client_per_request(
    client: Any, ph: Recorder, settings: Any, ph_server: Any
) -> None:
    from tests.integrations.django.conftest import make_client

    tenant = make_client(ph_server, api_key="phc_tenant_b")
    try:
        settings.POSTHOG_MW_CLIENT_RESOLVER = (
            lambda request: tenant if request.GET.get("t") == "b" else None
        )
        with pytest.raises(ValueError):
            client.get("/boom/?t=b")
        tenant.flush()
        exceptions = [
            r.json() for r in ph_server.requests if r.path.startswith("/batch")
            and any(e["event"] == "$exception" for e in r.json()["batch"])
        ]
        assert [body["api_key"] for body in exceptions] == ["phc_tenant_b"]
        # posthog.capture() in the view still goes to the global client
        assert ph.one("before_boom")
    finally:
        tenant.shutdown(timeout_seconds=2)


# ---------------------------------------------------------------- ASGI / hybrid


def test_async_view_under_asgi(async_client: Any, ph: Recorder) -> None:
    response = async_to_sync(async_client.get)(
        "/async/capture/", headers={"X-POSTHOG-DISTINCT-ID": "async-user"}
    )
    assert response.status_code == 200
    event = ph.one("async_event")
    assert event["distinct_id"] == "async-user"
    assert event["properties"]["$request_route"] == "/async/capture/"
    assert event["properties"]["$current_url"] == "http://testserver/async/capture/"


def test_sync_view_under_asgi_and_mixed_stack(
    async_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "tests.integrations.django.middleware.SyncOnlyMiddleware",
    ]
    response = async_to_sync(async_client.get)(
        "/items/9/", headers={"x-posthog-distinct-id": "mixed"}
    )
    assert response.status_code == 200
    event = ph.one("view_event")
    assert event["distinct_id"] == "mixed"
    assert event["properties"]["$request_route"] == "/items/<int:pk>/"


def test_hybrid_modes() -> None:
    async def async_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse("a")

    def sync_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse("s")

    assert PosthogContextMiddleware.sync_capable and PosthogContextMiddleware.async_capable
    assert iscoroutinefunction(PosthogContextMiddleware(async_next))
    assert not iscoroutinefunction(PosthogContextMiddleware(sync_next))
    assert not hasattr(PosthogContextMiddleware, "process_view")


def test_async_hooks_are_awaited(async_client: Any, ph: Recorder, settings: Any) -> None:
    async def extra(request: HttpRequest) -> dict[str, Any]:
        return {"async_extra": request.path}

    settings.POSTHOG_MW_EXTRA_PROPERTIES = extra
    async_to_sync(async_client.get)("/async/capture/")
    assert ph.props("async_event")["async_extra"] == "/async/capture/"


def test_middleware_listed_twice_tracks_once(client: Any, ph: Recorder, settings: Any) -> None:
    settings.MIDDLEWARE = [
        "posthog_integrations.django.PosthogContextMiddleware",
        *settings.MIDDLEWARE,
    ]
    with pytest.raises(ValueError):
        client.get("/boom/", **{DISTINCT: "twice"})
    assert ph.one("$exception")["distinct_id"] == "twice"


def test_adapter_reads_headers_case_insensitively(rf: Any) -> None:
    request = rf.get("/x/", HTTP_X_POSTHOG_SESSION_ID="abc")
    adapter = DjangoAdapter(request)
    assert adapter.header("x-posthog-session-id") == ["abc"]
    assert adapter.header("x-posthog-window-id") == []
    assert adapter.route() is None
    assert adapter.user() is None


def test_posthog_cookie_fallback(client: Any, ph: Recorder, settings: Any) -> None:
    import json
    import time
    from urllib.parse import quote

    now = int(time.time() * 1000)
    value = {"distinct_id": "cookie-user", "$user_state": "identified",
             "$sesid": [now - 1000, "cookie-session", now - 5000]}
    client.cookies["ph_phc_test_posthog"] = quote(json.dumps(value))
    client.get("/capture/")  # off by default
    settings.POSTHOG_MW_READ_POSTHOG_COOKIE = True
    client.get("/capture/")
    client.get("/capture/", **{DISTINCT: "header-user"})  # a header: the cookie is ignored
    off, on, header = ph.events("view_event")
    assert off["distinct_id"] != "cookie-user"
    assert on["distinct_id"] == "cookie-user"
    assert on["properties"]["$session_id"] == "cookie-session"
    assert header["distinct_id"] == "header-user"
    assert "$session_id" not in header["properties"]
    assert "cookie-user" not in json.dumps(on["properties"])  # parsed, never stored


def test_non_client_setting_ignored(client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_CLIENT = "not-a-client"
    with pytest.raises(ValueError):
        client.get("/boom/")
    # the default client (the recorder's) got the exception
    assert ph.one("$exception")["properties"]["$request_path"] == "/boom/"


def test_adapter_tracing_ids_and_url_path(rf: Any) -> None:
    request = rf.get("/caf%C3%A9/", HTTP_X_POSTHOG_DISTINCT_ID="d", HTTP_X_POSTHOG_WINDOW_ID="w")
    adapter = DjangoAdapter(request)
    assert adapter.raw is request
    assert adapter.tracing_ids() == ("d", None, "w", None)
    assert adapter.path == "/caf\xe9/"
    assert adapter.url_path == "/caf%C3%A9/"  # build_absolute_uri's form
    assert DjangoAdapter(rf.get("/plain/")).url_path is None  # the path itself


@pytest.mark.django_db
def test_streaming_response_is_finished_when_closed(client: Any, ph: Recorder) -> None:
    from posthog_integrations.django._middleware import ATTR

    response = client.get("/stream/", HTTP_X_POSTHOG_DISTINCT_ID="s")
    rs = response.wsgi_request.__dict__[ATTR]
    assert not rs._entered and not rs._finished  # suspended: the body is still to come
    assert b"".join(response.streaming_content) == b"first,last"
    response.close()
    assert rs._finished
    assert ph.one("stream_event")["distinct_id"] == "s"
