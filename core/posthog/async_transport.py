"""asyncio transport for :class:`posthog.AsyncClient`: httpx, ``/batch/`` and the worker lane.

Everything here runs on the client's bound event loop except what is handed to the
loop's default executor: JSON encoding and size checks, gzip, plain ``before_send`` and
``on_error`` callables, and building the ``httpx.AsyncClient`` (which imports httpx and
loads CA certificates: 40-90 ms that must never stall the loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog.events import clean, dumps, system_properties
from posthog.transport import http
from posthog.transport.lane import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    backoff_delay,
    build_body,
    is_retryable,
)

if TYPE_CHECKING:
    import httpx

    from posthog.async_client import AsyncClient

Message = dict[str, Any]
Item = tuple[Message, contextvars.Context]  # a cleaned event and the context of its capture
Piece = tuple[str, list[Message]]  # JSON of one or more events (comma-joined) and the events

HTTPX_MISSING = "Async PostHog support requires httpx. Install it with `posthog[async]`."
MAX_REDIRECTS = 5
_INLINE_BODY_BYTES = 256 * 1024  # smaller bodies are assembled on the loop (a string join)
_HOOK_SLICE = 0.0005  # seconds of plain before_send work per executor job

# Set while the client runs user code (before_send, on_error) or inside its own tasks, so that
# flush()/shutdown() called from there are scheduled instead of waiting on themselves.
CALLBACK: contextvars.ContextVar[Any] = contextvars.ContextVar("posthog_async_callback",
                                                               default=None)


# ---------------------------------------------------------------- httpx


_httpx_found: bool | None = None


def httpx_available() -> bool:
    """Whether httpx can be imported (looked up once, without importing it)."""
    global _httpx_found
    if _httpx_found is None:
        import importlib.util

        try:
            _httpx_found = importlib.util.find_spec("httpx") is not None
        except (ImportError, ValueError):
            _httpx_found = False
    return _httpx_found


# Two threads importing httpx/anyio at once can see a partially initialised module (the
# import system breaks such lock cycles that way): the warm-up and the build take turns.
_import_lock = threading.Lock()
def warm_up() -> None:
    """One-off work the first capture on the loop must not pay for (best effort).

    Importing httpx (~45 ms) and the network backend httpcore loads on its first request
    (anyio, ~20 ms), the executor machinery, the system properties every event carries
    (~2 ms: reads ``/etc/os-release``), and the JSON encoders.
    """
    with _import_lock, suppress(Exception):
        system_properties()
        dumps([{"warm": True}])
        import concurrent.futures.thread  # noqa: F401 - the loop's default executor

        if httpx_available():
            import anyio._backends._asyncio  # noqa: F401
            import httpcore._backends.anyio  # noqa: F401
            import httpx  # noqa: F401


def warm_up_in_background() -> None:
    """:func:`warm_up` on a daemon thread (used when the client is built on a loop)."""
    threading.Thread(target=warm_up, name="posthog-async-warm-up", daemon=True).start()


def build_http_client(host: str) -> httpx.AsyncClient:
    """The client's one ``httpx.AsyncClient`` (run in an executor thread, see below)."""
    with _import_lock:  # after a warm-up still importing httpx, never alongside it
        import httpx

    return httpx.AsyncClient(base_url=host, follow_redirects=False)


def start_http_client(
    loop: asyncio.AbstractEventLoop, host: str
) -> asyncio.Future[httpx.AsyncClient]:
    """Build the ``httpx.AsyncClient`` in the default executor.

    Building it loads CA certificates and runs a few ms of Python: done on the loop,
    the reference client stalls the loop ~45 ms on its first capture.
    """
    # Start two executor threads first, while nothing else runs: a thread started later,
    # while this build runs Python code, waits for the GIL and stalls the loop meanwhile.
    for _ in range(2):
        loop.run_in_executor(None, _nothing)
    return loop.run_in_executor(None, build_http_client, host)


def _nothing() -> None:
    pass


def error_for(response: httpx.Response) -> http.APIError:
    """``APIError`` for a non-200 answer: ``detail`` from a JSON body, else the text."""
    message = response.text
    try:
        payload = response.json()
        if isinstance(payload, dict) and "detail" in payload:
            message = str(payload["detail"])
    except ValueError:
        pass
    retry_after = http.parse_retry_after(response.headers.get("Retry-After"))
    return http.APIError(response.status_code, message, retry_after)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port
    if port is None:
        port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


def redirect_target(
    base: httpx.URL, current: httpx.URL, location: str | None
) -> httpx.URL | None:
    """Where a 307/308 may be followed: same scheme, host and port as the client's host."""
    if not location:
        return None
    try:
        target = current.join(location)
    except Exception:
        return None
    return target if _origin(target) == _origin(base) else None


async def post_batch(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], timeout: float | None
) -> None:
    """One ``/batch/`` POST, following same-origin 307/308 (at most 5); 200 or raise."""
    target: str | httpx.URL = "/batch/"
    for redirects in range(MAX_REDIRECTS + 1):
        response = await client.post(target, content=body, headers=headers, timeout=timeout)
        status = response.status_code
        if status in (307, 308):
            found = redirect_target(
                client.base_url, response.request.url, response.headers.get("location")
            )
            if found is None:
                raise http.APIError(400, "Cross-origin or invalid redirect blocked")
            if redirects == MAX_REDIRECTS:
                raise http.APIError(400, "Too many capture redirects")
            target = found
            continue
        if status != 200:
            raise error_for(response)
        return


def batch_body(
    api_key: str, parts: list[str], historical_migration: bool, gzip: bool
) -> tuple[bytes, dict[str, str]]:
    """The ``/batch/`` body (``sent_at`` now) and its headers; gzipped when asked."""
    return http.prepare_body(build_body(api_key, parts, historical_migration), gzip)


# ---------------------------------------------------------------- callbacks


def is_async_callable(fn: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (partials unwrapped)."""
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _call_marked(client: Any, fn: Callable[..., Any], *args: Any) -> Any:
    CALLBACK.set(client)
    return fn(*args)


async def _await_marked(client: Any, value: Any) -> Any:
    CALLBACK.set(client)
    return await value


async def _call_async_marked(client: Any, fn: Callable[..., Any], *args: Any) -> Any:
    CALLBACK.set(client)
    return await fn(*args)


def _run_plain_hooks(
    client: Any, hook: Callable[[Message], Any], items: list[Item], budget: float
) -> list[Any]:
    """Plain ``before_send`` over ``items`` in their contexts (executor), for ~``budget`` s."""
    out: list[Any] = []
    start = time.perf_counter()
    for message, ctx in items:
        try:
            out.append(ctx.run(_call_marked, client, hook, message))
        except Exception as exc:
            out.append(Raised(exc))
        if time.perf_counter() - start > budget:
            break
    return out


def checked_hook_result(result: Any, uuid: Any, event: Any) -> Message | None:
    """``before_send``'s answer: ``None`` drops; not a dict is an error; the uuid is kept."""
    if isinstance(result, Raised):
        logger.error("Error in before_send callback (%s)", type(result.exc).__name__)
        return None
    if result is None:
        logger.debug("before_send dropped event %r", event)
        return None
    if not isinstance(result, dict):
        logger.error("Error in before_send callback (TypeError)")
        return None
    cleaned: Message = clean(result)
    cleaned["uuid"] = uuid
    return cleaned


async def apply_before_send(
    client: Any, hook: Callable[[Message], Any], items: list[Item]
) -> list[Message | None]:
    """Run ``before_send`` on each item in the context copied at its capture.

    A coroutine function is awaited on the loop; a plain one runs in the default
    executor, a few items per job so the GIL returns to the loop quickly.
    """
    loop = asyncio.get_running_loop()
    originals = [(message.get("uuid"), message.get("event")) for message, _ in items]
    results: list[Any] = []
    if is_async_callable(hook):
        for message, ctx in items:
            try:
                results.append(await ctx.run(
                    loop.create_task, _call_async_marked(client, hook, message)
                ))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                results.append(Raised(exc))
    else:
        done = 0
        while done < len(items):
            chunk = await loop.run_in_executor(
                None, _run_plain_hooks, client, hook, items[done:], _HOOK_SLICE
            )
            for offset, value in enumerate(chunk):
                if inspect.isawaitable(value):
                    ctx = items[done + offset][1]
                    try:
                        value = await ctx.run(loop.create_task, _await_marked(client, value))
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        value = Raised(exc)
                results.append(value)
            done += len(chunk)
    return [
        checked_hook_result(result, uuid, event)  # the hook may have changed the uuid in place
        for result, (uuid, event) in zip(results, originals, strict=True)
    ]


async def report_failure(client: Any, on_error: Any, exc: Exception, batch: list[Message]) -> None:
    """Call ``on_error(exc, batch)``: awaited if async, else in the executor; never raises."""
    if on_error is None:
        return
    try:
        if is_async_callable(on_error):
            await _call_async_marked(client, on_error, exc, batch)
        else:
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            result = await loop.run_in_executor(
                None, ctx.run, _call_marked, client, on_error, exc, batch
            )
            if inspect.isawaitable(result):
                await _await_marked(client, result)
    except asyncio.CancelledError:
        raise
    except Exception as handler_exc:
        logger.error("on_error handler failed (%s)", type(handler_exc).__name__)


# ---------------------------------------------------------------- encoding


def encode_messages(messages: list[Message]) -> list[Piece]:
    """JSON for each event (executor); drops unserializable and over-900-KiB events.

    The usual batch is encoded in one call: if all of it is under the per-event
    limit, so is every event in it, and it fits one request.
    """
    if not messages:
        return []
    try:
        text = dumps(messages)
    except Exception:
        text = ""
    if text and len(text) <= MAX_EVENT_BYTES:
        return [(text[1:-1], messages)]
    pieces: list[Piece] = []
    for message in messages:
        try:
            one = dumps(message)
        except Exception as exc:
            logger.error("Event %s could not be serialized (%s), dropping.",
                         message.get("event"), type(exc).__name__)
            continue
        if len(one) > MAX_EVENT_BYTES:
            logger.error("Event %s (%d bytes) exceeds the 900KiB limit, dropping.",
                         message.get("event"), len(one))
            continue
        pieces.append((one, [message]))
    return pieces


def split_batch(pieces: list[Piece]) -> tuple[list[Piece], list[Piece]]:
    """The pieces that fit one request (5 MiB) and the rest, carried to the next batch."""
    size = 0
    for index, (text, _) in enumerate(pieces):
        size += len(text) + 1
        if index and size > MAX_BATCH_BYTES:
            return pieces[:index], pieces[index:]
    return pieces, []


def count(pieces: list[Piece]) -> int:
    return sum(len(messages) for _, messages in pieces)


# ---------------------------------------------------------------- sending a batch


class WorkerConfig:
    """Settings copied into a worker when it starts (spec async §1.2)."""

    __slots__ = ("gzip", "max_retries", "on_error", "timeout")

    def __init__(self, client: AsyncClient) -> None:
        self.on_error = client.on_error
        self.gzip = bool(client.gzip)
        self.max_retries = client.max_retries
        self.timeout = None if client.timeout is None else float(client.timeout)




async def post(client: AsyncClient, parts: list[str], config: WorkerConfig) -> None:
    """One ``/batch/`` attempt; the body is built (and gzipped) off-loop when large."""
    if config.gzip or sum(len(p) for p in parts) > _INLINE_BODY_BYTES:
        loop = asyncio.get_running_loop()
        body, headers = await loop.run_in_executor(
            None, batch_body, client.api_key, parts, client.historical_migration, config.gzip
        )
    else:
        body, headers = batch_body(client.api_key, parts, client.historical_migration, False)
    await post_batch(await client._http_client(), body, headers, config.timeout)


async def send_with_retries(client: AsyncClient, parts: list[str],
                            config: WorkerConfig) -> None:
    """``max_retries + 1`` attempts with the core's backoff; raises the last error."""
    attempt = 0
    while True:
        try:
            await post(client, parts, config)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_retryable(exc) or attempt >= config.max_retries:
                raise
            delay = backoff_delay(attempt, getattr(exc, "retry_after", None))
            logger.debug("async upload failed (%s); retrying in %.1f s",
                         type(exc).__name__, delay)
            await asyncio.sleep(delay)
            attempt += 1


async def upload(client: AsyncClient, parts: list[str], messages: list[Message],
                 config: WorkerConfig) -> None:
    """A worker's batch: retries, then the error log and ``on_error`` after the last."""
    try:
        await send_with_retries(client, parts, config)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.error("async capture upload failed (%s, status=%s)", type(exc).__name__,
                     getattr(exc, "status", None))
        await report_failure(client, config.on_error, exc, messages)


def run_coroutine_blocking(coro: Awaitable[Any]) -> Any:
    """Run an awaitable to completion on a private loop (fallback thread only)."""
    async def runner() -> Any:
        return await coro

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(runner())
    finally:
        loop.close()

