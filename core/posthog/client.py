"""``Client``: the public capture API, composed from events, contexts and transport."""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from posthog import contexts
from posthog._log import logger
from posthog._settings import SettingsMixin
from posthog.events import (
    clean,
    event_time,
    new_uuid,
    normalize_uuid,
    system_properties,
)
from posthog.exception_capture import ExceptionCaptureMixin, trace_properties
from posthog.feature_flags import FeatureFlagsMixin
from posthog.transport import http
from posthog.transport.lane import Lane, OnError, send_now
from posthog.types import BeforeSendCallback, CaptureMode, parse_capture_mode
from posthog.version import VERSION

P = ParamSpec("P")
R = TypeVar("R")
Message = dict[str, Any]

_clients: weakref.WeakSet[Client] = weakref.WeakSet()

#: Called with (client, message) for every event a client accepts, after ``before_send`` and
#: before it is queued or sent. For test tooling (``posthog_integrations.pytest_plugin``);
#: the message is not cleaned yet and must not be modified.
observers: list[Callable[[Client, dict[str, Any]], None]] = []
_ATEXIT_DEADLINE = 1.0


def _guarded(fn: Callable[Concatenate[Client, P], R]) -> Callable[Concatenate[Client, P], R | None]:
    """The client's error policy: log and return ``None``; re-raise when ``debug`` is on."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: Client, *args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            logger.error("Error in %s: %s", name, exc, exc_info=self.debug)
            if self.debug:
                raise
            return None

    return wrapper  # type: ignore[return-value]


def _release_id() -> str | None:
    value = os.environ.get("POSTHOG_RELEASE_ID", "").strip()
    return value or None


# ---------------------------------------------------------------- event building
# Shared with the asyncio client (``posthog.async_client``): the wire JSON is the same.


def resolve_distinct_id(given: Any, scope: contexts.Scope | None) -> tuple[str, bool]:
    """The event's distinct id and whether it is personless (spec core §2.2)."""
    if given is not None:
        text = str(given)
        if text:
            return text, False
    if scope is not None:
        found = scope.resolve_distinct_id()
        if found:
            return found, False
    return new_uuid(), True


def _add_session(props: dict[str, Any], scope: contexts.Scope | None) -> None:
    if scope is not None:
        session = scope.lookup("session_id")
        if session is not None:
            props["$session_id"] = session


def capture_message(
    event: str,
    distinct_id: Any,
    properties: Mapping[str, Any] | None,
    groups: Mapping[str, Any] | None,
    trace_context: bool,
    flag_properties: Callable[[str], Mapping[str, Any]] | None = None,
) -> Message:
    """A ``capture()`` message before stamping: identity, context, system and flag properties.

    ``flag_properties`` is called with the resolved distinct id; its keys never override.
    """
    if not isinstance(event, str) or not event:
        raise TypeError(f"event must be a non-empty string, got {event!r}")
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a dict, got {type(properties).__name__}")
    scope = contexts.current_scope()
    distinct, personless = resolve_distinct_id(distinct_id, scope)
    props: dict[str, Any]
    if scope is not None:
        tags = scope.collect_tags()
        props = dict(tags)
        if properties:
            props.update(properties)
        props.update(system_properties())
        props["$context_tags"] = list(tags)
        session = scope.lookup("session_id")
        if session is not None:
            props.setdefault("$session_id", session)
    else:
        props = dict(properties) if properties else {}
        props.update(system_properties())
    if flag_properties is not None:
        for key, value in flag_properties(distinct).items():
            props.setdefault(key, value)
    if trace_context:
        for key, value in trace_properties().items():
            props.setdefault(key, value)
    if groups:
        props.setdefault("$groups", dict(groups))
    if personless:
        props.setdefault("$process_person_profile", False)
    return {"event": event, "distinct_id": distinct, "properties": props}


def person_message(kind: str, distinct_id: Any, properties: Any) -> Message | None:
    """A ``$set``/``$set_once`` message; ``None`` without an identity or anything to set."""
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a dict, got {type(properties).__name__}")
    scope = contexts.current_scope()
    distinct, personless = resolve_distinct_id(distinct_id, scope)
    if personless:
        logger.debug("%s without a distinct id (none given, none in context); skipped", kind)
        return None
    tags: dict[str, Any] = scope.collect_tags() if scope is not None else {}
    values = dict(tags)
    if properties:
        values.update(properties)
    if not values:
        return None
    if scope is not None:
        values["$context_tags"] = list(tags)
        session = scope.lookup("session_id")
        if session is not None:
            values["$session_id"] = session
    return {"event": kind, "distinct_id": distinct, kind: values, "properties": {}}


def group_identify_message(
    group_type: Any, group_key: Any, properties: Any, distinct_id: Any
) -> Message | None:
    """A ``$groupidentify`` message; ``None`` when the group type or key is missing."""
    gtype = "" if group_type is None else str(group_type)
    gkey = "" if group_key is None else str(group_key)
    if not gtype or not gkey:
        return None
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a dict, got {type(properties).__name__}")
    scope = contexts.current_scope()
    distinct, _ = resolve_distinct_id(distinct_id, scope)
    props: dict[str, Any] = {
        "$group_type": gtype,
        "$group_key": gkey,
        "$group_set": dict(properties) if properties else {},
    }
    _add_session(props, scope)
    return {"event": "$groupidentify", "distinct_id": distinct, "properties": props}


def alias_message(previous_id: Any, distinct_id: Any) -> Message | str:
    """A ``$create_alias`` message, or the missing id's name (``previous_id``/``distinct_id``)."""
    previous = "" if previous_id is None else str(previous_id)
    if not previous:
        return "previous_id"
    scope = contexts.current_scope()
    target, personless = resolve_distinct_id(distinct_id, scope)
    if personless:
        return "distinct_id"
    props: dict[str, Any] = {"distinct_id": previous, "alias": target}
    _add_session(props, scope)
    return {"event": "$create_alias", "distinct_id": previous, "properties": props}


def stamp_message(
    message: Message,
    timestamp: Any,
    uuid_text: str,
    geoip_disable: bool | None,
    super_properties: Mapping[str, Any] | None,
    release_id: str | None,
    is_server: bool,
    allowlist: frozenset[str] | None = None,
) -> None:
    """Timestamp, uuid and the SDK properties every message gets (spec core §2.1, §2.3)."""
    message["timestamp"] = event_time(timestamp)
    message["uuid"] = uuid_text
    props = message["properties"]
    props["$lib"] = "posthog-python"
    props["$lib_version"] = VERSION
    if geoip_disable:
        props["$geoip_disable"] = True
    if super_properties:
        props.update(super_properties)
    if release_id is not None:
        props.setdefault("$release_id", release_id)
    if is_server:
        props["$is_server"] = True
    if allowlist is not None:
        message["properties"] = {k: v for k, v in props.items() if k in allowlist}


class Client(SettingsMixin, ExceptionCaptureMixin, FeatureFlagsMixin):
    """A PostHog client. Create one per process and reuse it; it is thread-safe."""

    def __init__(
        self,
        project_api_key: str | None = None,
        host: str | None = None,
        debug: bool = False,
        max_queue_size: int = 10000,
        send: bool = True,
        on_error: OnError | None = None,
        flush_at: int = 100,
        flush_interval: float = 5.0,
        gzip: bool = False,
        max_retries: int = 3,
        sync_mode: bool = False,
        timeout: float = 15,
        thread: int = 1,
        poll_interval: int = 30,
        personal_api_key: str | None = None,
        disabled: bool = False,
        disable_geoip: bool = True,
        is_server: bool = True,
        historical_migration: bool = False,
        feature_flags_request_timeout_seconds: float = 3,
        feature_flags_request_max_retries: int = 1,
        super_properties: dict[str, Any] | None = None,
        enable_exception_autocapture: bool = False,
        log_captured_exceptions: bool = False,
        project_root: str | None = None,
        privacy_mode: bool = False,
        before_send: BeforeSendCallback | None = None,
        flag_fallback_cache_url: str | None = None,
        enable_local_evaluation: bool = True,
        flag_definition_cache_provider: Any = None,
        capture_exception_code_variables: bool = False,
        code_variables_mask_patterns: list[str] | None = None,
        code_variables_ignore_patterns: list[str] | None = None,
        code_variables_mask_url_credentials: bool | None = None,
        code_variables_detect_secrets: bool | None = None,
        in_app_modules: list[str] | None = None,
        enable_exception_autocapture_rate_limiting: bool = False,
        exception_autocapture_bucket_size: int = 50,
        exception_autocapture_refill_rate: int = 10,
        exception_autocapture_refill_interval_seconds: int = 10,
        capture_mode: CaptureMode | str | None = None,
        capture_compression: Any = None,
        secret_key: str | None = None,
        metrics: Any = None,
        enable_full_ai_capture: bool = False,
        capture_trace_context: bool = False,
        _use_ai_lane: bool = False,
        _enable_multimodal_capture: bool = False,
        traces: Any = None,
        app_host: str | None = None,
        email_request_timeout_seconds: float = 15,
        email_request_max_retries: int = 2,
        migrated_from: str | None = None,
    ) -> None:
        self.api_key = (project_api_key or "").strip() if isinstance(project_api_key, str) else ""
        self.host = http.normalize_host(host)
        self.debug = debug
        self.send = send
        self.on_error = on_error
        self.sync_mode = sync_mode
        self.timeout = timeout
        self.gzip = gzip
        self.historical_migration = historical_migration
        self.disabled = disabled
        self.disable_geoip = disable_geoip
        self.is_server = is_server
        self.super_properties = super_properties
        self.privacy_mode = privacy_mode
        self.before_send = before_send
        self.poll_interval = poll_interval
        self.feature_flags_request_timeout_seconds = feature_flags_request_timeout_seconds
        self.feature_flags_request_max_retries = max(0, int(feature_flags_request_max_retries))
        self.enable_exception_autocapture = enable_exception_autocapture
        self.log_captured_exceptions = log_captured_exceptions
        self.project_root = project_root if project_root is not None else os.getcwd()
        self.flag_fallback_cache_url = flag_fallback_cache_url
        if flag_fallback_cache_url:
            logger.warning(
                "flag_fallback_cache_url is not supported by this SDK yet; flag requests that "
                "fail return None instead of a cached result"
            )
        self.enable_local_evaluation = enable_local_evaluation
        self.flag_definition_cache_provider = flag_definition_cache_provider
        self.capture_exception_code_variables = capture_exception_code_variables
        self.code_variables_mask_patterns = code_variables_mask_patterns
        self.code_variables_ignore_patterns = code_variables_ignore_patterns
        self.code_variables_mask_url_credentials = code_variables_mask_url_credentials
        self.code_variables_detect_secrets = code_variables_detect_secrets
        self.in_app_modules = in_app_modules
        self.enable_exception_autocapture_rate_limiting = enable_exception_autocapture_rate_limiting
        self.exception_autocapture_bucket_size = exception_autocapture_bucket_size
        self.exception_autocapture_refill_rate = exception_autocapture_refill_rate
        self.exception_autocapture_refill_interval_seconds = (
            exception_autocapture_refill_interval_seconds
        )
        self.capture_trace_context = capture_trace_context
        self.capture_compression = capture_compression
        self.migrated_from = migrated_from
        self.release_id = _release_id()
        self._secret_key = self._resolve_secret(secret_key, personal_api_key)
        self.capture_mode = self._resolve_capture_mode(capture_mode)

        if not self.api_key:
            logger.error("project_api_key is missing or blank; the client is disabled")
            self.disabled = True

        self._lock = threading.Lock()
        self._joined = False
        self._shut_down = False
        self.lane = Lane(
            api_key=self.api_key,
            host=self.host,
            max_queue_size=max_queue_size,
            flush_at=flush_at,
            flush_interval=flush_interval,
            gzip=gzip,
            max_retries=max(0, int(max_retries)),
            timeout=timeout,
            threads=thread,
            historical_migration=historical_migration,
            on_error=self._report,
        )
        if send and not sync_mode:
            self.lane.start()
        self._hooks = None
        self._rate_limiter = None
        if enable_exception_autocapture:
            self._install_autocapture(
                enable_exception_autocapture_rate_limiting,
                exception_autocapture_bucket_size,
                exception_autocapture_refill_rate,
                exception_autocapture_refill_interval_seconds,
            )
        _clients.add(self)

    # ------------------------------------------------------------ configuration

    @staticmethod
    def _resolve_secret(secret_key: str | None, personal_api_key: str | None) -> str | None:
        secret = (secret_key or "").strip() or None
        personal = (personal_api_key or "").strip() or None
        if personal and not secret:
            warnings.warn(
                "personal_api_key is deprecated; pass secret_key instead",
                DeprecationWarning,
                stacklevel=4,
            )
            return personal
        if personal and secret and personal != secret:
            logger.warning("both secret_key and personal_api_key given; secret_key is used")
        return secret

    @staticmethod
    def _resolve_capture_mode(value: CaptureMode | str | None) -> CaptureMode:
        mode = (
            parse_capture_mode(value, explicit=True)
            if value is not None
            else parse_capture_mode(os.environ.get("POSTHOG_CAPTURE_MODE"), explicit=False)
        )
        if mode is CaptureMode.V1:
            logger.warning("capture_mode v1 is not supported by this SDK; using v0 (/batch/)")
            mode = CaptureMode.V0
        return mode


    def _report(self, exc: Exception, batch: list[Message]) -> None:
        if self.on_error is not None:
            self.on_error(exc, batch)

    # ------------------------------------------------------------ capture family

    @_guarded
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
        _allowlist: frozenset[str] | None = None,
    ) -> str | None:
        """Capture an event; returns its uuid, or ``None`` if it was not accepted."""
        if self.disabled:
            return None
        flag_properties: Callable[[str], Mapping[str, Any]] | None = None
        if flags is not None:

            def flag_properties(distinct: str) -> Mapping[str, Any]:
                if send_feature_flags:
                    logger.warning("capture(): flags= given, send_feature_flags is ignored")
                return flags.event_properties()  # type: ignore[no-any-return]

        elif send_feature_flags:

            def flag_properties(distinct: str) -> Mapping[str, Any]:
                warnings.warn(
                    "capture(send_feature_flags=...) is deprecated; pass "
                    "flags=evaluate_flags(...)",
                    DeprecationWarning,
                    stacklevel=5,
                )
                return self._flag_properties(distinct, send_feature_flags)

        message = capture_message(
            event, distinct_id, properties, groups, self.capture_trace_context, flag_properties
        )
        return self._enqueue(message, timestamp, uuid, disable_geoip, _allowlist)

    def _person_props(self, kind: str, distinct_id: Any, properties: Any,
                      timestamp: Any, uuid: Any, disable_geoip: bool | None) -> str | None:
        if self.disabled:
            return None
        message = person_message(kind, distinct_id, properties)
        if message is None:
            return None
        return self._enqueue(message, timestamp, uuid, disable_geoip)

    @_guarded
    def set(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Set person properties (``$set``); ``None`` without an identity or anything to set."""
        return self._person_props("$set", distinct_id, properties, timestamp, uuid, disable_geoip)

    @_guarded
    def set_once(
        self,
        *,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Set person properties only where not set yet (``$set_once``)."""
        return self._person_props(
            "$set_once", distinct_id, properties, timestamp, uuid, disable_geoip
        )

    @_guarded
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
        """Set properties on a group (``$groupidentify``)."""
        if self.disabled:
            return None
        message = group_identify_message(group_type, group_key, properties, distinct_id)
        if message is None:
            logger.warning("group_identify needs a group_type and a group_key; skipped")
            return None
        return self._enqueue(message, timestamp, uuid, disable_geoip)

    @_guarded
    def alias(
        self,
        previous_id: Any,
        distinct_id: Any = None,
        timestamp: datetime | str | None = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Link ``previous_id`` to ``distinct_id`` (``$create_alias``)."""
        if self.disabled:
            return None
        message = alias_message(previous_id, distinct_id)
        if message == "previous_id":
            logger.warning("alias needs a previous_id; skipped")
            return None
        if message == "distinct_id":
            logger.warning("alias needs a distinct_id (none given, none in context); skipped")
            return None
        assert isinstance(message, dict)
        return self._enqueue(message, timestamp, uuid, disable_geoip)

    # ------------------------------------------------------------ contexts

    def new_context(
        self, fresh: bool = False, capture_exceptions: bool | None = None
    ) -> contexts.new_context:
        """A context scope whose escaping exceptions this client captures."""
        return contexts.new_context(fresh, capture_exceptions, client=self)

    def scoped(
        self, fresh: bool = False, capture_exceptions: bool | None = None
    ) -> Callable[[contexts.F], contexts.F]:
        """Decorator form of :meth:`new_context`."""
        return contexts.scoped(fresh, capture_exceptions, client=self)

    tag = staticmethod(contexts.tag)
    get_tags = staticmethod(contexts.get_tags)
    identify_context = staticmethod(contexts.identify_context)
    set_context_session = staticmethod(contexts.set_context_session)
    set_context_device_id = staticmethod(contexts.set_context_device_id)

    # ------------------------------------------------------------ pipeline

    def _enqueue(
        self,
        message: Message,
        timestamp: Any,
        uuid: Any,
        disable_geoip: bool | None,
        allowlist: frozenset[str] | None = None,
    ) -> str | None:
        if self.disabled:
            return None
        stamp_message(
            message,
            timestamp,
            normalize_uuid(uuid),
            disable_geoip if disable_geoip is not None else self.disable_geoip,
            self.super_properties,
            self.release_id,
            self.is_server,
            allowlist,
        )

        cleaned = False
        hook = self._before_send
        if hook is not None:
            maybe = self._run_before_send(hook, clean(message))
            if maybe is None:
                return None
            message, cleaned = maybe, True

        if observers:
            for observe in list(observers):
                observe(self, message)
        if not self.send:
            return str(message["uuid"])
        if self.sync_mode:
            send_now(
                self.api_key,
                self.host + "/batch/",
                message if cleaned else clean(message),
                historical_migration=self.historical_migration,
                gzip=self.gzip,
                timeout=self.timeout,
            )
            return str(message["uuid"])
        return str(message["uuid"]) if self.lane.put(message, cleaned) else None

    def _run_before_send(self, hook: BeforeSendCallback, message: Message) -> Message | None:
        try:
            result = hook(message)
        except Exception:
            logger.exception("before_send raised; event %r dropped", message.get("event"))
            return None
        if result is None:
            logger.debug("before_send dropped event %r", message.get("event"))
            return None
        if not isinstance(result, dict):
            logger.error(
                "before_send returned %s instead of a dict; event dropped", type(result).__name__
            )
            return None
        result = clean(result)
        result["uuid"] = normalize_uuid(result.get("uuid"))
        return result  # type: ignore[no-any-return]

    # ------------------------------------------------------------ lifecycle

    def _in_callback(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on a helper thread when called from one of our consumers (e.g. ``on_error``).

        A consumer waiting for its own queue to drain would wait forever.
        """
        if threading.current_thread() not in self.lane.threads:
            return False
        threading.Thread(target=fn, name="posthog-deferred", daemon=True).start()
        return True

    def flush(self, timeout_seconds: float | None = 10) -> None:
        """Send what is queued now and wait for it (at most ``timeout_seconds``)."""
        if self._in_callback(lambda: self.flush(timeout_seconds)):
            return
        try:
            if not self.lane.flush(timeout_seconds):
                logger.warning("flush timed out with %d events pending", self.lane.pending)
        except Exception:
            logger.exception("flush failed")

    @_guarded
    def join(self, timeout_seconds: float | None = 10) -> None:
        """Stop accepting events, deliver what is queued (bounded wait) and stop the consumers."""
        if self._in_callback(lambda: self.join(timeout_seconds)):
            return
        with self._lock:
            if self._joined:
                return
            self._joined = True
        self.lane.stop(timeout_seconds)
        self._stop_flags(clear_caches=False)

    @_guarded
    def shutdown(self, timeout_seconds: float | None = 10) -> None:
        """``join()``, then release everything; the client cannot be used afterwards."""
        if self._in_callback(lambda: self.shutdown(timeout_seconds)):
            return
        self.join(timeout_seconds)
        self._uninstall_autocapture()
        self._stop_flags(clear_caches=True)
        self._shut_down = True

    # ------------------------------------------------------------ process events

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.lane.after_fork()
        self._flags_after_fork(restart=not self._joined)

    def _at_exit(self, deadline: float) -> None:
        if self._joined or not self.send or self.sync_mode:
            return
        self._joined = True
        self.lane.stop_nowait(deadline)


class Posthog(Client):
    """The recommended name for :class:`Client`."""


def _after_fork_in_child() -> None:
    for client in list(_clients):
        try:
            client._after_fork()
        except Exception:
            logger.exception("could not restart the client after fork")


def _flush_all_at_exit() -> None:
    deadline = time.monotonic() + _ATEXIT_DEADLINE
    for client in list(_clients):
        try:
            client._at_exit(deadline)
        except Exception:
            logger.exception("flush at exit failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
