"""The extension object: factories, config keys, per-app state, guards, filters (spec §3.1-§3.2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import posthog
from posthog_integrations._request import Options
from posthog_integrations.flask import PostHog, PosthogFlaskIntegration
from tests.integrations.flask.conftest import DISTINCT, Recorder, add_routes
from tests.support.http_server import ScriptedServer


def test_app_factory_with_init_app_and_config_keys(
    client: posthog.Client, recorder: Recorder
) -> None:
    extension = PostHog(client=client)

    def create_app() -> Flask:
        app = Flask("factory")
        app.config.update(
            POSTHOG_CAPTURE_QUERY_STRING=True,
            POSTHOG_IP_SOURCE="peer",
            POSTHOG_CAPTURE_EXCEPTIONS=True,
            POSTHOG_CAPTURE_STATUS_CODES=[599],
            POSTHOG_EXCLUDE_PATHS=["/health"],
            POSTHOG_PERSONAL_API_KEY="phx_not_an_option",  # other POSTHOG_ keys: left alone
        )
        add_routes(app, client)
        extension.init_app(app)
        return app

    app = create_app()
    state = app.extensions["posthog"]
    assert state.extension is extension
    assert isinstance(state.options, Options)
    assert state.options.capture_status_codes == [599]
    assert state.options.client is client
    app.test_client().get(
        "/event?x=1",
        headers={"X-Forwarded-For": "203.0.113.5"},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert app.test_client().get("/boom").status_code == 500
    props = recorder.one("view_event")["properties"]
    assert props["$current_url"] == "http://localhost/event?x=1"
    assert props["$ip"] == "192.0.2.9"
    assert len(recorder.exceptions()) == 1


def test_keyword_beats_config_beats_default(client: posthog.Client, recorder: Recorder) -> None:
    app = Flask("precedence")
    app.config["POSTHOG_CAPTURE_EXCEPTIONS"] = False
    app.config["POSTHOG_CAPTURE_IP"] = False
    add_routes(app, client)
    PostHog(app, client=client, capture_exceptions=True)
    options = app.extensions["posthog"].options
    assert options.capture_exceptions is True  # keyword
    assert options.capture_ip is False  # config
    assert options.capture_route is True  # default
    assert app.test_client().get("/boom").status_code == 500
    assert len(recorder.exceptions()) == 1
    assert "$ip" not in recorder.one("before_boom")["properties"]


def test_config_hooks_and_trust_tracing_headers_alias(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("config-hooks")
    app.config["POSTHOG_EXTRA_PROPERTIES"] = lambda req: {"endpoint": req.endpoint}
    app.config["POSTHOG_TRUST_TRACING_HEADERS"] = False
    add_routes(app, client)
    with pytest.warns(DeprecationWarning):
        PostHog(app, client=client)
    app.test_client().get("/event", headers={DISTINCT: "ignored"})
    event = recorder.one("view_event")
    assert event["properties"]["endpoint"] == "event"
    assert event["distinct_id"] != "ignored"


def test_api_key_and_host_config_set_up_the_module_client(server: ScriptedServer) -> None:
    posthog.default_client = None
    posthog.api_key = None  # type: ignore[assignment]
    app = Flask("module-client")
    app.config.update(
        POSTHOG_API_KEY="phc_from_config", POSTHOG_HOST=server.url, POSTHOG_CAPTURE_EXCEPTIONS=True
    )

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("module boom")

    PostHog(app)
    assert app.test_client().get("/boom", headers={DISTINCT: "m"}).status_code == 500
    module_client = posthog.default_client
    assert module_client is not None
    assert module_client.api_key == "phc_from_config"
    module_client.flush()
    [event] = [e for e in server.events() if e["event"] == "$exception"]
    assert event["distinct_id"] == "m"
    assert server.requests[-1].json()["api_key"] == "phc_from_config"


def test_api_key_config_ignored_with_an_explicit_client(client: posthog.Client) -> None:
    posthog.api_key = None  # type: ignore[assignment]
    app = Flask("explicit")
    app.config["POSTHOG_API_KEY"] = "phc_ignored"
    PostHog(app, client=client)
    assert posthog.api_key is None


def test_init_app_twice_raises_and_one_extension_serves_two_apps(
    client: posthog.Client, recorder: Recorder
) -> None:
    extension = PostHog(client=client)
    first, second = Flask("first"), Flask("second")
    first.config["POSTHOG_CAPTURE_QUERY_STRING"] = True
    for app in (first, second):
        add_routes(app, client)
        extension.init_app(app)
    with pytest.raises(RuntimeError, match="already"):
        extension.init_app(first)
    with pytest.raises(RuntimeError):
        PostHog(second, client=client)
    assert first.extensions["posthog"] is not second.extensions["posthog"]
    first.test_client().get("/event?q=1", headers={DISTINCT: "one"})
    second.test_client().get("/event?q=1", headers={DISTINCT: "two"})
    urls = {e["distinct_id"]: e["properties"]["$current_url"] for e in recorder.events()}
    assert urls == {"one": "http://localhost/event?q=1", "two": "http://localhost/event"}


def test_nested_instrumented_apps_open_one_scope_and_capture_once(
    client: posthog.Client, recorder: Recorder
) -> None:
    inner = Flask("inner")
    add_routes(inner, client)
    PostHog(inner, client=client, capture_exceptions=True)
    outer = Flask("outer")
    outer.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        outer.wsgi_app, {"/inner": inner}
    )
    PostHog(outer, client=client, capture_exceptions=True)
    test_client = outer.test_client()
    assert test_client.get("/inner/boom", headers={DISTINCT: "nested"}).status_code == 500
    assert test_client.get("/inner/event", headers={DISTINCT: "nested"}).status_code == 200
    [event] = recorder.exceptions()
    assert event["distinct_id"] == "nested"
    assert event["properties"]["$request_path"] == "/inner/boom"
    assert event["properties"]["$request_route"] == "/boom"
    view = recorder.one("view_event")
    assert view["properties"]["$current_url"] == "http://localhost/inner/event"


def test_sub_request_to_another_app_gets_its_own_scope_then_the_outer_one_is_back(
    client: posthog.Client, recorder: Recorder
) -> None:
    inner = Flask("inner")
    add_routes(inner, client)
    PostHog(inner, client=client)
    outer = Flask("outer")

    @outer.get("/proxy")
    def proxy() -> str:
        client.capture("outer_before")
        inner.test_client().get("/event", headers={DISTINCT: "inner-user"})
        client.capture("outer_after")
        return "ok"

    PostHog(outer, client=client)
    outer.test_client().get("/proxy", headers={DISTINCT: "outer-user"})
    ids = {e["event"]: e["distinct_id"] for e in recorder.events()}
    assert ids == {
        "outer_before": "outer-user",
        "view_event": "inner-user",
        "outer_after": "outer-user",
    }
    assert recorder.one("outer_after")["properties"]["$request_route"] == "/proxy"


def test_same_app_wrapped_twice_opens_one_scope(
    client: posthog.Client, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posthog_integrations import flask as ext_module

    app = Flask("twice")
    add_routes(app, client)
    PostHog(app, client=client, capture_exceptions=True)
    wrapper_type = type(app.wsgi_app)
    app.wsgi_app = wrapper_type(app.wsgi_app, app.extensions["posthog"])  # type: ignore[call-arg,method-assign]
    flights: list[Any] = []
    real_flight = ext_module._Flight

    def counting_flight(state: Any) -> Any:
        flights.append(state)
        return real_flight(state)

    monkeypatch.setattr(ext_module, "_Flight", counting_flight)
    assert app.test_client().get("/boom", headers={DISTINCT: "twice"}).status_code == 500
    assert app.test_client().get("/stream", headers={DISTINCT: "twice"}).data == b"ab"
    assert len(flights) == 2  # one per request, not one per wrapper
    assert len(recorder.exceptions()) == 1
    assert recorder.one("streamed_event")["distinct_id"] == "twice"


def test_request_filter_sees_the_endpoint_and_runs_once(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    calls: list[Any] = []

    def request_filter(req: Any) -> bool:
        calls.append(req.endpoint)
        return req.endpoint != "boom"

    app = make_app(request_filter=request_filter)
    test_client = app.test_client()
    assert test_client.get("/boom", headers={DISTINCT: "filtered"}).status_code == 500
    assert test_client.get("/event", headers={DISTINCT: "kept"}).status_code == 200
    assert calls == ["boom", "event"]
    assert recorder.exceptions() == []
    rejected = recorder.one("before_boom")
    assert rejected["distinct_id"] != "filtered"
    assert "$request_path" not in rejected["properties"]
    assert recorder.one("view_event")["distinct_id"] == "kept"


def test_request_filter_rejecting_a_stream_leaves_it_untouched(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(request_filter=lambda req: False)
    response = app.test_client().get("/stream-error", headers={DISTINCT: "f"})
    with pytest.raises(RuntimeError):
        response.get_data()
    assert recorder.exceptions() == []


def test_raising_request_filter_counts_as_track(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    def request_filter(req: Any) -> bool:
        raise RuntimeError("filter broken")

    app = make_app(request_filter=request_filter)
    assert app.test_client().get("/boom", headers={DISTINCT: "u"}).status_code == 500
    assert recorder.one("$exception")["distinct_id"] == "u"


def test_per_request_client_callable(
    make_recorder: Callable[..., Recorder], server: ScriptedServer
) -> None:
    tenant_a, tenant_b = make_recorder(api_key="phc_a"), make_recorder(api_key="phc_b")
    app = Flask("tenants")

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("tenant boom")

    def pick(req: Any) -> posthog.Client:
        return tenant_b.client if req.headers.get("X-Tenant") == "b" else tenant_a.client

    PostHog(app, client=pick, capture_exceptions=True)
    app.test_client().get("/boom", headers={"X-Tenant": "b"})
    app.test_client().get("/boom")
    tenant_a.client.flush()
    tenant_b.client.flush()
    batches = [r.json() for r in server.requests if r.path.startswith("/batch")]
    sent = sorted((b["api_key"], e["event"]) for b in batches for e in b["batch"])
    assert sent == [("phc_a", "$exception"), ("phc_b", "$exception")]


def test_view_can_still_read_request_and_scope_ids(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("scope-read")

    @app.get("/")
    def index() -> str:
        scope = posthog.contexts.current_scope()
        assert scope is not None
        return f"{scope.distinct_id}|{request.path}"

    PostHog(app, client=client)
    assert app.test_client().get("/", headers={DISTINCT: "reader"}).data == b"reader|/"


def test_unknown_keyword_option_is_a_type_error(client: posthog.Client) -> None:
    with pytest.raises(TypeError, match="capture_exception"):
        PostHog(client=client, capture_exception=True)


def test_drop_in_import_path() -> None:
    from posthog.integrations.flask import PosthogFlaskIntegration as DropIn

    assert DropIn is PostHog is PosthogFlaskIntegration


def test_import_without_flask_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["flask"] = None
        try:
            import posthog_integrations.flask
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        import posthog, posthog_integrations
        print("core ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "pip install 'posthog-integrations[flask]'" in result.stdout
    assert "core ok" in result.stdout


def test_options_are_flask_options_with_capture_handled_errors(
    client: posthog.Client,
) -> None:
    from posthog_integrations.flask import FlaskOptions

    app = Flask("flask-options")
    app.config["POSTHOG_CAPTURE_HANDLED_ERRORS"] = True
    PostHog(app, client=client, capture_ip=False)
    state = app.extensions["posthog"]
    assert isinstance(state.options, FlaskOptions)
    assert state.options.capture_handled_errors is True
    assert state.capture_handled_errors is True
    assert state.options.capture_ip is False
    with pytest.raises(TypeError, match="capture_handled_error"):
        PostHog(client=client, capture_handled_error=True)  # a typo is refused


def test_deprecated_alias_warning_names_the_users_line(client: posthog.Client) -> None:
    app = Flask("alias-line")
    with pytest.warns(DeprecationWarning) as record:
        line = sys._getframe().f_lineno + 1
        PostHog(app, client=client, trust_tracing_headers=True)
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    extension = PostHog(client=client, trust_tracing_headers=True)
    with pytest.warns(DeprecationWarning) as record:
        line = sys._getframe().f_lineno + 1
        extension.init_app(Flask("alias-line-2"))
    assert (record[0].filename, record[0].lineno) == (__file__, line)


def test_adapter_reads_the_four_ids_in_one_call() -> None:
    from posthog_integrations._flask_adapter import WSGIAdapter

    environ = {"HTTP_X_POSTHOG_DISTINCT_ID": "d", "HTTP_X_POSTHOG_DEVICE_ID": "v",
               "PATH_INFO": "/p", "REQUEST_METHOD": "get", "wsgi.url_scheme": "https",
               "HTTP_HOST": "Example.COM:443"}
    adapter = WSGIAdapter(environ)
    assert adapter.tracing_ids() == ("d", None, None, "v")
    assert adapter.raw is environ  # no Flask request: hooks get the environ
    assert (adapter.method, adapter.scheme, adapter.host, adapter.path) == (
        "GET", "https", "example.com", "/p")
    assert adapter.url_path is None
