"""capture_exception, the integrations' _capture_exception, before_send, contexts (§2, §6)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog.async_client import AsyncClient
from tests.async_client.conftest import messages
from tests.support.http_server import ScriptedServer


def _boom() -> None:
    raise ValueError("boom")


def test_capture_exception_has_no_level_and_is_captured_once(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> tuple[str | None, str | None, str | None]:
        try:
            raise RuntimeError("outer") from KeyError("root")
        except RuntimeError as exc:
            first = client.capture_exception(exc, properties={"route": "/x"})
            again = client.capture_exception(exc)
        assert client.capture_exception() is None  # nothing being handled
        try:
            _boom()
        except ValueError:
            current = client.capture_exception()
        await client.shutdown()
        return first, again, current

    first, again, current = asyncio.run(main())
    assert first is not None and again is None and current is not None
    events = server.events()
    assert [e["event"] for e in events] == ["$exception", "$exception"]
    props = events[0]["properties"]
    assert "$exception_level" not in props and "$exception_source" not in props
    assert props["route"] == "/x"
    entries = props["$exception_list"]
    assert [e["type"] for e in entries] == ["RuntimeError", "KeyError"]
    assert entries[0]["mechanism"]["type"] == "generic" and entries[0]["mechanism"]["handled"]
    assert entries[1]["mechanism"]["source"] == "cause"
    assert entries[0]["stacktrace"]["frames"][-1]["function"] == "main"
    assert events[0]["properties"]["$process_person_profile"] is False


def test_integration_metadata_channel(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> None:
        with posthog.new_context(fresh=True):
            posthog.identify_context("request-user")
            posthog.tag("$request_path", "/items/1")
            try:
                _boom()
            except ValueError as exc:
                uuid = client._capture_exception(
                    exc, {"properties": {"$response_status_code": 500}}, level="error",
                    source="asgi.middleware", handled=False, mechanism="middleware")
                assert uuid is not None
                # a second hook seeing the same exception produces no second event
                assert client._capture_exception(exc, {}, level="error") is None
        await client.shutdown()

    asyncio.run(main())
    (event,) = server.events()
    props = event["properties"]
    assert event["distinct_id"] == "request-user"
    assert props["$exception_level"] == "error"
    assert props["$exception_source"] == "asgi.middleware"
    assert props["$response_status_code"] == 500 and props["$request_path"] == "/items/1"
    mechanism = props["$exception_list"][0]["mechanism"]
    assert mechanism["type"] == "middleware" and mechanism["handled"] is False


def test_new_context_with_async_client(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> None:
        with pytest.raises(ValueError), posthog.new_context(client=client):
            _boom()
        with pytest.raises(ValueError), posthog.new_context(client=client,
                                                            capture_exceptions=True):
            posthog.identify_context("ctx-user")
            with posthog.new_context(client=client, capture_exceptions=True):
                _boom()
        await client.shutdown()

    asyncio.run(main())
    events = server.events()
    assert [e["event"] for e in events] == ["$exception"]
    assert events[0]["distinct_id"] == "ctx-user"


def test_concurrent_tasks_keep_their_own_context(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def request(n: int) -> None:
        with posthog.new_context(fresh=True):
            posthog.identify_context(f"user-{n}")
            posthog.tag("n", n)
            await asyncio.sleep(0.01 * (3 - n))
            client.capture("queued")
            await asyncio.sleep(0)
            await client.capture_immediate("immediate")
            child = asyncio.create_task(asyncio.sleep(0, result=posthog.get_tags()))
            assert await child == {"n": n}

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(3)))
        await client.shutdown()

    asyncio.run(main())
    events = server.events()
    assert len(events) == 6
    for event in events:
        n = event["properties"]["n"]
        assert event["distinct_id"] == f"user-{n}"
        assert event["properties"]["$context_tags"] == ["n"]


def test_before_send_drop_uuid_and_context(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    seen: list[Any] = []

    def before_send(event: dict[str, Any]) -> dict[str, Any] | None:
        seen.append((threading.current_thread(), posthog.get_tags(), event["event"]))
        if event["event"] == "drop":
            return None
        event["uuid"] = "00000000-0000-4000-8000-000000000000"
        event["properties"]["extra"] = {1, 2}
        return event

    client = make_client(before_send=before_send)

    async def main() -> tuple[str | None, str | None]:
        with posthog.new_context():
            posthog.tag("site", "capture")
            dropped = client.capture("drop", distinct_id="u")
            kept = client.capture("keep", distinct_id="u")
        await client.shutdown()
        return dropped, kept

    dropped, kept = asyncio.run(main())
    assert dropped is not None  # returned before before_send ran
    (event,) = server.events()
    assert event["event"] == "keep" and event["uuid"] == kept  # uuid reset to the original
    assert event["properties"]["extra"] == [1, 2]  # the result is cleaned again
    assert [(tags, name) for _, tags, name in seen] == [({"site": "capture"}, "drop"),
                                                        ({"site": "capture"}, "keep")]
    assert all(thread is not threading.main_thread() for thread, _, _ in seen)


def test_async_before_send_and_bad_results(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    async def before_send(event: dict[str, Any]) -> Any:
        await asyncio.sleep(0)
        name = event["event"]
        if name == "raise":
            raise KeyError("secret detail")
        if name == "list":
            return ["not", "a", "dict"]
        event["properties"]["tag"] = posthog.get_tags().get("t")
        return event

    client = make_client(before_send=before_send)

    async def main() -> None:
        with posthog.new_context():
            posthog.tag("t", "from-capture")
            for name in ("raise", "list", "ok"):
                client.capture(name, distinct_id="u")
        assert await client.capture_immediate("raise", distinct_id="u") is None
        await client.shutdown()

    asyncio.run(main())
    (event,) = server.events()
    assert event["event"] == "ok" and event["properties"]["tag"] == "from-capture"
    errors = messages(logs, logging.ERROR)
    assert errors.count("[PostHog] Error in before_send callback (KeyError)") == 2
    assert "[PostHog] Error in before_send callback (TypeError)" in errors
    assert not any("secret detail" in m for m in errors)


def test_before_send_change_applies_to_queued_events(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(flush_interval=30)

    async def main() -> None:
        client.capture("queued", distinct_id="u")
        client.before_send = lambda e: {**e, "properties": {**e["properties"], "late": True}}
        await client.shutdown()

    asyncio.run(main())
    (event,) = server.events()
    assert event["properties"]["late"] is True
