"""Hypothesis invariants: rollouts, variant shares, text forms, semver, month arithmetic."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from posthog.flags.dates import RelativeDate
from posthog.flags.hashing import hash_value
from posthog.flags.jsontext import float_text, to_text
from posthog.flags.regex_compat import compile_pattern
from posthog.flags.semver import parse_version
from tests.flags.conftest import compile_defs, flag, prop

IDS = st.text(min_size=1, max_size=30)
PROPS = {"plan": "pro"}


def rollout_flag(pct: float) -> Any:
    c = {"properties": [prop("plan", "exact", "pro")], "rollout_percentage": pct}
    return compile_defs(flag("rollout", [c]))


ZERO = rollout_flag(0)
FULL = rollout_flag(100)


@settings(max_examples=300, deadline=None)
@given(IDS)
def test_rollout_zero_never_matches_and_full_always_does(distinct_id: str) -> None:
    assume(hash_value("rollout", distinct_id) > 0)  # 2**-60 chance of the exact boundary
    assert ZERO.evaluate("rollout", distinct_id, person_properties=PROPS).value is False
    assert FULL.evaluate("rollout", distinct_id, person_properties=PROPS).value is True
    # …but only when the properties match.
    assert FULL.evaluate("rollout", distinct_id, person_properties={"plan": "x"}).value is False


@settings(max_examples=100, deadline=None)
@given(IDS, st.floats(0, 100), st.floats(0, 100))
def test_rollout_is_monotonic(distinct_id: str, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    small = rollout_flag(low).evaluate("rollout", distinct_id, person_properties=PROPS).value
    large = rollout_flag(high).evaluate("rollout", distinct_id, person_properties=PROPS).value
    assert not small or large
    assert small is (hash_value("rollout", distinct_id) <= low / 100)


@st.composite
def splits(draw: st.DrawFn) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=4)))
    bounds = [0, *cuts, 100]
    return [b - a for a, b in pairwise(bounds)]


@settings(max_examples=8, deadline=None)
@given(splits(), st.integers(0, 10**6))
def test_variant_shares_converge_to_their_percentages(shares: list[int], seed: int) -> None:
    variants = [{"key": f"v{i}", "rollout_percentage": s} for i, s in enumerate(shares)]
    defs = compile_defs(flag("exp", multivariate={"variants": variants}))
    n = 4000
    counts: dict[Any, int] = {}
    for i in range(n):
        value = defs.evaluate("exp", f"user-{seed}-{i}").value
        counts[value] = counts.get(value, 0) + 1
    assert True not in counts  # shares sum to 100: every id gets a variant
    for i, share in enumerate(shares):
        assert abs(counts.get(f"v{i}", 0) / n * 100 - share) < 3.5, (shares, counts)


@given(st.text(), st.text(), st.text(max_size=8))
def test_hash_is_in_unit_interval(key: str, value: str, salt: str) -> None:
    assert 0.0 <= hash_value(key, value, salt) <= 1.0


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSONISH)
def test_text_form_is_compact_sorted_json(value: Any) -> None:
    expected = value if isinstance(value, str) else json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    assert to_text(value) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_round_trips(value: float) -> None:
    text = float_text(value)
    assert text is not None and float(text) == value
    if "e" in text:
        exponent = int(text.split("e")[1])
        assert text.split("e")[1][0] in "+-" and not (-5 <= exponent <= -1)
        assert str(abs(exponent)) == text.split("e")[1][1:]  # no leading zeros


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
       st.sampled_from(["", "v", "V", "vv"]), st.sampled_from(["", "-rc.1", "+b5", ".7"]))
def test_semver_parses_canonical_versions(major: int, minor: int, patch: int, lead: str,
                                          tail: str) -> None:
    assert parse_version(f"{lead}{major}.{minor}.{patch}{tail}") == (major, minor, patch)


def _months_back_stepwise(now: datetime, months: int) -> datetime | None:
    """The spec's definition, literally: one month at a time, clamping the day each step."""
    year, month, day = now.year, now.month, now.day
    for _ in range(months):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        if year < 1:
            return None
        length = (datetime(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)).day
        day = min(day, length)
    return now.replace(year=year, month=month, day=day)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
       st.integers(0, 400))
def test_month_arithmetic_matches_the_stepwise_definition(now: datetime, months: int) -> None:
    now = now.replace(tzinfo=timezone.utc)
    assert RelativeDate(months, "m").apply(now) == _months_back_stepwise(now, months)


@settings(max_examples=300)
@given(st.text(alphabet="ab()[]{}?*+|\\^$.:-&~,0123456789dwbBpzx<=!P", max_size=12))
def test_regex_compiler_never_raises(pattern: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.regex is None or compiled.problem is None
    if compiled.regex is not None:
        compiled.regex.search("ab(c)12")  # usable
