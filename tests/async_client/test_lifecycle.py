"""Loop binding, shutdown, callbacks calling back in, and the end-of-loop fallback (§3)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from posthog.async_client import AsyncClient
from tests.async_client.conftest import messages, python
from tests.support.http_server import Reply, ScriptedServer


def test_after_shutdown_everything_is_a_no_op(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(secret_key="phs_secret")

    async def main() -> None:
        client.capture("delivered", distinct_id="u")
        await client.shutdown()
        requests = len(server.requests)
        assert client.capture("e", distinct_id="u") is None
        assert await client.capture_immediate("e", distinct_id="u") is None
        flags = await client.evaluate_flags("u")
        assert flags.keys == []
        assert await client.get_remote_config_payload("k") is None
        await client.shutdown()  # second call: no-op
        await client.join()
        assert len(server.requests) == requests

    asyncio.run(main())
    assert [e["event"] for e in server.events()] == ["delivered"]
    assert client._http_future is not None and client._http is not None
    assert client._http.is_closed


def test_loop_ending_without_shutdown_is_delivered_by_the_fallback(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client(flush_interval=30)

    async def main() -> str | None:
        return client.capture("orphan", distinct_id="u")

    uuid = asyncio.run(main())
    server.wait_for(1)
    assert [e["uuid"] for e in server.events()] == [uuid]
    warned = [m for m in messages(logs) if "without AsyncClient.shutdown()" in m]
    assert len(warned) == 1
    assert "await client.shutdown()" in warned[0].lower() and "async with" in warned[0]
    # The loop is gone: a later capture from this (loop-less) thread says so.
    assert client.capture("later", distinct_id="u") is None
    assert "[PostHog] Error in async capture: AsyncClient event loop is not running" in (
        messages(logs, logging.ERROR))


def test_second_loop_is_refused(
    server: ScriptedServer, make_client: Callable[..., AsyncClient],
    logs: pytest.LogCaptureFixture,
) -> None:
    client = make_client()

    async def first() -> None:  # uses the client and ends without shutdown()
        client.capture("first-loop", distinct_id="u")
        await client.flush()

    async def second() -> None:
        assert client.capture("e", distinct_id="u") is None
        for call in (client.evaluate_flags("u"), client.capture_immediate("e", distinct_id="u"),
                     client.shutdown()):
            with pytest.raises(RuntimeError, match="AsyncClient cannot be shared across event "
                                                   "loops"):
                await call
        await client.flush()  # logged, never raises

    asyncio.run(first())
    asyncio.run(second())
    assert "[PostHog] Error in async capture: AsyncClient cannot be shared across event loops" \
        in messages(logs, logging.ERROR)
    assert [e["event"] for e in server.events()] == ["first-loop"]


def test_cancelled_shutdown_keeps_workers_and_can_be_awaited_again(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    server.push(Reply(200, delay=0.8))
    client = make_client(flush_interval=30)

    async def main() -> None:
        client.capture("slow", distinct_id="u")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.shutdown(), 0.3)
        assert client._lane.workers and not client._closed
        assert client.capture("refused", distinct_id="u") is None  # admission stays off
        client.capture_exception(ValueError("also refused"))
        await client.shutdown()
        assert client._closed and not client._lane.workers

    asyncio.run(main())
    assert [e["event"] for e in server.events()] == ["slow"]


def test_async_with_starts_workers_and_a_closed_client_never_reopens(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()

    async def main() -> None:
        async with client as entered:
            assert entered is client and client._lane.started
            client.capture("inside", distinct_id="u")
        assert client._closed
        async with client:
            assert client.capture("again", distinct_id="u") is None

    asyncio.run(main())
    assert [e["event"] for e in server.events()] == ["inside"]


def test_flush_and_shutdown_from_callbacks_do_not_wait_on_themselves(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    calls: list[str] = []
    holder: dict[str, AsyncClient] = {}

    async def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        started = time.monotonic()
        await holder["client"].flush()
        calls.append(f"flush {time.monotonic() - started < 0.1}")

    async def before_send(event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "stop":
            started = time.monotonic()
            await holder["client"].shutdown()
            calls.append(f"shutdown {time.monotonic() - started < 0.1}")
        return event

    server.push(Reply(400))
    client = holder["client"] = make_client(on_error=on_error, before_send=before_send)

    async def main() -> None:
        client.capture("fails", distinct_id="u")
        await client.flush()
        client.capture("stop", distinct_id="u")
        for _ in range(200):
            if client._closed:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert calls == ["flush True", "shutdown True"]
    assert client._closed
    assert [e["event"] for e in server.events()] == ["fails", "stop"]


def test_interpreter_exit_sends_what_never_saw_a_loop(server: ScriptedServer) -> None:
    out = python(f"""
        import posthog
        client = posthog.AsyncPosthog("phc_exit", host="{server.url}")
        for i in range(3):
            client.capture("before-any-loop", distinct_id="u", properties={{"i": i}})
    """)
    assert [e["properties"]["i"] for e in server.events()] == [0, 1, 2]
    assert "when the interpreter exited without AsyncClient.shutdown()" in out


def test_loop_closed_without_cancelling_tasks_is_sent_at_exit(server: ScriptedServer) -> None:
    out = python(f"""
        import asyncio, posthog
        client = posthog.AsyncPosthog("phc_exit", host="{server.url}", flush_interval=60)
        loop = asyncio.new_event_loop()
        async def main():
            client.capture("closed-loop", distinct_id="u")
        loop.run_until_complete(main())
        loop.close()   # the worker task is never cancelled: it just stops being run
    """)
    assert [e["event"] for e in server.events()] == ["closed-loop"]
    assert "AsyncPosthog(...)" in out


def test_exit_fallback_runs_sync_and_async_before_send(server: ScriptedServer) -> None:
    python(f"""
        import asyncio, posthog
        async def tag(event):
            event["properties"]["hooked"] = "async"
            return event
        client = posthog.AsyncPosthog("phc_exit", host="{server.url}", before_send=tag)
        client.capture("a", distinct_id="u")
        other = posthog.AsyncPosthog("phc_exit2", host="{server.url}",
                                     before_send=lambda e: None if e["event"] == "drop" else e)
        other.capture("drop", distinct_id="u")
        other.capture("keep", distinct_id="u")
    """)
    events = {e["event"]: e for e in server.events()}
    assert sorted(events) == ["a", "keep"]
    assert events["a"]["properties"]["hooked"] == "async"


def test_thread_capture_before_binding_then_loop(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client()
    from_thread: list[str | None] = []
    thread = threading.Thread(
        target=lambda: from_thread.append(client.capture("t", distinct_id="u"))
    )
    thread.start()
    thread.join()

    async def main() -> None:
        await client.shutdown()

    asyncio.run(main())
    assert [e["uuid"] for e in server.events()] == from_thread


def test_first_capture_does_not_build_the_http_client_on_the_loop(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    switch_interval = sys.getswitchinterval()
    client = make_client()

    async def main() -> float:
        started = time.perf_counter()
        client.capture("first", distinct_id="u")
        took = time.perf_counter() - started
        assert client._http is None  # being built in the executor, not on the loop
        await client.shutdown()
        return took

    assert asyncio.run(main()) < 0.02  # the reference client spends ~45 ms here
    assert [e["event"] for e in server.events()] == ["first"]
    assert sys.getswitchinterval() == switch_interval  # restored after the build


def test_several_workers_deliver_everything_once(
    server: ScriptedServer, make_client: Callable[..., AsyncClient]
) -> None:
    client = make_client(thread=3, flush_at=7, max_queue_size=0)

    async def main() -> list[str | None]:
        uuids = [client.capture("e", distinct_id="u", properties={"i": i}) for i in range(300)]
        assert len(client._lane.workers) == 3
        await client.shutdown()
        return uuids

    uuids = asyncio.run(main())
    assert all(uuids)
    assert sorted(e["uuid"] for e in server.events()) == sorted(uuids)  # type: ignore[type-var]
    assert max(len(r.json()["batch"]) for r in server.requests) <= 7


def test_missing_sniffio_is_still_missing_after_warm_up() -> None:
    out = python("""
        import importlib.util, posthog
        before = importlib.util.find_spec("sniffio")
        posthog.AsyncPosthog("phc_k", host="http://127.0.0.1:9")  # warms up httpx
        try:
            import sniffio  # noqa: F401
            after = "importable"
        except ImportError:
            after = "ImportError"
        print(before is None, after, importlib.util.find_spec("sniffio") is None)
    """)
    installed = out.split()[0] == "False"
    assert out.split()[:3] == (["False", "importable", "False"] if installed
                               else ["True", "ImportError", "True"])
