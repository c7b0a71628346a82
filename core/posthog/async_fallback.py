"""Delivering what an :class:`~posthog.AsyncClient` still holds when its loop ends early.

The official async client loses events that are queued when the event loop ends
without ``await client.shutdown()`` (e.g. ``asyncio.run`` returning). Here:

* when the loop cancels the client's workers (the end of ``asyncio.run``), a daemon
  thread sends what they held and what was queued, through the core's synchronous
  transport, and a warning names ``shutdown()`` / ``async with``;
* at interpreter exit, whatever is still undelivered (a loop closed without cancelling
  its tasks, events captured before any loop ran) is sent the same way, within
  :data:`EXIT_DEADLINE` seconds shared by all clients.
"""

from __future__ import annotations

import atexit
import inspect
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog.async_transport import (
    Raised,
    batch_body,
    checked_hook_result,
    count,
    encode_messages,
    run_coroutine_blocking,
    split_batch,
)
from posthog.transport import http
from posthog.transport.lane import backoff_delay, is_retryable

if TYPE_CHECKING:
    from posthog.async_client import AsyncClient
    from posthog.transport.connection import Uploader

EXIT_DEADLINE = 2.0  # seconds, for everything still undelivered at interpreter exit
WORKER_GRACE = 0.5  # seconds to let cancelled workers unwind before taking their items

_clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()
_threads: list[threading.Thread] = []
_lock = threading.Lock()


def track(client: AsyncClient) -> None:
    """Remember ``client`` for the exit-time fallback (weakly)."""
    _clients.add(client)


def loop_ended(client: AsyncClient) -> None:
    """The client's loop is tearing down without ``shutdown()``: deliver from a thread."""
    thread = threading.Thread(
        target=_deliver_when_workers_gone, args=(client,), name="posthog-async-fallback",
        daemon=True,
    )
    with _lock:
        _threads[:] = [t for t in _threads if t.is_alive()]
        _threads.append(thread)
    thread.start()


def _deliver_when_workers_gone(client: AsyncClient) -> None:
    give_up = time.monotonic() + WORKER_GRACE
    while client._lane.workers and time.monotonic() < give_up:
        time.sleep(0.005)
    try:
        deliver_leftovers(client, None, "its event loop ended")
    except Exception:
        logger.exception("async fallback delivery failed")


def deliver_leftovers(client: AsyncClient, deadline: float | None, why: str) -> None:
    """Send what ``client`` still queues or holds, from a plain thread.

    Runs ``before_send`` (a coroutine one on a private loop), then posts with the sync
    client's connection, with the core's retry policy, never past ``deadline`` (monotonic).
    """
    wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
    if not client._fallback_lock.acquire(timeout=wait):
        return  # the loop-end fallback thread is still sending: exit does not wait more
    try:
        loop = client._loop
        if client._closed or client.disabled or not client.send:
            return
        if loop is not None and loop.is_running() and not client._loop_ended:
            return  # a live loop elsewhere still owns its workers
        raw, pieces = client._lane.take_leftovers()
        if not raw and not pieces:
            return
        logger.warning(
            "%d events were still queued when %s without AsyncClient.shutdown(); "
            "delivering them now as a fallback. Await client.shutdown() (or use `async "
            "with AsyncPosthog(...)`) before the event loop ends.",
            len(raw) + count(pieces), why,
        )
        hook = client.before_send
        messages: list[dict[str, Any]] = []
        for message, ctx in raw:
            result: Any = message
            if hook is not None:
                uuid, event = message.get("uuid"), message.get("event")
                result = checked_hook_result(ctx.run(_run_hook, hook, message), uuid, event)
            if result is not None:
                messages.append(result)
        pieces.extend(encode_messages(messages))
        from posthog.transport.connection import Uploader

        uploader = Uploader()  # the sync client's connection, closed when done
        try:
            while pieces:
                batch, pieces = split_batch(pieces)
                parts = [text for text, _ in batch]
                sent = [m for _, group in batch for m in group]
                try:
                    _post_blocking(client, uploader, parts, deadline)
                except Exception as exc:
                    logger.error("async capture upload failed (%s, status=%s)",
                                 type(exc).__name__, getattr(exc, "status", None))
                    _report_blocking(client, exc, sent)
        finally:
            uploader.close()
    finally:
        client._fallback_lock.release()


def _run_hook(hook: Any, message: dict[str, Any]) -> Any:
    try:
        result = hook(message)
        if inspect.isawaitable(result):
            result = run_coroutine_blocking(result)
        return result
    except Exception as exc:
        return Raised(exc)


def _post_blocking(client: AsyncClient, uploader: Uploader, parts: list[str],
                   deadline: float | None) -> None:
    attempt = 0
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0.05:
            raise TimeoutError("no time left before exit")
        timeout = float(client.timeout) if client.timeout is not None else 30.0
        if remaining is not None:
            timeout = min(timeout, remaining)
        try:
            body, headers = batch_body(client.api_key, parts, client.historical_migration,
                                       bool(client.gzip))
            http.raise_for_status(uploader.post(client.host + "/batch/", body, headers, timeout))
            return
        except Exception as exc:
            if not is_retryable(exc) or attempt >= client.max_retries:
                raise
            delay = backoff_delay(attempt, getattr(exc, "retry_after", None))
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(delay)
            attempt += 1


def _report_blocking(client: AsyncClient, exc: Exception, batch: list[dict[str, Any]]) -> None:
    on_error = client.on_error
    if on_error is None:
        return
    try:
        result = on_error(exc, batch)
        if inspect.isawaitable(result):
            run_coroutine_blocking(result)
    except Exception as handler_exc:
        logger.error("on_error handler failed (%s)", type(handler_exc).__name__)


def _at_exit() -> None:
    deadline = time.monotonic() + EXIT_DEADLINE
    with _lock:
        threads = list(_threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("AsyncClient fallback delivery did not finish before exit; events "
                           "it still holds are lost")
    for client in list(_clients):
        try:
            deliver_leftovers(client, deadline, "the interpreter exited")
        except Exception:
            logger.exception("async fallback delivery at exit failed")


atexit.register(_at_exit)
