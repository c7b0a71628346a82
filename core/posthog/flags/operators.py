"""Property filters (spec §6.8), compiled once into matcher closures.

A matcher takes ``(properties, bucketing value, context)`` and returns ``True``,
``False`` or an :class:`~posthog.flags._base.Undecided`.  Everything that depends
only on the filter (lowercased texts, parsed numbers, dates, versions, compiled
regexes) is computed here, once; a filter the SDK cannot evaluate compiles to a
matcher that is always inconclusive and reports why.
"""

from __future__ import annotations

import operator as op
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from math import isfinite
from typing import Any

from posthog.flags._base import (
    MISSING,
    MISSING_CONTEXT,
    UNSUPPORTED,
    EvalContext,
    Matcher,
    MatchResult,
    Props,
    Undecided,
    memoized,
)
from posthog.flags.dates import RelativeDate, parse_filter_date, parse_override_date
from posthog.flags.jsontext import ascii_lower, boolean_like, to_text, truthy
from posthog.flags.regex_compat import compile_pattern
from posthog.flags.semver import (
    Version,
    caret_range,
    parse_version,
    tilde_range,
    wildcard_range,
)

Number = int | float | Decimal
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": op.gt,
    "gte": op.ge,
    "lt": op.lt,
    "lte": op.le,
}
_SEMVER_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "semver_eq": op.eq,
    "semver_neq": op.ne,
    "semver_gt": op.gt,
    "semver_gte": op.ge,
    "semver_lt": op.lt,
    "semver_lte": op.le,
}
_SEMVER_RANGE: dict[str, Callable[[object], tuple[Version, Version] | None]] = {
    "semver_tilde": tilde_range,
    "semver_caret": caret_range,
    "semver_wildcard": wildcard_range,
}
_TEXT = {
    "icontains": (str.__contains__, False),
    "not_icontains": (str.__contains__, True),
    "starts_with": (str.startswith, False),
    "not_starts_with": (str.startswith, True),
    "ends_with": (str.endswith, False),
    "not_ends_with": (str.endswith, True),
}
OPERATORS = frozenset(
    {"exact", "is_not", "is_set", "is_not_set", "regex", "not_regex",
     "is_date_before", "is_date_after"}
    | _COMPARE.keys()
    | _SEMVER_COMPARE.keys()
    | _SEMVER_RANGE.keys()
    | _TEXT.keys()
)


class FilterProblem(ValueError):
    """A filter that can never be evaluated locally (raised only while compiling)."""


def _parse_numeric_text(text: str) -> float | None:
    if _NUMBER.fullmatch(text) is None:
        return None
    number = float(text)
    return number if isfinite(number) else None


_parse_numeric_text_cached = memoized(_parse_numeric_text)


def parse_number(value: object) -> Number | None:
    """A finite int/float/Decimal, or a numeric string (no surrounding whitespace); bools never."""
    cls = value.__class__
    if cls is int:
        return value  # type: ignore[return-value]
    if cls is float:
        return value if isfinite(value) else None  # type: ignore[arg-type,return-value]
    if isinstance(value, str):
        return _parse_numeric_text_cached(str.__str__(value))
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _missing(key: str) -> Undecided:
    return Undecided(MISSING_CONTEXT, f"property {key!r} was not provided")


def _no_text(key: str) -> Undecided:
    return Undecided(MISSING_CONTEXT, f"property {key!r} has a value with no comparable text")


def _exact(key: str, value: Any, negate: bool, pmv: int) -> Matcher:
    missing = _missing(key)
    no_text = _no_text(key)

    if isinstance(value, list) and not value:

        def empty_list(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
            v = props.get(key, MISSING)
            if v is MISSING:
                return missing
            return truthy(v) is not negate

        return empty_list

    if pmv != 2 and boolean_like(value):
        expected = truthy(value)

        def boolean(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
            v = props.get(key, MISSING)
            if v is MISSING:
                return missing
            return (truthy(v) is expected) is not negate

        return boolean

    if isinstance(value, list):
        texts: set[str] = set()
        for item in value:
            text = to_text(item)
            if text is None:
                raise FilterProblem(f"filter value for {key!r} has an item with no text form")
            texts.add(text.lower())
        choices = frozenset(texts)

        def one_of(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
            v = props.get(key, MISSING)
            if v is MISSING:
                return missing
            t = v if v.__class__ is str else to_text(v)
            if t is None:
                return no_text
            return (t.lower() in choices) is not negate

        return one_of

    text = to_text(value)
    if text is None:
        raise FilterProblem(f"filter value for {key!r} has no text form")
    target = text.lower()

    def equal(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        t = v if v.__class__ is str else to_text(v)
        if t is None:
            return no_text
        return (t.lower() == target) is not negate

    return equal


def _text(key: str, value: Any, test: Callable[[str, str], bool], negate: bool) -> Matcher:
    missing = _missing(key)
    no_text = _no_text(key)
    text = to_text(value)
    if text is None:
        raise FilterProblem(f"filter value for {key!r} has no text form")
    needle = ascii_lower(text)

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        t = v if v.__class__ is str else to_text(v)
        if t is None:
            return no_text
        return test(ascii_lower(t), needle) is not negate

    return match


def _regex(key: str, value: Any, negate: bool) -> Matcher:
    missing = _missing(key)
    no_text = _no_text(key)
    compiled = compile_pattern(str(value))
    if compiled.problem is not None:
        raise FilterProblem(f"regex {str(value)!r} for {key!r}: {compiled.problem}")
    regex = compiled.regex
    if regex is None:

        def invalid(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
            # A pattern that does not compile never matches, for regex and not_regex alike.
            return missing if props.get(key, MISSING) is MISSING else False

        return invalid

    search = regex.search
    ascii_only = compiled.ascii_only
    non_ascii = Undecided(
        UNSUPPORTED, f"regex for {key!r} uses \\d, \\w or \\s on non-ASCII text"
    )

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        t = v if v.__class__ is str else to_text(v)
        if t is None:
            return no_text
        if ascii_only and not t.isascii():
            return non_ascii
        return (search(t) is not None) is not negate

    return match


def _numeric(key: str, value: Any, compare: Callable[[Any, Any], bool]) -> Matcher:
    missing = _missing(key)
    target = parse_number(value)
    if target is None:
        raise FilterProblem(f"numeric filter for {key!r} has a non-numeric value {value!r}")

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        cls = v.__class__
        number = v if cls is int or (cls is float and isfinite(v)) else parse_number(v)
        if number is None:
            return False
        return compare(number, target)

    return match


def _date(key: str, value: Any, before: bool) -> Matcher:
    missing = _missing(key)
    bad = Undecided(MISSING_CONTEXT, f"property {key!r} is not a date")
    parsed = parse_filter_date(value)
    if parsed is None:
        raise FilterProblem(f"date filter for {key!r} has an invalid date {value!r}")
    out_of_range = Undecided(UNSUPPORTED, f"relative date {value!r} is out of range")
    fixed: datetime | None = parsed if isinstance(parsed, datetime) else None
    relative: RelativeDate | None = parsed if isinstance(parsed, RelativeDate) else None

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        if v is None:
            return False
        override = parse_override_date(v)
        if override is None:
            return bad
        limit = fixed
        if limit is None:
            assert relative is not None
            limit = relative.apply(ctx.clock())
            if limit is None:
                return out_of_range
        if isinstance(override, datetime):
            return override < limit if before else override > limit
        day: date = limit.date()
        return override < day if before else override > day

    return match


def _semver(key: str, low: Version, high: Version | None,
            compare: Callable[[Any, Any], bool]) -> Matcher:
    """``compare(version, low)``, or ``low <= version < high`` when ``high`` is given."""
    missing = _missing(key)
    bad = Undecided(MISSING_CONTEXT, f"property {key!r} is not a semantic version")

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        v = props.get(key, MISSING)
        if v is MISSING:
            return missing
        if v is None:
            return False
        version = parse_version(v)
        if version is None:
            return bad
        if high is None:
            return compare(version, low)
        return low <= version < high

    return match


def _semver_compare(key: str, value: Any, compare: Callable[[Any, Any], bool]) -> Matcher:
    target = parse_version(value)
    if target is None:
        raise FilterProblem(f"semver filter for {key!r} has an invalid version {value!r}")
    return _semver(key, target, None, compare)


def _semver_range(
    key: str, value: Any, make: Callable[[object], tuple[Version, Version] | None]
) -> Matcher:
    bounds = make(value)
    if bounds is None:
        raise FilterProblem(f"semver filter for {key!r} has an invalid range {value!r}")
    low, high = bounds
    return _semver(key, low, high, op.lt)


def _presence(key: str, present: bool) -> Matcher:
    missing = _missing(key)

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        return present if key in props else missing

    return match


def compile_property(prop: Mapping[str, Any], pmv: int) -> Matcher:
    """Compile one person/group property filter; raises :class:`FilterProblem` if unusable."""
    key = prop.get("key")
    if not isinstance(key, str):
        raise FilterProblem(f"property filter without a string key: {key!r}")
    operator = prop.get("operator")
    if operator is None:
        operator = "exact"
    value = prop.get("value")
    if operator == "exact" or operator == "is_not":
        return _exact(key, value, operator == "is_not", pmv)
    if operator == "is_set" or operator == "is_not_set":
        return _presence(key, operator == "is_set")
    if not isinstance(operator, str) or operator not in OPERATORS:
        raise FilterProblem(f"unknown operator {operator!r} for {key!r}")
    if operator in _TEXT:
        test, negate = _TEXT[operator]
        return _text(key, value, test, negate)
    if operator == "regex" or operator == "not_regex":
        return _regex(key, value, operator == "not_regex")
    if operator in _COMPARE:
        return _numeric(key, value, _COMPARE[operator])
    if operator == "is_date_before" or operator == "is_date_after":
        return _date(key, value, operator == "is_date_before")
    if operator in _SEMVER_COMPARE:
        return _semver_compare(key, value, _SEMVER_COMPARE[operator])
    return _semver_range(key, value, _SEMVER_RANGE[operator])


def unsupported_matcher(message: str, *, server: bool = False) -> Matcher:
    """A matcher that is always undecided (unsupported definition) with ``message``."""
    undecided = Undecided(UNSUPPORTED, message, server=server)

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        return undecided

    return match


def match_property(
    prop: Mapping[str, Any],
    property_values: Mapping[str, Any],
    *,
    property_matching_version: int = 1,
    now: datetime | None = None,
) -> bool:
    """Evaluate one property filter; raises ``InconclusiveMatchError`` when undecidable.

    A convenience for callers and tests; flag evaluation uses compiled matchers.
    """
    try:
        matcher = compile_property(prop, property_matching_version)
    except FilterProblem as exc:
        matcher = unsupported_matcher(str(exc))
    ctx = EvalContext("", None, {}, property_values, {}, now)
    result = matcher(property_values, None, ctx)
    if result is True or result is False:
        return result
    assert isinstance(result, Undecided)
    raise result.to_exception()
