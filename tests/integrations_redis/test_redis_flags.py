"""``RedisFlagDefinitionCache`` against a real redis-server, alone and under two SDK clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

import posthog
from posthog_integrations.devserver import DevServer
from posthog_integrations.redis_flags import RedisFlagDefinitionCache

if TYPE_CHECKING:
    from redis import Redis

    from posthog.flag_types import FlagDefinitionCacheData

DATA: FlagDefinitionCacheData = {
    "flags": [{"id": 1, "key": "beta", "active": True,
               "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}],
    "group_type_mapping": {"0": "company"},
    "cohorts": {},
    "minimal_flag_called_events": False,
    "property_matching_version": 1,
}


def _pair(redis_client: Redis, prefix: str, **kwargs: Any
          ) -> tuple[RedisFlagDefinitionCache, RedisFlagDefinitionCache]:
    return (RedisFlagDefinitionCache(redis_client, key_prefix=prefix, **kwargs),
            RedisFlagDefinitionCache(redis_client, key_prefix=prefix, **kwargs))


def test_only_one_worker_gets_the_lock(redis_client: Redis, prefix: str) -> None:
    first, second = _pair(redis_client, prefix)
    assert first.should_fetch_flag_definitions() is True
    assert second.should_fetch_flag_definitions() is False
    assert redis_client.get(f"{prefix}:lock") == first.token.encode()
    redis_client.expire(f"{prefix}:lock", 5)
    assert first.should_fetch_flag_definitions() is True  # its own lock: renewed
    assert 55 <= redis_client.ttl(f"{prefix}:lock") <= 60
    assert second.should_fetch_flag_definitions() is False
    other = RedisFlagDefinitionCache(redis_client, key_prefix=prefix + ":other")
    assert other.should_fetch_flag_definitions() is True  # prefixes are independent


def test_the_other_worker_reads_what_the_first_stored(redis_client: Redis, prefix: str) -> None:
    first, second = _pair(redis_client, prefix)
    assert second.get_flag_definitions() is None
    first.should_fetch_flag_definitions()
    first.on_flag_definitions_received(DATA)
    assert second.get_flag_definitions() == DATA
    assert redis_client.ttl(f"{prefix}:data") == -1  # no data TTL by default


def test_data_ttl(redis_client: Redis, prefix: str) -> None:
    first, second = _pair(redis_client, prefix, data_ttl_seconds=100)
    assert first.should_fetch_flag_definitions()
    first.on_flag_definitions_received(DATA)
    assert 95 <= redis_client.ttl(f"{prefix}:data") <= 100
    redis_client.expire(f"{prefix}:data", 3)
    assert first.should_fetch_flag_definitions()  # the holder keeps the copy alive
    assert 95 <= redis_client.ttl(f"{prefix}:data") <= 100
    redis_client.expire(f"{prefix}:data", 3)
    assert not second.should_fetch_flag_definitions()  # a reader does not
    assert redis_client.ttl(f"{prefix}:data") <= 3


def test_an_expired_lock_lets_another_worker_take_over(redis_client: Redis, prefix: str) -> None:
    first, second = _pair(redis_client, prefix, lock_ttl_seconds=1)
    assert first.should_fetch_flag_definitions()
    assert not second.should_fetch_flag_definitions()
    deadline = time.monotonic() + 5
    while not second.should_fetch_flag_definitions():
        assert time.monotonic() < deadline, "the 1 s lock never expired"
        time.sleep(0.1)
    assert first.should_fetch_flag_definitions() is False
    first.shutdown()  # the old holder must not release the new holder's lock
    assert redis_client.get(f"{prefix}:lock") == second.token.encode()


def test_shutdown_releases_only_its_own_lock(redis_client: Redis, prefix: str) -> None:
    first, second = _pair(redis_client, prefix)
    first.should_fetch_flag_definitions()
    assert not second.should_fetch_flag_definitions()
    second.shutdown()
    assert redis_client.get(f"{prefix}:lock") == first.token.encode()
    first.shutdown()
    assert redis_client.exists(f"{prefix}:lock") == 0
    third = RedisFlagDefinitionCache(redis_client, key_prefix=prefix)
    third.shutdown()  # never asked for the lock: nothing to release, no error
    assert third.should_fetch_flag_definitions() is True


@pytest.mark.parametrize("stored", [b"{not json", b"\xff\xfe", b"[]", b'{"flags": {}}',
                                    b'{"flags": [], "cohorts": {}}', b'"text"'])
def test_invalid_data_is_none(redis_client: Redis, prefix: str, stored: bytes) -> None:
    redis_client.set(f"{prefix}:data", stored)
    assert RedisFlagDefinitionCache(redis_client, key_prefix=prefix).get_flag_definitions() is None


def test_url_and_settings(redis_url: str, redis_client: Redis, prefix: str) -> None:
    cache = RedisFlagDefinitionCache(redis_url, key_prefix=prefix, lock_ttl_seconds=7)
    assert cache.should_fetch_flag_definitions()
    assert 0 < redis_client.ttl(f"{prefix}:lock") <= 7
    cache.on_flag_definitions_received(DATA)
    cache.shutdown()  # releases the lock and closes the client it created
    assert redis_client.exists(f"{prefix}:lock") == 0
    assert RedisFlagDefinitionCache(redis_client, key_prefix=prefix).get_flag_definitions() == DATA
    assert repr(cache) == f"<RedisFlagDefinitionCache {prefix!r}>"
    for bad in ({"lock_ttl_seconds": 0}, {"lock_ttl_seconds": 1.5},
                {"data_ttl_seconds": -1}, {"lock_ttl_seconds": True}):
        with pytest.raises(ValueError):
            RedisFlagDefinitionCache(redis_client, **bad)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_token(redis_client: Redis, prefix: str) -> None:
    cache = RedisFlagDefinitionCache(redis_client, key_prefix=prefix)
    assert cache.should_fetch_flag_definitions()
    parent = cache.token
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            own_token = cache.token != parent
            kept_out = cache.should_fetch_flag_definitions() is False
            cache.shutdown()  # must not release the parent's lock
            code = 0 if own_token and kept_out else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.token == parent
    assert redis_client.get(f"{prefix}:lock") == parent.encode()
    assert cache.should_fetch_flag_definitions() is True


def test_works_without_redis_until_constructed(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import posthog_integrations, posthog_integrations.redis_flags as m\n"
        "try:\n"
        "    m.RedisFlagDefinitionCache('redis://127.0.0.1:1/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "pip install 'posthog-integrations[redis]'" in out.stdout


def _clients(server: DevServer, redis_url: str, prefix: str,
             **kwargs: Any) -> list[posthog.Client]:
    """A "leader" and a "follower" worker, told apart by their secret keys."""
    return [
        posthog.Client("phc_x", host=server.url, secret_key=f"phs_{name}",
                       flag_definition_cache_provider=RedisFlagDefinitionCache(
                           redis_url, key_prefix=prefix), **kwargs)
        for name in ("leader", "follower")
    ]


def _beta(client: posthog.Client) -> Any:
    result = client.get_feature_flag_result("beta", "u", only_evaluate_locally=True,
                                            send_feature_flag_events=False)
    return None if result is None else result.get_value()


def _definition_gets(server: DevServer, name: str | None = None) -> int:
    return sum(1 for r in server.requests if r["path"] == "/flags/definitions"
               and (name is None or r["headers"].get("authorization") == f"Bearer phs_{name}"))


def test_two_clients_fetch_the_definitions_once(redis_url: str, redis_client: Redis,
                                                prefix: str) -> None:
    with DevServer() as server:
        server.set_flags(dict(DATA))
        clients = _clients(server, redis_url, prefix)
        try:
            assert [_beta(client) for client in clients] == [True, True]
            assert _definition_gets(server) == 1
            assert _definition_gets(server, "leader") == 1
            assert [r["method"] for r in server.requests] == ["GET"]  # no /flags POST
        finally:
            for client in clients:
                client.shutdown()
        assert redis_client.exists(f"{prefix}:lock") == 0  # the leader let go on shutdown
        assert redis_client.exists(f"{prefix}:data") == 1


def test_a_change_reaches_the_follower_through_redis(redis_url: str, prefix: str) -> None:
    with DevServer() as server:
        server.set_flags(dict(DATA))
        leader, follower = _clients(server, redis_url, prefix, poll_interval=0.1)
        try:
            assert _beta(leader) is True
            assert _beta(follower) is True
            server.set_flags({**DATA, "flags": [{**DATA["flags"][0], "active": False}]})
            deadline = time.monotonic() + 10
            while _beta(follower) is not False:
                assert time.monotonic() < deadline, "the follower never saw the change"
                time.sleep(0.05)
            assert _definition_gets(server, "leader") >= 2
            assert _definition_gets(server, "follower") == 0
        finally:
            leader.shutdown()
            follower.shutdown()
