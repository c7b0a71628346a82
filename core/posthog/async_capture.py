"""The capture methods of :class:`posthog.AsyncClient` (spec async §2).

Events are built on the caller's thread with the sync client's code (so the wire JSON
is the same), cleaned, and queued with a copy of the caller's context; ``before_send``,
serialization and the upload happen later in a worker task on the bound loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from posthog._log import logger
from posthog.async_transport import (
    CALLBACK,
    HTTPX_MISSING,
    WorkerConfig,
    apply_before_send,
    encode_messages,
    httpx_available,
    report_failure,
    send_with_retries,
)
from posthog.client import (
    alias_message,
    capture_message,
    group_identify_message,
    person_message,
    stamp_message,
)
from posthog.events import _PASS_THROUGH, clean, new_uuid
from posthog.exception_capture import ExceptionCaptureMixin

if TYPE_CHECKING:
    from posthog.async_client import AsyncClient, _Calls
    from posthog.async_lane import AsyncLane

Message = dict[str, Any]
_OFF, _ON_LOOP, _THREAD, _UNBOUND = range(4)  # where a capture goes (see _admit)
CROSS_LOOP = "AsyncClient cannot be shared across event loops"
NOT_RUNNING = "AsyncClient event loop is not running"

_running_loop = asyncio._get_running_loop


class LoopError(RuntimeError):
    """Used from the wrong loop, or after the bound loop stopped (logged without traceback)."""


def canonical_uuid(value: Any) -> str:
    """The caller's uuid as ``str(UUID(...))`` (lowercase, hyphens); invalid → a new one."""
    if value is None:
        return new_uuid()
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        logger.error("Invalid UUID %r. Falling back to a generated UUID.", value)
        return new_uuid()


def clean_message(message: Message) -> Message:
    """``clean(message)`` (spec core §2.5), skipping the copy when there is nothing to clean.

    ``message`` was just built by the capture method, so it is ours; when every value in
    it (and in its property dicts) is already JSON-ready and immutable, cleaning would
    only copy it. That is the usual event, and the check costs a third of the copy.
    """
    for value in message.values():
        kind = type(value)
        if kind is dict:
            if not _PASS_THROUGH.issuperset(map(type, value.values())):
                return clean(message)  # type: ignore[no-any-return]
        elif kind not in _PASS_THROUGH:
            return clean(message)  # type: ignore[no-any-return]
    return message


class AsyncCaptureMixin(ExceptionCaptureMixin):
    """``capture``, ``set``, ``set_once``, ``group_identify``, ``alias``,
    ``capture_exception`` (sync, queued) and ``capture_immediate`` (awaited)."""

    # capture_exception differences (spec async §2.3)
    _exception_trace_properties = False
    _warn_reserved_exception_properties = False

    # provided by AsyncClient
    debug: bool
    send: bool
    disable_geoip: bool
    is_server: bool
    super_properties: Mapping[str, Any] | None
    release_id: str | None
    capture_trace_context: bool
    before_send: Any
    on_error: Any
    _closing: bool
    _warned_closed: bool
    _loop: asyncio.AbstractEventLoop | None
    _loop_ended: bool
    _lane: AsyncLane
    _calls: _Calls

    def _bind_for(self, running: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError

    def _ensure_workers(self) -> None:
        raise NotImplementedError

    def _track(self) -> None:
        raise NotImplementedError

    def _admit(self) -> int | None:
        """Where a capture made now goes; ``None`` when the client no longer accepts events."""
        if self._closing:
            if not self._warned_closed:
                self._warned_closed = True
                logger.warning("AsyncClient received an event after shutdown(); it and any "
                               "later events are dropped")
            return None
        if not self.send:
            return _OFF
        if not httpx_available():
            raise RuntimeError(HTTPX_MISSING)
        running = _running_loop()
        loop = self._loop
        if running is not None:
            if running is not loop:
                self._bind_for(running)
            return _ON_LOOP
        if loop is None:
            return _UNBOUND
        if self._loop_ended or loop.is_closed() or not loop.is_running():
            raise LoopError(NOT_RUNNING)
        return _THREAD

    def _failed(self, name: str, exc: Exception) -> None:
        if isinstance(exc, LoopError):
            logger.error("Error in async %s: %s", name, exc)
        else:
            logger.error("Error in async %s: %s", name, exc, exc_info=True)
        if self.debug:
            raise exc

    def capture(
        self,
        event: str,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        flags: Any = None,
        send_feature_flags: Any = False,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Queue an event; returns its uuid at once (``None`` if it was not accepted)."""
        try:
            if send_feature_flags and flags is None:
                warnings.warn(
                    "AsyncClient does not support deprecated send_feature_flags. Pass a flags "
                    "snapshot from evaluate_flags() instead.",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return self._capture_event(event, distinct_id, properties, timestamp, uuid, groups,
                                       flags, disable_geoip, None)
        except Exception as exc:
            self._failed("capture", exc)
            return None

    def _capture_event(self, event: str, distinct_id: Any, properties: Any, timestamp: Any,
                       uuid: Any, groups: Any, flags: Any, disable_geoip: bool | None,
                       allowlist: frozenset[str] | None) -> str | None:
        if self.disabled:
            return None
        route = self._admit()
        if route is None:
            return None
        message = capture_message(
            event, distinct_id, properties, groups, self.capture_trace_context,
            None if flags is None else (lambda _: flags.event_properties()),
        )
        return self._submit(message, timestamp, uuid, disable_geoip, route, allowlist)

    def _submit(self, message: Message, timestamp: Any, uuid: Any, disable_geoip: bool | None,
                route: int, allowlist: frozenset[str] | None = None) -> str | None:
        stamp_message(
            message,
            timestamp,
            canonical_uuid(uuid),
            disable_geoip if disable_geoip is not None else self.disable_geoip,
            self.super_properties,
            self.release_id,
            self.is_server,
            allowlist,
        )
        message = clean_message(message)
        uuid_text: str = message["uuid"]
        if route == _OFF:
            return uuid_text
        item = (message, contextvars.copy_context())
        lane = self._lane
        if route == _ON_LOOP:
            if not lane.started:
                self._ensure_workers()
            accepted = lane.put(item)
        elif route == _THREAD:
            loop = self._loop
            assert loop is not None
            accepted = lane.put_threadsafe(item, loop)
        else:
            self._track()
            accepted = lane.put(item)
            loop = self._loop
            if loop is not None:  # bound by another thread meanwhile: its workers may wait
                lane.wake_threadsafe(loop)
        return uuid_text if accepted else None

    def set(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Queue a ``$set`` (person properties); ``None`` without an identity or properties."""
        return self._person("$set", distinct_id, properties, timestamp, uuid, disable_geoip)

    def set_once(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Queue a ``$set_once`` (person properties set only where not set yet)."""
        return self._person("$set_once", distinct_id, properties, timestamp, uuid,
                            disable_geoip)

    def _person(self, kind: str, distinct_id: Any, properties: Any, timestamp: Any, uuid: Any,
                disable_geoip: bool | None) -> str | None:
        try:
            if self.disabled:
                return None
            route = self._admit()
            if route is None:
                return None
            message = person_message(kind, distinct_id, properties)
            if message is None:
                return None
            return self._submit(message, timestamp, uuid, disable_geoip, route)
        except Exception as exc:
            self._failed(kind.lstrip("$"), exc)
            return None

    def group_identify(
        self,
        group_type: str,
        group_key: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
        distinct_id: Any = None,
    ) -> str | None:
        """Queue a ``$groupidentify`` (group properties)."""
        try:
            if self.disabled:
                return None
            route = self._admit()
            if route is None:
                return None
            message = group_identify_message(group_type, group_key, properties, distinct_id)
            if message is None:
                logger.warning("group_identify() called without a group_type or group_key, "
                               "dropping event")
                return None
            return self._submit(message, timestamp, uuid, disable_geoip, route)
        except Exception as exc:
            self._failed("group_identify", exc)
            return None

    def alias(
        self,
        previous_id: Any,
        distinct_id: Any = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Queue a ``$create_alias`` linking ``previous_id`` to ``distinct_id``."""
        try:
            if self.disabled:
                return None
            route = self._admit()
            if route is None:
                return None
            message = alias_message(previous_id, distinct_id)
            if isinstance(message, str):
                logger.warning("alias() called without a %s, dropping event", message)
                return None
            return self._submit(message, timestamp, uuid, disable_geoip, route)
        except Exception as exc:
            self._failed("alias", exc)
            return None

    def capture_exception(self, exception: Any = None, **kwargs: Any) -> str | None:
        """Queue ``$exception`` for ``exception`` (default: the one being handled).

        Returns the uuid or ``None``; never raises. No ``$exception_level`` (spec async
        §2.3); integrations pass ``level=`` through ``_capture_exception``.
        """
        try:
            return self._capture_exception(exception, kwargs, level=None)
        except Exception:
            logger.exception("capture_exception failed")
            return None

    async def capture_immediate(
        self,
        event: str,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        flags: Any = None,
        send_feature_flags: Any = False,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send one event now (one ``/batch/`` POST with retries); the uuid after a 200."""
        if self.disabled or self._closing:
            return None
        loop = asyncio.get_running_loop()
        self._bind_for(loop)
        try:
            if send_feature_flags and flags is None:
                warnings.warn(
                    "AsyncClient does not support deprecated send_feature_flags. Pass a flags "
                    "snapshot from evaluate_flags() instead.",
                    DeprecationWarning,
                    stacklevel=2,
                )
            if self.send and not httpx_available():
                raise RuntimeError(HTTPX_MISSING)
            message = capture_message(
                event, distinct_id, properties, groups, self.capture_trace_context,
                None if flags is None else (lambda _: flags.event_properties()),
            )
            stamp_message(
                message, timestamp, canonical_uuid(uuid),
                disable_geoip if disable_geoip is not None else self.disable_geoip,
                self.super_properties, self.release_id, self.is_server,
            )
            message = clean_message(message)
        except Exception as exc:
            self._failed("capture", exc)
            return None
        uuid_text: str = message["uuid"]
        client = cast("AsyncClient", self)
        config = WorkerConfig(client)
        token = CALLBACK.set(self)
        self._calls.enter()
        processed: list[Message] = []
        try:
            hook = self.before_send
            if hook is not None:
                result = (await apply_before_send(
                    self, hook, [(message, contextvars.copy_context())]
                ))[0]
                if result is None:
                    return None
                message = result
            if not self.send:
                return uuid_text
            pieces = await loop.run_in_executor(None, encode_messages, [message])
            if not pieces:
                return None  # too large or not serializable: logged, no on_error
            processed = [message]
            await send_with_retries(client, [pieces[0][0]], config)
            return uuid_text
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("Immediate async capture failed (%s, status=%s)", type(exc).__name__,
                         getattr(exc, "status", None))
            await report_failure(self, config.on_error, exc, processed)
            if self.debug:
                raise
            return None
        finally:
            self._calls.exit()
            CALLBACK.reset(token)
