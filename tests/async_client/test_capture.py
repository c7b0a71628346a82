"""The async capture path against a real loopback server (spec async §2, §4.2, §8)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog.async_client import AsyncClient
from tests.async_client.conftest import messages, wait_requests
from tests.support.http_server import ScriptedServer

VOLATILE = ("uuid", "timestamp")


def _strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in VOLATILE}


def test_capture_returns_uuid_at_once_and_flush_posts_one_batch(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(flush_interval=30)

    async def main() -> str | None:
        uuid = client.capture("e", distinct_id=5)
        assert server.requests == []  # nothing waited on the network
        await client.flush()
        await client.shutdown()
        return uuid

    uuid = asyncio.run(main())
    assert uuid is not None
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request.method == "POST" and request.path == "/batch/"
    body = request.json()
    assert sorted(body) == ["api_key", "batch", "historical_migration", "sent_at"]
    assert body["api_key"] == "phc_test" and body["historical_migration"] is False
    (event,) = body["batch"]
    assert event["distinct_id"] == "5" and event["uuid"] == uuid and event["event"] == "e"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"posthog-python/{posthog.VERSION}"
    assert request.headers["accept"] == "*/*"
    assert request.headers["connection"] == "keep-alive"


def test_same_json_as_the_sync_client(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    def calls(client: Any) -> None:
        with posthog.new_context():
            posthog.tag("plan", "pro")
            posthog.identify_context("ctx-user")
            posthog.set_context_session("sess-1")
            client.capture("clicked", properties={"a": 1, "when": {2, 1}},
                           groups={"company": "acme"})
            client.set(properties={"email": "x@example.com"})
            client.set_once(properties={"first": True})
            client.group_identify("company", "acme", {"size": 10})
            client.alias("old-id", "new-id")
            client.capture("anon", distinct_id="given")

    sync = posthog.Client("phc_test", host=server.url, super_properties={"$lib": "x"},
                          flush_interval=0.05)
    calls(sync)
    sync.shutdown()
    sync_events = [_strip(e) for e in server.events()]
    server.requests.clear()

    client = make_client(super_properties={"$lib": "x"})

    async def main() -> None:
        calls(client)
        await client.shutdown()

    asyncio.run(main())
    async_events = [_strip(e) for e in server.events()]
    assert len(sync_events) == 6
    assert async_events == sync_events
    assert async_events[0]["properties"]["$lib"] == "x"
    assert async_events[0]["properties"]["$context_tags"] == ["plan"]


def test_uuid_is_canonicalized_and_invalid_one_replaced(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client()

    async def main() -> tuple[str | None, str | None]:
        first = client.capture("e", distinct_id="u",
                               uuid="{0B6C3B49-8A53-4C1E-9A39-0C2F4A7E1E11}")
        second = client.capture("e", distinct_id="u", uuid="not-a-uuid")
        await client.shutdown()
        return first, second

    first, second = asyncio.run(main())
    assert first == "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"
    assert second is not None and second != "not-a-uuid"
    assert [e["uuid"] for e in server.events()] == [first, second]
    assert "[PostHog] Invalid UUID 'not-a-uuid'. Falling back to a generated UUID." in messages(
        logs, logging.ERROR)


def test_positional_misuse_raises_and_send_feature_flags_is_ignored(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> None:
        with pytest.raises(TypeError):
            client.capture("id", "event")  # type: ignore[misc]
        with pytest.warns(DeprecationWarning, match="does not support deprecated "
                                                    "send_feature_flags"):
            assert client.capture("e", distinct_id="u", send_feature_flags=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert client.capture("e2", distinct_id="u", send_feature_flags=object(),
                                  flags=posthog.FeatureFlagEvaluations(None, "u"))
        await client.shutdown()

    asyncio.run(main())
    assert [r.path for r in server.requests] == ["/batch/"]
    for event in server.events():
        assert not any(k.startswith("$feature/") for k in event["properties"])


def test_full_queue_rejects_with_warning(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client(max_queue_size=2)

    async def main() -> list[str | None]:
        results = [client.capture("e", distinct_id="u") for _ in range(3)]
        await client.shutdown()
        return results

    results = asyncio.run(main())
    assert results[0] and results[1] and results[2] is None
    assert any("PostHog async capture queue is full" in m for m in messages(logs))
    assert len(server.events()) == 2


def test_captures_before_any_loop_wait_for_the_workers(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()
    uuids = [client.capture("early", distinct_id="u") for _ in range(3)]
    assert all(uuids) and client._loop is None
    time.sleep(0.2)
    assert server.requests == []

    async def main() -> None:
        await asyncio.sleep(0.1)
        assert server.requests == []  # queued, but no worker until something starts one
        async with client:
            pass

    asyncio.run(main())
    assert [e["uuid"] for e in server.events()] == uuids


def test_batches_by_flush_at_and_flush_sends_the_rest(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(flush_at=100, flush_interval=30)

    async def main() -> None:
        for i in range(250):
            client.capture("e", distinct_id="u", properties={"i": i})
        await wait_requests(server, 2)
        await asyncio.sleep(0.3)
        assert [len(r.json()["batch"]) for r in server.requests] == [100, 100]
        started = time.monotonic()
        await client.flush()
        assert time.monotonic() - started < 2
        assert [len(r.json()["batch"]) for r in server.requests] == [100, 100, 50]
        await client.shutdown()

    asyncio.run(main())
    assert [e["properties"]["i"] for e in server.events()] == list(range(250))


def test_batch_size_limit_carries_over_and_oversize_is_dropped(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client(flush_interval=30)
    big = "x" * (880 * 1024 - 600)

    async def main() -> None:
        for i in range(8):
            client.capture("big", distinct_id="u", properties={"blob": big, "i": i})
        client.capture("huge", distinct_id="u", properties={"blob": "y" * (901 * 1024)})
        await client.flush()
        await client.shutdown()

    asyncio.run(main())
    sizes = [len(r.json()["batch"]) for r in server.requests]
    assert sizes == [5, 3]
    assert [e["properties"]["i"] for e in server.events()] == list(range(8))
    assert any(m.startswith("[PostHog] Event huge (") and "exceeds the 900KiB limit, dropping."
               in m for m in messages(logs, logging.ERROR))


def test_disabled_and_send_false(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    disabled = make_client(disabled=True)
    quiet = make_client(send=False)
    calls: list[Any] = []
    quiet.before_send = lambda e: calls.append(e) or e

    async def main() -> None:
        assert disabled.capture("e", distinct_id="u") is None
        assert quiet.capture("e", distinct_id="u") is not None
        assert not quiet._lane.started and quiet._lane.pending == 0
        assert await quiet.capture_immediate("e", distinct_id="u") is not None
        await quiet.flush()
        await quiet.shutdown()
        await disabled.shutdown()

    asyncio.run(main())
    assert server.requests == []
    assert len(calls) == 1  # only capture_immediate runs before_send with send=False


def test_capture_after_shutdown_is_logged_once(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client()

    async def main() -> None:
        client.capture("before", distinct_id="u")
        await client.shutdown()
        assert client.capture("after", distinct_id="u") is None
        assert client.set(distinct_id="u", properties={"a": 1}) is None
        assert await client.capture_immediate("after", distinct_id="u") is None

    asyncio.run(main())
    assert [e["event"] for e in server.events()] == ["before"]
    warned = [m for m in messages(logs) if "after shutdown()" in m]
    assert len(warned) == 1


def test_captures_from_threads_are_delivered_without_blocking(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()
    results: list[str | None] = []
    durations: list[float] = []

    def worker(n: int) -> None:
        for i in range(50):
            started = time.perf_counter()
            results.append(client.capture("thread", distinct_id=f"t{n}", properties={"i": i}))
            durations.append(time.perf_counter() - started)

    async def main() -> None:
        async with client:
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert len(results) == 200 and all(results)
    assert sorted(e["uuid"] for e in server.events()) == sorted(results)  # type: ignore[type-var]
    assert max(durations) < 0.05


def test_capture_from_thread_during_loop_teardown_returns_promptly(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client(flush_interval=30)
    release = threading.Event()
    outcome: dict[str, Any] = {}

    def late_thread() -> None:
        release.wait(5)
        started = time.perf_counter()
        outcome["uuid"] = client.capture("late", distinct_id="u")
        outcome["took"] = time.perf_counter() - started

    thread = threading.Thread(target=late_thread)
    thread.start()

    async def main() -> None:
        client.capture("queued", distinct_id="u")

        async def waiter() -> None:
            try:
                await asyncio.sleep(30)
            finally:  # runs while asyncio.run cancels the remaining tasks
                await asyncio.sleep(0)  # the client's worker has seen its cancellation
                release.set()
                thread.join(5)  # the loop is still running, and busy tearing down

        asyncio.get_running_loop().create_task(waiter())
        await asyncio.sleep(0.05)

    asyncio.run(main())
    thread.join(5)
    assert outcome["uuid"] is None and outcome["took"] < 0.5
    assert any("AsyncClient event loop is not running" in m
               for m in messages(logs, logging.ERROR))
    server.wait_for(1)  # the queued event still went out, from the fallback thread
    assert [e["event"] for e in server.events()] == ["queued"]
