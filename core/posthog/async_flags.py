"""Feature flags for :class:`posthog.AsyncClient`: ``/flags``, remote config, local evaluation.

Remote evaluation follows spec async §5. With a secret (personal) API key the client
also evaluates locally, like the sync client: definitions are loaded by a task on the
bound loop through the core's :class:`~posthog.flags.poller.DefinitionsLoader` rules
(ETag, status handling, cache provider) and evaluated by the core's evaluator, so
``evaluate_flags`` answers without a request unless a flag needs the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode

from posthog._log import logger
from posthog.async_transport import error_for, is_async_callable
from posthog.events import dumps
from posthog.flag_types import FlagsResponse, parse_flags_response
from posthog.flags.local import FlagDefinitions
from posthog.flags.poller import (
    DEFINITIONS_TIMEOUT,
    MAX_BACKOFF_FACTOR,
    DefinitionsLoader,
    cache_payload,
    check_definitions,
)
from posthog.flags.remote import FLAGS_PATH, group_properties_with_keys
from posthog.flags.snapshot import Evaluated, FeatureFlagEvaluations
from posthog.transport import http

if TYPE_CHECKING:
    from posthog.async_client import AsyncClient

_RETRY_STATUSES = (502, 504)
_SAME = object()


def _flags_content(body: dict[str, Any], api_key: str) -> bytes:
    payload = dict(body)
    payload["sent_at"] = http.utc_now_iso()
    payload["token"] = api_key
    return dumps(payload).encode("ascii")


def _parse_flags(content: bytes) -> FlagsResponse:
    data = json.loads(content)
    if not isinstance(data, Mapping):
        raise ValueError("/flags answered with something other than a JSON object")
    limited = data.get("quotaLimited")
    if isinstance(limited, list) and "feature_flags" in limited:
        raise http.QuotaLimitError(200, "Feature flags quota limited")
    return parse_flags_response(data)


def _transient(exc: BaseException) -> bool:
    """Retried on /flags: any httpx transport error (refused, timeouts…) and 502/504."""
    if isinstance(exc, http.APIError):
        return exc.status in _RETRY_STATUSES
    import httpx

    return isinstance(exc, httpx.TransportError)


def _status(exc: BaseException) -> Any:
    return exc.status if isinstance(exc, http.APIError) else None


def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
    """A task in a fresh context (it must not keep a request's context alive)."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[Any] = contextvars.Context().run(loop.create_task, coro, name=name)
    return task


class AsyncDefinitionsLoader(DefinitionsLoader):
    """The core loader's rules, with its I/O on the event loop and its CPU work off it."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(
            host=client.host,
            api_key=client.api_key,
            secret_key=lambda: client.secret_key,
            poll_interval=client.poll_interval,
            provider=client.flag_definition_cache_provider,
            debug=lambda: client.debug,
            on_install=client._on_definitions,
        )
        self._client = client
        self._first: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None

    async def ready(self) -> FlagDefinitions | None:
        """Definitions, loading them first if this is the first call."""
        found = self.definitions
        if found is not None:
            return found
        first = self._first
        if first is None:
            first = self._first = spawn(self._initial(), "posthog-async-flags-load")
        if not first.done():
            await asyncio.shield(first)
        return self.definitions

    async def _initial(self) -> None:
        await self._load_logged()
        if self._client.enable_local_evaluation and not self._shut_down:
            self._poller = spawn(self._poll_async(), "posthog-async-flags-poll")

    async def _load_logged(self) -> None:
        try:
            await self.load_async()
        except asyncio.CancelledError:
            raise
        except http.APIError:
            pass  # 401/402 in debug: already logged by the loader
        except Exception:
            logger.exception("flag definitions load failed")

    async def _poll_async(self) -> None:
        while True:
            failures = self._auth_failures
            factor = min(2**failures, MAX_BACKOFF_FACTOR) if failures else 1
            await asyncio.sleep(self.poll_interval * factor)
            await self._load_logged()

    async def _provider(self, name: str, fallback: Any, *args: Any) -> Any:
        """A cache provider method, sync (in the executor) or async (awaited here)."""
        try:
            method = getattr(self.provider, name)
            if is_async_callable(method):
                return await method(*args)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, functools.partial(method, *args))
            if inspect.isawaitable(result):
                result = await result
            return result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("flag definition cache provider %s() failed", name)
            return fallback

    def _compile_cached(self, data: dict[str, Any]) -> Any:
        if data == self._cached:
            return _SAME
        try:
            return FlagDefinitions.compile(data)
        except Exception:
            logger.exception("could not compile flag definitions; keeping the previous ones")
            return None

    async def load_async(self) -> None:
        """:meth:`DefinitionsLoader.load`, awaiting instead of blocking."""
        loop = asyncio.get_running_loop()
        if self.provider is not None and not await self._provider(
            "should_fetch_flag_definitions", True
        ):
            data = await self._provider("get_flag_definitions", None)
            if isinstance(data, dict):
                compiled = await loop.run_in_executor(None, self._compile_cached, data)
                if compiled is _SAME:
                    return
                if compiled is not None and self._install_compiled(compiled, etag=None,
                                                                   seq=None):
                    self.etag = None  # ours described what we fetched, not these
                    self._cached = data
                    return
            if self.definitions is not None:
                return
        await self.fetch_async()

    async def fetch_async(self) -> None:
        """``GET /flags/definitions`` with the core's ETag and status rules (spec core §6.1)."""
        secret = self._secret_key()
        if not secret:
            return
        seq = self._next_sequence()
        headers = {"Authorization": f"Bearer {secret}", "User-Agent": http.USER_AGENT}
        if self.etag:
            headers["If-None-Match"] = self.etag
        loop = asyncio.get_running_loop()
        try:
            client = await self._client._http_client()
            response = await client.get(
                self.definitions_url(), headers=headers, timeout=DEFINITIONS_TIMEOUT
            )
            if response.status_code == 304:
                self._not_modified(response.headers.get("ETag"))
                return
            if response.status_code != 200:
                raise error_for(response)
            data, compiled = await loop.run_in_executor(
                None, _parse_and_compile, response.content
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fetch_failed(exc)
            return
        self._auth_failures = 0
        if compiled is None:
            return
        installed = self._install_compiled(compiled, etag=response.headers.get("ETag"), seq=seq)
        if installed and self.provider is not None:
            await self._provider("on_flag_definitions_received", None, cache_payload(data))

    async def close(self) -> None:
        """Stop loading and polling; release the cache provider (once)."""
        tasks = [t for t in (self._first, self._poller) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._shut_down:
            return
        self._shut_down = True
        if self.provider is not None:
            await self._provider("shutdown", None)


def _parse_and_compile(content: bytes) -> tuple[dict[str, Any], FlagDefinitions | None]:
    data = check_definitions(json.loads(content))
    try:
        return data, FlagDefinitions.compile(data)
    except Exception:
        logger.exception("could not compile flag definitions; keeping the previous ones")
        return data, None


class AsyncFlags:
    """``evaluate_flags`` and ``get_remote_config_payload`` for one client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.loader: AsyncDefinitionsLoader | None = None

    def start(self) -> None:
        """Begin loading definitions now (``__aenter__``), if there is a secret key."""
        loader = self._loader()
        if loader is not None and loader._first is None:
            loader._first = spawn(loader._initial(), "posthog-async-flags-load")

    def _loader(self) -> AsyncDefinitionsLoader | None:
        client = self.client
        if self.loader is None and client.secret_key and not client.disabled:
            self.loader = AsyncDefinitionsLoader(client)
        return self.loader

    async def evaluate(
        self,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None,
        person_properties: Mapping[str, Any] | None,
        group_properties: Mapping[str, Any] | None,
        disable_geoip: bool | None,
        flag_keys: list[str] | None,
        device_id: str | None,
    ) -> FeatureFlagEvaluations:
        """Local first when definitions are loaded; one ``/flags`` call for the rest."""
        from posthog.feature_flags import _evaluated_from_record

        client = self.client
        groups_d = dict(groups or {})
        flags: dict[str, Evaluated] = {}
        unresolved = {}
        needs_server = True
        loader = self._loader()
        definitions = await loader.ready() if loader is not None else None
        if definitions is not None:
            results = definitions.evaluate_all(
                str(distinct_id), groups=groups_d, person_properties=person_properties,
                group_properties=group_properties_with_keys(groups_d, group_properties),
                device_id=device_id, keys=flag_keys,
            )
            needs_server = False
            for key, found in results.items():
                if found.inconclusive is None and found.value is not None:
                    flags[key] = Evaluated(found.value, found.payload, True, found.reason,
                                           found.flag_id, found.version, found.has_experiment)
                elif found.inconclusive is not None:
                    unresolved[key] = found.inconclusive
                    needs_server = True
            if flag_keys is not None and any(k not in definitions.by_key for k in flag_keys):
                needs_server = True
        request_id = evaluated_at = None
        errors: list[str] = []
        minimal = client._minimal_events
        if needs_server:
            try:
                response = await self.request(
                    distinct_id, groups=groups, person_properties=person_properties,
                    group_properties=group_properties, disable_geoip=disable_geoip,
                    device_id=device_id, flag_keys=flag_keys,
                )
            except asyncio.CancelledError:
                raise
            except http.QuotaLimitError:
                logger.warning("[FEATURE FLAGS] Feature flag evaluation was quota limited")
                errors.append("quota_limited")
            except Exception as exc:
                logger.error("[FEATURE FLAGS] Async evaluation failed (%s, status=%s)",
                             type(exc).__name__, _status(exc))
            else:
                request_id = response.get("requestId")
                evaluated_at = response.get("evaluatedAt")
                if response.get("errorsWhileComputingFlags"):
                    errors.append("errors_while_computing_flags")
                minimal = client._minimal_events = bool(response.get("minimalFlagCalledEvents"))
                for key, record in response.get("flags", {}).items():
                    if (flag_keys is not None and key not in flag_keys) or key in flags:
                        continue  # only what was asked for; locally resolved values win
                    unresolved.pop(key, None)
                    flags[key] = _evaluated_from_record(record)
        return FeatureFlagEvaluations(
            cast(Any, client), distinct_id, flags=flags, unresolved=unresolved, groups=groups_d,
            disable_geoip=disable_geoip, request_id=request_id, evaluated_at=evaluated_at,
            errors=errors, minimal=minimal,
        )

    async def request(
        self,
        distinct_id: Any,
        *,
        groups: Mapping[str, Any] | None,
        person_properties: Mapping[str, Any] | None,
        group_properties: Mapping[str, Any] | None,
        disable_geoip: bool | None,
        device_id: str | None,
        flag_keys: list[str] | None,
    ) -> FlagsResponse:
        """``POST /flags/?v=4`` with the async body (``token``, properties as given)."""
        client = self.client
        body: dict[str, Any] = {
            "distinct_id": distinct_id,
            "groups": dict(groups or {}),
            "person_properties": dict(person_properties or {}),
            "group_properties": group_properties if group_properties is not None else {},
            "geoip_disable": client.disable_geoip if disable_geoip is None else disable_geoip,
            "device_id": device_id,
        }
        if flag_keys:
            body["flag_keys_to_evaluate"] = list(flag_keys)
        loop = asyncio.get_running_loop()
        headers = {"Content-Type": "application/json", "User-Agent": http.USER_AGENT}
        attempt = 0
        while True:
            try:
                content = await loop.run_in_executor(None, _flags_content, body, client.api_key)
                session = await client._http_client()
                response = await session.post(
                    FLAGS_PATH, content=content, headers=headers,
                    timeout=client.feature_flags_request_timeout_seconds,
                )
                if response.status_code != 200:
                    raise error_for(response)
                return await loop.run_in_executor(None, _parse_flags, response.content)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt >= client.feature_flags_request_max_retries or not _transient(exc):
                    raise
                await asyncio.sleep(0.3 * 2**attempt)
                attempt += 1

    async def remote_config(self, key: str) -> Any:
        """A remote config flag's payload (decrypted by the server); ``None`` on failure."""
        client = self.client
        url = (f"/api/projects/@current/feature_flags/{quote(str(key), safe='')}/remote_config"
               f"?{urlencode({'token': client.api_key})}")
        headers = {"Authorization": f"Bearer {client.secret_key}",
                   "User-Agent": http.USER_AGENT}
        try:
            session = await client._http_client()
            response = await session.get(
                url, headers=headers, timeout=client.feature_flags_request_timeout_seconds
            )
            if response.status_code != 200:
                raise error_for(response)
            return response.json()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("[FEATURE FLAGS] Async remote config failed (%s, status=%s)",
                         type(exc).__name__, _status(exc))
            return None

    async def close(self) -> None:
        if self.loader is not None:
            await self.loader.close()
