"""``RequestScope.capture``: the §1.8 policy end to end, inside the request scope."""

# ruff: noqa: F811 - pytest fixtures imported from test_request_helpers are parameters here

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog_integrations._request import Options, RequestScope
from tests.integrations.test_request_helpers import (  # noqa: F401 - fixtures
    FakeAdapter,
    User,
    _reset_module_state,
    _shared_server,
    client,
    make_client,
    sent,
    server,
)
from tests.support.http_server import ScriptedServer

HEADERS = {"X-POSTHOG-DISTINCT-ID": "browser-user", "X-POSTHOG-SESSION-ID": "sess-9"}


def start(options: Options, adapter: FakeAdapter | None = None) -> RequestScope:
    rs = RequestScope.start(adapter or FakeAdapter(HEADERS), options, framework="fake")
    assert rs is not None
    return rs


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def exceptions(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    return [e for e in sent(client, server) if e["event"] == "$exception"]


def test_unhandled_exception_is_captured_inside_the_scope(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter(HEADERS, route=None)
    rs = start(Options(client=client, capture_exceptions=True), adapter)
    adapter.current_route = "/items/{id}"  # routing ran before the view raised
    uuid = rs.capture(raised(ValueError("boom")), source="fake.middleware", handled=False,
                      status=500)
    rs.exit()
    assert uuid is not None
    (event,) = exceptions(client, server)
    p = event["properties"]
    assert event["distinct_id"] == "browser-user"
    assert event["uuid"] == uuid
    assert p["$session_id"] == "sess-9"
    assert p["$request_path"] == "/items/42"
    assert p["$request_route"] == "/items/{id}"
    assert p["$response_status_code"] == 500
    assert p["$exception_source"] == "fake.middleware"
    assert p["$exception_level"] == "error"
    mechanism = p["$exception_list"][0]["mechanism"]
    assert (mechanism["type"], mechanism["handled"]) == ("middleware", False)
    assert p["$exception_list"][0]["type"] == "ValueError"


def test_handled_exceptions_follow_capture_status_codes(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    assert rs.capture(raised(LookupError("gone")), source="s", handled=True, status=404) is None
    assert rs.capture(raised(ValueError("bad")), source="s", handled=True, status=422) is None
    assert rs.capture(raised(RuntimeError("down")), source="s", handled=True,
                      status=503) is not None
    rs.exit()
    rs = start(Options(client=client, capture_exceptions=True,
                       capture_status_codes=frozenset({404})))
    assert rs.capture(raised(LookupError("gone")), source="s", handled=True,
                      status=404) is not None
    rs.exit()
    events = exceptions(client, server)
    assert [e["properties"]["$exception_list"][0]["type"] for e in events] == [
        "RuntimeError", "LookupError"]
    assert [e["properties"]["$response_status_code"] for e in events] == [503, 404]
    assert all(e["properties"]["$exception_list"][0]["mechanism"]["handled"] for e in events)


def test_one_exception_seen_by_two_hooks_is_one_event(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    exc = raised(ValueError("twice"))
    assert rs.capture(exc, source="first", handled=False, status=500) is not None
    assert rs.capture(exc, source="second", handled=False, status=500) is None
    rs.exit()
    (event,) = exceptions(client, server)
    assert event["properties"]["$exception_source"] == "first"


def test_status_falls_back_to_the_started_response(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    rs.status = 200  # headers were sent; the stream raised afterwards
    rs.capture(raised(OSError("mid-stream")), source="fake.streaming", handled=False,
               status=None)
    rs.exit()
    (event,) = exceptions(client, server)
    assert event["properties"]["$response_status_code"] == 200


def test_unknown_status_is_left_out(client: Client, server: ScriptedServer) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    rs.capture(raised(ValueError("x")), source="s", handled=False, status=None)
    rs.exit()
    (event,) = exceptions(client, server)
    assert "$response_status_code" not in event["properties"]


def test_capture_from_another_thread_or_after_exit_keeps_the_tags(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    t = threading.Thread(target=rs.capture, args=(raised(ValueError("bg")),),
                         kwargs={"source": "bg", "handled": False, "status": 200})
    t.start()
    t.join()
    rs.exit()
    rs.capture(raised(KeyError("late")), source="late", handled=False, status=500)
    events = exceptions(client, server)
    assert len(events) == 2
    assert all(e["distinct_id"] == "browser-user" for e in events)
    assert all(e["properties"]["$request_path"] == "/items/42" for e in events)


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(2), asyncio.CancelledError()]
)
def test_base_exceptions_are_never_captured(client: Client, server: ScriptedServer,
                                            exc: BaseException) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    assert rs.capture(exc, source="s", handled=False, status=500) is None
    rs.exit()
    client.capture("marker")
    assert [e["event"] for e in sent(client, server)] == ["marker"]


def test_ignored_and_framework_never_types(client: Client, server: ScriptedServer) -> None:
    class Disconnect(Exception):
        pass

    rs = start(Options(client=client, capture_exceptions=True,
                       ignored_exceptions=(PermissionError,)))
    assert rs.capture(raised(PermissionError("no")), source="s", handled=False,
                      status=500) is None
    assert rs.capture(raised(Disconnect()), source="s", handled=False, status=500,
                      never=(Disconnect,)) is None
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500,
                      never=(Disconnect,)) is not None
    rs.exit()
    assert len(exceptions(client, server)) == 1


def test_capture_exceptions_none_inherits_the_client(
    make_client: Callable[..., Client], server: ScriptedServer
) -> None:
    quiet = make_client(enable_exception_autocapture=False)
    rs = start(Options(client=quiet))
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is None
    quiet.capture("still-tagged")
    rs.exit()
    events = sent(quiet, server)
    assert [e["event"] for e in events] == ["still-tagged"]
    assert events[0]["distinct_id"] == "browser-user"
    assert events[0]["properties"]["$request_path"] == "/items/42"

    loud = make_client(enable_exception_autocapture=True)
    rs = start(Options(client=loud))
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is not None
    rs.exit()


def test_capture_exceptions_false_keeps_tags_only(client: Client, server: ScriptedServer) -> None:
    rs = start(Options(client=client, capture_exceptions=False))
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is None
    rs.exit()
    assert exceptions(client, server) == []


def test_per_request_client_gets_the_exception_global_capture_does_not(
    make_client: Callable[..., Client], server: ScriptedServer
) -> None:
    tenant_b = make_client(project_api_key="phc_tenant_b")
    posthog.api_key = "phc_global"
    posthog.host = server.url
    glob = posthog.setup()
    rs = start(Options(client=lambda request: tenant_b, capture_exceptions=True))
    posthog.capture("view-event")
    rs.capture(raised(ValueError("tenant")), source="s", handled=False, status=500)
    rs.exit()
    tenant_b.flush()
    glob.flush()
    by_key: dict[str, list[str]] = {}
    for req in server.requests:
        if req.path.startswith("/batch"):
            body = req.json()
            by_key.setdefault(body["api_key"], []).extend(e["event"] for e in body["batch"])
    assert by_key == {"phc_tenant_b": ["$exception"], "phc_global": ["view-event"]}


def test_default_client_gets_live_module_settings(server: ScriptedServer) -> None:
    posthog.api_key = "phc_module"
    posthog.host = server.url
    rs = start(Options(capture_exceptions=True))
    posthog.disabled = True  # applied by setup() at capture time
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is None
    posthog.disabled = False
    assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is not None
    rs.exit()
    assert posthog.default_client is not None
    assert len(exceptions(posthog.default_client, server)) == 1


def test_late_user_is_on_the_exception(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter()
    rs = start(Options(client=client, capture_exceptions=True), adapter)
    adapter.current_user = User(404)
    rs.capture(raised(ValueError()), source="s", handled=False, status=500)
    rs.exit()
    (event,) = exceptions(client, server)
    assert event["distinct_id"] == "404"


def test_capture_never_raises(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    class Exploding:
        api_key = "phc_x"
        enable_exception_autocapture = True

        def capture(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("not used")

        def _capture_exception(self, *args: Any, **kwargs: Any) -> str:
            raise RuntimeError("client bug")

    rs = start(Options(client=Exploding()))
    with caplog.at_level(logging.ERROR, logger="posthog"):
        assert rs.capture(raised(ValueError()), source="s", handled=False, status=500) is None
    rs.exit()
    assert "could not capture the request's exception" in caplog.text


def test_a_client_without_the_internal_channel_gets_the_public_call() -> None:
    calls: list[tuple[BaseException, dict[str, Any]]] = []

    class Foreign:
        api_key = "phc_x"
        enable_exception_autocapture = True

        def capture(self, *args: Any, **kwargs: Any) -> None:
            return None

        def capture_exception(self, exc: BaseException, **kwargs: Any) -> str:
            calls.append((exc, kwargs))
            return "uuid-1"

    rs = start(Options(client=Foreign()))
    exc = raised(ValueError())
    assert rs.capture(exc, source="src", handled=True, status=500) == "uuid-1"
    rs.exit()
    assert calls == [(exc, {"properties": {"$response_status_code": 500,
                                           "$exception_source": "src"}})]


# ---------------------------------------------------------------- explicit captures


def test_policy_false_is_an_explicit_capture(client: Client, server: ScriptedServer) -> None:
    class Disconnect(Exception):
        pass

    rs = start(Options(client=client, capture_exceptions=False))
    # the policy would refuse all three (capture_exceptions=False, a 404, handled)
    assert rs.capture(raised(LookupError("gone")), source="explicit", handled=True,
                      status=404, policy=False) is not None
    assert rs.capture(raised(Disconnect()), source="explicit", handled=True, status=404,
                      policy=False, never=(Disconnect,)) is None  # ``never`` still counts
    rs.exit()
    (event,) = exceptions(client, server)
    assert event["distinct_id"] == "browser-user"
    assert event["properties"]["$exception_source"] == "explicit"
    assert event["properties"]["$response_status_code"] == 404
    assert event["properties"]["$exception_list"][0]["mechanism"]["handled"] is True


def test_status_codes_replace_capture_status_codes_for_one_capture(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(Options(client=client, capture_exceptions=True))
    wider = {404, *range(500, 600)}
    assert rs.capture(raised(LookupError("a")), source="s", handled=True, status=404,
                      status_codes=wider) is not None
    assert rs.capture(raised(LookupError("b")), source="s", handled=True, status=404) is None
    assert rs.capture(raised(ValueError("c")), source="s", handled=True, status=503,
                      status_codes={404}) is None  # narrower too
    rs.exit()
    assert [e["properties"]["$response_status_code"] for e in exceptions(client, server)] == [
        404]


def test_client_argument_overrides_the_request_client(
    make_client: Callable[..., Client], server: ScriptedServer
) -> None:
    request_client = make_client(project_api_key="phc_request")
    other = make_client(project_api_key="phc_other")
    rs = start(Options(client=request_client, capture_exceptions=True))
    rs.capture(raised(ValueError("x")), source="s", handled=False, status=500, client=other)
    rs.exit()
    request_client.flush()
    other.flush()
    keys = [r.json()["api_key"] for r in server.requests if r.path.startswith("/batch")]
    assert keys == ["phc_other"]
    (event,) = [e for e in server.events() if e["event"] == "$exception"]
    assert event["distinct_id"] == "browser-user"  # still inside the request's scope


def test_module_capture_handled_inside_and_outside_a_request(
    client: Client, server: ScriptedServer
) -> None:
    from posthog_integrations._request import capture_handled

    posthog.default_client = client
    rs = start(Options(client=client, capture_exceptions=False))
    rs.status = 418
    assert capture_handled(raised(KeyError("in")), source="fw.handled") is not None
    rs.exit()
    assert capture_handled(raised(KeyError("out")), source="fw.handled", status=400) is not None
    inside, outside = exceptions(client, server)
    assert inside["distinct_id"] == "browser-user"
    assert inside["properties"]["$response_status_code"] == 418  # the started response's
    assert outside["properties"]["$process_person_profile"] is False
    assert outside["properties"]["$response_status_code"] == 400
    assert {e["properties"]["$exception_source"] for e in (inside, outside)} == {"fw.handled"}


def test_module_capture_handled_never_raises(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posthog_integrations._request import capture_handled

    def broken() -> Any:
        raise RuntimeError("no client")

    monkeypatch.setattr(posthog, "setup", broken)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        assert capture_handled(ValueError(), source="s") is None
    assert "capture_handled failed" in caplog.text
