"""The framework-agnostic request layer (spec §1): one request -> one scope with ids and tags.

Each framework module supplies a small :class:`RequestAdapter`; :class:`RequestScope` does
the rest once: tracing-header and cookie ids, the authenticated user, tags, the late route
and identity, exception capture policy and the scope's lifecycle. No framework is imported.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

import posthog
from posthog import contexts
from posthog._log import logger
from posthog_integrations._request_options import Compiled, Options
from posthog_integrations._request_scope import (
    FAILED,
    CoreScope,
    Late,
    call,
    code_variables_of,
    not_awaited,
    report,
    warn_once,
)
from posthog_integrations._request_values import (
    DEVICE_ID_HEADER,
    DISTINCT_ID_HEADER,
    POSTHOG_TRACING_HEADERS,
    SESSION_ID_HEADER,
    WINDOW_ID_HEADER,
    client_ip,
    consent_cookie_name,
    cookie_name,
    current_url,
    first_id,
    parse_posthog_cookie,
    sanitize_id,
    sanitize_text,
)

__all__ = [
    "POSTHOG_TRACING_HEADERS",
    "Options",
    "RequestAdapter",
    "RequestScope",
    "client_ip",
    "consent_cookie_name",
    "cookie_name",
    "first_id",
    "parse_posthog_cookie",
    "run_in_scope",
    "sanitize_id",
    "sanitize_text",
    "should_capture",
]

P = ParamSpec("P")
R = TypeVar("R")

_current_request: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "posthog_request_scope", default=None
)


class RequestAdapter(Protocol):
    """What a framework tells the request layer about one request; cheap and never raising."""

    method: str | None  # upper-case; None for WebSocket
    scheme: str  # http / https / ws / wss
    host: str | None  # host[:port], None when unsafe or unknown
    path: str  # full path incl. mount prefix, no query
    query_string: str  # raw query (read only when capture_query_string is on)
    peer_ip: str | None  # socket peer address
    raw: object  # the framework request (ASGI: the scope), handed to hooks

    def header(self, name: str) -> list[str]:
        """All values of header ``name`` (lower-case given; match case-insensitively)."""
        ...

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name``, or ``None``."""
        ...

    def route(self) -> str | None:
        """The route template once routing ran, else ``None`` (may be called late)."""
        ...

    def user(self) -> object | None:
        """The authenticated user if it is already loaded (never loads one), else ``None``."""
        ...

    def user_id(self, user: object) -> str | None:
        """The framework's default id of ``user``."""
        ...

    def user_email(self, user: object) -> str | None:
        """The email of ``user``, if it has one."""
        ...


def should_capture(
    exc: BaseException,
    status: int | None,
    options: Options,
    *,
    handled: bool,
    never: tuple[type[BaseException], ...] = (),
    client: object = None,
) -> bool:
    """Capture policy of spec §1.8 for one exception.

    Never for non-``Exception``\\ s, ``never`` (the framework's 4xx / disconnect types) or
    ``options.ignored_exceptions``; never when ``capture_exceptions`` resolves false (``None``
    inherits ``client``'s ``enable_exception_autocapture``); handled exceptions only with a
    status in ``capture_status_codes``; unhandled ones always.
    """
    if not isinstance(exc, Exception):
        return False
    compiled = options.compiled()
    if (never and isinstance(exc, never)) or (
        compiled.never and isinstance(exc, compiled.never)
    ):
        return False
    if not options.resolve_capture_exceptions(client):
        return False
    if handled:
        return status is not None and status in compiled.status_codes
    return True


def run_in_scope(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` wrapped to run in a copy of the current context (for threads and executors)."""
    return contexts.run_in_context(fn)


# ---------------------------------------------------------------- helpers


def _default_client() -> Any:
    return posthog.default_client or posthog.setup()


# ---------------------------------------------------------------- the request scope


class RequestScope(Late):
    """One tracked request: owns the core scope, the effective client and the response status.

    Create with :meth:`start` / :meth:`astart`; leave with :meth:`exit` (idempotent).
    """

    __slots__ = (
        "_core_token",
        "_default",
        "_exited",
        "_outer",
        "_prev",
        "_token",
        "client",
        "framework",
        "raw",
        "scope",
        "status",
    )

    scope: CoreScope
    client: Any
    status: int | None
    framework: str
    raw: object
    _default: bool
    _exited: bool
    _core_token: contextvars.Token[contexts.Scope | None] | None
    _outer: contexts.Scope | None
    _token: contextvars.Token[RequestScope | None] | None
    _prev: RequestScope | None

    # ------------------------------------------------------------ opening

    @classmethod
    def current(cls) -> RequestScope | None:
        """The request scope active in this context (for signals raised during the request)."""
        found = _current_request.get()
        return None if found is None or found._exited else found

    @classmethod
    def _gate(cls, adapter: RequestAdapter, options: Options, framework: str) -> Compiled | None:
        """Compiled options; ``None`` for a nested start in the same request or an excluded path."""
        prev = _current_request.get()
        if (
            prev is not None
            and not prev._exited
            and prev.framework == framework
            and prev.raw is adapter.raw
        ):
            return None
        compiled = options.compiled()
        if (compiled.exclude_prefixes or compiled.exclude_patterns) and compiled.excluded(
            adapter.path
        ):
            return None
        return compiled

    @classmethod
    def start(
        cls, adapter: RequestAdapter, options: Options, *, framework: str
    ) -> RequestScope | None:
        """Open and enter the scope of one request; ``None`` = don't track (or already tracked).

        ``request_filter`` and ``exclude_paths`` are evaluated here, once. A hook returning
        a coroutine is closed unawaited (use :meth:`astart` in async code).
        """
        try:
            compiled = cls._gate(adapter, options, framework)
            if compiled is None:
                return None
            if compiled.request_filter is not None:
                keep = call(compiled, "request_filter", compiled.request_filter, compiled.client,
                             adapter.raw)
                keep = not_awaited(compiled, "request_filter", keep)
                if keep is not FAILED and not keep:
                    return None
            extra = None
            if compiled.extra_properties is not None:
                extra = call(compiled, "extra_properties", compiled.extra_properties,
                              compiled.client, adapter.raw)
                extra = not_awaited(compiled, "extra_properties", extra)
            return cls._open(adapter, compiled, framework, extra)
        except Exception:
            logger.exception("could not open the PostHog request scope; request not tracked")
            return None

    @classmethod
    async def astart(
        cls, adapter: RequestAdapter, options: Options, *, framework: str
    ) -> RequestScope | None:
        """:meth:`start` for async code: awaits async ``request_filter`` / ``extra_properties``."""
        try:
            compiled = cls._gate(adapter, options, framework)
            if compiled is None:
                return None
            if compiled.request_filter is not None:
                keep = await cls._acall(compiled, "request_filter", compiled.request_filter,
                                        adapter.raw)
                if keep is not FAILED and not keep:
                    return None
            extra = None
            if compiled.extra_properties is not None:
                extra = await cls._acall(compiled, "extra_properties", compiled.extra_properties,
                                         adapter.raw)
            return cls._open(adapter, compiled, framework, extra)
        except Exception:
            logger.exception("could not open the PostHog request scope; request not tracked")
            return None

    @staticmethod
    async def _acall(compiled: Compiled, name: str, fn: Callable[..., Any], raw: object) -> Any:
        try:
            result = fn(raw)
            if hasattr(result, "__await__"):
                result = await result
            return result
        except Exception as exc:
            report(compiled, name, exc, compiled.client)
            return FAILED

    @classmethod
    def _open(
        cls, adapter: RequestAdapter, compiled: Compiled, framework: str, extra: Any
    ) -> RequestScope:
        self = cls.__new__(cls)
        self._init_late(adapter, compiled)
        self.framework = framework
        self.raw = adapter.raw
        self.status = None
        self._exited = False
        self._resolve_client(adapter, compiled)
        core = self.scope = CoreScope(None if self._default else self.client, self)
        outer = contexts.current_scope()
        if outer is not None:
            core.code_variables = code_variables_of(outer)

        # ids: headers, else the posthog-js cookie (never both)
        distinct = session = window = None
        if compiled.headers:
            distinct = first_id(adapter.header(DISTINCT_ID_HEADER))
            session = first_id(adapter.header(SESSION_ID_HEADER))
            window = first_id(adapter.header(WINDOW_ID_HEADER))
            device = first_id(adapter.header(DEVICE_ID_HEADER))
            if device is not None:
                core.device_id = device
        if compiled.cookie is not None and distinct is None and session is None:
            distinct, session = self._cookie_ids(adapter, compiled)
        if session is not None:
            core.session_id = session

        # the authenticated user, only when it can matter
        need_id = distinct is None or compiled.prefer_user
        user = self._user() if need_id or compiled.capture_user_email else None
        if need_id:
            user_id = self._user_id(user, at_start=True)
            if compiled.prefer_user:
                chosen, fallback = user_id, distinct
            else:
                chosen, fallback = distinct or user_id, None
            if chosen is not None:
                core.set_distinct(chosen)
            elif user is None:
                self._fallback = fallback
                self._identity_pending = True
            elif fallback is not None:
                core.set_distinct(fallback)
        else:
            assert distinct is not None
            core.set_distinct(distinct)

        tags = self._default_tags(adapter, compiled, window)
        if compiled.capture_user_email:
            email = self._email(user) if user is not None else None
            if email is not None:
                tags["email"] = email
            elif user is None:
                self._email_pending = True
        if extra is not None and extra is not FAILED:
            if isinstance(extra, Mapping):
                try:
                    tags.update(extra)
                except Exception as exc:
                    report(compiled, "extra_properties", exc, self.client)
            else:
                warn_once(compiled, "extra_properties",
                      "extra_properties returned %s, not a mapping; ignored",
                      type(extra).__name__)
        core.set_tags(self._finish_tags(tags))
        self._enrich_span(distinct_id=core.raw_distinct(), session_id=session)

        # Entered by hand (a with-block cannot span the framework's call chain); the same
        # set/reset as ``Scope.activated()`` without a generator per request.
        self._outer = contexts._current.get()
        self._core_token = contexts._current.set(core)
        self._prev = _current_request.get()
        self._token = _current_request.set(self)
        return self

    def _resolve_client(self, adapter: RequestAdapter, compiled: Compiled) -> None:
        client = compiled.client
        if client is None and compiled.client_factory is not None:
            found = call(compiled, "client", compiled.client_factory, None, adapter.raw)
            if found is not FAILED and found is not None:
                if hasattr(found, "capture") and hasattr(found, "api_key"):
                    client = found
                else:
                    warn_once(compiled, "client",
                              "client callable returned %s, not a client",
                              type(found).__name__)
        self._default = client is None
        self.client = _default_client() if client is None else client

    def _default_tags(
        self, adapter: RequestAdapter, compiled: Compiled, window: str | None
    ) -> dict[str, Any]:
        tags: dict[str, Any] = {}
        path = adapter.path
        host = adapter.host
        if host:
            query = adapter.query_string if compiled.capture_query_string else None
            tags["$current_url"] = current_url(adapter.scheme, host, path, query)
        method = adapter.method
        if method:
            tags["$request_method"] = method
        tags["$request_path"] = path
        if compiled.capture_route:
            route = self._route()
            if route:
                tags["$request_route"] = route
            else:
                self._route_pending = True
        if compiled.capture_ip:
            ip = self._ip(adapter, compiled)
            if ip is not None:
                tags["$ip"] = ip
        agents = adapter.header("user-agent")
        if agents:
            tags["$user_agent"] = tags["$raw_user_agent"] = agents[0]
        if window is not None:
            tags["$window_id"] = window
        return tags

    def _ip(self, adapter: RequestAdapter, compiled: Compiled) -> str | None:
        source = compiled.ip_source
        if source == "peer":
            return client_ip(forwarded_for=(), real_ip=None, peer=adapter.peer_ip,
                             ip_source=source)
        if callable(source):
            found = call(compiled, "ip_source", _callable_ip, self.client, source, adapter.raw)
            return None if found is FAILED else found
        real = adapter.header("x-real-ip") if source == "forwarded" else None
        return client_ip(
            forwarded_for=adapter.header("x-forwarded-for"),
            real_ip=real[0] if real else None,
            peer=adapter.peer_ip,
            ip_source=source,
        )

    # ------------------------------------------------------------ capture and lifecycle

    def effective_client(self) -> Any:
        """The client exceptions go to; the default client gets the live module settings."""
        if self._default:
            return posthog.setup()
        return self.client

    def capture(
        self,
        exc: BaseException,
        *,
        source: str,
        handled: bool,
        status: int | None,
        never: tuple[type[BaseException], ...] = (),
    ) -> str | None:
        """Capture ``exc`` inside this scope if the policy (§1.8) says so; the event uuid or None.

        ``status`` falls back to :attr:`status` (the started response) when ``None``.
        Never raises.
        """
        try:
            if status is None:
                status = self.status
            client = self.effective_client()
            if not should_capture(exc, status, self._compiled.options, handled=handled,
                                  never=never, client=client):
                return None
            props: dict[str, Any] = {}
            if status is not None:
                props["$response_status_code"] = status
            with self.scope.activated():
                internal = getattr(client, "_capture_exception", None)
                if internal is not None:
                    return internal(  # type: ignore[no-any-return]
                        exc,
                        {"properties": props},
                        level="error",
                        source=source,
                        handled=handled,
                        mechanism="middleware",
                    )
                props["$exception_source"] = source
                return client.capture_exception(exc, properties=props)  # type: ignore[no-any-return]
        except Exception:
            logger.exception("could not capture the request's exception")
            return None

    def activated(self) -> AbstractContextManager[None]:
        """Re-enter the scope (streamed chunks, ``close()``); token-safe."""
        return _activated(self.scope)

    def exit(self) -> None:
        """Leave the scope. Idempotent; safe from another thread or task."""
        if self._exited:
            return
        self._exited = True
        core_token, self._core_token = self._core_token, None
        token, self._token = self._token, None
        try:
            if core_token is not None:
                contexts._restore(core_token, self.scope, self._outer)
        except Exception:
            logger.exception("could not leave the PostHog request scope")
        self._outer = None
        if token is not None:
            try:
                _current_request.reset(token)
            except ValueError:  # made in another Context
                if _current_request.get() is self:
                    _current_request.set(self._prev)
        self._prev = None
        self.scope.detach()


@contextmanager
def _activated(scope: CoreScope) -> Iterator[None]:
    with scope.activated():
        yield


def _callable_ip(source: Callable[[Any], Any], raw: object) -> str | None:
    return client_ip(forwarded_for=(), real_ip=None, peer=None, ip_source=source, request=raw)
