"""The queue and worker tasks of :class:`posthog.AsyncClient` (spec async §4.1, §4.2).

One deque feeds ``thread`` worker tasks on the bound loop. A worker collects a batch
(``flush_at`` items, ``flush_interval`` seconds, a flush, or stop), runs ``before_send``
and encodes it off-loop, then uploads it while it collects the next one. Whatever a
worker holds is registered as :class:`Work` until delivered, so the fallback in
:mod:`posthog.async_fallback` can still send it when the loop ends early.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING

from posthog._log import BurstLog, logger
from posthog.async_transport import (
    CALLBACK,
    Item,
    Piece,
    WorkerConfig,
    apply_before_send,
    count,
    encode_messages,
    split_batch,
    upload,
)

if TYPE_CHECKING:
    from posthog.async_client import AsyncClient


class Work:
    """Items a worker holds from taking them off the queue until delivered or given up.

    Left registered when a worker is cancelled, so the fallback can still send them.
    """

    __slots__ = ("pieces", "raw")

    def __init__(self) -> None:
        self.raw: list[Item] = []
        self.pieces: list[Piece] = []


class AsyncLane:
    """The queue and its worker tasks. ``put`` is the only call on the capture path."""

    def __init__(self, client: AsyncClient, max_queue_size: int, flush_at: int,
                 flush_interval: float, threads: int) -> None:
        self.client = client
        self.queue: deque[Item] = deque()
        self.max_size = max_queue_size if max_queue_size > 0 else 0
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.thread_count = max(1, int(threads))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.works: set[Work] = set()
        self.held = 0
        self.workers: set[asyncio.Task[None]] = set()
        self.started = False
        self.stopping = False
        self.flushers = 0
        self._want = flush_at
        self._waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._wake_scheduled = False
        self._full = BurstLog("PostHog async capture queue is full")

    @property
    def pending(self) -> int:
        """Items queued plus items a worker holds until its upload ends."""
        return len(self.queue) + self.held

    # ------------------------------------------------------------ admission

    def put(self, item: Item) -> bool:
        """Queue one event (loop thread, or any thread before binding)."""
        queue = self.queue
        if self.max_size and len(queue) >= self.max_size:
            self._full.hit("PostHog async capture queue is full (max_queue_size=%d); "
                           "event %r dropped", self.max_size, item[0].get("event"))
            return False
        queue.append(item)
        if self._waiters:
            size = len(queue)
            if size == 1 or size >= self._want:
                self._notify()
        if self._full.active:
            self._full.end()
        return True

    def put_threadsafe(self, item: Item, loop: asyncio.AbstractEventLoop) -> bool:
        """Queue one event from a thread while the loop runs; never blocks."""
        queue = self.queue
        if self.max_size and len(queue) >= self.max_size:
            self._full.hit("PostHog async capture queue is full (max_queue_size=%d); "
                           "event %r dropped", self.max_size, item[0].get("event"))
            return False
        queue.append(item)
        self.wake_threadsafe(loop)
        return True

    def wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have the loop look at the queue soon (from any thread; coalesced)."""
        if not self._wake_scheduled:
            # Set before scheduling: a wake already scheduled runs after this append.
            self._wake_scheduled = True
            with suppress(RuntimeError):  # the loop just closed: the exit fallback sends it
                loop.call_soon_threadsafe(self._thread_wake)

    def _thread_wake(self) -> None:
        self._wake_scheduled = False
        self.client._ensure_workers()
        self._notify()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        loop = self.loop
        assert loop is not None
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        handle = loop.call_later(timeout, _resolve, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)

    # ------------------------------------------------------------ workers

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker tasks on ``loop`` (once)."""
        if self.started:
            return
        self.started = True
        self.loop = loop
        config = WorkerConfig(self.client)
        ctx = contextvars.Context()  # workers must not inherit a request's context
        ctx.run(CALLBACK.set, self.client)
        for index in range(self.thread_count):
            task = ctx.run(loop.create_task, self._worker(config),
                           name=f"posthog-async-worker-{index}")
            self.workers.add(task)

    async def _collect(self, room: int, started: bool) -> list[Item] | None:
        """Wait for a batch: ``room`` items, ``flush_interval`` s, a flush, or stop.

        ``None`` means stop. With a batch already ``started`` (carried items) there is
        no waiting for a first item.
        """
        queue = self.queue
        if not started:
            while not queue:
                if self.stopping:
                    return None
                await self._wait(None)
        loop = self.loop
        assert loop is not None
        deadline = loop.time() + self.flush_interval
        while len(queue) < room and not self.flushers and not self.stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._want = room
            await self._wait(remaining)
        taken = min(room, len(queue))
        popleft = queue.popleft
        items = [popleft() for _ in range(taken)]
        self.held += taken
        return items

    async def _worker(self, config: WorkerConfig) -> None:
        loop = asyncio.get_running_loop()
        own = Work()  # what this worker holds between uploads: items in processing, carry
        self.works.add(own)
        uploading: asyncio.Task[None] | None = None
        task = asyncio.current_task()
        try:
            while True:
                carried = count(own.pieces)
                items = await self._collect(max(0, self.flush_at - carried), bool(carried))
                if items is None:
                    break
                if items:
                    own.raw = items
                    own.pieces.extend(await self._process(items))
                    own.raw = []
                batch, own.pieces = split_batch(own.pieces)
                if not batch:
                    continue
                work = Work()
                work.pieces = batch
                self.works.add(work)
                if uploading is not None:
                    await uploading
                uploading = loop.create_task(self._upload_work(work, config))
            if uploading is not None:
                await uploading
            self.works.discard(own)
        except asyncio.CancelledError:
            if uploading is not None and not uploading.done():
                uploading.cancel()
            if not self.client._closed:
                self.client._loop_ending()
            raise
        except Exception as exc:
            logger.error("async consumer stopped after an unexpected %s", type(exc).__name__,
                         exc_info=exc)
            self.works.discard(own)
            self._done(len(own.raw) + count(own.pieces))
        finally:
            if task is not None:
                self.workers.discard(task)
            self._check_drained()

    async def _process(self, items: list[Item]) -> list[Piece]:
        """``before_send`` (read now, so a change affects queued events) and encoding."""
        loop = asyncio.get_running_loop()
        hook = self.client.before_send
        if hook is None:
            messages = [message for message, _ in items]
        else:
            results = await apply_before_send(self.client, hook, items)
            messages = [message for message in results if message is not None]
        pieces = await loop.run_in_executor(None, encode_messages, messages)
        dropped = len(items) - count(pieces)
        if dropped:
            self._done(dropped)
        return pieces

    async def _upload_work(self, work: Work, config: WorkerConfig) -> None:
        parts = [text for text, _ in work.pieces]
        messages = [message for _, batch in work.pieces for message in batch]
        await upload(self.client, parts, messages, config)
        self.works.discard(work)
        self._done(len(messages))

    def _done(self, count: int) -> None:
        self.held -= count
        if self.held <= 0 and not self.queue:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drain_waiters and (not self.pending or not self.workers):
            waiters, self._drain_waiters = self._drain_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # ------------------------------------------------------------ flush and stop

    async def flush(self, timeout: float | None) -> bool:
        """Close partial batches now; wait until nothing is pending (``False`` on timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.flushers += 1
        self._notify()
        try:
            while self.pending and self.workers:
                fut: asyncio.Future[None] = loop.create_future()
                self._drain_waiters.append(fut)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(fut, remaining)
                except asyncio.TimeoutError:
                    return not self.pending
        finally:
            self.flushers -= 1
        if self.pending and not self.workers:
            left = self.discard()
            logger.warning("discarded %d async capture items because all workers exited", left)
        return True

    def discard(self) -> int:
        """Drop everything queued or held (nothing can send it any more)."""
        left = len(self.queue) + self.held
        self.queue.clear()
        self.works.clear()
        self.held = 0
        return left

    async def stop(self) -> None:
        """Stop the workers once the queue is empty and wait for them."""
        self.stopping = True
        self._notify()
        workers = list(self.workers)
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    def take_leftovers(self) -> tuple[list[Item], list[Piece]]:
        """Everything not delivered (for the fallback): raw items and encoded pieces."""
        raw: list[Item] = []
        pieces: list[Piece] = []
        for work in list(self.works):
            raw.extend(work.raw)
            pieces.extend(work.pieces)
        self.works.clear()
        while True:
            try:
                raw.append(self.queue.popleft())
            except IndexError:
                break
        self.held = 0
        return raw, pieces


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
