"""The optional app: ``settings.POSTHOG`` configures the default client; system checks (§2.8)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core import checks
from django.test import Client, override_settings

import posthog
from posthog_integrations.django.checks import check_cors, check_posthog
from tests.support.http_server import ScriptedServer

OURS = "posthog_integrations.django.PosthogContextMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def _ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(str(m.id) for m in messages)


def test_posthog_setting_configures_the_default_client(ph_server: ScriptedServer) -> None:
    ph_server.requests.clear()
    before_key, before_client = posthog.api_key, posthog.default_client
    config = {
        "api_key": "phc_settings",
        "host": ph_server.url,
        "flush_interval": 0.05,
        "super_properties": {"app": "shop"},
        "disable_geoip": False,
    }
    with override_settings(POSTHOG=config):
        client = posthog.default_client
        assert client is not None and client.api_key == "phc_settings"
        assert posthog.setup() is client
        posthog.capture("configured", distinct_id="d1")
        # the middleware's default client is this one too
        Client(raise_request_exception=False).get("/boom/")
        posthog.flush()
    batches = [r.json() for r in ph_server.requests if r.path.startswith("/batch")]
    assert {b["api_key"] for b in batches} == {"phc_settings"}
    events = {e["event"]: e for b in batches for e in b["batch"]}
    assert events["configured"]["properties"]["app"] == "shop"
    assert "$geoip_disable" not in events["configured"]["properties"]
    assert events["$exception"]["properties"]["$request_path"] == "/boom/"
    # leaving the override restores the module settings and drops the client it made
    assert posthog.api_key == before_key
    assert posthog.default_client is before_client
    assert client._shut_down  # type: ignore[attr-defined]


def test_posthog_setting_skips_bad_values(
    ph_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="posthog"), override_settings(
        POSTHOG={"api_key": "phc_x", "host": ph_server.url, "debugg": True, "send": "yes"}
    ):
        client = posthog.default_client
        assert client is not None and client.api_key == "phc_x"
        assert client.send is True
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'debugg'" in messages and "'send'" in messages


def test_posthog_setting_without_api_key_configures_nothing() -> None:
    before = posthog.default_client
    with override_settings(POSTHOG={"host": "https://eu.i.posthog.com"}):
        assert posthog.default_client is before


# ---------------------------------------------------------------- checks


def test_default_test_settings_are_clean() -> None:
    assert check_posthog() == []


def test_checks_are_registered_with_django(settings: Any) -> None:
    settings.POSTHOG = "phc_not_a_dict"
    assert "posthog.E001" in _ids(checks.run_checks())


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("phc", ["posthog.E001"]),
        ({"api_key": 42}, ["posthog.E002"]),
        ({"api_key": "phc", "flush_interval": "fast", "debug": 1}, ["posthog.E002"] * 2),
        ({"api_key": "phc", "hots": "https://x"}, ["posthog.W005"]),
        ({"host": "https://x"}, ["posthog.W006"]),
        ({"api_key": "phc", "host": None, "super_properties": {"a": 1}}, []),
    ],
)
def test_posthog_dict_checks(settings: Any, config: Any, expected: list[str]) -> None:
    settings.POSTHOG = config
    assert _ids(check_posthog()) == expected


def test_unknown_key_hint(settings: Any) -> None:
    settings.POSTHOG = {"api_key": "phc", "hots": "https://x"}
    (message,) = check_posthog()
    assert message.hint == "Did you mean 'host'?"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTHOG_MW_CLIENT", "not-a-client"),
        ("POSTHOG_MW_IDENTITY_PRECEDENCE", "both"),
        ("POSTHOG_MW_IP_SOURCE", 0),
        ("POSTHOG_MW_REQUEST_FILTER", 3),
        ("POSTHOG_MW_CAPTURE_STATUS_CODES", ["500"]),
        ("POSTHOG_MW_CAPTURE_IP", "yes"),
        ("POSTHOG_MW_IGNORED_EXCEPTIONS", ("ValueError",)),
        ("POSTHOG_MW_EXCLUDE_PATHS", "/health"),
        ("POSTHOG_MW_READ_POSTHOG_COOKIE", "on"),
        ("POSTHOG_MW_CAPTURE_EXCEPTIONS", "always"),
    ],
)
def test_mw_setting_type_errors(settings: Any, name: str, value: Any) -> None:
    setattr(settings, name, value)
    assert _ids(check_posthog()) == ["posthog.E003"]


def test_mw_setting_good_values_pass(settings: Any) -> None:
    settings.POSTHOG_MW_IP_SOURCE = 2
    settings.POSTHOG_MW_CAPTURE_STATUS_CODES = {404, 500}
    settings.POSTHOG_MW_EXCLUDE_PATHS = ["/health"]
    settings.POSTHOG_MW_CAPTURE_EXCEPTIONS = None
    settings.POSTHOG_MW_READ_POSTHOG_COOKIE = {"session_idle_timeout_seconds": 600}
    assert check_posthog() == []


def test_unknown_and_deprecated_mw_settings(settings: Any) -> None:
    settings.POSTHOG_MW_CAPTURE_EXCEPTION = True
    settings.POSTHOG_MW_TRUST_TRACING_HEADERS = True
    messages = check_posthog()
    assert _ids(messages) == ["posthog.W007", "posthog.W008"]
    unknown = next(m for m in messages if m.id == "posthog.W007")
    assert unknown.hint == "Did you mean POSTHOG_MW_CAPTURE_EXCEPTIONS?"


def test_middleware_checks(settings: Any) -> None:
    settings.POSTHOG = {"api_key": "phc"}
    settings.MIDDLEWARE = [AUTH]
    assert _ids(check_posthog()) == ["posthog.W001"]
    settings.MIDDLEWARE = [OURS, AUTH, OURS]
    assert _ids(check_posthog()) == ["posthog.W002"]
    settings.MIDDLEWARE = [AUTH, OURS]
    assert _ids(check_posthog()) == ["posthog.I001"]
    settings.MIDDLEWARE = ["posthog.integrations.django.PosthogContextMiddleware"]
    settings.POSTHOG_MW_IDENTITY_PRECEDENCE = "user"
    assert _ids(check_posthog()) == ["posthog.W004"]


def test_cors_check(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert _ids(check_cors(installed=True)) == ["posthog.W003"]
    assert check_cors(installed=False) == []
    settings.CORS_ALLOW_HEADERS = ["content-type", "X-POSTHOG-DISTINCT-ID",
                                   "x-posthog-session-id", "x-posthog-window-id"]
    assert check_cors(installed=True) == []
    settings.CORS_ALLOW_HEADERS = ["content-type", "x-posthog-distinct-id"]
    (message,) = check_cors(installed=True)
    assert "x-posthog-session-id" in message.msg and "x-posthog-distinct-id" not in message.msg
    del settings.CORS_ALLOWED_ORIGINS
    assert check_cors(installed=True) == []
