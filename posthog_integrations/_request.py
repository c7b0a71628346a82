"""The framework-agnostic request layer (spec §1): one request -> one scope with ids and tags.

Each framework module supplies a small :class:`RequestAdapter`; :class:`RequestScope` does
the rest once: tracing-header and cookie ids, the authenticated user, tags, the late route
and identity, exception capture policy and the scope's lifecycle. No framework is imported.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Collection, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar

import posthog
from posthog import contexts
from posthog._log import logger
from posthog_integrations._request_options import Compiled, Options
from posthog_integrations._request_scope import (
    EMAIL,
    FAILED,
    IDENTITY,
    TAGS,
    CoreScope,
    call,
    clean_id,
    code_variables_of,
    cookie_ids,
    email_of,
    loaded_user,
    not_awaited,
    report,
    start_failed,
    user_id_of,
    warn_once,
)
from posthog_integrations._request_values import (
    POSTHOG_TRACING_HEADERS,
    client_ip,
    consent_cookie_name,
    cookie_name,
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
    "TracingIds",
    "capture_handled",
    "client_ip",
    "consent_cookie_name",
    "cookie_name",
    "first_id",
    "parse_posthog_cookie",
    "run_in_scope",
    "sanitize_id",
    "sanitize_text",
    "send_exception",
    "should_capture",
]

P = ParamSpec("P")
R = TypeVar("R")

# One header's raw value(s): ``None`` when absent, a str, or every value of a repeated header.
IdValue = str | list[str] | None
# Distinct, session, window and device id headers, in that order.
TracingIds = tuple[IdValue, IdValue, IdValue, IdValue]

# No variable of its own holds the current request: it is found through the current core
# scope (a request's ``CoreScope`` refers to its ``RequestScope`` until it finishes), and
# each ``RequestScope`` keeps the core scope it replaced (``_outer``), linking the requests
# that enclose it.

# Frameworks that decided, in an enclosing call of this request, not to track it.
_declined: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "posthog_request_declined", default=()
)


def _running_loop() -> object | None:
    """The event loop running in this thread (never one if asyncio was not imported)."""
    events = sys.modules.get("asyncio.events")
    return None if events is None else events._get_running_loop()


class RequestAdapter(Protocol):
    """What a framework tells the request layer about one request; cheap and never raising.

    Data members are read-only: an adapter may implement them as plain attributes (of a
    narrower type, e.g. ``raw: HttpRequest``) or as properties.
    """

    @property
    def method(self) -> str | None:
        """Upper-case method; ``None`` for a WebSocket."""

    @property
    def scheme(self) -> str:
        """``http`` / ``https`` / ``ws`` / ``wss``."""

    @property
    def host(self) -> str | None:
        """``host[:port]``; ``None`` when unsafe or unknown."""

    @property
    def path(self) -> str:
        """The full path the client asked for (mount prefix included), no query."""

    @property
    def url_path(self) -> str | None:
        """The path as the framework writes it in a URL (``$current_url``); ``None`` = ``path``.

        Django percent-encodes a non-ASCII path there, as ``build_absolute_uri`` does.
        """

    @property
    def query_string(self) -> str:
        """The raw query (read only when ``capture_query_string`` is on)."""

    @property
    def peer_ip(self) -> str | None:
        """The socket peer address."""

    @property
    def raw(self) -> object:
        """The framework request (ASGI: the scope), handed to hooks."""

    def tracing_ids(self) -> TracingIds:
        """The raw distinct, session, window and device id header values, in one call.

        Each is ``None`` when the header is absent, its value (a str), or the list of its
        values when it was sent more than once. The layer sanitizes them (§1.3).
        """
        ...

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
    status_codes: Collection[int] | None = None,
) -> bool:
    """Capture policy of spec §1.8 for one exception.

    Never for non-``Exception``\\ s, ``never`` (the framework's 4xx / disconnect types) or
    ``options.ignored_exceptions``; never when ``capture_exceptions`` resolves false (``None``
    inherits ``client``'s ``enable_exception_autocapture``); handled exceptions only with a
    status in ``capture_status_codes`` (or in ``status_codes`` when given); unhandled ones
    always.
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
        codes = compiled.status_codes if status_codes is None else status_codes
        return status is not None and status in codes
    return True


def run_in_scope(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` wrapped to run in a copy of the current context (for threads and executors)."""
    return contexts.run_in_context(fn)


def capture_handled(
    exc: BaseException, *, source: str, status: int | None = None
) -> str | None:
    """Capture ``exc`` explicitly (``handled: true``, no policy) in the current request scope.

    What the frameworks' ``capture_handled`` helpers call: inside a request the request's
    scope and client are used (``status`` defaults to the started response's); outside one
    the default client. The event uuid, or ``None``. Never raises.
    """
    try:
        rs = RequestScope.current()
        if rs is not None:
            return rs.capture(exc, source=source, handled=True, status=status, policy=False)
        return send_exception(posthog.setup(), exc, source=source, handled=True, status=status)
    except Exception:
        logger.exception("capture_handled failed")
        return None


def send_exception(client: Any, exc: BaseException, *, source: str, handled: bool,
                   status: int | None) -> str | None:
    """One ``$exception`` to ``client`` with the integration's metadata (source, mechanism
    ``middleware``, ``handled``, ``$response_status_code``), outside any policy; through the
    client's internal channel, else its public ``capture_exception``. May raise."""
    props: dict[str, Any] = {}
    if status is not None:
        props["$response_status_code"] = status
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


# ---------------------------------------------------------------- helpers


def _default_client() -> Any:
    return posthog.default_client or posthog.setup()


class _Untracked:
    """``RequestScope.untracked(framework)``: nested starts of ``framework`` pass through."""

    __slots__ = ("_framework", "_token")

    def __init__(self, framework: str) -> None:
        self._framework = framework
        self._token: contextvars.Token[tuple[str, ...]] | None = None

    def __enter__(self) -> None:
        self._token = _declined.set((*_declined.get(), self._framework))

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:  # noqa: SIM105 - cheaper than contextlib.suppress, per request
                _declined.reset(token)
            except ValueError:  # made in another Context: nothing of ours is current here
                pass


# ---------------------------------------------------------------- the request scope


class RequestScope:
    """One tracked request: owns the core scope, the effective client and the response status.

    Lifecycle: :meth:`start` / :meth:`astart` open the scope and enter it on the calling
    thread or task. :meth:`suspend` leaves the thread when the framework's call returns but
    the response body is still to be produced (the scope keeps resolving the late route and
    identity; :meth:`activated` re-enters it around each chunk). :meth:`finish` ends the
    request when the response is closed. :meth:`exit` does both, for a response complete
    when the call returns. All three are idempotent and safe from another thread or task.
    """

    __slots__ = (
        "_compiled",
        "_core_token",
        "_default",
        "_entered",
        "_finished",
        "_outer",
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
    _compiled: Compiled
    _default: bool
    _entered: bool
    _finished: bool
    _core_token: contextvars.Token[contexts.Scope | None] | None
    _outer: contexts.Scope | None

    # ------------------------------------------------------------ the current request

    @classmethod
    def current(cls) -> RequestScope | None:
        """The request whose scope is current in this context (also inside :meth:`activated`
        and in scopes nested in it), unless it is finished."""
        scope = contexts.current_scope()
        while scope is not None:
            if isinstance(scope, CoreScope):
                return scope._rs
            scope = scope.parent
        return None

    @classmethod
    def untracked(cls, framework: str) -> _Untracked:
        """Context manager for a request ``framework`` decided not to track (filtered, or
        already tracked by an outer instance): nested instances of ``framework`` in the same
        call then pass through without deciding again."""
        return _Untracked(framework)

    @staticmethod
    def _nested(adapter: RequestAdapter, framework: str) -> bool:
        """Whether an enclosing call of this request already handles it for ``framework``.

        That is: a scope of ``framework`` entered in this context (not suspended, not
        finished) for the same request object, or for any request while an event loop runs
        here (ASGI: middleware that copies the scope dict hands the inner instance a new
        object for the same request; every ASGI request has its own task, so a scope left
        entered in a previous request cannot be seen); or ``framework`` declined the request
        in an enclosing call (:meth:`untracked`). A scope left entered on a reused worker
        thread, for another request object, never makes a new request pass through.
        """
        scope = contexts._current.get()
        while scope is not None:
            if not isinstance(scope, CoreScope):
                scope = scope.parent
                continue
            rs = scope._rs
            if rs is None or not rs._entered:  # finished, or only re-activated for a chunk
                break
            if rs.framework == framework and (
                rs.raw is adapter.raw or _running_loop() is not None
            ):
                return True
            scope = rs._outer
        return framework in _declined.get()

    # ------------------------------------------------------------ opening

    @classmethod
    def start(
        cls, adapter: RequestAdapter, options: Options, *, framework: str
    ) -> RequestScope | None:
        """Open and enter the scope of one request; ``None`` = don't track (or already tracked).

        ``request_filter`` and ``exclude_paths`` are evaluated here, once. A hook returning
        a coroutine is closed unawaited (use :meth:`astart` in async code). Never raises: a
        failure is logged once per options and reported to the client's ``on_error``, and
        the request runs untracked.
        """
        try:
            outer = contexts._current.get()
            if (outer is not None or _declined.get()) and cls._nested(adapter, framework):
                return None
            compiled = options._compiled_form or options.compiled()
            if not compiled.gated:  # no exclusions, no filter, no extra_properties
                return cls._open(adapter, compiled, framework, None, outer)
            if (compiled.exclude_prefixes or compiled.exclude_patterns) and compiled.excluded(
                adapter.path
            ):
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
            return cls._open(adapter, compiled, framework, extra, contexts._current.get())
        except Exception as exc:
            start_failed(options, exc)
            return None

    @classmethod
    async def astart(
        cls, adapter: RequestAdapter, options: Options, *, framework: str
    ) -> RequestScope | None:
        """:meth:`start` for async code: awaits async ``request_filter`` / ``extra_properties``."""
        try:
            if (contexts._current.get() is not None or _declined.get()) and cls._nested(
                adapter, framework
            ):
                return None
            compiled = options._compiled_form or options.compiled()
            if (compiled.exclude_prefixes or compiled.exclude_patterns) and compiled.excluded(
                adapter.path
            ):
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
            return cls._open(adapter, compiled, framework, extra, contexts._current.get())
        except Exception as exc:
            start_failed(options, exc)
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
        cls,
        adapter: RequestAdapter,
        compiled: Compiled,
        framework: str,
        extra: Any,
        outer: contexts.Scope | None,
    ) -> RequestScope:
        """Ids (§1.2-1.4) and the late resolver, then enter the core scope (``outer``: the
        scope current now, which leaving the request restores).

        The default tags are built by the core scope when they are first read (the first
        event or capture of the request): a request that sends nothing does not pay for
        them. The ids are settled here: the core reads the session and device ids directly.
        """
        self = cls.__new__(cls)
        self._compiled = compiled
        self.framework = framework
        self.raw = adapter.raw
        self.status = None
        self._finished = False
        client = compiled.client
        if client is None:
            client = self._resolve_client(adapter, compiled)
        else:
            self._default = False
        self.client = client

        # ids: headers, else the posthog-js cookie (never both)
        distinct = session = None
        window: IdValue = None  # sanitized with the other tags, when they are built
        device: IdValue = None
        if compiled.headers:
            raw_distinct, raw_session, window, device = adapter.tracing_ids()
            if raw_distinct is not None:
                distinct = (sanitize_id(raw_distinct) if raw_distinct.__class__ is str
                            else clean_id(raw_distinct))
            if raw_session is not None:
                session = (sanitize_id(raw_session) if raw_session.__class__ is str
                           else clean_id(raw_session))
        if compiled.cookie is not None and distinct is None and session is None:
            distinct, session = cookie_ids(adapter, compiled, client)

        # the authenticated user, only when it can matter
        chosen = distinct
        fallback = email = None
        pending = 0
        if distinct is None or compiled.user_at_start:
            user = loaded_user(adapter, compiled, client)
            if distinct is None or compiled.prefer_user:
                user_id = user_id_of(adapter, compiled, client, user, at_start=True)
                if compiled.prefer_user:
                    chosen, fallback = user_id, distinct
                else:
                    chosen = distinct or user_id
                if chosen is None:
                    if user is None:
                        pending = IDENTITY  # a user loaded later names the request
                    else:
                        chosen = fallback
            if compiled.capture_user_email:
                if user is not None:
                    email = email_of(adapter, compiled, client, user)
                else:
                    pending |= EMAIL

        core = self.scope = CoreScope(
            None if self._default else client, self, adapter, compiled, chosen, pending,
            (window, email, extra)
            if window is not None or email is not None or extra is not None else None,
        )
        if pending & IDENTITY:
            core._fallback = fallback
        if session is not None:
            core.session_id = session
        if device is not None:
            core.device_id = sanitize_id(device) if device.__class__ is str else clean_id(device)

        if outer is not None:
            enclosing = contexts.current_scope()  # None for a scope inherited across fork()
            if enclosing is not None:
                core.code_variables = code_variables_of(enclosing)
        if sys.modules.get("opentelemetry.trace") is None:
            core._span = False
        else:
            core._span = None
            core._enrich_span(distinct_id=chosen, session_id=session)

        # Entered by hand (a with-block cannot span the framework's call chain); the same
        # set/reset as ``Scope.activated()``.
        self._outer = outer
        self._core_token = contexts._current.set(core)
        self._entered = True
        return self

    def _resolve_client(self, adapter: RequestAdapter, compiled: Compiled) -> Any:
        client = None
        if compiled.client_factory is not None:
            found = call(compiled, "client", compiled.client_factory, None, adapter.raw)
            if found is not FAILED and found is not None:
                if hasattr(found, "capture") and hasattr(found, "api_key"):
                    client = found
                else:
                    warn_once(compiled, "client",
                              "client callable returned %s, not a client",
                              type(found).__name__)
        self._default = client is None
        return _default_client() if client is None else client

    # ------------------------------------------------------------ capture

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
        status: int | None = None,
        never: tuple[type[BaseException], ...] = (),
        policy: bool = True,
        status_codes: Iterable[int] | None = None,
        client: Any = None,
    ) -> str | None:
        """Capture ``exc`` inside this scope; the event uuid, or ``None``. Never raises.

        ``status`` falls back to :attr:`status` (the started response) when ``None``.
        With ``policy`` (the default) the §1.8 policy decides (:func:`should_capture`),
        judging a handled exception's status against ``status_codes`` when given, else
        ``capture_status_codes``; ``policy=False`` is an explicit capture (a user's
        ``capture_handled``, or a caller that applied its own rules): only ``never`` is
        honoured. ``client`` overrides the request's client.
        """
        try:
            if status is None:
                status = self.status
            target = self.effective_client() if client is None else client
            if policy:
                codes = None if status_codes is None else frozenset(status_codes)
                if not should_capture(exc, status, self._compiled.options, handled=handled,
                                      never=never, client=target, status_codes=codes):
                    return None
            elif never and isinstance(exc, never):
                return None
            with self.activated():
                return send_exception(target, exc, source=source, handled=handled, status=status)
        except Exception as failure:
            report(self._compiled, "capture", failure, client,
                   "could not capture the request's exception (%s; further failures are"
                   " not logged)")
            return None

    # ------------------------------------------------------------ lifecycle

    def activated(self) -> contexts.Activation:
        """Re-enter the scope (streamed chunks, ``close()``) for one ``with`` block: events,
        captures and :meth:`current` see the request again. Token-safe, from any thread."""
        return contexts.Activation(self.scope)

    def suspend(self) -> None:
        """Leave the thread or task ``start`` entered, keeping late resolution (route,
        identity, email) for a body produced later. Idempotent; safe from another thread."""
        if self._entered:
            self._leave()

    def _leave(self) -> None:
        token = self._core_token
        if token is not None:
            try:
                contexts._current.reset(token)
            except ValueError:  # the token belongs to another Context (thread or task)
                if contexts._current.get() is not self.scope:
                    return  # not current here: the owning context can still leave later
                contexts._current.set(self._outer)
            except Exception:  # a token reset twice: nothing left to undo
                logger.exception("could not leave the PostHog request scope")
        self._entered = False
        self._core_token = self._outer = None

    def finish(self) -> None:
        """The request is over (response closed): leave if still entered and stop resolving
        the late route and user (the default tags can still be built for a later event).
        Capturing into the scope still works. Idempotent."""
        if self._entered:
            self._leave()
        if self._finished:
            return
        self._finished = True
        core = self.scope
        core._rs = None  # no reference cycle left
        core._pending &= TAGS

    def exit(self) -> None:
        """:meth:`suspend` and :meth:`finish`: the request ends when the call returns.

        Called from another thread or task than the one ``start`` entered, it cannot reset
        that context: the owning thread's own later ``exit()`` / ``suspend()`` still does.
        """
        if self._entered:  # _leave(), inline: this runs once per request
            token = self._core_token
            try:
                contexts._current.reset(token)  # type: ignore[arg-type]
            except Exception:
                self._leave()  # the careful path
            else:
                self._entered = False
                self._core_token = self._outer = None
        if self._finished:
            return
        self._finished = True
        core = self.scope
        core._rs = None
        core._pending &= TAGS
