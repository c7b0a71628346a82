"""Loading flag definitions: ETag, status rules, cache provider, polling (§6.1, §6.2, §6.12)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from posthog._log import logger
from posthog.flags.local import FlagDefinitions
from posthog.transport import http

DEFINITIONS_TIMEOUT = 10.0
MAX_BACKOFF_FACTOR = 10


class _AsyncRunner:
    """A private event loop on a daemon thread, for cache providers with async methods."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, value: Any) -> Any:
        if not inspect.isawaitable(value):
            return value
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="posthog-cache-loop",
                                 daemon=True).start()
                self._loop = loop
        future = asyncio.run_coroutine_threadsafe(_await(value), self._loop)
        return future.result(timeout=30)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None


async def _await(value: Any) -> Any:
    return await value


def check_definitions(data: Any) -> dict[str, Any]:
    """A 200 body of ``/flags/definitions``; raises when quota limited or incomplete (§6.1)."""
    from posthog.flags.remote import check_quota

    check_quota(data)
    if not isinstance(data, dict) or not isinstance(data.get("flags"), list):
        raise ValueError("definitions body has no 'flags' list")
    for required in ("cohorts", "group_type_mapping"):
        if not isinstance(data.get(required), dict):
            raise ValueError(f"definitions body has no '{required}'")
    return data


def cache_payload(data: dict[str, Any]) -> dict[str, Any]:
    """What ``on_flag_definitions_received`` gets after a successful fetch (§6.12)."""
    return {
        "flags": data["flags"],
        "group_type_mapping": data["group_type_mapping"],
        "cohorts": data["cohorts"],
        "minimal_flag_called_events": bool(data.get("minimal_flag_called_events")),
        "property_matching_version": data.get("property_matching_version", 1),
    }


class DefinitionsLoader:
    """Fetches definitions, installs compiled snapshots, and polls every ``poll_interval``."""

    def __init__(
        self,
        *,
        host: str,
        api_key: str,
        secret_key: Callable[[], str | None],
        poll_interval: float,
        provider: Any = None,
        debug: Callable[[], bool] = lambda: False,
        on_install: Callable[[FlagDefinitions], None] | None = None,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self._secret_key = secret_key
        self.poll_interval = max(0.01, float(poll_interval))
        self.provider = provider
        self._debug = debug
        self._on_install = on_install
        self.definitions: FlagDefinitions | None = None
        self.etag: str | None = None
        self._lock = threading.Lock()
        self._sequence = 0
        self._published = 0
        self._auth_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._async = _AsyncRunner()
        self._shut_down = False
        self._cached: dict[str, Any] | None = None  # last definitions read from the provider

    # ------------------------------------------------------------ one load

    def load(self) -> None:
        """Load once, through the cache provider when one is configured."""
        provider = self.provider
        if provider is not None and not self._provider_says_fetch(provider):
            data = self._provider_call(provider, "get_flag_definitions", None)
            if isinstance(data, dict) and data == self._cached:
                return  # unchanged since the last read: nothing to recompile
            if isinstance(data, dict) and self._install(data, etag=None, seq=None):
                # Our own ETag described what we last fetched, not these definitions.
                self.etag = None
                self._cached = data
                return
            if self.definitions is not None:
                return
        self.fetch()

    def _provider_says_fetch(self, provider: Any) -> bool:
        return bool(self._provider_call(provider, "should_fetch_flag_definitions", True))

    def _provider_call(self, provider: Any, name: str, fallback: Any, *args: Any) -> Any:
        try:
            return self._async.run(getattr(provider, name)(*args))
        except Exception:
            logger.exception("flag definition cache provider %s() failed", name)
            return fallback

    def fetch(self) -> None:
        """``GET /flags/definitions`` and install the answer (spec §6.1 status rules)."""
        secret = self._secret_key()
        if not secret:
            return
        seq = self._next_sequence()
        try:
            response = http.get_json(
                self.definitions_url(), bearer=secret, timeout=DEFINITIONS_TIMEOUT, etag=self.etag
            )
            if response.status_code == 304:
                self._not_modified(response.headers.get("ETag"))
                return
            data = check_definitions(response.json())
        except Exception as exc:
            self._fetch_failed(exc)
            return
        self._auth_failures = 0
        if self._install(data, etag=response.headers.get("ETag"), seq=seq) and self.provider:
            self._provider_call(
                self.provider, "on_flag_definitions_received", None, cache_payload(data)
            )

    # Steps of a fetch, shared with the asyncio client's loader (``posthog.async_flags``).

    def definitions_url(self) -> str:
        return f"{self.host}/flags/definitions?token={quote(self.api_key)}&send_cohorts"

    def _next_sequence(self) -> int:
        with self._lock:
            self._sequence += 1
            return self._sequence

    def _not_modified(self, etag: str | None) -> None:
        """A 304: keep the definitions; the response's ETag if it sent one, else the old one."""
        self.etag = etag or self.etag
        self._auth_failures = 0

    def _fetch_failed(self, exc: Exception) -> None:
        """A failed fetch (quota, API error or anything else): logged, definitions kept."""
        if isinstance(exc, http.QuotaLimitError):
            logger.error("feature flags quota limited: local definitions kept as they are")
        elif isinstance(exc, http.APIError):
            self._api_error(exc)
        else:
            logger.warning(
                "could not load feature flags (%s); will retry in %s seconds",
                exc, self.poll_interval,
            )

    def _api_error(self, exc: http.APIError) -> None:
        status = exc.status
        if status in (401, 402, 403):
            self._auth_failures += 1
            if status in (401, 402):
                self.etag = None
                self._publish(FlagDefinitions.compile(
                    {"flags": [], "group_type_mapping": {}, "cohorts": {}}
                ))
            if self._auth_failures == 1:
                if status == 402:
                    logger.warning("feature flags quota exceeded (402): definitions cleared")
                else:
                    logger.error(
                        "loading feature flag definitions failed with %s: verify the project "
                        "api key and the secret (personal) api key; polling backs off until "
                        "it succeeds", status,
                    )
            if self._debug() and status in (401, 402):
                raise exc
            return
        logger.error("Error loading feature flags: %s", exc)

    def _install(self, data: dict[str, Any], *, etag: str | None, seq: int | None) -> bool:
        try:
            compiled = FlagDefinitions.compile(data)
        except Exception:
            logger.exception("could not compile flag definitions; keeping the previous ones")
            return False
        return self._install_compiled(compiled, etag=etag, seq=seq)

    def _install_compiled(
        self, compiled: FlagDefinitions, *, etag: str | None, seq: int | None
    ) -> bool:
        with self._lock:
            if seq is not None:
                if seq < self._published:
                    return False  # a newer fetch already published
                self._published = seq
            self.etag = etag or self.etag
        self._publish(compiled)
        return True

    def _publish(self, compiled: FlagDefinitions) -> None:
        self.definitions = compiled
        if self._on_install is not None:
            self._on_install(compiled)

    # ------------------------------------------------------------ polling

    @property
    def polling(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.polling:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="posthog-flag-poller",
                                        daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while True:
            factor = min(2 ** self._auth_failures, MAX_BACKOFF_FACTOR) if self._auth_failures else 1
            if self._stop.wait(self.poll_interval * factor):
                return
            try:
                self.load()
            except Exception:
                logger.exception("flag definitions poll failed")

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        self._thread = None

    def shutdown(self) -> None:
        """Stop polling and release the cache provider (once)."""
        self.stop()
        if self._shut_down:
            return
        self._shut_down = True
        if self.provider is not None:
            self._provider_call(self.provider, "shutdown", None)
        self._async.close()

    def after_fork(self, restart: bool) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._async = _AsyncRunner()
        if restart:
            self.start()
