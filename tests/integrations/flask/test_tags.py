"""Request tags: URL, path, route, user agent, ``$ip`` and the tag hooks (spec §1.5-§1.7)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import posthog
from posthog_integrations.flask import PostHog
from tests.integrations.flask.conftest import DISTINCT, Recorder


def view_props(recorder: Recorder) -> dict[str, Any]:
    return recorder.one("view_event")["properties"]  # type: ignore[no-any-return]


def test_default_tags(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app()
    app.test_client().get(
        "/items/7?token=secret", headers={"User-Agent": "Mozilla/5.0 (X11)", DISTINCT: "u"}
    )
    props = recorder.one("item_event")["properties"]
    assert props["$current_url"] == "http://localhost/items/7"
    assert props["$request_method"] == "GET"
    assert props["$request_path"] == "/items/7"
    assert props["$request_route"] == "/items/<int:item_id>"
    assert props["$user_agent"] == props["$raw_user_agent"] == "Mozilla/5.0 (X11)"
    assert props["$ip"] == "127.0.0.1"
    assert "secret" not in repr(props)


def test_query_string_only_when_enabled(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app(capture_query_string=True)
    app.test_client().get("/event?token=secret&a=1")
    assert view_props(recorder)["$current_url"] == "http://localhost/event?token=secret&a=1"


def test_script_name_is_part_of_path_and_url(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.test_client().get("/items/3", base_url="https://example.com/mount/")
    props = recorder.one("item_event")["properties"]
    assert props["$request_path"] == "/mount/items/3"
    assert props["$current_url"] == "https://example.com/mount/items/3"
    assert props["$request_route"] == "/items/<int:item_id>"


def test_url_keeps_werkzeug_form_unicode_path_and_idn_host(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.get("/caf\xe9")
    def cafe() -> str:
        client.capture("cafe_event")
        return "ok"

    app.test_client().get("/caf%C3%A9", headers={"Host": "XN--bcher-kva.Example:8080"})
    props = recorder.one("cafe_event")["properties"]
    assert props["$current_url"] == "http://bücher.example:8080/café"
    assert props["$request_path"] == "/café"


@pytest.mark.parametrize(
    "host", ["evil.com/path?x=1", "a b", "user@evil.com", "h\x01st", "ex.com:99999", "[zz]"]
)
def test_hostile_host_gives_no_url_and_no_error(
    make_app: Callable[..., Flask], recorder: Recorder, host: str
) -> None:
    app = make_app()
    response = app.test_client().get("/event", environ_overrides={"HTTP_HOST": host})
    assert response.status_code == 200
    props = view_props(recorder)
    assert "$current_url" not in props
    assert props["$request_path"] == "/event"


def test_untrusted_host_under_trusted_hosts_gives_no_url(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.config["TRUSTED_HOSTS"] = ["example.com"]

    @app.errorhandler(400)
    def bad_request(e: Exception) -> tuple[str, int]:
        client.capture("bad_host")
        return "bad host", 400

    test_client = app.test_client()
    assert test_client.get("/event", headers={"Host": "evil.com"}).status_code == 400
    assert test_client.get("/event", headers={"Host": "example.com"}).status_code == 200
    assert "$current_url" not in recorder.one("bad_host")["properties"]
    assert recorder.one("view_event")["properties"]["$current_url"] == "http://example.com/event"
    assert recorder.exceptions() == []


def test_default_port_dropped_and_server_name_fallback(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    test_client = app.test_client()
    test_client.get("/event", headers={"Host": "Example.COM:443"}, base_url="https://x/")
    test_client.get(
        "/event",
        environ_overrides={"HTTP_HOST": "", "SERVER_NAME": "internal", "SERVER_PORT": "8000"},
    )
    urls = [e["properties"]["$current_url"] for e in recorder.events("view_event")]
    assert urls == ["https://example.com/event", "http://internal:8000/event"]


def test_no_route_tag_on_404_or_405(
    client: posthog.Client, make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(e: Exception) -> tuple[str, int]:
        client.capture("error_page")
        return "no", getattr(e, "code", 500)

    test_client = app.test_client()
    assert test_client.get("/missing").status_code == 404
    assert test_client.post("/event").status_code == 405
    events = recorder.events("error_page")
    assert [e["properties"]["$request_path"] for e in events] == ["/missing", "/event"]
    assert all("$request_route" not in e["properties"] for e in events)
    assert recorder.exceptions() == []


def test_capture_route_false(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app(capture_route=False)
    app.test_client().get("/items/1")
    assert "$request_route" not in recorder.one("item_event")["properties"]


# ---------------------------------------------------------------- $ip


@pytest.mark.parametrize(
    ("ip_source", "forwarded", "expected"),
    [
        ("forwarded", "203.0.113.5, 10.0.0.1", "203.0.113.5"),
        (1, "203.0.113.5, 10.0.0.1", "10.0.0.1"),
        (2, "203.0.113.5, 10.0.0.1", "203.0.113.5"),
        (3, "203.0.113.5, 10.0.0.1", "198.51.100.8"),  # fewer entries than proxies: peer
        ("peer", "203.0.113.5, 10.0.0.1", "198.51.100.8"),
        ("forwarded", "unknown, 1.2.3.4:8080", "1.2.3.4"),
        ("forwarded", "not-an-ip", "198.51.100.8"),
        ("forwarded", "[2001:db8::1]:443", "2001:db8::1"),
    ],
)
def test_ip_sources(
    make_app: Callable[..., Flask],
    recorder: Recorder,
    ip_source: Any,
    forwarded: str,
    expected: str,
) -> None:
    app = make_app(ip_source=ip_source)
    app.test_client().get(
        "/event",
        headers={"X-Forwarded-For": forwarded},
        environ_base={"REMOTE_ADDR": "198.51.100.8"},
    )
    assert view_props(recorder)["$ip"] == expected


def test_real_ip_header_when_no_forwarded_for(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.test_client().get("/event", headers={"X-Real-IP": "192.0.2.44"})
    assert view_props(recorder)["$ip"] == "192.0.2.44"


def test_spoofed_forwarded_for(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    # The client wrote "6.6.6.6"; the one proxy we run appended the real address.
    app = make_app(ip_source=1)
    app.test_client().get(
        "/event",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert view_props(recorder)["$ip"] == "203.0.113.9"


@pytest.mark.parametrize("proxyfix_first", [True, False])
def test_proxyfix_peer_either_side_of_the_extension(
    client: posthog.Client, recorder: Recorder, proxyfix_first: bool
) -> None:
    app = Flask("proxied")

    @app.get("/")
    def index() -> str:
        client.capture("view_event")
        return "ok"

    if proxyfix_first:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
        PostHog(app, client=client, ip_source="peer")
    else:
        PostHog(app, client=client, ip_source="peer")
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.test_client().get(
        "/",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert view_props(recorder)["$ip"] == "203.0.113.9"


def test_ip_source_callable_gets_the_flask_request(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(ip_source=lambda req: req.headers.get("CF-Connecting-IP"))
    app.test_client().get("/event", headers={"CF-Connecting-IP": "192.0.2.1"})
    assert view_props(recorder)["$ip"] == "192.0.2.1"


def test_capture_ip_false(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app(capture_ip=False)
    app.test_client().get("/event", headers={"X-Forwarded-For": "203.0.113.5"})
    assert "$ip" not in view_props(recorder)


# ---------------------------------------------------------------- hooks


def test_extra_properties_and_properties_map(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    seen: list[Any] = []

    def extra(req: Any) -> dict[str, Any]:
        seen.append(req.endpoint)
        return {"tenant": req.headers.get("X-Tenant"), "$request_method": "OVERRIDDEN"}

    def mapper(tags: dict[str, Any]) -> dict[str, Any]:
        tags.pop("$user_agent", None)
        return tags

    app = make_app(extra_properties=extra, properties_map=mapper)
    app.test_client().get("/items/2", headers={"X-Tenant": "acme", "User-Agent": "UA"})
    props = recorder.one("item_event")["properties"]
    assert seen == ["item"]  # hooks run once the URL is matched
    assert props["tenant"] == "acme"
    assert props["$request_method"] == "OVERRIDDEN"
    assert "$user_agent" not in props
    assert props["$raw_user_agent"] == "UA"
    assert props["$request_route"] == "/items/<int:item_id>"


@pytest.mark.parametrize("hook", ["extra_properties", "properties_map", "user_id", "ip_source"])
def test_raising_hook_keeps_the_request_and_default_tags(
    make_app: Callable[..., Flask],
    recorder: Recorder,
    posthog_logs: pytest.LogCaptureFixture,
    hook: str,
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError(f"{hook} is broken")

    app = make_app(**{hook: broken})
    test_client = app.test_client()
    # user_id is only asked when no header id is there
    headers = {"User-Agent": "UA"} if hook == "user_id" else {DISTINCT: "u", "User-Agent": "UA"}
    for _ in range(2):
        assert test_client.get("/event", headers=headers).status_code == 200
    events = recorder.events("view_event")
    assert len(events) == 2
    for event in events:
        assert event["distinct_id"] == headers.get(DISTINCT, event["distinct_id"])
        assert event["properties"]["$request_path"] == "/event"
        assert event["properties"]["$user_agent"] == "UA"
    errors = [r for r in posthog_logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once per hook
    assert f"{hook} is broken" in repr(errors[0].exc_info)


def test_exclude_paths_prefix_and_regex(make_app: Callable[..., Flask], recorder: Recorder) -> None:
    app = make_app(exclude_paths=["/items", re.compile(r"^/ev")])
    test_client = app.test_client()
    test_client.get("/items/1", headers={DISTINCT: "u"})
    test_client.get("/event", headers={DISTINCT: "u"})
    assert test_client.get("/boom", headers={DISTINCT: "u"}).status_code == 500
    for event in recorder.events("item_event") + recorder.events("view_event"):
        assert event["distinct_id"] != "u"
        assert "$request_path" not in event["properties"]
    assert len(recorder.exceptions()) == 1  # /boom is not excluded
