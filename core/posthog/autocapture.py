"""Uncaught exceptions: ``sys.excepthook`` / ``threading.excepthook`` wrappers (spec core §8.5)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from posthog._log import logger


class RateLimiter:
    """A token bucket per exception type; the call that empties a bucket is itself refused."""

    def __init__(self, size: int, refill: int, interval: float) -> None:
        self.size = max(0, min(100, int(size)))
        self.refill = max(0, min(self.size, int(refill)))
        self.interval = max(0.0, min(86400.0, float(interval)))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp = self._buckets.get(key, (float(self.size), now))
            if self.interval > 0 and now > stamp:
                periods = int((now - stamp) // self.interval)
                if periods:
                    tokens = min(float(self.size), tokens + periods * self.refill)
                    stamp += periods * self.interval
            tokens -= 1
            self._buckets[key] = (max(tokens, 0.0), stamp)
            return tokens > 0


Capture = Callable[[BaseException, "TracebackType | None", str, str], Any]


class ExceptionHooks:
    """Installs the two hooks, chains to the previous ones, and restores them if still ours."""

    def __init__(self, capture: Capture) -> None:
        self._capture = capture
        self._previous_sys: Callable[..., Any] | None = None
        self._previous_thread: Callable[..., Any] | None = None

    def install(self) -> None:
        self._previous_sys = sys.excepthook
        self._previous_thread = threading.excepthook
        sys.excepthook = self._sys_hook
        threading.excepthook = self._thread_hook

    def uninstall(self) -> None:
        if sys.excepthook == self._sys_hook and self._previous_sys is not None:
            sys.excepthook = self._previous_sys
        if threading.excepthook == self._thread_hook and self._previous_thread is not None:
            threading.excepthook = self._previous_thread

    def _sys_hook(
        self, exc_type: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        try:
            if isinstance(value, Exception):
                self._capture(value, tb, "fatal", "python.sys_excepthook")
        except Exception:
            logger.exception("exception autocapture failed")
        previous = self._previous_sys or sys.__excepthook__
        previous(exc_type, value, tb)

    def _thread_hook(self, args: Any) -> None:
        try:
            value = args.exc_value
            if isinstance(value, Exception):
                self._capture(value, args.exc_traceback, "error", "python.threading_excepthook")
        except Exception:
            logger.exception("exception autocapture failed")
        previous = self._previous_thread or threading.__excepthook__
        previous(args)
