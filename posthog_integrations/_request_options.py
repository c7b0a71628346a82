"""``Options``: the settings all framework integrations share (spec §1.7), and their compiled form.

Options are checked and normalised once (``Options.compiled()``), so a request only reads
precomputed values. Re-exported by ``_request``.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog_integrations._request_values import (
    IDLE_TIMEOUT_DEFAULT_S,
    check_ip_source,
    clamp_idle_timeout,
)

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_STATUS_CODES: frozenset[int] = frozenset(range(500, 600))
_ALIASES = {"trust_tracing_headers": "capture_tracing_headers"}
_warned_keys: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned_keys:
            return
        _warned_keys.add(key)
    logger.warning(message, *args)


@dataclass(eq=False)
class Options:
    """Every option of spec §1.7 with its default (Flask / ASGI defaults; Django passes its own).

    Treat an instance as settled once requests use it: assigning a field is allowed and
    drops the compiled form, which is rebuilt on the next request.
    """

    client: Any = None
    capture_exceptions: bool | None = None
    capture_tracing_headers: bool = True
    identity_precedence: str = "header"
    user_id: Callable[[Any, Any], Any] | None = None
    capture_user_email: bool = False
    read_posthog_cookie: bool | Mapping[str, Any] = False
    capture_ip: bool = True
    ip_source: Any = "forwarded"
    capture_query_string: bool = False
    capture_route: bool = True
    request_filter: Callable[[Any], Any] | None = None
    exclude_paths: Iterable[Any] = ()
    extra_properties: Callable[[Any], Any] | None = None
    properties_map: Callable[[dict[str, Any]], Any] | None = None
    capture_status_codes: frozenset[int] = DEFAULT_STATUS_CODES
    ignored_exceptions: tuple[type[BaseException], ...] = ()
    _compiled_form: Compiled | None = field(default=None, init=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "_compiled_form":
            object.__setattr__(self, "_compiled_form", None)

    @classmethod
    def known_keys(cls) -> frozenset[str]:
        """Option names ``from_settings`` accepts: the fields (a framework's subclass adds
        its own) and the deprecated aliases."""
        return frozenset(f.name for f in fields(cls) if f.init) | frozenset(_ALIASES)

    @classmethod
    def from_settings(
        cls, values: Mapping[str, Any], /, *, stacklevel: int = 1, **overrides: Any
    ) -> Self:
        """Options from canonical-name ``values`` (Django settings, Flask config) and ``overrides``.

        Precedence: ``overrides`` > ``values`` > defaults. Unknown keys are warned about once.
        A framework with options of its own declares them as fields of a subclass
        (``class FlaskOptions(Options): capture_handled_errors: bool = False``) and calls
        ``FlaskOptions.from_settings``. ``trust_tracing_headers`` is the deprecated name of
        ``capture_tracing_headers`` (``DeprecationWarning``; the new name wins when both are
        set); ``stacklevel`` counts from the caller of ``from_settings`` (1 = that caller),
        so a framework can point the warning at its user's code.
        """
        known = {f.name for f in fields(cls) if f.init}
        merged: dict[str, Any] = {}
        legacy: Any = None
        has_legacy = False
        for source in (values, overrides):
            for key, value in source.items():
                if key in _ALIASES:
                    warnings.warn(
                        f"{key} is deprecated; use {_ALIASES[key]}",
                        DeprecationWarning,
                        stacklevel=stacklevel + 1,
                    )
                    legacy, has_legacy = value, True
                elif key in known:
                    merged[key] = value
                else:
                    _warn_once(
                        f"option:{key}", "unknown integration option %r ignored", key
                    )
        if has_legacy and "capture_tracing_headers" not in merged:
            merged["capture_tracing_headers"] = legacy
        return cls(**merged)

    def resolve_capture_exceptions(self, client: object) -> bool:
        """Whether exceptions are captured: the option, else the client's autocapture setting.

        ``None`` inherits ``enable_exception_autocapture`` of ``client`` (the effective
        client; ``None`` = the module settings); any non-bool value counts as ``True``.
        """
        value = self.capture_exceptions
        if value is None:
            if client is None:
                import posthog

                client = posthog.default_client
                if client is None:
                    return bool(posthog.enable_exception_autocapture)
            return bool(getattr(client, "enable_exception_autocapture", False))
        if isinstance(value, bool):
            return value
        return True

    def compiled(self) -> Compiled:
        """The checked, precomputed form used per request (built once, cached)."""
        form = self._compiled_form
        if form is None:
            form = Compiled(self)
            object.__setattr__(self, "_compiled_form", form)
        return form


def _callable_or_none(name: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    _warn_once(f"callable:{name}", "option %s must be callable; ignored", name)
    return None


class Compiled:
    """Options checked once: bad values are warned about and replaced by their default."""

    __slots__ = (
        "capture_ip",
        "capture_query_string",
        "capture_route",
        "capture_user_email",
        "client",
        "client_factory",
        "cookie",
        "cookie_names",
        "exclude_patterns",
        "exclude_prefixes",
        "extra_properties",
        "failed",
        "gated",
        "headers",
        "ip_source",
        "never",
        "options",
        "prefer_user",
        "properties_map",
        "request_filter",
        "status_codes",
        "user_at_start",
        "user_id",
    )

    def __init__(self, options: Options) -> None:
        self.options = options
        self.failed: set[str] = set()  # hooks whose failure was logged already
        self.headers = options.capture_tracing_headers is True
        precedence = options.identity_precedence
        if precedence not in ("header", "user"):
            _warn_once(
                f"precedence:{precedence!r}",
                "identity_precedence must be 'header' or 'user', not %r; using 'header'",
                precedence,
            )
        self.prefer_user = precedence == "user"
        self.user_id = _callable_or_none("user_id", options.user_id)
        self.capture_user_email = bool(options.capture_user_email)
        self.cookie: tuple[int, bool] | None = None
        cookie = options.read_posthog_cookie
        if isinstance(cookie, Mapping):
            self.cookie = (
                clamp_idle_timeout(
                    cookie.get("session_idle_timeout_seconds", IDLE_TIMEOUT_DEFAULT_S)
                ),
                bool(cookie.get("opt_out_by_default", False)),
            )
        elif cookie:
            self.cookie = (IDLE_TIMEOUT_DEFAULT_S, False)
        self.cookie_names: dict[str, tuple[str, str]] = {}  # api key -> names
        self.capture_ip = bool(options.capture_ip)
        source = check_ip_source(options.ip_source)
        if source is None:
            _warn_once(
                f"ip_source:{options.ip_source!r}",
                "ip_source must be 'forwarded', 'peer', an int >= 1 or a callable, not %r;"
                " using 'forwarded'",
                options.ip_source,
            )
            source = "forwarded"
        self.ip_source: Any = source
        self.capture_query_string = bool(options.capture_query_string)
        self.capture_route = bool(options.capture_route)
        self.request_filter = _callable_or_none("request_filter", options.request_filter)
        self.extra_properties = _callable_or_none("extra_properties", options.extra_properties)
        self.properties_map = _callable_or_none("properties_map", options.properties_map)
        self.exclude_prefixes, self.exclude_patterns = _exclusions(options.exclude_paths)
        self.status_codes = _status_codes(options.capture_status_codes)
        self.never = _exception_types(options.ignored_exceptions)
        # Fast-path flags for the request layer: any exclusion / filter / extra hook, and
        # whether the user is read at start even when a header names the request.
        self.gated = bool(
            self.exclude_prefixes or self.exclude_patterns or self.request_filter
            or self.extra_properties
        )
        self.user_at_start = self.prefer_user or self.capture_user_email
        client = options.client
        self.client: Any = None
        self.client_factory: Any = None
        if client is not None:
            if hasattr(client, "capture") and hasattr(client, "api_key"):
                self.client = client
            elif callable(client):
                self.client_factory = client
            else:
                _warn_once(
                    "client", "option client must be a Client or a callable; ignored"
                )

    def excluded(self, path: str) -> bool:
        if self.exclude_prefixes and path.startswith(self.exclude_prefixes):
            return True
        return any(p.search(path) for p in self.exclude_patterns)


def _exclusions(value: Any) -> tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]:
    if value is None:
        return (), ()
    items = [value] if isinstance(value, (str, re.Pattern)) else value
    prefixes: list[str] = []
    patterns: list[re.Pattern[str]] = []
    try:
        for item in items:
            if isinstance(item, str):
                if item:
                    prefixes.append(item)
            elif isinstance(item, re.Pattern):
                patterns.append(item)
            else:
                _warn_once(
                    f"exclude:{item!r}",
                    "exclude_paths entries must be path prefixes or compiled regexes, not %r",
                    item,
                )
    except TypeError:
        _warn_once("exclude", "exclude_paths must be an iterable; ignored")
    return tuple(prefixes), tuple(patterns)


def _status_codes(value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, int):
        value = (value,)
    try:
        return frozenset(int(v) for v in value)
    except (TypeError, ValueError):
        _warn_once("status", "capture_status_codes must be a set of ints; using 500-599")
        return DEFAULT_STATUS_CODES


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, type) else value
    try:
        items = list(items)
    except TypeError:
        items = [items]
    found = tuple(v for v in items if isinstance(v, type) and issubclass(v, BaseException))
    if len(found) != len(items):
        _warn_once("ignored", "ignored_exceptions must hold exception types; others ignored")
    return found
