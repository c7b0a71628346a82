"""The core scope of one request, and what it settles late (tags, route, user, email).

The request's core scope is a :class:`posthog.contexts.Scope` whose ``tags`` and
``distinct_id`` are properties: reading them (which the core does for every event built
inside the scope, and which nested scopes do through their parent chain) first settles what
is still pending:

* the default tags (``$current_url``, ``$ip``, ``$user_agent``...), built on first read, so
  a request that sends no event never pays for them;
* the route, known only after routing (ASGI, Django), and the email of a user loaded later;
* the identity of a user loaded later (§1.4 step 6), while no distinct id is known.

Everything needed for that lives on the scope itself (no reference back to the
``RequestScope``, which drops its own link when the request finishes), so nothing forms a
reference cycle and the tags are still right for an event built after the request ended
(a thread started with ``run_in_scope``). While nothing is pending a read costs one
attribute check.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from posthog import contexts
from posthog._log import logger
from posthog.contexts import Scope
from posthog_integrations._request_options import Compiled, Options
from posthog_integrations._request_values import (
    consent_cookie_name,
    cookie_name,
    current_url,
    first_id,
    forwarded_ip,
    parse_posthog_cookie,
    sanitize_id,
    sanitize_text,
    valid_ip,
)

if TYPE_CHECKING:
    from posthog_integrations._request import RequestAdapter, RequestScope

FAILED: Any = object()  # a hook raised (already logged and reported)

_TAGS_SLOT: Any = Scope.__dict__["tags"]
_DISTINCT_SLOT: Any = Scope.__dict__["distinct_id"]

# What is still to be settled (``CoreScope._pending`` bits).
TAGS = 1  # the default tags, hooks and caps: not built yet
ROUTE = 2  # the route template: not known yet
EMAIL = 4  # the email of a user not loaded yet
IDENTITY = 8  # the distinct id of a user not loaded yet
_TAG_BITS = TAGS | ROUTE | EMAIL

_CAPS = (
    ("$request_method", 32),
    ("$request_path", 2048),
    ("$request_route", 512),
    ("$current_url", 4096),
    ("$user_agent", 1000),
    ("$raw_user_agent", 1000),
)


# ---------------------------------------------------------------- hooks and failures


def report(
    compiled: Compiled,
    name: str,
    exc: BaseException,
    client: object,
    message: str = "%s hook raised; the request continues with the defaults"
    " (further failures of this hook are not logged)",
) -> None:
    """Something failed: log it once per ``name`` and options, tell ``on_error`` every time."""
    if name not in compiled.failed:
        compiled.failed.add(name)
        logger.error(message, name, exc_info=(type(exc), exc, exc.__traceback__))
    notify(exc, client)


def notify(exc: BaseException, client: object) -> None:
    """``client.on_error(exc, [])`` (the default client's when ``client`` is ``None``)."""
    if client is None:
        import posthog

        client = posthog.default_client
    on_error = getattr(client, "on_error", None)
    if on_error is not None:
        try:
            on_error(exc, [])
        except Exception:
            logger.exception("on_error callback raised")


_failed_options: weakref.WeakSet[Options] = weakref.WeakSet()


def start_failed(options: Options, exc: BaseException) -> None:
    """Opening a request scope failed: the request runs untracked.

    Logged once per compiled options (once per options object when even compiling them
    failed) and reported to the client's ``on_error`` every time.
    """
    try:
        compiled = options._compiled_form
        if compiled is not None:
            report(compiled, "request scope", exc, compiled.client,
                   "could not open the PostHog %s; requests it fails for are not tracked"
                   " (further failures are not logged)")
            return
        if options not in _failed_options:
            _failed_options.add(options)
            logger.error("could not open the PostHog request scope; requests are not tracked",
                         exc_info=(type(exc), exc, exc.__traceback__))
        notify(exc, None)
    except Exception:  # never the request's problem
        pass


def warn_once(compiled: Compiled, name: str, message: str, *args: object) -> None:
    key = "warn:" + name
    if key not in compiled.failed:
        compiled.failed.add(key)
        logger.warning(message, *args)


def call(compiled: Compiled, name: str, fn: Callable[..., Any], client: object, *args: Any) -> Any:
    """``fn(*args)``, or :data:`FAILED` after reporting what it raised."""
    try:
        return fn(*args)
    except Exception as exc:
        report(compiled, name, exc, client)
        return FAILED


def apply_caps(tags: dict[str, Any]) -> None:
    """Control characters out and length caps on the standard string tags (last tag step)."""
    for key, cap in _CAPS:
        value = tags.get(key)
        if value is None:
            continue
        if value.__class__ is str and value and len(value) <= cap and value.isprintable():
            continue  # the common case, decided in C
        if isinstance(value, str):
            text = sanitize_text(value, cap)
            if text is None:
                del tags[key]
            elif text is not value:
                tags[key] = text


def not_awaited(compiled: Compiled, name: str, result: Any) -> Any:
    """A coroutine from a hook in a sync request: closed unawaited and counted as a failure."""
    if hasattr(result, "__await__"):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        warn_once(compiled, "async:" + name,
                  "%s is async but this request is sync; ignored", name)
        return FAILED
    return result


def code_variables_of(outer: Scope) -> dict[str, Any] | None:
    """Code-variable overrides of the enclosing scopes, nearest first (copied, §1.9)."""
    merged: dict[str, Any] = {}
    scope: Scope | None = outer
    while scope is not None:
        if scope.code_variables:
            for key, value in scope.code_variables.items():
                merged.setdefault(key, value)
        scope = scope.parent
    return merged or None


def clean_id(value: Any) -> str | None:
    """A tracing id from its raw header value(s) (``TracingIds`` item), sanitized (§1.3)."""
    if value.__class__ is str:
        return sanitize_id(value)
    if isinstance(value, (list, tuple)):
        return first_id(value)
    return sanitize_id(value)


def cookie_ids(
    adapter: RequestAdapter, compiled: Compiled, client: object
) -> tuple[str | None, str | None]:
    """``(distinct_id, session_id)`` from the posthog-js cookie of ``client``'s project."""
    assert compiled.cookie is not None
    api_key = getattr(client, "api_key", None)
    if not isinstance(api_key, str) or not api_key:
        return None, None
    names = compiled.cookie_names.get(api_key)
    if names is None:
        names = compiled.cookie_names[api_key] = (
            cookie_name(api_key),
            consent_cookie_name(api_key),
        )
    value = adapter.cookie(names[0])
    if value is None:
        return None, None
    idle, opt_out = compiled.cookie
    return parse_posthog_cookie(
        value,
        api_key=api_key,
        now_ms=int(time.time() * 1000),
        idle_timeout_s=idle,
        consent_value=adapter.cookie(names[1]),
        opt_out_by_default=opt_out,
    )


def loaded_user(adapter: RequestAdapter, compiled: Compiled, client: object) -> object | None:
    """The adapter's already-loaded user; a raising adapter counts as no user."""
    try:
        return adapter.user()
    except Exception as exc:
        report(compiled, "adapter.user", exc, client)
        return None


def user_id_of(
    adapter: RequestAdapter, compiled: Compiled, client: object, user: object | None,
    *, at_start: bool,
) -> str | None:
    """The id of ``user`` via the ``user_id`` option, else the framework default.

    The option is called at start even without a user (it may read the request);
    later only once a user is loaded. A failing option falls back to the default.
    """
    found: Any = FAILED
    if compiled.user_id is not None and (user is not None or at_start):
        found = call(compiled, "user_id", compiled.user_id, client, adapter.raw, user)
    if found is FAILED:
        found = None
        if user is not None:
            found = call(compiled, "adapter.user_id", adapter.user_id, client, user)
            if found is FAILED:
                return None
    if found is None:
        return None
    if not isinstance(found, (str, bytes, bytearray)):
        found = str(found)
    return sanitize_id(found)


def email_of(
    adapter: RequestAdapter, compiled: Compiled, client: object, user: object
) -> str | None:
    found = call(compiled, "adapter.user_email", adapter.user_email, client, user)
    return None if found is FAILED else sanitize_text(found, 1000)


def _callable_ip(source: Callable[[Any], Any], raw: object) -> str | None:
    answer = source(raw)
    return valid_ip(answer) if isinstance(answer, str) else None


# ---------------------------------------------------------------- the core scope


class CoreScope(Scope):
    """A fresh scope (``capture_exceptions=False``) whose reads settle pending values first.

    ``_pending`` holds the :data:`TAGS` / :data:`ROUTE` / :data:`EMAIL` / :data:`IDENTITY`
    bits still to settle; ``_seed`` what the default tags need from the request's start
    (the raw window id, the email, the ``extra_properties`` answer) until they are built;
    ``_rs`` the request, until it finishes. ``_fallback`` is set with ``IDENTITY``,
    ``_premap`` / ``_mapped`` once tags were built with a ``properties_map``.
    """

    __slots__ = (
        "_adapter",
        "_compiled",
        "_fallback",
        "_mapped",
        "_pending",
        "_premap",
        "_rs",
        "_seed",
        "_span",
    )

    _fallback: str | None
    _premap: dict[str, Any] | None
    _mapped: dict[str, Any] | None
    _span: Any

    def __init__(
        self,
        client: Any,
        rs: RequestScope | None,
        adapter: RequestAdapter,
        compiled: Compiled,
        distinct_id: str | None,
        pending: int,
        seed: tuple[Any, str | None, Any] | None,
    ) -> None:
        # Every field of ``Scope.__init__``, set directly: its ``tags`` / ``distinct_id``
        # assignments would go through the properties below (a test checks no field is
        # missed when the core adds one). ``pending``: bits besides ``TAGS``.
        self._rs = rs
        self._adapter = adapter
        self._compiled = compiled
        self._seed = seed
        self._pending = pending | TAGS
        self.parent = None
        self.fresh = True
        self.capture_exceptions = False
        self.client = client
        _DISTINCT_SLOT.__set__(self, distinct_id)
        self.session_id = None
        self.device_id = None
        _TAGS_SLOT.__set__(self, {})
        self.code_variables = None
        self.resolver = None
        self._gen = contexts._generation

    # ------------------------------------------------------------ the two settling reads

    @property
    def tags(self) -> dict[str, Any]:
        if self._pending & _TAG_BITS:
            self._resolve_tags()
        return _TAGS_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    @tags.setter
    def tags(self, value: dict[str, Any]) -> None:
        self._pending &= ~TAGS  # replaced wholesale: the defaults are not wanted
        _TAGS_SLOT.__set__(self, value)

    @property
    def distinct_id(self) -> str | None:
        value: str | None = _DISTINCT_SLOT.__get__(self, Scope)
        if value is None and self._pending & IDENTITY:
            return self._resolve_identity()
        return value

    @distinct_id.setter
    def distinct_id(self, value: str | None) -> None:
        # ``identify_context()`` inside the request beats anything resolved late.
        _DISTINCT_SLOT.__set__(self, value)
        if value is not None:
            self._pending &= ~IDENTITY

    def raw_tags(self) -> dict[str, Any]:
        """The tags dict itself, without settling anything."""
        return _TAGS_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    def raw_distinct(self) -> str | None:
        return _DISTINCT_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    def set_distinct(self, value: str) -> None:
        _DISTINCT_SLOT.__set__(self, value)

    def detach(self) -> None:
        """The request is over: no more late route / user; the default tags can still be
        built (an event after the request, from a thread running in its context)."""
        self._rs = None
        self._pending &= TAGS

    # ------------------------------------------------------------ user

    def _resolve_identity(self) -> str | None:
        try:
            user = loaded_user(self._adapter, self._compiled, self.client)
            if user is None:
                return self._fallback
            self._pending &= ~IDENTITY
            found = user_id_of(self._adapter, self._compiled, self.client, user,
                               at_start=False) or self._fallback
            if found is not None:
                _DISTINCT_SLOT.__set__(self, found)
                self._enrich_span(distinct_id=found, session_id=None)
            return found
        except Exception as exc:
            self._pending &= ~IDENTITY
            report(self._compiled, "late identity", exc, self.client)
            return self._fallback

    # ------------------------------------------------------------ tags

    def _resolve_tags(self) -> None:
        try:
            built = False
            if self._pending & TAGS:
                self._build_tags()
                built = True  # the route was just asked for
            new: dict[str, Any] = {}
            if self._pending & ROUTE and not built:
                route = self._route()
                if route:
                    self._pending &= ~ROUTE
                    new["$request_route"] = route
            if self._pending & EMAIL:
                user = loaded_user(self._adapter, self._compiled, self.client)
                if user is not None:
                    self._pending &= ~EMAIL
                    email = email_of(self._adapter, self._compiled, self.client, user)
                    if email is not None:
                        new["email"] = email
            if new:
                self._add_late_tags(new)
        except Exception as exc:
            self._pending &= ~_TAG_BITS
            report(self._compiled, "late tags", exc, self.client)

    def _route(self) -> str | None:
        try:
            return self._adapter.route()
        except Exception as exc:
            report(self._compiled, "adapter.route", exc, self.client)
            return None

    def _build_tags(self) -> None:
        """The default tags (§1.5), ``extra_properties``, ``properties_map``, the caps.

        Runs on the first read of the tags. The defaults are checked against the caps as
        they are made, so the generic cap pass runs only after a hook or for odd values.
        """
        self._pending &= ~TAGS
        adapter = self._adapter
        compiled = self._compiled
        seed, self._seed = self._seed, None
        window, email, extra = seed if seed is not None else (None, None, None)
        tags: dict[str, Any] = {}
        path = adapter.path
        clean = len(path) <= 2048 and path.isprintable()
        host = adapter.host
        if host:
            url_path = adapter.url_path
            query = adapter.query_string if compiled.capture_query_string else None
            url = current_url(adapter.scheme, host, path if url_path is None else url_path,
                              query)
            tags["$current_url"] = url
            clean = clean and len(url) <= 4096 and url.isprintable()
        method = adapter.method
        if method:
            tags["$request_method"] = method
            clean = clean and len(method) <= 32 and method.isprintable()
        tags["$request_path"] = path
        if compiled.capture_route:
            try:
                route = adapter.route()
            except Exception as exc:
                report(compiled, "adapter.route", exc, self.client)
                route = None
            if route:
                tags["$request_route"] = route
                clean = clean and route.__class__ is str and len(route) <= 512 and (
                    route.isprintable()
                )
            else:
                self._pending |= ROUTE
        if compiled.capture_ip:
            ip = None
            if compiled.ip_source == "forwarded":  # the default, inline: the usual request
                lines = adapter.header("x-forwarded-for")
                if lines:
                    ip = forwarded_ip(lines[0] if len(lines) == 1 else ",".join(lines),
                                      "forwarded")
            if ip is None:
                ip = self._ip(adapter, compiled)
            if ip is not None:
                tags["$ip"] = ip
        agents = adapter.header("user-agent")
        if agents:
            agent = agents[0]
            tags["$user_agent"] = tags["$raw_user_agent"] = agent
            clean = clean and len(agent) <= 1000 and agent.isprintable()
        if window is not None:
            window = sanitize_id(window) if window.__class__ is str else clean_id(window)
            if window is not None:
                tags["$window_id"] = window
        if email is not None:
            tags["email"] = email
        if extra is not None or compiled.properties_map is not None or not clean:
            tags = self._hooked_tags(tags, extra)
        _TAGS_SLOT.__set__(self, tags)

    def _ip(self, adapter: RequestAdapter, compiled: Compiled) -> str | None:
        """``$ip`` for ``ip_source`` (§1.6)."""
        source = compiled.ip_source
        if source == "peer":
            peer = adapter.peer_ip
            return valid_ip(peer) if isinstance(peer, str) else None
        if callable(source):
            answer = call(compiled, "ip_source", _callable_ip, self.client, source, adapter.raw)
            return None if answer is FAILED else answer
        lines = adapter.header("x-forwarded-for")
        found: str | None = None
        if lines:
            found = forwarded_ip(lines[0] if len(lines) == 1 else ",".join(lines), source)
        if found is None and source == "forwarded":
            real = adapter.header("x-real-ip")
            if real and isinstance(real[0], str):
                found = valid_ip(real[0])
        if found is None:
            peer = adapter.peer_ip
            found = valid_ip(peer) if isinstance(peer, str) else None
        return found

    def _hooked_tags(self, tags: dict[str, Any], extra: Any) -> dict[str, Any]:
        """``extra_properties`` (merged over the defaults), ``properties_map``, the caps."""
        compiled = self._compiled
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
        mapper = compiled.properties_map
        if mapper is not None:
            self._premap = self._mapped = None
            mapped = call(compiled, "properties_map", mapper, self.client, dict(tags))
            if isinstance(mapped, Mapping):
                self._premap = tags
                tags = dict(mapped)
                self._mapped = dict(tags)
            elif mapped is not FAILED:
                warn_once(compiled, "properties_map",
                          "properties_map returned %s, not a mapping; ignored",
                          type(mapped).__name__)
        apply_caps(tags)
        return tags

    def _add_late_tags(self, new: dict[str, Any]) -> None:
        """Tags known only now, through ``properties_map`` again when it ran at start.

        The map sees the start tags plus the new ones; what it answers differently from
        its start answer is added (a renamed or derived route lands, a deleted one does not).
        """
        compiled = self._compiled
        mapper = compiled.properties_map
        if mapper is not None and self._premap is not None and self._mapped is not None:
            combined = {**self._premap, **new}
            mapped = call(compiled, "properties_map", mapper, self.client, dict(combined))
            if isinstance(mapped, Mapping):
                previous = self._mapped
                self._premap = combined
                self._mapped = dict(mapped)
                missing = object()
                new = {k: v for k, v in mapped.items() if previous.get(k, missing) != v}
        apply_caps(new)
        _TAGS_SLOT.__get__(self, Scope).update(new)

    # ------------------------------------------------------------ OpenTelemetry

    def _enrich_span(self, *, distinct_id: str | None, session_id: str | None) -> None:
        """Ids on the active OpenTelemetry span, only if OpenTelemetry is already loaded."""
        if self._span is False:
            return
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            self._span = False
            return
        try:
            span = self._span
            if span is None:
                span = trace.get_current_span()
                if not span.is_recording():
                    self._span = False
                    return
                self._span = span
            if distinct_id is not None:
                span.set_attribute("posthog.distinct_id", distinct_id)
            if session_id is not None:
                span.set_attribute("posthog.session_id", session_id)
        except Exception:
            self._span = False
