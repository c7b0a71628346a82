"""``AsyncClient`` / ``AsyncPosthog``: the asyncio client (spec async.md).

Capture methods are plain functions that build the event on the caller's thread (the
same code as the sync client, so the wire JSON is the same) and queue it; worker tasks
on the bound event loop batch and upload through one shared ``httpx.AsyncClient``.
Nothing on the caller's path waits on the network, and the one-off costs (importing
httpx, building its client) and per-batch CPU work (JSON, gzip, plain callbacks) run off
the loop. See :mod:`posthog.async_transport`, :mod:`posthog.async_flags` and
:mod:`posthog.async_fallback` for the parts.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from posthog import async_fallback
from posthog._log import logger
from posthog._settings import SettingsMixin
from posthog.async_capture import CROSS_LOOP, AsyncCaptureMixin, LoopError, _running_loop
from posthog.async_flags import AsyncFlags, spawn
from posthog.async_lane import AsyncLane
from posthog.async_transport import (
    CALLBACK,
    HTTPX_MISSING,
    httpx_available,
    start_http_client,
    warm_up,
    warm_up_in_background,
)
from posthog.client import Client
from posthog.feature_flags import FeatureFlagsMixin
from posthog.transport import http
from posthog.types import BeforeSendCallback, CaptureMode

if TYPE_CHECKING:
    import httpx

    from posthog.flags.called import CalledTracker, FlagCall
    from posthog.flags.local import FlagDefinitions
    from posthog.flags.snapshot import FeatureFlagEvaluations

__all__ = ["AsyncClient", "AsyncPosthog"]

# Live enabled clients per (api_key, host), shared rule with the official SDK's warning.
_live: dict[tuple[str, str], weakref.WeakSet[AsyncClient]] = {}
_warned_duplicates: set[tuple[str, str]] = set()


class _Calls:
    """In-flight ``capture_immediate``/flag/remote-config calls, awaited by ``shutdown``."""

    def __init__(self) -> None:
        self.active = 0
        self._idle: list[asyncio.Future[None]] = []

    def enter(self) -> None:
        self.active += 1

    def exit(self) -> None:
        self.active -= 1
        if not self.active:
            waiters, self._idle = self._idle, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def idle(self) -> None:
        while self.active:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            await fut


class AsyncClient(SettingsMixin, AsyncCaptureMixin):
    """PostHog for asyncio apps. Create it once (e.g. in an ASGI lifespan) and reuse it.

    ``capture()`` and the other capture methods return at once; ``await
    client.shutdown()`` (or ``async with AsyncPosthog(...)``) delivers what is queued.
    """

    enable_exception_autocapture = False  # new_context(client=...) does not capture by default

    def __init__(
        self,
        project_api_key: str,
        host: str | None = None,
        debug: bool = False,
        max_queue_size: int = 10000,
        send: bool = True,
        on_error: Any = None,
        flush_at: int = 100,
        flush_interval: float = 5.0,
        gzip: bool = False,
        max_retries: int = 3,
        timeout: float | None = 15,
        thread: int = 1,
        disabled: bool = False,
        disable_geoip: bool = True,
        is_server: bool = True,
        historical_migration: bool = False,
        super_properties: dict[str, Any] | None = None,
        before_send: BeforeSendCallback | None = None,
        log_captured_exceptions: bool = False,
        project_root: str | None = None,
        capture_exception_code_variables: bool = False,
        code_variables_mask_patterns: list[str] | None = None,
        code_variables_ignore_patterns: list[str] | None = None,
        code_variables_mask_url_credentials: bool | None = None,
        code_variables_detect_secrets: bool | None = None,
        in_app_modules: list[str] | None = None,
        capture_mode: CaptureMode | str | None = None,
        capture_compression: Any = None,
        capture_trace_context: bool = False,
        secret_key: str | None = None,
        personal_api_key: str | None = None,
        feature_flags_request_timeout_seconds: float = 3,
        feature_flags_request_max_retries: int = 1,
        app_host: str | None = None,
        email_request_timeout_seconds: float = 15,
        email_request_max_retries: int = 2,
        migrated_from: str | None = None,
        *,
        enable_local_evaluation: bool = True,
        flag_definition_cache_provider: Any = None,
        poll_interval: float = 30,
    ) -> None:
        if flush_at <= 0:
            raise ValueError("flush_at must be greater than zero")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be greater than zero")
        self.api_key = (project_api_key or "").strip() if isinstance(project_api_key, str) else ""
        self.raw_host = host
        self.host = http.normalize_host(host)
        self.debug = debug
        self.send = send
        self.on_error = on_error
        self.flush_at = int(flush_at)
        self.flush_interval = float(flush_interval)
        self.max_queue_size = max_queue_size
        self.gzip = gzip
        self.max_retries = max(0, int(max_retries))
        self.timeout = timeout
        self.thread = max(1, int(thread))
        self.disabled = disabled
        self.disable_geoip = disable_geoip
        self.is_server = is_server
        self.historical_migration = historical_migration
        self.super_properties = super_properties
        self.before_send = before_send
        self.log_captured_exceptions = log_captured_exceptions
        self.project_root = project_root if project_root is not None else os.getcwd()
        self.capture_exception_code_variables = capture_exception_code_variables
        self.code_variables_mask_patterns = code_variables_mask_patterns
        self.code_variables_ignore_patterns = code_variables_ignore_patterns
        self.code_variables_mask_url_credentials = code_variables_mask_url_credentials
        self.code_variables_detect_secrets = code_variables_detect_secrets
        self.in_app_modules = in_app_modules
        self.capture_compression = capture_compression
        self.capture_trace_context = capture_trace_context
        self.feature_flags_request_timeout_seconds = feature_flags_request_timeout_seconds
        self.feature_flags_request_max_retries = max(0, int(feature_flags_request_max_retries))
        self.app_host = app_host
        self.email_request_timeout_seconds = email_request_timeout_seconds
        self.email_request_max_retries = max(0, int(email_request_max_retries))
        self.migrated_from = migrated_from
        self.enable_local_evaluation = enable_local_evaluation
        self.flag_definition_cache_provider = flag_definition_cache_provider
        self.poll_interval = poll_interval
        self.release_id = os.environ.get("POSTHOG_RELEASE_ID", "").strip() or None
        self._secret_key = Client._resolve_secret(secret_key, personal_api_key)
        self.capture_mode = Client._resolve_capture_mode(capture_mode)
        if not self.api_key:
            logger.error("project_api_key is missing or blank; the client is disabled")
            self.disabled = True

        self._hooks = None
        self._rate_limiter = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bind_lock = threading.Lock()
        self._lane = AsyncLane(self, max_queue_size, self.flush_at, self.flush_interval,
                               self.thread)
        self._flags = AsyncFlags(self)
        self._calls = _Calls()
        self._http: httpx.AsyncClient | None = None
        self._http_future: asyncio.Future[httpx.AsyncClient] | None = None
        self._shutdown_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False  # admission stopped (shutdown began)
        self._closed = False  # shutdown finished
        self._loop_ended = False  # the bound loop tore down without shutdown()
        self._warned_closed = False
        self._tracked = False
        self._fallback_lock = threading.Lock()
        self._called_: CalledTracker | None = None
        self._minimal_events = False
        self._register()
        if not self.disabled:
            # The first capture on the loop must not pay for importing httpx and the like.
            if _running_loop() is None:
                warm_up()
            else:
                warm_up_in_background()

    # ------------------------------------------------------------ configuration


    def _register(self) -> None:
        if self.disabled or not self.send:
            return
        key = (self.api_key, self.host)
        live = _live.setdefault(key, weakref.WeakSet())
        if len(live) and key not in _warned_duplicates:
            _warned_duplicates.add(key)
            logger.warning("Multiple active PostHog clients detected for the same project API "
                           "key and host. Reuse one client per application when possible.")
        live.add(self)

    def _unregister(self) -> None:
        live = _live.get((self.api_key, self.host))
        if live is not None:
            live.discard(self)

    # ------------------------------------------------------------ loop binding

    def _bind_for(self, running: asyncio.AbstractEventLoop) -> None:
        """Bind to ``running`` if unbound; raise if bound to another loop."""
        loop = self._loop
        if loop is running:
            return
        if loop is None:
            with self._bind_lock:
                if self._loop is None:
                    self._loop = running
                    self._lane.loop = running
                    self._track()
            if self._loop is running:
                return
        raise LoopError(CROSS_LOOP)

    def _track(self) -> None:
        if not self._tracked:
            self._tracked = True
            async_fallback.track(self)

    # ------------------------------------------------------------ transport

    def _ensure_workers(self) -> None:
        """Start the workers on the bound loop (never when disabled, not sending or closed)."""
        lane = self._lane
        loop = self._loop
        if (lane.started or loop is None or self._closed or self._loop_ended or self.disabled
                or not self.send):
            return
        lane.start(loop)
        self._start_http(loop)

    def _start_http(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[httpx.AsyncClient]:
        fut = self._http_future
        if fut is None:
            fut = self._http_future = start_http_client(loop, self.host)
        return fut

    async def _http_client(self) -> httpx.AsyncClient:
        """The shared ``httpx.AsyncClient``, built in an executor thread on first use."""
        client = self._http
        if client is None:
            if not httpx_available():
                raise RuntimeError(HTTPX_MISSING)
            fut = self._start_http(asyncio.get_running_loop())
            try:
                client = self._http = await asyncio.shield(fut)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._http_future is fut:
                    self._http_future = None  # the next call builds it again
                raise
        return client

    # ------------------------------------------------------------ lifecycle

    def _schedule(self, coro: Any, name: str) -> None:
        task = spawn(coro, name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self, timeout_seconds: float | None = 10) -> None:
        """Send what is queued now and wait for it (at most ``timeout_seconds``)."""
        if not self.send or self.disabled or not self._lane.pending:
            return
        running = asyncio.get_running_loop()
        if CALLBACK.get() is self:  # from on_error/before_send or a worker: do not wait
            self._schedule(self.flush(timeout_seconds), "posthog-async-flush")
            return
        try:
            self._bind_for(running)
        except LoopError as exc:
            logger.error("flush: %s", exc)
            return
        self._ensure_workers()
        try:
            drained = await self._lane.flush(timeout_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("flush failed")
            return
        if not drained:
            logger.warning("flush timed out after %s seconds with %d items pending",
                           timeout_seconds, self._lane.pending)

    async def shutdown(self) -> None:
        """Stop accepting events, deliver everything queued, then release the client.

        Safe to call twice; if cancelled, the workers keep running and it can be awaited
        again. Called from ``before_send``/``on_error`` it is scheduled in the background.
        """
        running = asyncio.get_running_loop()
        self._closing = True
        if CALLBACK.get() is self:
            if not self._closed:
                self._schedule(self._shutdown(), "posthog-async-shutdown")
            return
        self._bind_for(running)
        await self._shutdown()

    join = shutdown

    async def _shutdown(self) -> None:
        if self._shutdown_lock is None:
            self._shutdown_lock = asyncio.Lock()
        async with self._shutdown_lock:
            if self._closed:
                return
            errors: list[BaseException] = []
            await self._calls.idle()
            if self._lane.pending and self.send and not self.disabled:
                self._ensure_workers()
                await self._lane.flush(None)
            for step in (self._lane.stop, self._flags.close, self._close_http):
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.exception("AsyncClient shutdown step failed")
                    errors.append(exc)
            self._unregister()
            if self._called_ is not None:
                self._called_.clear()
            self._closed = True
            if errors and self.debug:
                raise errors[0]

    async def _close_http(self) -> None:
        fut = self._http_future
        if fut is None:
            return
        try:
            client = await fut
        except Exception:
            return  # never built (httpx missing): nothing to close
        await client.aclose()

    async def __aenter__(self) -> AsyncClient:
        if not httpx_available():
            raise RuntimeError(HTTPX_MISSING)
        loop = asyncio.get_running_loop()
        self._bind_for(loop)
        if not self._closing and not self.disabled:
            self._ensure_workers()
            if self.secret_key:
                self._flags.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        await self.shutdown()
        return False

    # ------------------------------------------------------------ when the loop ends early

    def _loop_ending(self) -> None:
        """A worker was cancelled by its loop tearing down (no ``shutdown()``)."""
        if self._loop_ended:
            return
        self._loop_ended = True
        async_fallback.loop_ended(self)

    # ------------------------------------------------------------ feature flags

    async def evaluate_flags(
        self,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Any] | None = None,
        disable_geoip: bool | None = None,
        flag_keys: list[str] | None = None,
        device_id: str | None = None,
    ) -> FeatureFlagEvaluations:
        """A snapshot of flags for one person (local first with a secret key, else ``/flags``).

        Never raises, except when used from another event loop.
        """
        from posthog.flags.snapshot import FeatureFlagEvaluations

        distinct_id = FeatureFlagsMixin._resolve_id(distinct_id)
        if self.disabled or distinct_id is None or distinct_id == "":
            return FeatureFlagEvaluations(None, "")
        if flag_keys == [] or self._closing:
            return FeatureFlagEvaluations(None, distinct_id)
        self._bind_for(asyncio.get_running_loop())
        device_id = FeatureFlagsMixin._resolve_device(device_id)
        self._calls.enter()
        try:
            return await self._flags.evaluate(
                distinct_id, groups=groups, person_properties=person_properties,
                group_properties=group_properties, disable_geoip=disable_geoip,
                flag_keys=flag_keys, device_id=device_id,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("[FEATURE FLAGS] Async evaluation failed (%s, status=%s)",
                         type(exc).__name__, getattr(exc, "status", None))
            return FeatureFlagEvaluations(None, distinct_id)
        finally:
            self._calls.exit()

    async def get_remote_config_payload(self, key: str) -> Any:
        """A remote config flag's payload (needs ``secret_key``); ``None`` on failure."""
        if self.disabled:
            return None
        if not self.secret_key:
            logger.warning("[FEATURE FLAGS] secret_key is required to fetch remote config")
            return None
        if self._closing:
            return None
        self._bind_for(asyncio.get_running_loop())
        self._calls.enter()
        try:
            return await self._flags.remote_config(key)
        finally:
            self._calls.exit()

    def _on_definitions(self, definitions: FlagDefinitions) -> None:
        self._minimal_events = definitions.minimal_flag_called_events

    def _flag_called(self, call: FlagCall, distinct_id: Any, groups: Mapping[str, Any] | None,
                     disable_geoip: bool | None) -> None:
        """``$feature_flag_called`` for a snapshot read, unless already reported (§7.2)."""
        from posthog.flags.called import MINIMAL_ALLOWLIST, CalledTracker

        if self.disabled:
            return
        tracker = self._called_
        if tracker is None:
            tracker = self._called_ = CalledTracker()
        if not tracker.first_time(distinct_id, call.key, call.value, groups):
            return
        try:
            self._capture_event(
                "$feature_flag_called", distinct_id, call.properties(), None, None,
                dict(groups) if groups else None, None, disable_geoip,
                MINIMAL_ALLOWLIST if call.use_minimal else None,
            )
        except Exception as exc:
            self._failed("capture", exc)


class AsyncPosthog(AsyncClient):
    """The recommended name for :class:`AsyncClient`."""
