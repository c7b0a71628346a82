"""A Redis-backed flag definition cache (spec §6.12): one worker fetches, every worker shares.

    from posthog_integrations.redis_flags import RedisFlagDefinitionCache

    client = posthog.Client(
        "phc_...", secret_key="phs_...",
        flag_definition_cache_provider=RedisFlagDefinitionCache("redis://localhost:6379/0"),
    )

Needs the ``redis`` package (``pip install 'posthog-integrations[redis]'``), imported
only when a cache is created, so ``import posthog_integrations`` works without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from redis import Redis

    from posthog.flag_types import FlagDefinitionCacheData

__all__ = ["RedisFlagDefinitionCache"]

logger = logging.getLogger("posthog_integrations.redis_flags")

# KEYS[1] = lock key, ARGV[1] = token, ARGV[2] = ttl: extend the lock only if it is ours.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] = lock key, ARGV[1] = token: delete the lock only if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer number of seconds, got {value!r}")
    return value


class RedisFlagDefinitionCache:
    """Shares flag definitions between workers: whoever holds ``<prefix>:lock`` fetches.

    The lock holder fetches from PostHog and stores the definitions in ``<prefix>:data``;
    the other workers install that copy instead of fetching. A holder that stops
    polling loses the lock after ``lock_ttl_seconds`` and another worker takes over, so
    keep it above the client's ``poll_interval`` (default 30 s). ``data_ttl_seconds``
    expires the stored copy; the holder renews it on every poll, so it only lapses when
    no worker is fetching.
    """

    def __init__(
        self,
        redis_client_or_url: Redis | str,
        *,
        key_prefix: str = "posthog:flag_definitions",
        lock_ttl_seconds: int = 60,
        data_ttl_seconds: int | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ImportError(
                "RedisFlagDefinitionCache needs the redis package: "
                "pip install 'posthog-integrations[redis]'"
            ) from exc
        self.lock_ttl_seconds = _positive_int("lock_ttl_seconds", lock_ttl_seconds)
        self.data_ttl_seconds = (
            None if data_ttl_seconds is None
            else _positive_int("data_ttl_seconds", data_ttl_seconds)
        )
        self._owns_client = isinstance(redis_client_or_url, str)
        self.redis: Redis = (
            redis.Redis.from_url(redis_client_or_url)
            if isinstance(redis_client_or_url, str)
            else redis_client_or_url
        )
        self.key_prefix = key_prefix
        self.lock_key = f"{key_prefix}:lock"
        self.data_key = f"{key_prefix}:data"
        self._pid = -1
        self._token = ""

    def __repr__(self) -> str:
        return f"<RedisFlagDefinitionCache {self.key_prefix!r}>"

    @property
    def token(self) -> str:
        """This process's lock token; a forked child gets its own, never its parent's lock."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid, self._token = pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex}"
        return self._token

    def should_fetch_flag_definitions(self) -> bool:
        """Take the lock (``SET NX EX``), or renew it if this process holds it; True if held."""
        token = self.token
        ttl = self.lock_ttl_seconds
        held = bool(self.redis.set(self.lock_key, token, nx=True, ex=ttl)) or bool(
            self.redis.eval(_REFRESH, 1, self.lock_key, token, ttl)
        )
        if held and self.data_ttl_seconds is not None:
            # A 304 does not store the data again: keep it alive while someone is fetching.
            self.redis.expire(self.data_key, self.data_ttl_seconds)
        return held

    def get_flag_definitions(self) -> FlagDefinitionCacheData | None:
        """The stored definitions, or None when there are none or they are not valid."""
        raw = self.redis.get(self.data_key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:  # includes UnicodeDecodeError
            logger.warning("ignoring %s: not valid JSON (%s)", self.data_key, exc)
            return None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("flags"), list)
            and isinstance(data.get("group_type_mapping"), Mapping)
            and isinstance(data.get("cohorts"), Mapping)
        ):
            logger.warning("ignoring %s: not flag definitions", self.data_key)
            return None
        return cast("FlagDefinitionCacheData", data)

    def on_flag_definitions_received(self, data: FlagDefinitionCacheData) -> None:
        """Store freshly fetched definitions for the other workers."""
        text = json.dumps(data, separators=(",", ":"))
        self.redis.set(self.data_key, text, ex=self.data_ttl_seconds)

    def shutdown(self) -> None:
        """Release the lock if this process holds it (compare-and-delete), then disconnect."""
        try:
            if self._pid == os.getpid():
                self.redis.eval(_RELEASE, 1, self.lock_key, self._token)
        finally:
            if self._owns_client:
                self.redis.close()
