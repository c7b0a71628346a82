"""Names, imports, constructor parameters and what construction does (spec async §1)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable

import pytest

import posthog
from posthog.async_client import AsyncClient, AsyncPosthog
from tests.async_client.conftest import messages, python
from tests.support.http_server import ScriptedServer

SPEC_ORDER = [
    "project_api_key", "host", "debug", "max_queue_size", "send", "on_error", "flush_at",
    "flush_interval", "gzip", "max_retries", "timeout", "thread", "disabled", "disable_geoip",
    "is_server", "historical_migration", "super_properties", "before_send",
    "log_captured_exceptions", "project_root", "capture_exception_code_variables",
    "code_variables_mask_patterns", "code_variables_ignore_patterns",
    "code_variables_mask_url_credentials", "code_variables_detect_secrets", "in_app_modules",
    "capture_mode", "capture_compression", "capture_trace_context", "secret_key",
    "personal_api_key", "feature_flags_request_timeout_seconds",
    "feature_flags_request_max_retries", "app_host", "email_request_timeout_seconds",
    "email_request_max_retries", "migrated_from",
]


def test_names_are_exported_lazily_and_subclass() -> None:
    assert posthog.AsyncClient is AsyncClient
    assert posthog.AsyncPosthog is AsyncPosthog
    assert issubclass(AsyncPosthog, AsyncClient)
    assert "AsyncClient" in posthog.__all__ and "AsyncPosthog" in posthog.__all__
    import posthog.async_client as module

    assert module.__all__ == ["AsyncClient", "AsyncPosthog"]


def test_import_posthog_does_not_import_httpx_or_asyncio() -> None:
    out = python("""
        import sys
        import posthog
        print(sorted(m for m in ("httpx", "asyncio", "posthog.async_client") if m in sys.modules))
        posthog.AsyncPosthog  # resolving the name loads the client, still not httpx
        print("httpx" in sys.modules)
    """)
    assert out.splitlines()[:2] == ["[]", "False"]


def test_positional_order_and_defaults_follow_the_spec() -> None:
    params = list(inspect.signature(AsyncClient.__init__).parameters.values())[1:]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == SPEC_ORDER
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    assert keyword_only == ["enable_local_evaluation", "flag_definition_cache_provider",
                            "poll_interval"]
    client = AsyncClient("phc_k", "http://h.example", False, 5, False, None, 10, 1.5, True, 2,
                         7, 3)
    assert (client.max_queue_size, client.flush_at, client.flush_interval, client.gzip,
            client.max_retries, client.timeout, client.thread) == (5, 10, 1.5, True, 2, 7, 3)
    defaults = {p.name: p.default for p in params}
    assert defaults["timeout"] == 15 and defaults["thread"] == 1
    assert defaults["feature_flags_request_timeout_seconds"] == 3
    assert defaults["feature_flags_request_max_retries"] == 1
    assert defaults["disable_geoip"] is True and defaults["max_queue_size"] == 10000


@pytest.mark.parametrize("removed", ["sync_mode", "enable_exception_autocapture",
                                     "privacy_mode", "flag_fallback_cache_url", "metrics",
                                     "traces", "enable_full_ai_capture"])
def test_removed_parameters_raise_type_error(removed: str) -> None:
    with pytest.raises(TypeError):
        AsyncClient("phc_k", **{removed: True})


def test_flush_at_and_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="flush_at must be greater than zero"):
        AsyncClient("phc_k", flush_at=0)
    with pytest.raises(ValueError, match="flush_interval must be greater than zero"):
        AsyncClient("phc_k", flush_interval=0)


def test_shared_rules_with_the_sync_client(logs: pytest.LogCaptureFixture) -> None:
    client = AsyncClient("  phc_k  ", host="https://eu.posthog.com/", max_retries=-2,
                         feature_flags_request_max_retries=-1, thread=0,
                         before_send="not callable")  # type: ignore[arg-type]
    assert client.api_key == "phc_k"
    assert client.host == "https://eu.i.posthog.com"
    assert client.raw_host == "https://eu.posthog.com/"
    assert client.max_retries == 0 and client.feature_flags_request_max_retries == 0
    assert client.thread == 1
    assert client.before_send is None
    blank = AsyncClient("   ")
    assert blank.disabled is True
    assert any("project_api_key is missing" in m for m in messages(logs, logging.ERROR))
    with pytest.warns(DeprecationWarning):
        legacy = AsyncClient("phc_k", personal_api_key="phx_personal")
    assert legacy.secret_key == "phx_personal"


def test_construction_binds_nothing_and_sends_nothing(server: ScriptedServer) -> None:
    client = AsyncClient("phc_construct", host=server.url)
    assert client._loop is None
    assert not client._lane.started and client._http_future is None
    assert client._lane.pending == 0
    assert server.requests == []
    client._unregister()


def test_second_live_client_logs_duplicate_warning_once(
    logs: pytest.LogCaptureFixture, make_client: Callable[..., AsyncClient]
) -> None:
    make_client("phc_dupe")
    make_client("phc_dupe")
    make_client("phc_dupe")
    warned = [m for m in messages(logs) if "Multiple active PostHog clients" in m]
    assert len(warned) == 1


def test_without_httpx_capture_policy_and_flags() -> None:
    out = python("""
        import asyncio, sys, logging
        sys.modules["httpx"] = None  # import httpx now fails, as when it is not installed
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        import posthog
        off = posthog.AsyncPosthog("phc_k", send=False)
        print("off", off.capture("e", distinct_id="u") is not None)
        on = posthog.AsyncPosthog("phc_k", host="http://127.0.0.1:9", secret_key="s")
        print("on", on.capture("e", distinct_id="u"))
        async def main():
            try:
                async with on:
                    pass
            except RuntimeError as exc:
                print("aenter", exc)
            flags = await on.evaluate_flags("u")
            print("flags", flags.keys)
            print("config", await on.get_remote_config_payload("k"))
        asyncio.run(main())
    """)
    assert "off True" in out
    assert "on None" in out
    assert ("Error in async capture: Async PostHog support requires httpx. Install it with "
            "`posthog[async]`.") in out
    assert "aenter Async PostHog support requires httpx" in out
    assert "flags []" in out and "config None" in out


def test_capture_mode_v1_is_accepted_and_unknown_mode_rejected() -> None:
    with pytest.raises(ValueError):
        AsyncClient("phc_k", capture_mode="v9")
    client = AsyncClient("phc_k", capture_mode="v0", send=False)
    assert asyncio.run(_capture_in_loop(client)) is not None


async def _capture_in_loop(client: AsyncClient) -> str | None:
    return client.capture("e", distinct_id="u")
