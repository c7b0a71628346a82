"""The event lane: a bounded queue, consumer threads that batch, serialise and upload.

The caller's thread only appends to a deque. Consumers clean and serialise each
event once (so every retry sends the same uuid and timestamp), enforce the
per-event and per-batch size limits, and retry with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from posthog._log import BurstLog, logger
from posthog.events import dumps, encode_event
from posthog.transport import http

if TYPE_CHECKING:
    from posthog.transport.connection import Uploader

MAX_EVENT_BYTES = 900 * 1024
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_BACKOFF = 30.0

Message = dict[str, Any]
Batch = tuple[list[str], list[Message]]  # encoded events and the events themselves
OnError = Callable[[Exception, list[Message]], Any]


class QueueFullError(Exception):
    """An event was dropped because the lane's queue held ``max_queue_size`` events."""


class EventTooLargeError(Exception):
    """An event's JSON exceeded the per-event limit (900 KiB) and was dropped."""


class EventNotSerializableError(Exception):
    """An event could not be turned into JSON and was dropped."""


class ClientClosedError(Exception):
    """An event arrived after ``join()``/``shutdown()`` and was dropped."""


def report_error(on_error: OnError | None, exc: Exception, batch: list[Message]) -> None:
    """Call the user's ``on_error``; its own exceptions are logged, never raised."""
    if on_error is None:
        return
    try:
        on_error(exc, batch)
    except Exception:
        logger.exception("on_error callback raised")


def is_retryable(exc: Exception) -> bool:
    if not isinstance(exc, http.APIError):
        return True
    status = exc.status
    if not isinstance(status, int):
        return True
    return status >= 500 or status in (408, 429) or not 400 <= status < 500


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Wait before retry ``attempt + 1``: 1, 2, 4 … s capped at 30; ``Retry-After`` is a floor."""
    return max(min(2.0**attempt, MAX_BACKOFF), min(retry_after or 0.0, MAX_BACKOFF))


def build_body(api_key: str, parts: list[str], historical_migration: bool) -> bytes:
    """The ``/batch/`` envelope around already-serialised events; ``sent_at`` is now."""
    migration = "true" if historical_migration else "false"
    return (
        f'{{"api_key":{dumps(api_key)},"batch":[{",".join(parts)}],'
        f'"historical_migration":{migration},"sent_at":"{http.utc_now_iso()}"}}'
    ).encode("ascii")


class Lane:
    """One queue and its consumers. ``put`` is the only method on the caller's path."""

    def __init__(
        self,
        *,
        api_key: str,
        host: str,
        max_queue_size: int = 10000,
        flush_at: int = 100,
        flush_interval: float = 5.0,
        gzip: bool = False,
        max_retries: int = 3,
        timeout: float = 15,
        threads: int = 1,
        historical_migration: bool = False,
        on_error: OnError | None = None,
        path: str = "/batch/",
    ) -> None:
        self.api_key = api_key
        self.url = host + path
        self.max_queue_size = max(1, int(max_queue_size))
        self.flush_at = max(1, int(flush_at))
        self.flush_interval = max(0.0, float(flush_interval))
        self.gzip = gzip
        self.max_retries = max(0, int(max_retries))
        self.timeout = timeout
        self.thread_count = max(1, int(threads))
        self.historical_migration = historical_migration
        self.on_error = on_error
        self._full = BurstLog("queue is full")
        self._oversize = BurstLog("events over the 900 KiB limit", logging.ERROR)
        self._started = False
        self._closed = False
        self._warned_closed = False
        self._threads: list[threading.Thread] = []
        self.uploaders: list[Uploader] = []
        self._init_state()

    def _init_state(self) -> None:
        self._queue: deque[tuple[Message, bool]] = deque()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._in_flight = 0
        self._flushers = 0
        self._stopping = False

    # ------------------------------------------------------------ caller side

    def put(self, message: Message, cleaned: bool = False) -> bool:
        """Queue one event; ``False`` (logged, reported) when full or closed."""
        if self._closed:
            self._reject_closed(message)
            return False
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self._full.hit(
                "queue is full (max_queue_size=%d); event %r dropped",
                self.max_queue_size,
                message.get("event"),
            )
            report_error(self.on_error, QueueFullError("queue is full"), [message])
            return False
        queue.append((message, cleaned))
        size = len(queue)
        if size == 1 or size == self.flush_at:
            self._wake.set()
        if self._full.active:
            self._full.end()
        return True

    def _reject_closed(self, message: Message) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            logger.warning(
                "received event after shutdown; %r and any later events are dropped",
                message.get("event"),
            )
        report_error(self.on_error, ClientClosedError("client is shut down"), [message])

    @property
    def pending(self) -> int:
        """Events queued or being uploaded."""
        return len(self._queue) + self._in_flight

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._spawn()

    def _spawn(self) -> None:
        # Imported here, on the starting thread, not by the senders: a fork that lands while
        # a sender is mid-import would leave the child's import lock held forever.
        # (Not at module import either: http.client and ssl cost ``import posthog`` 15 ms.)
        import posthog.transport.connection  # noqa: F401

        self._threads = []
        self.uploaders = []
        for i in range(self.thread_count):
            # One batch waits encoded while the previous one is on the wire.
            outbox: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
            self._threads.append(threading.Thread(
                target=self._run, args=(outbox,), name=f"posthog-consumer-{i}", daemon=True
            ))
            self._threads.append(threading.Thread(
                target=self._send_loop, args=(outbox,), name=f"posthog-sender-{i}", daemon=True
            ))
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> list[threading.Thread]:
        return self._threads

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def flush(self, timeout: float | None = 10) -> bool:
        """Send partial batches now and wait until nothing is pending; ``True`` if drained."""
        if not self.alive:
            if self._queue:
                logger.warning("flush: no running consumer; %d events not sent", len(self._queue))
            return not self._queue
        with self._lock:
            self._flushers += 1
        try:
            self._wake.set()
            with self._drained:
                return self._drained.wait_for(
                    lambda: not self._queue and self._in_flight == 0, timeout
                )
        finally:
            with self._lock:
                self._flushers -= 1

    def close(self) -> None:
        """Refuse new events from now on."""
        self._closed = True

    def stop(self, timeout: float | None) -> bool:
        """Drain (bounded by ``timeout``), then stop consumers; reports what could not be sent."""
        self._closed = True
        drained = self.flush(timeout) if self._started else True
        self._stopping = True
        if not drained:
            self._abort.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=None if drained else 2.0)
        if not drained:
            self._report_left_behind()
        return drained

    def stop_nowait(self, deadline: float) -> None:
        """Best effort at interpreter exit: flush until ``deadline`` (monotonic), then let go."""
        self._closed = True
        if self._started:
            self.flush(max(0.0, deadline - time.monotonic()))
        self._stopping = True
        self._abort.set()
        self._wake.set()
        if self._queue:
            self._report_left_behind()

    def _report_left_behind(self) -> None:
        left: list[Message] = []
        while True:
            try:
                left.append(self._queue.popleft()[0])
            except IndexError:
                break
        if left:
            logger.warning("%d events were not delivered before shutdown", len(left))
            report_error(self.on_error, ClientClosedError("not delivered before shutdown"), left)

    def after_fork(self) -> None:
        """In a forked child: fresh queue, locks and consumers; the parent's events stay there."""
        self._init_state()
        self._full.reset_after_fork()
        self._oversize.reset_after_fork()
        self._threads = []
        if self._started and not self._closed:
            self._spawn()

    # ------------------------------------------------------------ consumer side

    def _run(self, outbox: queue.Queue[Batch | None]) -> None:
        """Serialising stage: take events off the queue, encode them, hand batches on."""
        while True:
            try:
                items = self._next_items()
            except Exception:  # pragma: no cover - defensive: the loop must survive
                logger.exception("consumer failed while waiting for events")
                continue
            if items is None:
                outbox.put(None)
                return
            encoded = 0
            try:
                for batch in self._serialise(items):
                    encoded += len(batch[1])
                    outbox.put(batch)
            except Exception:
                logger.exception("consumer failed while encoding a batch")
            finally:
                self._done(len(items) - encoded)

    def _send_loop(self, outbox: queue.Queue[Batch | None]) -> None:
        """Sending stage: upload batches while the next one is being encoded."""
        from posthog.transport.connection import Uploader

        uploader = Uploader()
        self.uploaders.append(uploader)
        while True:
            batch = outbox.get()
            if batch is None:
                uploader.close()
                return
            try:
                self._upload(*batch, uploader)
            except Exception:
                logger.exception("consumer failed while sending a batch")
            finally:
                self._done(len(batch[1]))

    def _done(self, count: int) -> None:
        with self._drained:
            self._in_flight -= count
            if not self._queue and self._in_flight == 0:
                self._drained.notify_all()

    def _next_items(self) -> list[tuple[Message, bool]] | None:
        queue, wake = self._queue, self._wake
        while not queue:
            if self._stopping:
                return None
            wake.clear()
            if queue or self._stopping:
                continue
            wake.wait(1.0)
        deadline = time.monotonic() + self.flush_interval
        while len(queue) < self.flush_at and not self._flushers and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wake.clear()
            if len(queue) >= self.flush_at or self._flushers:
                break
            wake.wait(remaining)
        with self._lock:
            count = min(self.flush_at, len(queue))
            items = [queue.popleft() for _ in range(count)]
            self._in_flight += count
        return items

    def _serialise(self, items: list[tuple[Message, bool]]) -> list[Batch]:
        """Encode each event once; split into batches of at most ~5 MiB.

        The usual batch is encoded in one call: if the whole of it is under the
        per-event limit, so is every event in it. Otherwise (or if any event needs
        the slow path) each event is encoded and checked on its own.
        """
        messages = [raw for raw, _ in items]
        try:
            text = encode_event(messages)
        except Exception:
            text = ""
        if text and len(text) <= MAX_EVENT_BYTES:
            return [([text[1:-1]], messages)]
        return self._serialise_each(items)

    def _serialise_each(self, items: list[tuple[Message, bool]]) -> list[Batch]:
        batches: list[Batch] = []
        parts: list[str] = []
        messages: list[Message] = []
        size = 0
        for raw, is_clean in items:
            try:
                text = dumps(raw) if is_clean else encode_event(raw)
            except Exception as exc:
                logger.error("event %r could not be serialised and was dropped: %s",
                             raw.get("event"), exc)
                report_error(self.on_error, EventNotSerializableError(str(exc)), [raw])
                continue
            if len(text) > MAX_EVENT_BYTES:
                self._oversize.hit(
                    "event %r is %d bytes, over the %d byte limit; dropped",
                    raw.get("event"), len(text), MAX_EVENT_BYTES,
                )
                report_error(
                    self.on_error,
                    EventTooLargeError(f"event is {len(text)} bytes (limit {MAX_EVENT_BYTES})"),
                    [raw],
                )
                continue
            parts.append(text)
            messages.append(raw)
            size += len(text) + 1
            if size >= MAX_BATCH_BYTES:
                batches.append((parts, messages))
                parts, messages, size = [], [], 0
        if parts:
            batches.append((parts, messages))
        if self._oversize.active:
            self._oversize.end()
        return batches

    def _upload(self, parts: list[str], messages: list[Message], uploader: Uploader) -> None:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt and self._abort.is_set():
                break
            try:
                body, headers = http.prepare_body(
                    build_body(self.api_key, parts, self.historical_migration), self.gzip
                )
                http.raise_for_status(uploader.post(self.url, body, headers, self.timeout))
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("uploaded %d events to %s", len(messages), self.url)
                return
            except Exception as exc:
                last = exc
                if not is_retryable(exc) or attempt == self.max_retries:
                    break
                delay = backoff_delay(attempt, getattr(exc, "retry_after", None))
                logger.debug("upload failed (%s); retrying in %.1f s", exc, delay)
                if self._abort.wait(delay):
                    break
        assert last is not None
        logger.error("failed to upload %d events: %s", len(messages), last)
        report_error(self.on_error, last, messages)


def send_now(api_key: str, url: str, message: Message, *, historical_migration: bool,
             gzip: bool, timeout: float) -> None:
    """``sync_mode``: one request for one event, no retries; errors go to the caller."""
    body = build_body(api_key, [dumps(message)], historical_migration)
    http.post_body(url, body, gzip=gzip, timeout=timeout)

