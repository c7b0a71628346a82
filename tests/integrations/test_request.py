"""``RequestScope``: ids (§1.2-1.4), tags (§1.5, §1.6), hooks (§1.7) and lifecycle (§1.9).

A plain-object adapter drives the layer against a real client sending to a loopback server.
"""

# ruff: noqa: F811 - pytest fixtures imported from test_request_helpers are parameters here

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest

import posthog
from posthog import Client, contexts
from posthog_integrations import run_in_scope
from posthog_integrations._request import Options, RequestScope
from tests.integrations.test_request_helpers import (  # noqa: F401 - fixtures
    FakeAdapter,
    User,
    _reset_module_state,
    _shared_server,
    client,
    make_client,
    only,
    props,
    sent,
    server,
)
from tests.support.http_server import ScriptedServer

DISTINCT = "X-POSTHOG-DISTINCT-ID"
SESSION = "X-POSTHOG-SESSION-ID"
WINDOW = "X-POSTHOG-WINDOW-ID"


@contextmanager
def request(adapter: FakeAdapter, options: Options, framework: str = "fake") -> Iterator[Any]:
    rs = RequestScope.start(adapter, options, framework=framework)
    assert rs is not None
    try:
        yield rs
    finally:
        rs.exit()


def probe(client: Client, **properties: Any) -> None:
    client.capture("probe", properties=properties or None)


# ---------------------------------------------------------------- ids from headers


def test_header_ids_reach_events(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter({DISTINCT: "  user\t-42 ", SESSION: "sess-1", WINDOW: "win-1",
                           "X-POSTHOG-DEVICE-ID": "dev-1"})
    with request(adapter, Options(client=client)) as rs:
        assert rs.scope.device_id == "dev-1"
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] == "user-42"
    assert event["properties"]["$session_id"] == "sess-1"
    assert event["properties"]["$window_id"] == "win-1"
    assert "dev-1" not in json.dumps(event)  # the device id only feeds flag evaluation


def test_first_usable_duplicate_wins_and_placeholders_are_absent(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter([(DISTINCT, "undefined"), (DISTINCT, "u2"), (SESSION, "null")])
    with request(adapter, Options(client=client)) as rs:
        assert rs.scope.session_id is None
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] == "u2"
    assert "$session_id" not in event["properties"]


def test_without_any_identity_events_are_personless(client: Client, server: ScriptedServer) -> None:
    with request(FakeAdapter(), Options(client=client)):
        probe(client)
    assert only(client, server)["properties"]["$process_person_profile"] is False


def test_capture_tracing_headers_off_ignores_headers_and_uses_the_user(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter({DISTINCT: "header-id", SESSION: "s", WINDOW: "w"}, user=User(7))
    with request(adapter, Options(client=client, capture_tracing_headers=False)):
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] == "7"
    assert "$session_id" not in event["properties"]
    assert "$window_id" not in event["properties"]


def test_control_only_header_falls_back_to_the_user(client: Client, server: ScriptedServer) -> None:
    with request(FakeAdapter({DISTINCT: "\r\n"}, user=User(8)), Options(client=client)):
        probe(client)
    assert only(client, server)["distinct_id"] == "8"


@pytest.mark.parametrize(("precedence", "expected"), [("header", "header-id"), ("user", "5")])
def test_identity_precedence(
    client: Client, server: ScriptedServer, precedence: str, expected: str
) -> None:
    adapter = FakeAdapter({DISTINCT: "header-id", SESSION: "s"}, user=User(5))
    with request(adapter, Options(client=client, identity_precedence=precedence)):
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] == expected
    assert event["properties"]["$session_id"] == "s"  # the session always comes from the header


def test_user_precedence_uses_the_header_for_anonymous_requests(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter({DISTINCT: "header-id"})
    with request(adapter, Options(client=client, identity_precedence="user")):
        probe(client)
    assert only(client, server)["distinct_id"] == "header-id"


def test_header_precedence_with_header_id_does_not_ask_for_the_user(client: Client) -> None:
    adapter = FakeAdapter({DISTINCT: "h"}, user=User(1))
    calls: list[Any] = []
    opts = Options(client=client, user_id=lambda r, u: calls.append(u))
    with request(adapter, opts):
        probe(client)
    assert adapter.calls.get("user", 0) == 0
    assert calls == []


# ---------------------------------------------------------------- user_id option


def test_user_id_option_gets_request_and_user(client: Client, server: ScriptedServer) -> None:
    seen: list[tuple[object, object]] = []
    user = User(3)

    def user_id(request: object, u: object) -> int:
        seen.append((request, u))
        return 1000 + getattr(u, "pk", 0)

    adapter = FakeAdapter(user=user)
    with request(adapter, Options(client=client, user_id=user_id)):
        probe(client)
    assert only(client, server)["distinct_id"] == "1003"
    assert seen == [(adapter.raw, user)]


def test_user_id_option_is_called_without_a_user_at_start(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter({"authorization": "Bearer t"})
    opts = Options(client=client, user_id=lambda r, u: "from-token" if u is None else "x")
    with request(adapter, opts):
        probe(client)
    assert only(client, server)["distinct_id"] == "from-token"


def test_failing_user_id_option_falls_back_to_the_default(
    make_client: Callable[..., Client], server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Exception] = []
    client = make_client(on_error=lambda exc, batch: errors.append(exc))

    def boom(request: object, user: object) -> str:
        raise RuntimeError("user_id broke")

    opts = Options(client=client, user_id=boom)  # one middleware instance, two requests
    with caplog.at_level(logging.ERROR, logger="posthog"):
        for _ in range(2):
            with request(FakeAdapter(user=User(11)), opts):
                probe(client)
    assert [e["distinct_id"] for e in sent(client, server)] == ["11", "11"]
    assert sum("user_id hook raised" in r.getMessage() for r in caplog.records) == 1
    assert [str(e) for e in errors] == ["user_id broke", "user_id broke"]


# ---------------------------------------------------------------- late identity


def test_late_user_identity_is_used_once_the_user_is_loaded(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter()
    with request(adapter, Options(client=client)):
        probe(client, step=1)
        adapter.current_user = User(21)  # e.g. token auth inside the view
        probe(client, step=2)
        adapter.current_user = User(99)  # pinned: does not change again
        probe(client, step=3)
    events = sent(client, server)
    assert events[0]["properties"]["$process_person_profile"] is False
    assert [e["distinct_id"] for e in events[1:]] == ["21", "21"]


def test_late_user_wins_over_header_with_user_precedence(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter({DISTINCT: "header-id"})
    with request(adapter, Options(client=client, identity_precedence="user")):
        probe(client)
        adapter.current_user = User(4)
        probe(client)
    assert [e["distinct_id"] for e in sent(client, server)] == ["header-id", "4"]


def test_identify_context_inside_the_request_beats_late_identity(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter()
    with request(adapter, Options(client=client)):
        posthog.identify_context("explicit")
        adapter.current_user = User(1)
        probe(client)
    assert only(client, server)["distinct_id"] == "explicit"


def test_late_user_is_seen_by_nested_contexts(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter()
    with request(adapter, Options(client=client)), posthog.new_context():
        adapter.current_user = User(31)
        probe(client)
    assert only(client, server)["distinct_id"] == "31"


def test_a_raising_adapter_never_breaks_event_building(
    client: Client, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FakeAdapter):
        def user(self) -> object | None:
            raise RuntimeError("adapter bug")

        def route(self) -> str | None:
            if self.calls.get("route_ok"):
                raise RuntimeError("route bug")
            self.calls["route_ok"] = 1
            return None

    with caplog.at_level(logging.ERROR, logger="posthog"), request(
        Broken(), Options(client=client)
    ):
        probe(client)
        probe(client)
    events = sent(client, server)
    assert len(events) == 2
    assert "$request_route" not in events[0]["properties"]
    assert sum("adapter.user" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- email


def test_email_only_when_enabled_and_from_a_loaded_user(
    client: Client, server: ScriptedServer
) -> None:
    with request(FakeAdapter(user=User(1, "a@example.com")), Options(client=client)):
        probe(client, n=1)
    opts = Options(client=client, capture_user_email=True)
    with request(FakeAdapter(user=User(1, "a@example.com")), opts):
        probe(client, n=2)
    with request(FakeAdapter({DISTINCT: "h"}, user=User(1, "b@example.com")), opts):
        probe(client, n=3)
    late = FakeAdapter({DISTINCT: "h"})
    with request(late, opts):
        probe(client, n=4)
        late.current_user = User(2, "c@example.com")
        probe(client, n=5)
    emails = [e["properties"].get("email") for e in sent(client, server)]
    assert emails == [None, "a@example.com", "b@example.com", None, "c@example.com"]


# ---------------------------------------------------------------- cookie fallback


def ph_cookie(distinct: str = "cookie-user", state: str = "identified",
              last_ago_s: float = 30) -> str:
    now = int(time.time() * 1000)
    data = {"distinct_id": distinct, "$user_state": state,
            "$sesid": [now - int(last_ago_s * 1000), "cookie-session", now - 60_000]}
    return quote(json.dumps(data))


def test_cookie_fallback_without_headers(make_client: Callable[..., Client],
                                         server: ScriptedServer) -> None:
    client = make_client(project_api_key="phc_a+b/c=")
    adapter = FakeAdapter(cookies={"ph_phc_aPLbSLcEQ_posthog": ph_cookie()})
    with request(adapter, Options(client=client, read_posthog_cookie=True)):
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] == "cookie-user"
    assert event["properties"]["$session_id"] == "cookie-session"
    assert "__ph_opt_in_out_phc_a+b/c=" in adapter.asked_cookies
    assert not any("cookie-user" in str(v) for k, v in event["properties"].items()
                   if k != "distinct_id")  # parsed, never tagged


def test_cookie_is_off_by_default(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter(cookies={"ph_phc_test_posthog": ph_cookie()})
    with request(adapter, Options(client=client)):
        probe(client)
    assert adapter.calls.get("cookie", 0) == 0
    assert "$session_id" not in only(client, server)["properties"]


def test_anonymous_cookie_gives_only_the_session(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter(cookies={"ph_phc_test_posthog": ph_cookie(state="anonymous")})
    with request(adapter, Options(client=client, read_posthog_cookie=True)):
        probe(client)
    event = only(client, server)
    assert event["properties"]["$process_person_profile"] is False
    assert event["properties"]["$session_id"] == "cookie-session"


@pytest.mark.parametrize("header", [DISTINCT, SESSION])
def test_a_tracing_header_disables_the_cookie_entirely(
    client: Client, server: ScriptedServer, header: str
) -> None:
    adapter = FakeAdapter({header: "from-header"},
                          cookies={"ph_phc_test_posthog": ph_cookie()})
    with request(adapter, Options(client=client, read_posthog_cookie=True)):
        probe(client)
    event = only(client, server)
    assert event["distinct_id"] != "cookie-user"
    assert event["properties"].get("$session_id") in (None, "from-header")
    assert "cookie-session" not in json.dumps(event)


def test_cookie_consent_and_idle_timeout_options(client: Client, server: ScriptedServer) -> None:
    no = FakeAdapter(cookies={"ph_phc_test_posthog": ph_cookie(),
                              "__ph_opt_in_out_phc_test": "false"})
    with request(no, Options(client=client, read_posthog_cookie=True)):
        probe(client, n=1)
    stale = FakeAdapter(cookies={"ph_phc_test_posthog": ph_cookie(last_ago_s=120)})
    short = {"session_idle_timeout_seconds": 60}
    with request(stale, Options(client=client, read_posthog_cookie=short)):
        probe(client, n=2)
    opt_out = FakeAdapter(cookies={"ph_phc_test_posthog": ph_cookie()})
    with request(opt_out, Options(client=client,
                                  read_posthog_cookie={"opt_out_by_default": True})):
        probe(client, n=3)
    first, second, third = sent(client, server)
    assert first["properties"]["$process_person_profile"] is False
    assert "$session_id" not in first["properties"]
    assert second["distinct_id"] == "cookie-user"
    assert "$session_id" not in second["properties"]
    assert "$session_id" not in third["properties"]
    assert third["distinct_id"] != "cookie-user"


# ---------------------------------------------------------------- tags


def test_default_tags(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter(
        {"User-Agent": "  Mozilla/5.0 (X11)\r\n ", "X-Forwarded-For": "203.0.113.5, 10.0.0.1",
         "Authorization": "Bearer secret-token", "Cookie": "sessionid=cookie-secret",
         "X-Api-Key": "key-secret"},
        method="POST", path="/items/42", query_string="token=secret", route="/items/{id}",
    )
    with request(adapter, Options(client=client)):
        probe(client)
    p = props(client, server)
    assert p["$current_url"] == "https://app.example.com/items/42"
    assert p["$request_method"] == "POST"
    assert p["$request_path"] == "/items/42"
    assert p["$request_route"] == "/items/{id}"
    assert p["$ip"] == "203.0.113.5"
    assert p["$user_agent"] == p["$raw_user_agent"] == "  Mozilla/5.0 (X11) "
    text = json.dumps(p)
    for secret in ("secret-token", "cookie-secret", "key-secret", "token=secret"):
        assert secret not in text


def test_query_string_only_when_enabled_never_userinfo_or_fragment(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter(host="user:pw@app.example.com:8443", path="/p#frag",
                          query_string="token=secret#x")
    with request(adapter, Options(client=client)):
        probe(client, n=1)
    with request(adapter, Options(client=client, capture_query_string=True)):
        probe(client, n=2)
    urls = [e["properties"]["$current_url"] for e in sent(client, server)]
    assert urls == ["https://app.example.com:8443/p",
                    "https://app.example.com:8443/p?token=secret"]


def test_no_host_no_url_and_websocket_has_no_method(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter(host=None, method=None, scheme="wss")
    with request(adapter, Options(client=client)):
        probe(client)
    p = props(client, server)
    assert "$current_url" not in p
    assert "$request_method" not in p
    assert p["$request_path"] == "/items/42"


def test_ip_options(client: Client, server: ScriptedServer) -> None:
    headers = {"X-Forwarded-For": "203.0.113.5, 10.0.0.1"}
    for opts in (Options(client=client, ip_source=1), Options(client=client, ip_source="peer"),
                 Options(client=client, capture_ip=False)):
        with request(FakeAdapter(headers), opts):
            probe(client)
    assert [e["properties"].get("$ip") for e in sent(client, server)] == [
        "10.0.0.1", "198.51.100.8", None]


def test_ip_source_callable_raising_is_a_hook_failure(
    client: Client, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: object) -> str:
        raise RuntimeError("no ip")

    with caplog.at_level(logging.ERROR, logger="posthog"), request(
        FakeAdapter(), Options(client=client, ip_source=broken)
    ):
        probe(client)
    assert "$ip" not in props(client, server)
    assert "ip_source hook raised" in caplog.text


def test_caps_and_control_characters(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter({"User-Agent": "u" * 1500}, method="GET\x00" + "X" * 40,
                          path="/" + "p" * 5000, host="h.example", route="/r" + "\x07" * 3)
    with request(adapter, Options(client=client)):
        probe(client)
    p = props(client, server)
    assert p["$request_method"] == "GET" + "X" * 29
    assert len(p["$request_path"]) == 2048
    assert len(p["$current_url"]) == 4096
    assert len(p["$user_agent"]) == len(p["$raw_user_agent"]) == 1000
    assert p["$request_route"] == "/r"


def test_capture_route_off_never_asks_the_adapter(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter(route="/r")
    with request(adapter, Options(client=client, capture_route=False)):
        probe(client)
    assert "$request_route" not in props(client, server)
    assert adapter.calls.get("route", 0) == 0


def test_late_route_is_added_once_routing_ran(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter({DISTINCT: "known"})
    with request(adapter, Options(client=client)) as rs:
        probe(client, n=1)
        adapter.current_route = "/items/{id}"
        probe(client, n=2)
        calls = adapter.calls["route"]
        probe(client, n=3)
        assert adapter.calls["route"] == calls  # settled: no more adapter calls
        assert rs.scope.tags["$request_route"] == "/items/{id}"
    routes = [e["properties"].get("$request_route") for e in sent(client, server)]
    assert routes == [None, "/items/{id}", "/items/{id}"]


def test_late_route_goes_through_properties_map(client: Client, server: ScriptedServer) -> None:
    def rename(tags: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in tags.items() if k != "$request_route"}
        out["handler"] = tags.get("$request_route", "unrouted")
        return out

    adapter = FakeAdapter()
    with request(adapter, Options(client=client, properties_map=rename)):
        probe(client, n=1)
        adapter.current_route = "/late"
        probe(client, n=2)
    first, second = (e["properties"] for e in sent(client, server))
    assert first["handler"] == "unrouted"
    assert second["handler"] == "/late"
    assert "$request_route" not in second


def test_window_id_on_every_event(client: Client, server: ScriptedServer) -> None:
    with request(FakeAdapter({WINDOW: "w-1"}), Options(client=client)):
        probe(client)
        client.capture("other")
    assert [e["properties"]["$window_id"] for e in sent(client, server)] == ["w-1", "w-1"]


# ---------------------------------------------------------------- hooks


def test_extra_properties_then_properties_map_then_caps(
    client: Client, server: ScriptedServer
) -> None:
    seen: list[dict[str, Any]] = []

    def extra(request: object) -> dict[str, Any]:
        return {"tenant": "t1", "$request_path": "/overridden"}

    def mapper(tags: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(tags))
        tags = dict(tags)
        del tags["$user_agent"]
        tags["$request_method"] = "M" * 100
        return tags

    adapter = FakeAdapter({"User-Agent": "ua"})
    with request(adapter, Options(client=client, extra_properties=extra, properties_map=mapper)):
        probe(client)
    p = props(client, server)
    assert seen[0]["tenant"] == "t1" and seen[0]["$request_path"] == "/overridden"
    assert p["tenant"] == "t1"
    assert p["$request_path"] == "/overridden"
    assert "$user_agent" not in p
    assert p["$raw_user_agent"] == "ua"
    assert p["$request_method"] == "M" * 32


def test_raising_hooks_use_defaults_log_once_and_report(
    make_client: Callable[..., Client], server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Exception] = []
    client = make_client(on_error=lambda exc, batch: errors.append(exc))

    def extra(request: object) -> dict[str, Any]:
        raise ValueError("extra broke")

    def mapper(tags: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("map broke")

    def flt(request: object) -> bool:
        raise RuntimeError("filter broke")

    opts = Options(client=client, extra_properties=extra, properties_map=mapper,
                   request_filter=flt)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        for _ in range(3):
            with request(FakeAdapter({"User-Agent": "ua"}), opts):  # filter failure: tracked
                probe(client)
    events = sent(client, server)
    assert len(events) == 3
    assert all(e["properties"]["$user_agent"] == "ua" for e in events)
    for name in ("extra_properties", "properties_map", "request_filter"):
        assert sum(f"{name} hook raised" in r.getMessage() for r in caplog.records) == 1
    assert len(errors) == 9


def test_non_mapping_hook_results_are_ignored_with_a_warning(
    client: Client, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    opts = Options(client=client, extra_properties=lambda r: ["not", "a", "dict"],
                   properties_map=lambda tags: None)
    with caplog.at_level(logging.WARNING, logger="posthog"), request(FakeAdapter(), opts):
        probe(client)
    assert props(client, server)["$request_path"] == "/items/42"
    assert "extra_properties returned list" in caplog.text
    assert "properties_map returned NoneType" in caplog.text


def test_request_filter_false_opens_nothing_and_is_called_once(
    client: Client, server: ScriptedServer
) -> None:
    calls: list[object] = []

    def flt(request: object) -> bool:
        calls.append(request)
        return False

    adapter = FakeAdapter({DISTINCT: "u"})
    rs = RequestScope.start(adapter, Options(client=client, request_filter=flt), framework="f")
    assert rs is None
    assert contexts.current_scope() is None
    probe(client)
    assert calls == [adapter.raw]
    p = props(client, server)
    assert "$request_path" not in p


def test_exclude_paths_prefixes_and_regexes_skip_the_filter(client: Client) -> None:
    calls: list[object] = []
    opts = Options(client=client, exclude_paths=["/health", re.compile(r"^/static/.*\.js$")],
                   request_filter=lambda r: calls.append(r) or True)
    for path in ("/health", "/healthz", "/static/app.js"):
        assert RequestScope.start(FakeAdapter(path=path), opts, framework="f") is None
    assert calls == []
    rs = RequestScope.start(FakeAdapter(path="/static/app.css"), opts, framework="f")
    assert rs is not None
    rs.exit()
    assert len(calls) == 1


def test_sync_start_closes_async_hooks(
    client: Client, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def flt(request: object) -> bool:
        return False

    async def extra(request: object) -> dict[str, Any]:
        return {"never": True}

    with caplog.at_level(logging.WARNING, logger="posthog"), warnings.catch_warnings(
        record=True
    ) as record:
        warnings.simplefilter("always")
        with request(FakeAdapter(), Options(client=client, request_filter=flt,
                                            extra_properties=extra)):
            probe(client)
        gc.collect()
    assert "never" not in props(client, server)  # filter counted as failed: tracked
    assert not [w for w in record if "never awaited" in str(w.message)]
    assert "is async but this request is sync" in caplog.text


def test_astart_awaits_async_hooks(client: Client, server: ScriptedServer) -> None:
    async def flt(request: object) -> bool:
        return request is not skip.raw

    async def extra(request: object) -> dict[str, Any]:
        return {"tenant": "async"}

    skip = FakeAdapter(path="/skip")
    opts = Options(client=client, request_filter=flt, extra_properties=extra)

    async def main() -> None:
        assert await RequestScope.astart(skip, opts, framework="f") is None
        rs = await RequestScope.astart(FakeAdapter(), opts, framework="f")
        assert rs is not None
        try:
            probe(client)
        finally:
            rs.exit()

    asyncio.run(main())
    assert props(client, server)["tenant"] == "async"


def test_astart_accepts_sync_hooks_and_reports_async_failures(
    client: Client, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def extra(request: object) -> dict[str, Any]:
        raise ValueError("async extra broke")

    opts = Options(client=client, request_filter=lambda r: True, extra_properties=extra)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        rs = asyncio.run(RequestScope.astart(FakeAdapter(), opts, framework="f"))
    assert rs is not None
    rs.exit()
    assert "extra_properties hook raised" in caplog.text


# ---------------------------------------------------------------- lifecycle


def test_exit_restores_the_outer_scope_and_is_idempotent(client: Client) -> None:
    with posthog.new_context() as outer:
        rs = RequestScope.start(FakeAdapter(), Options(client=client), framework="f")
        assert rs is not None
        assert contexts.current_scope() is rs.scope
        assert RequestScope.current() is rs
        rs.exit()
        rs.exit()
        assert contexts.current_scope() is outer
        assert RequestScope.current() is None


def test_fresh_scope_keeps_outer_identity_out_but_copies_code_variable_overrides(
    client: Client, server: ScriptedServer
) -> None:
    with posthog.new_context():
        posthog.identify_context("outer-user")
        posthog.tag("outer_tag", 1)
        posthog.set_context_session("outer-session")
        posthog.set_capture_exception_code_variables_context(True)
        with posthog.new_context():
            posthog.set_code_variables_mask_patterns_context(["inner"])
            with request(FakeAdapter(), Options(client=client)) as rs:
                assert rs.scope.code_variable_setting("capture") is True
                assert rs.scope.code_variable_setting("mask_patterns") == ["inner"]
                assert rs.scope.parent is None
                probe(client)
    event = only(client, server)
    assert event["distinct_id"] != "outer-user"
    assert "outer_tag" not in event["properties"]
    assert "$session_id" not in event["properties"]


def test_second_start_in_the_same_request_passes_through(client: Client) -> None:
    adapter = FakeAdapter({DISTINCT: "u"})
    opts = Options(client=client)
    with request(adapter, opts) as rs:
        assert RequestScope.start(adapter, opts, framework="fake") is None
        assert contexts.current_scope() is rs.scope
        other = RequestScope.start(adapter, opts, framework="other")  # another integration
        assert other is not None
        other.exit()


def test_a_leaked_scope_never_lends_its_identity(client: Client, server: ScriptedServer) -> None:
    leaked = RequestScope.start(FakeAdapter({DISTINCT: "first", WINDOW: "w1"}),
                                Options(client=client), framework="fake")
    assert leaked is not None  # never exited (a generator that was never closed)
    with request(FakeAdapter(path="/second"), Options(client=client)):
        probe(client)
    leaked.exit()
    event = only(client, server)
    assert event["distinct_id"] != "first"
    assert "$window_id" not in event["properties"]
    assert event["properties"]["$request_path"] == "/second"


def test_exit_from_another_thread_is_safe(client: Client) -> None:
    rs = RequestScope.start(FakeAdapter(), Options(client=client), framework="f")
    assert rs is not None
    errors: list[BaseException] = []

    def leave() -> None:
        try:
            rs.exit()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=leave)
    t.start()
    t.join()
    assert errors == []
    assert rs._finished
    assert RequestScope.current() is None  # finished, though still current on this thread
    rs.exit()  # the owning thread's own exit still leaves (idempotent)
    assert not rs._entered
    assert contexts.current_scope() is None


def test_activated_reenters_for_streamed_chunks(client: Client, server: ScriptedServer) -> None:
    rs = RequestScope.start(FakeAdapter({DISTINCT: "streamer"}), Options(client=client),
                            framework="f")
    assert rs is not None
    rs_scope = rs.scope

    def chunk() -> None:
        assert contexts.current_scope() is None
        with rs.activated():
            assert contexts.current_scope() is rs_scope
            probe(client)
        assert contexts.current_scope() is None

    t = threading.Thread(target=chunk)
    t.start()
    t.join()
    rs.exit()
    assert only(client, server)["distinct_id"] == "streamer"


def test_run_in_scope_carries_the_request_into_threads(
    client: Client, server: ScriptedServer
) -> None:
    with request(FakeAdapter({DISTINCT: "threaded"}), Options(client=client)):
        worker = threading.Thread(target=run_in_scope(probe), args=(client,))
        plain = threading.Thread(target=client.capture, args=("plain",))
    worker.start()
    plain.start()
    worker.join()
    plain.join()
    events = {e["event"]: e for e in sent(client, server)}
    assert events["probe"]["distinct_id"] == "threaded"
    assert "$request_path" not in events["plain"]["properties"]


def test_client_option_forms(make_client: Callable[..., Client]) -> None:
    mine = make_client()
    tenant = make_client(project_api_key="phc_tenant")
    seen: list[object] = []

    def per_request(request: object) -> Client | None:
        seen.append(request)
        return tenant if len(seen) == 1 else None

    posthog.api_key = "phc_default"
    posthog.send = False
    with request(FakeAdapter(), Options(client=mine)) as rs:
        assert rs.client is mine
        assert rs.scope.client is mine
    with request(FakeAdapter(), Options(client=per_request)) as rs:
        assert rs.client is tenant
    with request(FakeAdapter(), Options(client=per_request)) as rs:
        assert rs.client is posthog.default_client
        assert rs.client.api_key == "phc_default"
    with request(FakeAdapter(), Options()) as rs:
        assert rs.client is posthog.default_client
    assert len(seen) == 2


def test_opentelemetry_span_gets_the_ids(monkeypatch: pytest.MonkeyPatch, client: Client) -> None:
    import sys
    import types

    class Span:
        def __init__(self, recording: bool) -> None:
            self.recording = recording
            self.attributes: dict[str, str] = {}

        def is_recording(self) -> bool:
            return self.recording

        def set_attribute(self, key: str, value: str) -> None:
            self.attributes[key] = value

    span = Span(True)
    trace = types.ModuleType("opentelemetry.trace")
    trace.get_current_span = lambda: span  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)
    with request(FakeAdapter({DISTINCT: "otel-user", SESSION: "otel-session"}),
                 Options(client=client)):
        pass
    assert span.attributes == {"posthog.distinct_id": "otel-user",
                               "posthog.session_id": "otel-session"}

    span = Span(True)
    adapter = FakeAdapter()
    with request(adapter, Options(client=client)) as rs:
        assert span.attributes == {}
        adapter.current_user = User(77)
        assert rs.scope.distinct_id == "77"
    assert span.attributes == {"posthog.distinct_id": "77"}

    span = Span(False)
    with request(FakeAdapter({DISTINCT: "x"}), Options(client=client)):
        pass
    assert span.attributes == {}


def test_importing_the_package_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, posthog_integrations, posthog.integrations, posthog_integrations._request\n"
        "bad = [m for m in ('django', 'flask', 'starlette', 'fastapi', 'werkzeug') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert posthog_integrations.run_in_scope and posthog_integrations.POSTHOG_TRACING_HEADERS"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
