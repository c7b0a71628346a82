"""The ``posthog`` logger, its ``[PostHog]`` prefix, and burst-aware reporting."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("posthog")


class _PrefixFilter(logging.Filter):
    """Prefix every record on the ``posthog`` logger with ``[PostHog] ``."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and not msg.startswith("[PostHog] "):
            record.msg = "[PostHog] " + msg
        return True


def install_prefix_filter() -> None:
    if not any(isinstance(f, _PrefixFilter) for f in logger.filters):
        logger.addFilter(_PrefixFilter())


class BurstLog:
    """Logs the first occurrence of a recurring problem, then counts until the burst ends.

    A full queue can reject thousands of events a second; one warning when the
    burst starts and one summary when it ends say the same thing without
    flooding the host application's logs.
    """

    __slots__ = ("_count", "_level", "_lock", "_what")

    def __init__(self, what: str, level: int = logging.WARNING) -> None:
        self._what = what
        self._level = level
        self._count = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._count > 0

    def hit(self, message: str, *args: object) -> None:
        with self._lock:
            self._count += 1
            first = self._count == 1
        if first:
            suffix = " (further drops are counted until this clears)"
            logger.log(self._level, message + suffix, *args)

    def end(self) -> None:
        """Close the burst; logs a summary when more than one event was affected."""
        with self._lock:
            count, self._count = self._count, 0
        if count > 1:
            logger.log(self._level, "%s: %d events were dropped in total", self._what, count)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
