"""The core scope of one request, and what it resolves late (route, user, email).

The core calls a scope's late resolver only while the scope has no distinct id, but the
route (ASGI, Django) is known only after routing, whatever the identity. So the request's
core scope is a :class:`posthog.contexts.Scope` whose ``tags`` and ``distinct_id`` are
properties: reading them (which the core does for every event built inside the scope, and
which nested scopes do through their parent chain) first settles what is still pending.
While nothing is pending a read costs one attribute check.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog.contexts import Scope
from posthog_integrations._request_options import Compiled
from posthog_integrations._request_values import (
    consent_cookie_name,
    cookie_name,
    parse_posthog_cookie,
    sanitize_id,
    sanitize_text,
)

if TYPE_CHECKING:
    from posthog_integrations._request import RequestAdapter

FAILED: Any = object()  # a hook raised (already logged and reported)

_TAGS_SLOT: Any = Scope.__dict__["tags"]
_DISTINCT_SLOT: Any = Scope.__dict__["distinct_id"]

_CAPS = (
    ("$request_method", 32),
    ("$request_path", 2048),
    ("$request_route", 512),
    ("$current_url", 4096),
    ("$user_agent", 1000),
    ("$raw_user_agent", 1000),
)


# ---------------------------------------------------------------- hooks


def report(compiled: Compiled, name: str, exc: Exception, client: object) -> None:
    """A hook failed: log it once per hook, tell the client's ``on_error`` every time."""
    if name not in compiled.failed:
        compiled.failed.add(name)
        logger.error(
            "%s hook raised; the request continues with the defaults"
            " (further failures of this hook are not logged)",
            name,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    if client is None:
        import posthog

        client = posthog.default_client
    on_error = getattr(client, "on_error", None)
    if on_error is not None:
        try:
            on_error(exc, [])
        except Exception:
            logger.exception("on_error callback raised")


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


# ---------------------------------------------------------------- the core scope


class CoreScope(Scope):
    """A fresh scope (``capture_exceptions=False``) whose reads settle late values first."""

    __slots__ = ("_late",)

    def __init__(self, client: Any, late: Late) -> None:
        self._late: Late | None = None
        super().__init__(None, fresh=True, capture_exceptions=False, client=client)
        self._late = late

    @property
    def tags(self) -> dict[str, Any]:
        late = self._late
        if late is not None and (late._route_pending or late._email_pending):
            late._resolve_tags()
        return _TAGS_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    @tags.setter
    def tags(self, value: dict[str, Any]) -> None:
        _TAGS_SLOT.__set__(self, value)

    @property
    def distinct_id(self) -> str | None:
        value: str | None = _DISTINCT_SLOT.__get__(self, Scope)
        if value is None:
            late = self._late
            if late is not None and late._identity_pending:
                return late._resolve_identity()
        return value

    @distinct_id.setter
    def distinct_id(self, value: str | None) -> None:
        # ``identify_context()`` inside the request beats anything resolved late.
        _DISTINCT_SLOT.__set__(self, value)
        late = self._late
        if late is not None and value is not None:
            late._identity_pending = False

    def raw_tags(self) -> dict[str, Any]:
        """The tags dict itself, without settling anything."""
        return _TAGS_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    def raw_distinct(self) -> str | None:
        return _DISTINCT_SLOT.__get__(self, Scope)  # type: ignore[no-any-return]

    def set_tags(self, value: dict[str, Any]) -> None:
        _TAGS_SLOT.__set__(self, value)

    def set_distinct(self, value: str) -> None:
        _DISTINCT_SLOT.__set__(self, value)

    def detach(self) -> None:
        """Stop late resolution (the request is over); breaks the reference cycle."""
        self._late = None


# ---------------------------------------------------------------- late values


class Late:
    """The late-resolution half of ``RequestScope``: route, user identity, email."""

    __slots__ = (
        "_adapter",
        "_compiled",
        "_email_pending",
        "_fallback",
        "_identity_pending",
        "_mapped",
        "_premap",
        "_route_pending",
        "_span",
    )

    scope: CoreScope
    client: Any

    def _init_late(self, adapter: RequestAdapter, compiled: Compiled) -> None:
        self._adapter = adapter
        self._compiled = compiled
        self._route_pending = False
        self._email_pending = False
        self._identity_pending = False
        self._fallback: str | None = None
        self._premap: dict[str, Any] | None = None
        self._mapped: dict[str, Any] | None = None
        self._span: Any = None

    def _cookie_ids(
        self, adapter: RequestAdapter, compiled: Compiled
    ) -> tuple[str | None, str | None]:
        assert compiled.cookie is not None
        api_key = getattr(self.client, "api_key", None)
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

    # ------------------------------------------------------------ user

    def _route(self) -> str | None:
        try:
            return self._adapter.route()
        except Exception as exc:
            report(self._compiled, "adapter.route", exc, self.client)
            return None

    def _user(self) -> object | None:
        try:
            return self._adapter.user()
        except Exception as exc:
            report(self._compiled, "adapter.user", exc, self.client)
            return None

    def _user_id(self, user: object | None, *, at_start: bool) -> str | None:
        """The id of ``user`` via the ``user_id`` option, else the framework default.

        The option is called at start even without a user (it may read the request);
        later only once a user is loaded. A failing option falls back to the default.
        """
        compiled = self._compiled
        adapter = self._adapter
        found: Any = FAILED
        if compiled.user_id is not None and (user is not None or at_start):
            found = call(compiled, "user_id", compiled.user_id, self.client, adapter.raw, user)
        if found is FAILED:
            found = None
            if user is not None:
                found = call(compiled, "adapter.user_id", adapter.user_id, self.client, user)
                if found is FAILED:
                    return None
        if found is None:
            return None
        if not isinstance(found, (str, bytes, bytearray)):
            found = str(found)
        return sanitize_id(found)

    def _email(self, user: object) -> str | None:
        found = call(self._compiled, "adapter.user_email", self._adapter.user_email,
                     self.client, user)
        return None if found is FAILED else sanitize_text(found, 1000)

    # ------------------------------------------------------------ tags

    def _finish_tags(self, tags: dict[str, Any]) -> dict[str, Any]:
        """``properties_map`` (final say), then the caps."""
        compiled = self._compiled
        mapper = compiled.properties_map
        if mapper is not None:
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
        self.scope.raw_tags().update(new)

    def _resolve_tags(self) -> None:
        try:
            new: dict[str, Any] = {}
            if self._route_pending:
                route = self._route()
                if route:
                    self._route_pending = False
                    new["$request_route"] = route
            if self._email_pending:
                user = self._user()
                if user is not None:
                    self._email_pending = False
                    email = self._email(user)
                    if email is not None:
                        new["email"] = email
            if new:
                self._add_late_tags(new)
        except Exception as exc:
            self._route_pending = self._email_pending = False
            report(self._compiled, "late tags", exc, self.client)

    def _resolve_identity(self) -> str | None:
        try:
            user = self._user()
            if user is None:
                return self._fallback
            self._identity_pending = False
            found = self._user_id(user, at_start=False) or self._fallback
            if found is not None:
                self.scope.set_distinct(found)
                self._enrich_span(distinct_id=found, session_id=None)
            return found
        except Exception as exc:
            self._identity_pending = False
            report(self._compiled, "late identity", exc, self.client)
            return self._fallback

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
