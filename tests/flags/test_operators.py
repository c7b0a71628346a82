"""Every property operator of spec §6.8: matching, non-matching and inconclusive cases."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from posthog.flags.errors import (
    InconclusiveMatchError,
    RequiresServerEvaluation,
    UnresolvedFlagReason,
)
from posthog.flags.local import match_property
from tests.flags.conftest import FIXED_NOW, one, prop

MC = "missing_context"
UN = "unsupported_definition"
ABSENT = object()


def check(operator: str | None, value: Any, override: Any, *, pmv: int = 2,
          now: datetime | None = FIXED_NOW) -> bool | str:
    """True/False, or the reason value when the filter is inconclusive."""
    props = {} if override is ABSENT else {"key": override}
    try:
        return match_property(prop("key", operator, value), props,
                              property_matching_version=pmv, now=now)
    except InconclusiveMatchError as exc:
        return exc.reason.value


@pytest.mark.parametrize("operator", [
    "exact", "is_not", "is_set", "is_not_set", "icontains", "not_icontains", "regex",
    "not_regex", "gt", "gte", "lt", "lte", "starts_with", "not_starts_with", "ends_with",
    "not_ends_with", "is_date_before", "is_date_after", "semver_eq", "semver_neq", "semver_gt",
    "semver_gte", "semver_lt", "semver_lte", "semver_tilde", "semver_caret", "semver_wildcard",
])
def test_absent_key_is_missing_context_for_every_operator(operator: str) -> None:
    value = {"is_date_before": "2024-01-01", "is_date_after": "-1d", "gt": 1, "gte": 1,
             "lt": 1, "lte": 1}.get(operator, "1.2.3" if operator.startswith("semver") else "x")
    assert check(operator, value, ABSENT) == MC


def test_unknown_or_mistyped_operator_is_unsupported() -> None:
    assert check("is_between", 1, 1) == UN
    assert check("in", ["a"], "a") == UN  # cohort operator, not a property operator
    assert check(7, "a", "a") == UN  # type: ignore[arg-type]
    # Unknown operators are a definition problem: reported as such even when the key is absent.
    assert check("is_between", 1, ABSENT) == UN


def test_missing_operator_means_exact() -> None:
    assert check(None, "pro", "PRO") is True
    assert check(None, "pro", "free") is False


class TestExact:
    @pytest.mark.parametrize(("value", "override", "expected"), [
        (["pro"], "PRO", True),  # behaviour 34
        ("true", True, True),  # behaviour 34
        ("pro", "pro", True),
        ("Straße", "STRASSE", False),  # Unicode lower(), not casefold
        ("straße", "STRAßE", True),
        ("ÄB", "äb", True),  # exact uses Unicode lower()
        (["a", "b"], "c", False),
        (5, "5", True),
        (5, 5.0, False),  # "5" != "5.0"
        (1.5, "1.5", True),
        (None, None, True),  # text "null"
        ("null", None, True),
        (["null"], None, True),
        ("x", None, False),
        ({"b": 1, "a": [True, None]}, {"a": [True, None], "b": 1}, True),
        ('{"a":1}', {"a": 1}, True),
        ('["é"]', ["é"], True),  # non-ASCII kept in container strings
        ("[1,2]", [1, 2], True),
        (0.00001, "0.00001", True),
    ])
    def test_text_equality(self, value: Any, override: Any, expected: bool) -> None:
        assert check("exact", value, override) is expected
        assert check("is_not", value, override) is (not expected)

    def test_empty_list_filter_uses_truthiness(self) -> None:
        assert check("exact", [], True) is True
        assert check("exact", [], "TRUE") is True
        assert check("exact", [], []) is True
        assert check("exact", [], "abc") is False
        assert check("exact", [], 1) is False
        assert check("is_not", [], "abc") is True

    @pytest.mark.parametrize("override", ["hello", 0, None, "", "FALSE", False, {"a": 1}])
    def test_behaviour_39_false_matches_non_truthy_values(self, override: Any) -> None:
        assert check("exact", "false", override, pmv=1) is True

    def test_behaviour_39_true_and_boolean_lists(self) -> None:
        assert check("exact", "true", 1, pmv=1) is False
        assert check("exact", "true", "True", pmv=1) is True
        assert check("exact", ["true", "false"], "abc", pmv=1) is True
        assert check("exact", ["true", "false"], True, pmv=1) is False
        assert check("exact", True, ["true"], pmv=1) is True  # a list of truthy items is true

    def test_boolean_rule_only_before_property_matching_version_2(self) -> None:
        assert check("exact", "false", "hello", pmv=2) is False
        assert check("exact", "false", False, pmv=2) is True
        assert check("exact", "false", "hello", pmv=0) is True  # anything but 2
        assert check("exact", ["true", "false"], True, pmv=2) is True

    @pytest.mark.parametrize("override", [date(2024, 1, 1), Decimal("1.5"), (1, 2), {1, 2},
                                          float("nan"), float("inf"), {1: "a"}, [object()]])
    def test_behaviour_41_values_without_text_are_inconclusive(self, override: Any) -> None:
        assert check("exact", "2024-01-01", override) == MC
        assert check("is_not", "2024-01-01", override) == MC

    def test_behaviour_41_float_exponent_text(self) -> None:
        assert check("exact", "0.00001", 1e-05) is True
        assert check("exact", "1e-05", 1e-05) is False
        assert check("exact", "1.5e-7", 1.5e-07) is True
        assert check("exact", "1e+16", 1e16) is True
        assert check("exact", "[1e+16,0.000012]", [1e16, 1.2e-05]) is True

    def test_truthiness_rules_need_no_text(self) -> None:
        # Steps 1-2 of exact compare T() values, so unconvertible overrides still decide.
        assert check("exact", [], date(2024, 1, 1)) is False
        assert check("exact", "false", Decimal("1"), pmv=1) is True


class TestPresence:
    def test_is_set(self) -> None:
        assert check("is_set", None, None) is True
        assert check("is_set", "is_set", "") is True
        assert check("is_set", None, ABSENT) == MC

    def test_is_not_set(self) -> None:
        assert check("is_not_set", None, "x") is False  # behaviour 34
        assert check("is_not_set", None, None) is False
        assert check("is_not_set", None, ABSENT) == MC


class TestTextOperators:
    @pytest.mark.parametrize(("operator", "value", "override", "expected"), [
        ("icontains", "ÄB", "äb", False),  # behaviour 34: ASCII-only lowercasing
        ("icontains", "äB", "xäbx", True),
        ("icontains", "ÄB", "ÄB", True),
        ("icontains", "EXAMPLE", "me@example.com", True),
        ("icontains", "nope", "me@example.com", False),
        ("icontains", "true", True, True),
        ("icontains", "nul", None, True),
        ("icontains", '"a"', ["a"], True),  # JSON text of the list
        ("icontains", "1", 10, True),
        ("icontains", 1, "x1", True),  # filter numbers converted too
        ("not_icontains", "spam", "ham", True),
        ("not_icontains", "SPAM", "spam!", False),
        ("starts_with", "JANE", "jane.doe", True),
        ("starts_with", "doe", "jane.doe", False),
        ("not_starts_with", "doe", "jane.doe", True),
        ("not_starts_with", "jane", "JANE.doe", False),
        ("ends_with", ".COM", "a@b.com", True),
        ("ends_with", ".org", "a@b.com", False),
        ("not_ends_with", ".org", "a@b.com", True),
        ("not_ends_with", "COM", "a@b.com", False),
        ("ends_with", "0.00001", 1e-05, True),
    ])
    def test_cases(self, operator: str, value: Any, override: Any, expected: bool) -> None:
        assert check(operator, value, override) is expected

    def test_unconvertible_override_is_inconclusive(self) -> None:
        assert check("icontains", "a", date(2024, 1, 1)) == MC
        assert check("not_starts_with", "a", Decimal(1)) == MC


class TestRegex:
    @pytest.mark.parametrize(("value", "override", "expected"), [
        (r"^\d+$", "123", True),
        (r"^\d+$", "12a", False),
        ("", "anything", True),  # empty pattern matches
        ("abc$", "xabc", True),
        ("abc$", "abc\n", False),  # $ is end of string
        ("^True$", True, False),  # provided True has text "true"
        ("^true$", True, True),
        ("^null$", None, True),
        (r"^\[1,2\]$", [1, 2], True),
        ("(?:ab)+c", "ababc", True),
        ("é+", "caféé", True),
    ])
    def test_matches(self, value: Any, override: Any, expected: bool) -> None:
        assert check("regex", value, override) is expected
        assert check("not_regex", value, override) is (not expected)

    def test_filter_value_uses_plain_str(self) -> None:
        assert check("regex", True, "True") is True  # str(True) == "True"
        assert check("regex", True, True) is False  # override text is "true"
        assert check("regex", 12, "x12") is True

    def test_invalid_pattern_is_false_for_both(self) -> None:
        assert check("regex", "(", "(") is False  # behaviour 34
        assert check("not_regex", "(", "(") is False
        assert check("regex", "[", "x") is False
        assert check("regex", "(", ABSENT) == MC

    @pytest.mark.parametrize("pattern", [
        r"\bword", r"\Bx", "(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b", "(?P<n>a)", "(?<n>a)",
        "(?i)abc", "(?m)^a", "(?#c)", r"(a+)+", r"(a*)*b", r"(?:a|b+){2,}", r"((a+)b)*",
        "a++", "a*+", "a?+", "a{2}+", "a{2}{3}", "a???", "[a-z&&[^aeiou]]", "[a--b]", "[a~~b]",
        "[[:alpha:]]", r"\p{L}", r"\x{41}", r"\1", r"\z", r"\Z", r"\<", r"\K", "x{,3}",
        "x{a}",
    ])
    def test_rust_incompatible_constructs_are_unsupported(self, pattern: str) -> None:
        assert check("regex", pattern, "abc") == UN
        assert check("not_regex", pattern, "abc") == UN

    @pytest.mark.parametrize("pattern", [
        "(a+)?", "(ab)+", "a+?", "a??", "a{2,3}?", "(?:x)", r"[\]a]", r"\.", r"\x41",
        r"\u0041", "[a-z]+", "a|b", r"\t\n", r"\A\w", "[-a]", "a{2}",
    ])
    def test_compatible_constructs_are_evaluated(self, pattern: str) -> None:
        assert check("regex", pattern, "zzz") in (True, False)

    def test_unicode_classes_are_inconclusive_only_on_non_ascii_text(self) -> None:
        assert check("regex", r"^\w+$", "abc") is True
        assert check("regex", r"^\w+$", "ab c") is False
        assert check("regex", r"^\w+$", "héllo") == UN
        assert check("regex", r"^[\d]+$", "١٢") == UN
        assert check("regex", "^.+$", "héllo") is True


class TestNumeric:
    @pytest.mark.parametrize(("operator", "value", "override", "expected"), [
        ("gt", "5", "10", True),  # behaviour 34: numeric, not string, comparison
        ("gt", "5", "abc", False),  # behaviour 34
        ("gt", 5, 5, False),
        ("gte", 5, 5, True),
        ("lt", 5, 4.5, True),
        ("lte", "5", "5.0", True),
        ("gt", ".5", "0.6", True),
        ("gt", "1e3", "1001", True),
        ("lt", "-2.5E-1", "-0.3", True),
        ("gt", 1, Decimal("1.5"), True),
        ("gt", 0, True, False),  # bools are never numeric
        ("gt", 0, None, False),
        ("gt", 0, " 5", False),  # no surrounding whitespace
        ("gt", 0, "5 ", False),
        ("gt", 0, "5.", False),  # a fraction needs digits
        ("gt", 0, "0x10", False),
        ("gt", 0, "1_000", False),
        ("gt", 0, "inf", False),
        ("gt", 0, "1e999", False),  # not finite
        ("gt", 0, float("nan"), False),
        ("lt", 0, float("-inf"), False),
        ("gt", 0, Decimal("NaN"), False),
        ("gt", 0, [1], False),
        ("gt", 0, "٣", False),  # non-ASCII digits
        ("lte", 10, "+10", True),
    ])
    def test_cases(self, operator: str, value: Any, override: Any, expected: bool) -> None:
        assert check(operator, value, override) is expected

    @pytest.mark.parametrize("value", ["abc", None, True, "", " 1", [1], "nan"])
    def test_unparseable_filter_is_unsupported(self, value: Any) -> None:
        assert check("gt", value, 5) == UN


class TestDates:
    def test_behaviour_42_unsigned_relative_means_ago(self) -> None:
        seven_ago = FIXED_NOW - timedelta(days=7)
        for value in ("7d", "-7d"):
            assert check("is_date_before", value, seven_ago - timedelta(seconds=1)) is True
            assert check("is_date_before", value, seven_ago) is False  # strict
            assert check("is_date_after", value, seven_ago + timedelta(seconds=1)) is True
            assert check("is_date_after", value, FIXED_NOW + timedelta(days=1)) is True

    def test_behaviour_42_uppercase_unit_is_invalid(self) -> None:
        assert check("is_date_before", "-7D", FIXED_NOW) == UN
        assert check("is_date_before", "+7d", FIXED_NOW) == UN
        assert check("is_date_before", "10000d", FIXED_NOW) == UN
        assert check("is_date_before", "9999d", FIXED_NOW) is False

    def test_behaviour_42_month_arithmetic_clamps_each_step(self) -> None:
        # On 31 March 2023, -2m is 28 January (clamped by February), not 31 January.
        now = datetime(2023, 3, 31, 12, tzinfo=timezone.utc)
        limit = datetime(2023, 1, 28, 12, tzinfo=timezone.utc)
        assert check("is_date_before", "-2m", limit - timedelta(seconds=1), now=now) is True
        assert check("is_date_before", "-2m", limit, now=now) is False
        assert check("is_date_after", "-2m", limit + timedelta(seconds=1), now=now) is True
        # 31 Mar 2023 - 12m = 28 Mar 2022 (the day stays clamped after February).
        assert check("is_date_after", "12m", "2022-03-28T12:00:01Z", now=now) is True
        assert check("is_date_after", "12m", "2022-03-28T12:00:00Z", now=now) is False
        # Leap year (FIXED_NOW is 31 Mar 2024): February has 29 days, so 29 Jan / 29 Feb.
        assert check("is_date_after", "2m", "2024-01-29T12:00:01Z") is True
        assert check("is_date_after", "2m", "2024-01-29T12:00:00Z") is False
        assert check("is_date_after", "1m", "2024-02-29T12:00:01Z") is True
        assert check("is_date_after", "1m", "2024-02-29T12:00:00Z") is False
        # Crossing a year boundary, and a day that fits every month is kept.
        now = datetime(2024, 1, 15, 6, tzinfo=timezone.utc)
        assert check("is_date_after", "13m", "2022-12-15T06:00:01Z", now=now) is True
        assert check("is_date_after", "13m", "2022-12-15T06:00:00Z", now=now) is False

    def test_years_change_only_the_year(self) -> None:
        assert check("is_date_after", "1y", "2023-03-31T12:00:01Z") is True
        assert check("is_date_after", "1y", "2023-03-31T12:00:00Z") is False
        leap = datetime(2024, 2, 29, 8, tzinfo=timezone.utc)
        assert check("is_date_after", "1y", "2023-02-28T08:00:01Z", now=leap) is True
        assert check("is_date_after", "1y", "2023-02-28T08:00:00Z", now=leap) is False

    def test_hours_and_weeks(self) -> None:
        assert check("is_date_after", "-3h", FIXED_NOW - timedelta(hours=2)) is True
        assert check("is_date_after", "-3h", FIXED_NOW - timedelta(hours=4)) is False
        assert check("is_date_before", "2w", FIXED_NOW - timedelta(days=15)) is True
        assert check("is_date_before", "2w", FIXED_NOW - timedelta(days=13)) is False

    def test_relative_date_out_of_range_is_inconclusive(self) -> None:
        assert check("is_date_before", "9999y", "2020-01-01") == UN
        assert check("is_date_before", "2025y", "2020-01-01") == UN  # year 2024 - 2025 < 1
        assert check("is_date_before", "2023y", "0001-01-01") is True  # year 1 is fine
        assert check("is_date_before", "9999w", "1800-01-01") is True  # 1832
        assert check("is_date_before", "9999m", "1100-01-01") is True  # 1190

    @pytest.mark.parametrize(("value", "limit"), [
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=timezone.utc)),
        ("2024-01-15T10:30:00Z", datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2024-01-15 10:30:00 UTC", datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2024-01-15T10:30:00+02:00", datetime(2024, 1, 15, 8, 30, tzinfo=timezone.utc)),
        ("2024-01-15T10:30:00.5", datetime(2024, 1, 15, 10, 30, 0, 500000, tzinfo=timezone.utc)),
        ("2024", datetime(2024, 1, 1, tzinfo=timezone.utc)),
    ])
    def test_absolute_filters(self, value: str, limit: datetime) -> None:
        assert check("is_date_before", value, limit - timedelta(microseconds=1)) is True
        assert check("is_date_before", value, limit) is False
        assert check("is_date_after", value, limit + timedelta(microseconds=1)) is True
        assert check("is_date_after", value, limit) is False

    @pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-01-32", "01/02/2024",
                                       "", None, 20240101, "24-01-01", "2024-01-01T25:00",
                                       "2024-01", "2024-01-15Z", "2024-01-15 UTC", " 2024-01-15",
                                       "20240115"])
    def test_invalid_filters_are_unsupported(self, value: Any) -> None:
        assert check("is_date_before", value, "2024-01-01") == UN

    def test_overrides(self) -> None:
        assert check("is_date_before", "2024-01-15", datetime(2024, 1, 14, 23)) is True  # naive
        assert check("is_date_before", "2024-01-15", date(2024, 1, 14)) is True
        assert check("is_date_before", "2024-01-15", date(2024, 1, 15)) is False
        assert check("is_date_after", "2024-01-15T23:00:00Z", date(2024, 1, 15)) is False
        # A date is compared with the filter's own calendar date (16 Jan in UTC here).
        assert check("is_date_before", "2024-01-15T23:00:00-05:00", date(2024, 1, 15)) is False
        assert check("is_date_before", "2024-01-15T23:00:00-05:00", date(2024, 1, 14)) is True
        assert check("is_date_after", "2024-01-15", "2024-01-16") is True
        assert check("is_date_after", "2024-01-15", "2024") is False
        assert check("is_date_after", "2024-01-15", "2024-02-01 00:00:00 UTC") is True
        assert check("is_date_before", "2024-01-15", None) is False
        assert check("is_date_after", "-1d", None) is False
        assert check("is_date_before", "2024-01-15", "not a date") == MC
        assert check("is_date_before", "2024-01-15", 1700000000) == MC
        assert check("is_date_before", "2024-01-15", ["2024-01-01"]) == MC

    def test_behaviour_42_through_a_flag_with_the_frozen_clock(self, frozen_now: datetime) -> None:
        eight_days_ago = (frozen_now - timedelta(days=8)).isoformat()
        six_days_ago = (frozen_now - timedelta(days=6)).isoformat()
        for value in ("7d", "-7d"):
            before = prop("signup", "is_date_before", value)
            assert one(before, {"signup": eight_days_ago}).value is True
            assert one(before, {"signup": six_days_ago}).value is False
        bad = one(prop("signup", "is_date_before", "-7D"), {"signup": eight_days_ago})
        assert bad.inconclusive is UnresolvedFlagReason.UNSUPPORTED_DEFINITION

    def test_module_clock_is_used_without_now(self, frozen_now: datetime) -> None:
        assert check("is_date_after", "-1d", frozen_now - timedelta(hours=23), now=None) is True
        assert check("is_date_after", "-1d", frozen_now - timedelta(hours=25), now=None) is False


class TestSemver:
    @pytest.mark.parametrize(("operator", "value", "override", "expected"), [
        ("semver_eq", "1.2", "vv1.2.0", True),  # behaviour 43
        ("semver_eq", "1.2", "1.2.0.9", True),  # behaviour 43
        ("semver_eq", "1.2.3", " V1.2.3-beta+build ", True),
        ("semver_eq", "1..3", "1.0.3", True),
        ("semver_eq", "1.2.3", "1.2.4", False),
        ("semver_neq", "1.2.3", "1.2.4", True),
        ("semver_neq", "1.2.3", "1.2.3", False),
        ("semver_gt", "1.2.3", "1.10.0", True),  # numeric, not string, ordering
        ("semver_gt", "1.2.3", "1.2.3", False),
        ("semver_gte", "1.2.3", "1.2.3", True),
        ("semver_lt", "2.0.0", "1.99.99", True),
        ("semver_lte", "2.0.0", "2.0.1", False),
        ("semver_eq", "2", 2, True),  # numbers accepted through str()
        ("semver_eq", "1.5", 1.5, True),
        ("semver_gt", "1.0.0", None, False),
        ("semver_tilde", "1.2", "1.2.9", True),  # behaviour 34
        ("semver_tilde", "1.2.3", "1.2.2", False),
        ("semver_tilde", "1.2.3", "1.3.0", False),
        ("semver_caret", "1.2.3", "1.9.0", True),
        ("semver_caret", "1.2.3", "2.0.0", False),
        ("semver_caret", "0.2.3", "0.2.9", True),
        ("semver_caret", "0.2.3", "0.3.0", False),
        ("semver_caret", "0.0.3", "0.0.3", True),
        ("semver_caret", "0.0.3", "0.0.4", False),
        ("semver_wildcard", "1.*", "1.99.0", True),
        ("semver_wildcard", "1.*", "2.0.0", False),
        ("semver_wildcard", "1.2.*", "1.2.7", True),
        ("semver_wildcard", "1.2.*", "1.3.0", False),
        ("semver_wildcard", "1.2.3", "1.2.3", True),
        ("semver_wildcard", "1.2.3", "1.2.4", False),
        ("semver_wildcard", "v1.*", "1.0.0", True),
        ("semver_wildcard", "1.2", "1.2.0", True),  # no '*': an exact patch range
        ("semver_wildcard", "1.2", "1.2.5", False),
    ])
    def test_cases(self, operator: str, value: Any, override: Any, expected: bool) -> None:
        assert check(operator, value, override) is expected

    @pytest.mark.parametrize(("operator", "value"), [
        ("semver_tilde", "~1.2.3"),  # behaviour 43
        ("semver_caret", "^1.2.3"),
        ("semver_eq", "01.2.3"),
        ("semver_eq", ".1.2"),
        ("semver_eq", "1.x.3"),
        ("semver_eq", ""),
        ("semver_eq", None),
        ("semver_wildcard", "*"),
        ("semver_wildcard", "1.*.3"),
        ("semver_wildcard", "1.2.3.*"),
    ])
    def test_invalid_filter_is_unsupported(self, operator: str, value: Any) -> None:
        assert check(operator, value, "1.2.3") == UN

    @pytest.mark.parametrize("override", ["abc", "1.02.3", "", "-1.2.3", True, "1.٢.3"])
    def test_invalid_override_is_missing_context(self, override: Any) -> None:
        assert check("semver_gt", "1.0.0", override) == MC


def test_match_property_raises_the_public_exception_types() -> None:
    with pytest.raises(InconclusiveMatchError) as info:
        match_property(prop("k", "exact", "x"), {})
    assert info.value.reason is UnresolvedFlagReason.MISSING_CONTEXT
    assert not isinstance(info.value, RequiresServerEvaluation)


def test_exceptions_have_the_documented_shape() -> None:
    assert InconclusiveMatchError().reason is UnresolvedFlagReason.UNSUPPORTED_DEFINITION
    assert RequiresServerEvaluation("x").reason is UnresolvedFlagReason.UNSUPPORTED_DEFINITION
    err = RequiresServerEvaluation("a", "b", reason=UnresolvedFlagReason.MISSING_CONTEXT)
    assert err.args == ("a", "b") and err.reason is UnresolvedFlagReason.MISSING_CONTEXT
    assert UnresolvedFlagReason("experience_continuity").name == "EXPERIENCE_CONTINUITY"
    assert UnresolvedFlagReason.MISSING_CONTEXT.value == "missing_context"
    assert isinstance(UnresolvedFlagReason.MISSING_CONTEXT, str)


def test_operators_through_a_compiled_flag() -> None:
    assert one(prop("plan", "exact", ["pro"]), {"plan": "PRO"}).value is True
    assert one(prop("plan", "exact", ["pro"]), {"plan": "free"}).value is False
    undecided = one(prop("plan", "exact", ["pro"]), {})
    assert undecided.value is None
    assert undecided.inconclusive is UnresolvedFlagReason.MISSING_CONTEXT
    assert one(prop("plan", "exact", "false"), {"plan": "x"}, pmv=1).value is True
    assert one(prop("plan", "exact", "false"), {"plan": "x"}, pmv=2).value is False
