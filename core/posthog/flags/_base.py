"""Shared internals: the three-valued match outcome, the evaluation context, once-only logging.

Matchers return ``True``, ``False`` or an :class:`Undecided`.  Undecided values are
allocated when a definition is compiled (never per evaluation), so they can key
result caches and carry a ready-made human message.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Final, Protocol, TypeVar, cast

from posthog.flags.errors import (
    REASON_RANK,
    InconclusiveMatchError,
    RequiresServerEvaluation,
    UnresolvedFlagReason,
)

logger = logging.getLogger("posthog")

Props = Mapping[str, Any]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


class Undecided:
    """A filter, condition or flag that cannot be decided locally.

    ``server`` marks a :class:`RequiresServerEvaluation`: the whole flag goes to
    the server at once instead of letting other conditions try.
    """

    __slots__ = ("message", "rank", "reason", "server", "soft")

    def __init__(self, reason: UnresolvedFlagReason, message: str, *, server: bool = False) -> None:
        self.reason = reason
        self.message = message
        self.server = server
        self.rank = REASON_RANK[reason]
        # The same reason as a plain "inconclusive" (used when a server-only filter
        # did not abort its flag because another filter was unresolved first).
        self.soft: Undecided = Undecided(reason, message) if server else self

    def to_exception(self) -> InconclusiveMatchError | RequiresServerEvaluation:
        if self.server:
            return RequiresServerEvaluation(self.message, reason=self.reason)
        return InconclusiveMatchError(self.message, reason=self.reason)

    def __repr__(self) -> str:
        kind = "server" if self.server else "inconclusive"
        return f"Undecided({kind}, {self.reason.value}, {self.message!r})"


MatchResult = bool | Undecided

UNSUPPORTED: Final = UnresolvedFlagReason.UNSUPPORTED_DEFINITION
MISSING_CONTEXT: Final = UnresolvedFlagReason.MISSING_CONTEXT
UNRESOLVED_DEPENDENCY: Final = UnresolvedFlagReason.UNRESOLVED_DEPENDENCY
EXPERIENCE_CONTINUITY: Final = UnresolvedFlagReason.EXPERIENCE_CONTINUITY


def utc_now() -> datetime:
    """The clock used for relative dates; tests monkeypatch ``posthog.flags._base.utc_now``."""
    return datetime.now(timezone.utc)


class EvalContext:
    """Everything one top-level ``evaluate``/``evaluate_all`` call knows about its subject."""

    __slots__ = (
        "dep_cache",
        "device_id",
        "distinct_id",
        "group_props",
        "groups",
        "now",
        "person_props",
        "raw_group_props",
    )

    def __init__(
        self,
        distinct_id: object,
        device_id: object,
        groups: Mapping[str, Any],
        person_props: Props,
        raw_group_props: Mapping[str, Mapping[str, Any]],
        now: datetime | None,
    ) -> None:
        self.distinct_id = distinct_id
        self.device_id = device_id
        self.groups = groups
        self.person_props = person_props
        self.raw_group_props = raw_group_props
        self.group_props: dict[str, Props] | None = None
        self.now = now
        # Flag-dependency results for the current top-level flag (spec §6.9).
        self.dep_cache: dict[str, object] | None = None

    def clock(self) -> datetime:
        now = self.now
        if now is None:
            now = self.now = utc_now()
        return now

    def group_properties(self, name: str, key: object) -> Props | None:
        """The properties of group ``name`` with ``$group_key`` present; None when not given."""
        cache = self.group_props
        if cache is None:
            cache = self.group_props = {}
        else:
            hit = cache.get(name)
            if hit is not None:
                return hit
        raw = self.raw_group_props.get(name)
        if not isinstance(raw, Mapping):
            return None
        if "$group_key" not in raw:
            raw = {"$group_key": key, **raw}
        cache[name] = raw
        return raw


Matcher = Callable[[Props, Any, EvalContext], MatchResult]

T = TypeVar("T")


def memoized(parse: Callable[[str], T], limit: int = 4096) -> Callable[[str], T]:
    """Remember ``parse`` results for recently seen strings (bounded; cleared when full).

    Person properties repeat across flags and calls, and parsing a date or a version
    costs far more than a dict lookup.  The parsed values are immutable.
    """
    cache: dict[str, T] = {}
    get = cache.get

    def lookup(text: str) -> T:
        hit = get(text, MISSING)
        if hit is not MISSING:
            return cast(T, hit)
        value = parse(text)
        if len(cache) >= limit:
            cache.clear()
        cache[text] = value
        return value

    return lookup


class DependencyTarget(Protocol):
    """A compiled flag as seen by a flag-dependency filter."""

    key: str

    def evaluate_dependency(self, props: Props, bucket: Any, ctx: EvalContext) -> object: ...


# --- once-only logging ---------------------------------------------------------------

_LOGGED: OrderedDict[tuple[object, ...], None] = OrderedDict()
_LOGGED_LOCK = threading.Lock()
_LOGGED_MAX = 4096


def log_once(fingerprint: tuple[object, ...], level: int, message: str, *args: object) -> None:
    """Log ``message`` unless the same fingerprint was logged recently.

    Definitions are recompiled on every poll; remembering what was said keeps a
    broken definition from being reported again every 30 seconds.
    """
    with _LOGGED_LOCK:
        if fingerprint in _LOGGED:
            _LOGGED.move_to_end(fingerprint)
            return
        _LOGGED[fingerprint] = None
        if len(_LOGGED) > _LOGGED_MAX:
            _LOGGED.popitem(last=False)
    logger.log(level, message, *args)


def forget_logged() -> None:
    """Clear the once-only memory (tests)."""
    with _LOGGED_LOCK:
        _LOGGED.clear()
