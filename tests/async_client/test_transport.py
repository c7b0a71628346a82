"""Uploads: retries, Retry-After, on_error, capture_immediate, redirects, flush timeouts."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from posthog import async_lane
from posthog.async_client import AsyncClient
from posthog.transport.http import APIError
from tests.async_client.conftest import messages
from tests.support.http_server import Reply, ScriptedServer


def _gaps(server: ScriptedServer) -> list[float]:
    times = [r.at for r in server.requests]
    return [round(b - a, 1) for a, b in itertools.pairwise(times)]


def test_retry_schedule_and_retry_after(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    server.push(Reply(503), Reply(503), Reply(200))
    client = make_client()

    async def main() -> None:
        client.capture("retried", distinct_id="u")
        await client.flush()
        assert [e["event"] for e in server.events()][-1] == "retried"
        gaps = _gaps(server)
        assert len(server.requests) == 3
        assert 0.9 <= gaps[0] <= 1.4 and 1.9 <= gaps[1] <= 2.4, gaps
        bodies = [r.json() for r in server.requests]
        assert len({b["sent_at"] for b in bodies}) == 3  # rebuilt per attempt
        assert len({b["batch"][0]["uuid"] for b in bodies}) == 1
        server.requests.clear()
        server.push(Reply(429, headers={"Retry-After": "2"}), Reply(200))
        client.capture("after-429", distinct_id="u")
        await client.flush()
        await client.shutdown()

    asyncio.run(main())
    assert len(server.requests) == 2
    assert 1.9 <= _gaps(server)[0] <= 2.5


def test_client_error_is_not_retried_and_plain_on_error_runs_in_executor(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []

    def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        seen.append((exc, batch, threading.current_thread()))

    server.push(Reply(400, {"detail": "bad things"}))
    client = make_client(on_error=on_error)

    async def main() -> str | None:
        uuid = client.capture("rejected", distinct_id="u")
        await client.flush()
        await client.shutdown()
        return uuid

    uuid = asyncio.run(main())
    assert len(server.requests) == 1
    (exc, batch, thread), = seen
    assert isinstance(exc, APIError) and exc.status == 400 and exc.message == "bad things"
    assert [e["uuid"] for e in batch] == [uuid]
    assert thread is not threading.main_thread()
    errors = messages(logs, logging.ERROR)
    assert "[PostHog] async capture upload failed (APIError, status=400)" in errors
    assert not any("bad things" in m for m in errors)  # response text is never logged


def test_async_on_error_is_awaited_and_failing_handler_is_logged(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []

    async def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        seen.append((exc.status, asyncio.get_running_loop()))  # type: ignore[attr-defined]
        raise ZeroDivisionError

    server.push(Reply(413))
    client = make_client(on_error=on_error)

    async def main() -> asyncio.AbstractEventLoop:
        client.capture("e", distinct_id="u")
        await client.flush()
        await client.shutdown()
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert seen == [(413, loop)]
    assert "[PostHog] on_error handler failed (ZeroDivisionError)" in messages(logs,
                                                                               logging.ERROR)


def test_capture_immediate_retries_and_reports(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []
    client = make_client(on_error=lambda exc, batch: seen.append((exc, batch)))

    async def main() -> None:
        server.push(Reply(503), Reply(200))
        started = time.monotonic()
        uuid = await client.capture_immediate("now", distinct_id="u", properties={"a": 1})
        took = time.monotonic() - started
        assert uuid is not None and 0.9 <= took <= 2.0
        assert [len(r.json()["batch"]) for r in server.requests] == [1, 1]
        assert server.requests[1].json()["batch"][0]["uuid"] == uuid
        assert not client._lane.started  # no workers for immediate sends

        server.push(Reply(400))
        assert await client.capture_immediate("bad", distinct_id="u") is None
        (exc, batch), = seen
        assert exc.status == 400 and [e["event"] for e in batch] == ["bad"]

        client.debug = True
        server.push(Reply(400))
        with pytest.raises(APIError):
            await client.capture_immediate("bad-debug", distinct_id="u")
        client.debug = False
        await client.shutdown()

    asyncio.run(main())
    assert "[PostHog] Immediate async capture failed (APIError, status=400)" in messages(
        logs, logging.ERROR)


def test_capture_immediate_oversize_is_dropped_without_on_error(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []
    client = make_client(on_error=lambda exc, batch: seen.append(exc))

    async def main() -> str | None:
        result = await client.capture_immediate("huge", distinct_id="u",
                                                properties={"blob": "z" * (901 * 1024)})
        await client.shutdown()
        return result

    assert asyncio.run(main()) is None
    assert server.requests == [] and seen == []
    assert any("exceeds the 900KiB limit" in m for m in messages(logs, logging.ERROR))


def test_redirects(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    seen: list[Any] = []
    client = make_client(on_error=lambda exc, batch: seen.append(exc), max_retries=0)
    other_origin = server.url.replace("127.0.0.1", "localhost")

    async def main() -> None:
        server.push(Reply(307, headers={"Location": "/batch/moved?x=1"}), Reply(200))
        await client.capture_immediate("moved", distinct_id="u")
        assert [r.path for r in server.requests] == ["/batch/", "/batch/moved?x=1"]
        assert server.requests[0].body == server.requests[1].body

        server.requests.clear()
        server.push(Reply(308, headers={"Location": other_origin + "/batch/"}))
        assert await client.capture_immediate("cross", distinct_id="u") is None
        assert len(server.requests) == 1
        assert seen[-1].status == 400
        assert seen[-1].message == "Cross-origin or invalid redirect blocked"

        server.requests.clear()
        server.push(*[Reply(307, headers={"Location": server.url + "/batch/"})] * 6)
        assert await client.capture_immediate("loop", distinct_id="u") is None
        assert len(server.requests) == 6
        assert (seen[-1].status, seen[-1].message) == (400, "Too many capture redirects")
        await client.shutdown()

    asyncio.run(main())


def test_other_redirects_are_plain_errors_and_retried(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()
    server.push(Reply(302, headers={"Location": "/elsewhere"}), Reply(200))

    async def main() -> None:
        assert await client.capture_immediate("e", distinct_id="u") is not None
        await client.shutdown()

    asyncio.run(main())
    assert [r.path for r in server.requests] == ["/batch/", "/batch/"]
    assert 0.9 <= _gaps(server)[0] <= 1.5


def test_flush_timeout_then_shutdown_delivers(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    server.push(Reply(200, delay=2.0))
    client = make_client(flush_interval=30)

    async def main() -> None:
        for i in range(3):
            client.capture("slow", distinct_id="u", properties={"i": i})
        started = time.monotonic()
        await client.flush(timeout_seconds=0.5)
        assert 0.45 <= time.monotonic() - started <= 1.0
        await client.shutdown()

    asyncio.run(main())
    assert "[PostHog] flush timed out after 0.5 seconds with 3 items pending" in messages(logs)
    assert [e["properties"]["i"] for e in server.events()] == [0, 1, 2]


def test_gzip_and_historical_migration(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(gzip=True, historical_migration=True)

    async def main() -> None:
        client.capture("zipped", distinct_id="u")
        await client.shutdown()

    asyncio.run(main())
    (request,) = server.requests
    assert request.headers["content-encoding"] == "gzip"
    body = json.loads(gzip.decompress(request.raw))
    assert body["historical_migration"] is True
    assert body["batch"][0]["event"] == "zipped"


def test_worker_stopping_on_unexpected_error_discards_on_flush(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(messages: list[Any]) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(async_lane, "encode_messages", broken)
    client = make_client()

    async def main() -> None:
        client.capture("lost", distinct_id="u")
        client.capture("lost", distinct_id="u")
        await asyncio.sleep(0.3)
        client.capture("queued", distinct_id="u")
        await client.flush(timeout_seconds=2)
        await client.shutdown()

    asyncio.run(main())
    assert server.requests == []
    logged = messages(logs)
    assert "[PostHog] async consumer stopped after an unexpected RuntimeError" in logged
    assert "[PostHog] discarded 1 async capture items because all workers exited" in logged


def test_network_errors_are_retried_then_reported(
    make_client: Callable[..., AsyncClient]
) -> None:
    seen: list[Any] = []
    client = make_client(host="http://127.0.0.1:9", max_retries=1,
                         on_error=lambda exc, batch: seen.append((exc, len(batch))))

    async def main() -> float:
        client.capture("e", distinct_id="u")
        started = time.monotonic()
        await client.flush()
        took = time.monotonic() - started
        await client.shutdown()
        return took

    took = asyncio.run(main())
    assert 0.9 <= took <= 2.5  # two attempts, one second apart
    (exc, size), = seen
    assert size == 1 and not isinstance(exc, APIError)
