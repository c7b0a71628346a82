"""Ids from tracing headers, their sanitising, and Flask-Login users (spec §1.2-§1.4, §3.5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user

import posthog
from posthog_integrations.flask import PostHog
from tests.integrations.flask.conftest import DISTINCT, SESSION, WINDOW, Recorder

SESSION_ID = "0190b6f4-6a8e-7b2c-9d1e-2f3a4b5c6d7e"
WINDOW_ID = "0190b6f4-6a8e-7b2c-9d1e-aaaaaaaaaaaa"


def is_personless(event: dict[str, Any]) -> bool:
    return event["properties"].get("$process_person_profile") is False


# ---------------------------------------------------------------- headers -> ids


def test_header_ids_reach_events_captured_in_the_view(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    headers = {DISTINCT: "user-42", SESSION: SESSION_ID, WINDOW: WINDOW_ID}
    assert app.test_client().get("/event", headers=headers).status_code == 200
    event = recorder.one("view_event")
    assert event["distinct_id"] == "user-42"
    assert event["properties"]["$session_id"] == SESSION_ID
    assert event["properties"]["$window_id"] == WINDOW_ID


def test_lower_case_header_names_are_read(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.test_client().get(
        "/event", headers={"x-posthog-distinct-id": "lower", "x-posthog-session-id": SESSION_ID}
    )
    event = recorder.one("view_event")
    assert event["distinct_id"] == "lower"
    assert event["properties"]["$session_id"] == SESSION_ID


def test_ids_reach_before_request_registered_before_the_extension(
    client: posthog.Client, recorder: Recorder
) -> None:
    app = Flask("before")

    @app.before_request
    def early() -> None:
        client.capture("before_request_event")

    @app.get("/")
    def index() -> str:
        return "ok"

    PostHog(app, client=client)
    app.test_client().get("/", headers={DISTINCT: "early-user", SESSION: SESSION_ID})
    event = recorder.one("before_request_event")
    assert event["distinct_id"] == "early-user"
    assert event["properties"]["$session_id"] == SESSION_ID
    assert event["properties"]["$request_route"] == "/"


def test_ids_and_tags_reach_teardown(client: posthog.Client, recorder: Recorder) -> None:
    app = Flask("teardown")

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.teardown_request
    def down(exc: BaseException | None) -> None:
        client.capture("teardown_event")

    PostHog(app, client=client)
    app.test_client().get("/", headers={DISTINCT: "td-user"})
    event = recorder.one("teardown_event")
    assert event["distinct_id"] == "td-user"
    assert event["properties"]["$request_path"] == "/"


def test_capture_tracing_headers_false_ignores_headers(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app(capture_tracing_headers=False)
    app.test_client().get("/event", headers={DISTINCT: "ignored", SESSION: SESSION_ID})
    event = recorder.one("view_event")
    assert event["distinct_id"] != "ignored"
    assert is_personless(event)
    assert "$session_id" not in event["properties"]


# ---------------------------------------------------------------- sanitising


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  user\t-42 ", "user-42"),
        ("user\x00\x1f\x7f\x85-1", "user-1"),
        ("x" * 1500, "x" * 1000),
        ("caf\xe9", "café"),  # PEP 3333: environ strings are latin-1
        (b"caf\xe9", "café"),  # a server handing bytes: decoded latin-1, nothing raises
        ("u1, u2", "u1, u2"),  # the WSGI server joined two header lines: used as-is
    ],
)
def test_distinct_id_header_is_sanitised(
    make_app: Callable[..., Flask], recorder: Recorder, raw: Any, expected: str
) -> None:
    app = make_app()
    response = app.test_client().get(
        "/event", environ_overrides={"HTTP_X_POSTHOG_DISTINCT_ID": raw}
    )
    assert response.status_code == 200
    assert recorder.one("view_event")["distinct_id"] == expected


@pytest.mark.parametrize("raw", ["\r\n", "", "   ", "undefined", "NULL", "None", 42, None])
def test_unusable_distinct_id_is_absent(
    make_app: Callable[..., Flask], recorder: Recorder, raw: Any
) -> None:
    app = make_app()
    response = app.test_client().get(
        "/event", environ_overrides={"HTTP_X_POSTHOG_DISTINCT_ID": raw}
    )
    assert response.status_code == 200
    event = recorder.one("view_event")
    assert is_personless(event)
    assert event["distinct_id"] not in ("undefined", "NULL", "None", "42")


def test_junk_in_every_read_header_never_breaks_the_request(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    junk = {
        "HTTP_X_POSTHOG_DISTINCT_ID": "\x00" * 5000,
        "HTTP_X_POSTHOG_SESSION_ID": b"\xff\xfe",
        "HTTP_X_POSTHOG_WINDOW_ID": 12.5,
        "HTTP_X_POSTHOG_DEVICE_ID": object(),
        "HTTP_USER_AGENT": "agent\x00\x07 with controls" + "y" * 3000,
        "HTTP_X_FORWARDED_FOR": "\x00, ,,:::, [zz]:1",
        "HTTP_X_REAL_IP": b"\xff",
        "HTTP_COOKIE": "\x00=\x00; ;;=",
        "HTTP_HOST": "\x00\xff",
        "PATH_INFO": "/event",
        "QUERY_STRING": "\xff\x00",
    }
    assert app.test_client().get("/event", environ_overrides=junk).status_code == 200
    props = recorder.one("view_event")["properties"]
    assert props["$user_agent"].startswith("agent with controls")
    assert len(props["$user_agent"]) == 1000
    assert props["$raw_user_agent"] == props["$user_agent"]
    assert props["$session_id"] == "ÿþ"
    assert "$window_id" not in props
    assert "$current_url" not in props
    assert props["$ip"] == "127.0.0.1"


def test_session_and_window_ids_are_sanitised(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.test_client().get(
        "/event",
        environ_overrides={
            "HTTP_X_POSTHOG_SESSION_ID": " s\n1 ",
            "HTTP_X_POSTHOG_WINDOW_ID": "undefined",
        },
    )
    props = recorder.one("view_event")["properties"]
    assert props["$session_id"] == "s1"
    assert "$window_id" not in props


def test_authorization_and_cookie_values_never_become_properties(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    app = make_app()
    app.test_client().get(
        "/boom",
        headers={
            "Authorization": "Bearer secret-token-value",
            "Cookie": "sessionid=secret-cookie-value",
            "X-Api-Key": "secret-api-key",
            DISTINCT: "u",
        },
    )
    for event in recorder.events():
        dumped = repr(event)
        for secret in ("secret-token-value", "secret-cookie-value", "secret-api-key"):
            assert secret not in dumped


# ---------------------------------------------------------------- posthog-js cookie


def test_identified_posthog_cookie_is_read_when_enabled(
    make_app: Callable[..., Flask], recorder: Recorder
) -> None:
    import json
    import time
    from urllib.parse import quote

    now = int(time.time() * 1000)
    value = quote(
        json.dumps(
            {
                "distinct_id": "cookie-user",
                "$user_state": "identified",
                "$sesid": [now - 1000, SESSION_ID, now - 60_000],
            }
        )
    )
    app = make_app(read_posthog_cookie=True)
    test_client = app.test_client()
    test_client.set_cookie("ph_phc_test_posthog", value)
    test_client.get("/event")
    event = recorder.one("view_event")
    assert event["distinct_id"] == "cookie-user"
    assert event["properties"]["$session_id"] == SESSION_ID
    assert "cookie" not in repr(event["properties"]).lower().replace("cookie-user", "")


# ---------------------------------------------------------------- Flask-Login


class User(UserMixin):
    def __init__(self, user_id: str, email: str) -> None:
        self.id = user_id
        self.email = email


@pytest.fixture
def login_app(client: posthog.Client) -> Callable[..., tuple[Flask, list[str]]]:
    """An app whose users log in with an ``X-User`` header; returns it and the loader calls."""

    def make(**options: Any) -> tuple[Flask, list[str]]:
        app = Flask("login")
        app.secret_key = "test"
        manager = LoginManager(app)
        loads: list[str] = []

        @manager.request_loader
        def load(req: Any) -> User | None:
            name = req.headers.get("X-User")
            loads.append(str(name))
            return User(name, f"{name}@example.com") if name else None

        @app.get("/touches-user")
        def touches_user() -> str:
            assert current_user.is_authenticated == bool(request.headers.get("X-User"))
            client.capture("after_user_loaded")
            return "ok"

        @app.get("/ignores-user")
        def ignores_user() -> str:
            client.capture("user_never_loaded")
            return "ok"

        @app.get("/boom")
        def boom() -> str:
            assert current_user.is_authenticated
            raise ValueError("logged-in boom")

        options.setdefault("capture_exceptions", True)
        PostHog(app, client=client, **options)
        return app, loads

    return make


def test_loaded_flask_login_user_becomes_the_distinct_id(
    login_app: Callable[..., tuple[Flask, list[str]]], recorder: Recorder
) -> None:
    app, loads = login_app()
    app.test_client().get("/touches-user", headers={"X-User": "u-7"})
    event = recorder.one("after_user_loaded")
    assert event["distinct_id"] == "u-7"
    assert not is_personless(event)
    assert loads == ["u-7"]
    assert "email" not in event["properties"]  # opt-in on Flask


def test_user_never_loaded_is_not_loaded_by_the_extension(
    login_app: Callable[..., tuple[Flask, list[str]]], recorder: Recorder
) -> None:
    app, loads = login_app(capture_user_email=True)
    app.test_client().get("/ignores-user", headers={"X-User": "u-8"})
    event = recorder.one("user_never_loaded")
    assert loads == []  # the extension never triggered the user loader
    assert event["distinct_id"] != "u-8"
    assert is_personless(event)
    assert "email" not in event["properties"]


def test_flask_login_user_on_exception_and_email_opt_in(
    login_app: Callable[..., tuple[Flask, list[str]]], recorder: Recorder
) -> None:
    app, _ = login_app(capture_user_email=True)
    assert app.test_client().get("/boom", headers={"X-User": "u-9"}).status_code == 500
    event = recorder.one("$exception")
    assert event["distinct_id"] == "u-9"
    assert event["properties"]["email"] == "u-9@example.com"


def test_anonymous_flask_login_user_is_not_an_identity(
    login_app: Callable[..., tuple[Flask, list[str]]], recorder: Recorder
) -> None:
    class Anonymous(AnonymousUserMixin):
        email = "anon@example.com"

        def get_id(self) -> str:
            return "anonymous-id"

    app, loads = login_app(capture_user_email=True)
    app.login_manager.anonymous_user = Anonymous  # type: ignore[attr-defined]
    app.test_client().get("/touches-user")
    event = recorder.one("after_user_loaded")
    assert loads == ["None"]
    assert is_personless(event)
    assert event["distinct_id"] != "anonymous-id"
    assert "email" not in event["properties"]


@pytest.mark.parametrize(("precedence", "expected"), [("header", "header-id"), ("user", "u-1")])
def test_identity_precedence(
    login_app: Callable[..., tuple[Flask, list[str]]],
    recorder: Recorder,
    precedence: str,
    expected: str,
) -> None:
    app, _ = login_app(identity_precedence=precedence)
    app.test_client().get("/touches-user", headers={"X-User": "u-1", DISTINCT: "header-id"})
    assert recorder.one("after_user_loaded")["distinct_id"] == expected


def test_user_id_hook_receives_the_flask_request_and_user(
    login_app: Callable[..., tuple[Flask, list[str]]], recorder: Recorder
) -> None:
    seen: list[tuple[str, Any]] = []

    def user_id(req: Any, user: Any) -> str | None:
        seen.append((req.path, user))
        return f"custom-{user.id}" if user is not None else None

    app, _ = login_app(user_id=user_id)
    app.test_client().get("/touches-user", headers={"X-User": "u-3"})
    assert recorder.one("after_user_loaded")["distinct_id"] == "custom-u-3"
    assert seen[0] == ("/touches-user", None)  # at start: no user loaded yet
    assert isinstance(seen[-1][1], User)
