"""The ``posthog`` module: settings, the default client and its proxies (spec core §1.1-§1.4)."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest

import posthog
from posthog import Client, Posthog
from tests.support.http_server import ScriptedServer

SETTING_DEFAULTS: dict[str, Any] = {
    "project_api_key": None,
    "api_key": None,
    "host": None,
    "on_error": None,
    "debug": False,
    "send": True,
    "sync_mode": False,
    "disabled": False,
    "secret_key": None,
    "personal_api_key": None,
    "poll_interval": 30,
    "disable_geoip": True,
    "is_server": True,
    "feature_flags_request_timeout_seconds": 3,
    "feature_flags_request_max_retries": 1,
    "super_properties": None,
    "enable_exception_autocapture": False,
    "log_captured_exceptions": False,
    "project_root": None,
    "privacy_mode": False,
    "before_send": None,
    "enable_local_evaluation": True,
    "flag_definition_cache_provider": None,
    "capture_exception_code_variables": False,
    "code_variables_mask_patterns": None,
    "code_variables_ignore_patterns": ["^__.*"],
    "code_variables_mask_url_credentials": True,
    "code_variables_detect_secrets": True,
    "in_app_modules": None,
    "capture_trace_context": False,
    "enable_exception_autocapture_rate_limiting": False,
    "exception_autocapture_bucket_size": 50,
    "exception_autocapture_refill_rate": 10,
    "exception_autocapture_refill_interval_seconds": 10,
    "capture_mode": None,
    "metrics": None,
    "traces": None,
    "enable_full_ai_capture": False,
}


@pytest.fixture
def configured(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """Module settings pointing the default client at the loopback server."""
    monkeypatch.delenv("POSTHOG_RELEASE_ID", raising=False)
    posthog.project_api_key = "phc_module"
    posthog.host = server.url
    return server


def delivered(server: ScriptedServer) -> list[dict[str, Any]]:
    posthog.flush()
    return server.events()


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "posthog" and r.levelno >= level]


# ---------------------------------------------------------------- names and defaults


@pytest.mark.parametrize(("name", "default"), list(SETTING_DEFAULTS.items()))
def test_setting_exists_with_default(name: str, default: Any) -> None:
    assert hasattr(posthog, name), f"posthog.{name} is missing"
    value = getattr(posthog, name)
    if default is None or isinstance(default, bool):
        assert value is default
    else:
        assert value == default
        assert type(value) is type(default)


def test_default_client_is_initially_none() -> None:
    assert posthog.default_client is None


def test_exported_names() -> None:
    for name in (
        "capture",
        "set",
        "set_once",
        "group_identify",
        "alias",
        "flush",
        "join",
        "shutdown",
        "setup",
        "new_context",
        "scoped",
        "tag",
        "get_tags",
        "identify_context",
        "set_context_session",
        "set_context_device_id",
    ):
        assert callable(getattr(posthog, name)), name


def test_posthog_is_a_client_subclass() -> None:
    assert issubclass(Posthog, Client)
    assert posthog.Posthog is Posthog and posthog.Client is Client
    client = Posthog("phc_x", send=False)
    try:
        assert isinstance(client, Client)
        assert client.capture("e", distinct_id="u") is not None
    finally:
        client.shutdown()


def test_version() -> None:
    assert isinstance(posthog.VERSION, str) and posthog.VERSION
    assert posthog.__version__ == posthog.VERSION


def test_import_does_not_import_requests() -> None:
    code = (
        "import sys, posthog\n"
        "assert posthog.default_client is None\n"
        "print('requests' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------- signatures (behaviour 44)


def test_module_capture_rejects_positional_distinct_id(configured: ScriptedServer) -> None:
    with pytest.raises(TypeError):
        posthog.capture("id", "event")  # type: ignore[misc]
    with pytest.raises(TypeError):
        posthog.set("id")  # type: ignore[misc]
    with pytest.raises(TypeError):
        posthog.set_once("id")  # type: ignore[misc]
    assert delivered(configured) == []


# ---------------------------------------------------------------- key resolution


def test_no_key_means_disabled_default_client(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    posthog.host = server.url
    assert posthog.capture("e", distinct_id="u") is None
    assert posthog.set(distinct_id="u", properties={"x": 1}) is None
    assert posthog.alias("old", "new") is None
    assert posthog.group_identify("company", "42") is None
    assert posthog.default_client is not None
    assert posthog.default_client.disabled is True
    posthog.flush()
    posthog.shutdown()
    assert server.requests == []


@pytest.mark.parametrize(
    ("project_key", "legacy_key", "expected"),
    [
        ("phc_project", "phc_legacy", "phc_project"),
        (None, "phc_legacy", "phc_legacy"),
        ("", "phc_legacy", "phc_legacy"),
        ("   ", "phc_legacy", "phc_legacy"),
        ("  phc_project  ", None, "phc_project"),
        ("phc_project", "   ", "phc_project"),
    ],
)
def test_project_key_preferred_blank_ignored(
    server: ScriptedServer, project_key: Any, legacy_key: Any, expected: str
) -> None:
    posthog.project_api_key = project_key
    posthog.api_key = legacy_key
    posthog.host = server.url
    returned = posthog.capture("e", distinct_id="u")
    posthog.flush()
    (request,) = server.requests
    assert request.path == "/batch/"
    body = request.json()
    assert body["api_key"] == expected
    assert [e["uuid"] for e in body["batch"]] == [returned]


@pytest.mark.parametrize("legacy_key", [None, "", "   "])
def test_blank_keys_disable(server: ScriptedServer, legacy_key: Any) -> None:
    posthog.project_api_key = "  "
    posthog.api_key = legacy_key
    posthog.host = server.url
    assert posthog.capture("e", distinct_id="u") is None
    posthog.flush()
    assert server.requests == []


# ---------------------------------------------------------------- forwarding


def test_module_functions_send_events(configured: ScriptedServer) -> None:
    uuids = [
        posthog.capture("e", distinct_id="u", properties={"a": 1}, groups={"company": "42"}),
        posthog.set(distinct_id="u", properties={"x": 1}),
        posthog.set_once(distinct_id="u", properties={"y": 2}),
        posthog.alias("old", "new"),
        posthog.group_identify("company", "42", {"n": 1}),
    ]
    events = delivered(configured)
    assert [e["uuid"] for e in events] == uuids
    capture, set_event, set_once, alias, group = events
    assert capture["event"] == "e"
    assert capture["properties"]["a"] == 1
    assert capture["properties"]["$groups"] == {"company": "42"}
    assert capture["properties"]["$lib"] == "posthog-python"
    assert set_event["$set"] == {"x": 1}
    assert set_once["$set_once"] == {"y": 2}
    assert alias["distinct_id"] == "old" and alias["properties"]["alias"] == "new"
    assert group["properties"]["$group_set"] == {"n": 1}


def test_module_capture_reads_the_context(configured: ScriptedServer) -> None:
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.tag("route", "/home")
        posthog.capture("e")
        assert posthog.get_tags() == {"route": "/home"}
    (event,) = delivered(configured)
    assert event["distinct_id"] == "ctx-user"
    assert event["properties"]["route"] == "/home"


def test_setup_returns_the_same_client(configured: ScriptedServer) -> None:
    first = posthog.setup()
    assert posthog.default_client is first
    assert posthog.setup() is first
    posthog.capture("e", distinct_id="u")
    assert posthog.default_client is first


# ---------------------------------------------------------------- setup() re-application


def test_disabled_is_reapplied_on_every_call(configured: ScriptedServer) -> None:
    assert posthog.capture("first", distinct_id="u") is not None
    posthog.disabled = True
    assert posthog.capture("off", distinct_id="u") is None
    assert posthog.default_client is not None and posthog.default_client.disabled is True
    posthog.disabled = False
    assert posthog.capture("back", distinct_id="u") is not None
    assert [e["event"] for e in delivered(configured)] == ["first", "back"]


def test_disabled_before_creation(configured: ScriptedServer) -> None:
    posthog.disabled = True
    assert posthog.capture("e", distinct_id="u") is None
    posthog.flush()
    assert configured.requests == []


def test_debug_is_reapplied_on_every_call(
    configured: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert posthog.capture("e", distinct_id="u", properties=["bad"]) is None  # type: ignore[arg-type]
    assert any(m.startswith("[PostHog] Error in capture") for m in logged(caplog))
    posthog.debug = True
    with pytest.raises(TypeError):
        posthog.capture("e", distinct_id="u", properties=["bad"])  # type: ignore[arg-type]
    assert posthog.default_client is not None and posthog.default_client.debug is True
    posthog.debug = False
    assert posthog.capture("e", distinct_id="u", properties=["bad"]) is None  # type: ignore[arg-type]
    assert posthog.default_client.debug is False


def test_before_send_is_reapplied_on_every_call(configured: ScriptedServer) -> None:
    posthog.capture("plain", distinct_id="u")

    def rename(message: dict[str, Any]) -> dict[str, Any]:
        message["event"] = "renamed"
        return message

    posthog.before_send = rename
    posthog.capture("hooked", distinct_id="u")
    posthog.before_send = lambda message: None
    assert posthog.capture("dropped", distinct_id="u") is None
    posthog.before_send = None
    posthog.capture("plain-again", distinct_id="u")
    assert [e["event"] for e in delivered(configured)] == ["plain", "renamed", "plain-again"]


def test_non_callable_module_before_send_is_ignored(
    configured: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    posthog.before_send = 42  # type: ignore[assignment]
    returned = posthog.capture("e", distinct_id="u")
    assert returned is not None
    assert logged(caplog, logging.WARNING)
    assert [e["uuid"] for e in delivered(configured)] == [returned]


def test_other_settings_apply_only_at_creation(
    configured: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    posthog.super_properties = {"stage": "first"}
    monkeypatch.setattr(posthog, "is_server", False)
    monkeypatch.setattr(posthog, "disable_geoip", False)
    posthog.capture("one", distinct_id="u")
    # changed after the client exists: no effect
    posthog.super_properties = {"stage": "second"}
    monkeypatch.setattr(posthog, "is_server", True)
    monkeypatch.setattr(posthog, "disable_geoip", True)
    posthog.project_api_key = "phc_other"
    posthog.host = "http://127.0.0.1:9"
    posthog.capture("two", distinct_id="u")
    posthog.flush()
    bodies = [r.json() for r in configured.requests]
    assert {b["api_key"] for b in bodies} == {"phc_module"}
    events = [e for b in bodies for e in b["batch"]]
    assert [e["event"] for e in events] == ["one", "two"]
    for event in events:
        assert event["properties"]["stage"] == "first"
        assert "$is_server" not in event["properties"]
        assert "$geoip_disable" not in event["properties"]


def test_send_false_setting(configured: ScriptedServer) -> None:
    posthog.send = False
    returned = posthog.capture("e", distinct_id="u")
    assert returned is not None
    posthog.flush()
    posthog.shutdown()
    assert configured.requests == []


def test_sync_mode_setting(configured: ScriptedServer) -> None:
    posthog.sync_mode = True
    returned = posthog.capture("e", distinct_id="u")
    assert len(configured.requests) == 1  # sent before capture returned, no flush
    assert configured.requests[0].json()["batch"][0]["uuid"] == returned


def test_on_error_setting(configured: ScriptedServer) -> None:
    seen: list[Any] = []
    posthog.on_error = lambda exc, batch: seen.append(batch)
    bad = posthog.capture("bad", distinct_id="u", properties={"c": complex(1, 1)})
    posthog.flush()
    assert configured.events() == []
    assert [[m["uuid"] for m in batch] for batch in seen] == [[bad]]


# ---------------------------------------------------------------- flush / shutdown


def test_flush_sends_queued_events(configured: ScriptedServer) -> None:
    returned = posthog.capture("e", distinct_id="u")
    posthog.flush()
    assert [e["uuid"] for e in configured.events()] == [returned]


def test_shutdown_delivers_and_is_not_undone(
    configured: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    returned = posthog.capture("e", distinct_id="u")
    client = posthog.default_client
    posthog.shutdown()
    assert [e["uuid"] for e in configured.events()] == [returned]
    assert posthog.capture("late", distinct_id="u") is None
    assert posthog.default_client is client, "the global client is not recreated"
    assert any("after shutdown" in m for m in logged(caplog, logging.WARNING))
    assert len(configured.events()) == 1


def test_flush_and_shutdown_without_a_client_are_noops() -> None:
    assert posthog.default_client is None
    posthog.flush()
    posthog.join()
    posthog.shutdown()
    assert posthog.default_client is None
