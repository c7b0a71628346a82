"""Context scopes: identity, session, device id and tags for the events built inside them.

A ``ContextVar`` holds the innermost scope, so each thread and each asyncio task
sees its own. Scopes chain to their parent; lookups walk up until (and including)
the first ``fresh`` scope.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from posthog._log import logger

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

# (distinct_id or None, extra tags or None)
Resolver = Callable[[], "tuple[str | None, dict[str, Any] | None]"]

_generation = 0


class Scope:
    """One level of context. Fields left ``None`` are inherited from the parent."""

    __slots__ = (
        "_gen",
        "capture_exceptions",
        "client",
        "code_variables",
        "device_id",
        "distinct_id",
        "fresh",
        "parent",
        "resolver",
        "session_id",
        "tags",
    )

    def __init__(
        self,
        parent: Scope | None = None,
        fresh: bool = False,
        capture_exceptions: bool | None = None,
        client: Any = None,
    ) -> None:
        self.parent = None if fresh else parent
        self.fresh = fresh
        self.capture_exceptions = capture_exceptions
        self.client = client
        self.distinct_id: str | None = None
        self.session_id: str | None = None
        self.device_id: str | None = None
        self.tags: dict[str, Any] = {}
        self.code_variables: dict[str, Any] | None = None
        self.resolver: Resolver | None = None
        self._gen = _generation

    # ---------------------------------------------------------- lookups

    def lookup(self, name: str) -> Any:
        """Nearest non-``None`` value of attribute ``name`` up to the first fresh scope."""
        scope: Scope | None = self
        while scope is not None:
            value = getattr(scope, name)
            if value is not None:
                return value
            scope = scope.parent
        return None

    def code_variable_setting(self, name: str) -> Any:
        scope: Scope | None = self
        while scope is not None:
            if scope.code_variables is not None and name in scope.code_variables:
                return scope.code_variables[name]
            scope = scope.parent
        return None

    def collect_tags(self) -> dict[str, Any]:
        """Tags of this scope and its parents, children overriding parents."""
        parent = self.parent
        if parent is None:
            return self.tags.copy()
        if parent.parent is None:  # the usual nesting: one scope inside a request scope
            return {**parent.tags, **self.tags}
        chain: list[dict[str, Any]] = []
        scope: Scope | None = self
        while scope is not None:
            if scope.tags:
                chain.append(scope.tags)
            scope = scope.parent
        merged: dict[str, Any] = {}
        for tags in reversed(chain):
            merged.update(tags)
        return merged

    def resolve_distinct_id(self) -> str | None:
        """The scope's distinct id, asking a late resolver (at most once per call) if needed."""
        found = self.lookup("distinct_id")
        if found is not None:
            return str(found)
        scope: Scope | None = self
        while scope is not None:
            if scope.resolver is not None:
                return scope._run_resolver()
            scope = scope.parent
        return None

    def _run_resolver(self) -> str | None:
        resolver = self.resolver
        assert resolver is not None
        try:
            distinct_id, tags = resolver()
        except Exception:
            logger.exception("context resolver raised; treated as no identity")
            return None
        if tags:
            self.tags.update(tags)
        if distinct_id is not None and str(distinct_id):
            self.distinct_id = str(distinct_id)
            self.resolver = None
            return self.distinct_id
        return None

    # ---------------------------------------------------------- re-activation

    def activated(self) -> Activation:
        """Make this scope current again (e.g. while a streamed body is produced).

        A context manager for one ``with`` block, token-safe like ``new_context``.
        """
        return Activation(self)


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "posthog_context", default=None
)


def _restore(token: contextvars.Token[Scope | None], scope: Scope, previous: Scope | None) -> None:
    """Leave ``scope``, even from another Context (a generator closed by another thread or task).

    ``ContextVar.reset`` refuses a token made in a different Context; then, if
    ``scope`` is still current there, the value it replaced is put back.
    """
    try:
        _current.reset(token)
    except ValueError:
        if _current.get() is scope:
            _current.set(previous)


class Activation:
    """``with scope.activated():`` -- ``scope`` current for the block (set/reset tokens).

    Single use, like a generator-based context manager. Leaving from another Context (a
    generator closed by another thread or task) is safe: see :func:`_restore`.
    """

    __slots__ = ("_previous", "_token", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._token: contextvars.Token[Scope | None] | None = None
        self._previous: Scope | None = None

    def __enter__(self) -> Scope:
        self._previous = _current.get()
        self._token = _current.set(self.scope)
        return self.scope

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        token = self._token
        if token is not None:
            self._token = None
            _restore(token, self.scope, self._previous)
            self._previous = None


def current_scope() -> Scope | None:
    """The innermost active scope, ignoring scopes inherited across ``fork()``."""
    scope = _current.get()
    if scope is not None and scope._gen != _generation:
        return None
    return scope


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class new_context:
    """Context manager that pushes a new scope for the duration of a ``with`` block."""

    __slots__ = ("_capture", "_client", "_fresh", "_previous", "_token", "scope")

    def __init__(
        self, fresh: bool = False, capture_exceptions: bool | None = None, client: Any = None
    ) -> None:
        self._fresh = fresh
        self._capture = capture_exceptions
        self._client = client
        self._token: contextvars.Token[Scope | None] | None = None

    def __enter__(self) -> Scope:
        self._previous = _current.get()
        self.scope = Scope(current_scope(), self._fresh, self._capture, self._client)
        self._token = _current.set(self.scope)
        return self.scope

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, Exception) and self._should_capture():
                self._capture_escaping(exc)
        finally:
            token = self._token
            if token is not None:
                self._token = None
                _restore(token, self.scope, self._previous)

    def _should_capture(self) -> bool:
        if self._capture is not None:
            return self._capture
        client = self._client
        if client is None:
            import posthog

            client = posthog.default_client
            if client is None:
                return bool(posthog.enable_exception_autocapture)
        return bool(getattr(client, "enable_exception_autocapture", False))

    def _capture_escaping(self, exc: Exception) -> None:
        # Still inside the scope: the event carries its identity and tags.
        try:
            if self._client is not None:
                self._client.capture_exception(exc)
            else:
                import posthog

                posthog.capture_exception(exc)
        except Exception:
            logger.exception("could not capture the exception leaving a context")


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect at startup


def scoped(
    fresh: bool = False, capture_exceptions: bool | None = None, client: Any = None
) -> Callable[[F], F]:
    """Decorator running the function (sync or async) inside ``new_context(...)``."""

    def decorate(fn: F) -> F:
        if _is_coroutine_function(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with new_context(fresh, capture_exceptions, client):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with new_context(fresh, capture_exceptions, client):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def tag(name: str, value: Any) -> None:
    """Add a tag to the current scope (no-op outside a context)."""
    scope = current_scope()
    if scope is not None:
        scope.tags[name] = value


def get_tags() -> dict[str, Any]:
    """A copy of the merged tags of the current scope (``{}`` outside a context)."""
    scope = current_scope()
    return scope.collect_tags() if scope is not None else {}


def identify_context(distinct_id: str) -> None:
    """Distinct id for events in this scope that do not pass one."""
    scope = current_scope()
    if scope is not None:
        scope.distinct_id = distinct_id


def set_context_session(session_id: str) -> None:
    """``$session_id`` for events in this scope."""
    scope = current_scope()
    if scope is not None:
        scope.session_id = session_id


def set_context_device_id(device_id: str) -> None:
    """Device id used for flag evaluation in this scope."""
    scope = current_scope()
    if scope is not None:
        scope.device_id = device_id


def _set_code_variable_override(name: str, value: Any) -> None:
    scope = current_scope()
    if scope is not None:
        if scope.code_variables is None:
            scope.code_variables = {}
        scope.code_variables[name] = value


def set_capture_exception_code_variables_context(enabled: bool) -> None:
    _set_code_variable_override("capture", enabled)


def set_code_variables_mask_patterns_context(mask_patterns: list[str]) -> None:
    _set_code_variable_override("mask_patterns", mask_patterns)


def set_code_variables_ignore_patterns_context(ignore_patterns: list[str]) -> None:
    _set_code_variable_override("ignore_patterns", ignore_patterns)


def set_code_variables_mask_url_credentials_context(enabled: bool) -> None:
    _set_code_variable_override("mask_url_credentials", enabled)


def set_code_variables_detect_secrets_context(enabled: bool) -> None:
    _set_code_variable_override("detect_secrets", enabled)


def run_in_context(fn: Callable[..., R]) -> Callable[..., R]:
    """A callable that runs ``fn`` in a copy of the current context (for threads, executors)."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def runner(*args: Any, **kwargs: Any) -> R:
        # A Context can be entered by one thread at a time: each call runs in its own copy.
        return ctx.copy().run(fn, *args, **kwargs)

    return runner
