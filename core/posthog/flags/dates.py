"""Date filters (spec §6.8 ``is_date_before`` / ``is_date_after``).

Filter values are parsed once: a relative offset (``-?N{h,d,w,m,y}``, N < 10000,
the sign ignored: always in the past) or an ISO-8601 datetime.  The relative
offset is applied to "now" at evaluation time.
"""

from __future__ import annotations

import re
from calendar import isleap
from datetime import date, datetime, timedelta, timezone

from posthog.flags._base import memoized

_RELATIVE = re.compile(r"-?([0-9]+)([hdwmy])")
_ISO = re.compile(
    r"(?P<y>[0-9]{4})"
    r"(?:-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2})(?::(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]+))?)?)?"
    r"(?P<tz>[Zz]| UTC|[+-][0-9]{2}(?::?[0-9]{2})?)?)?)?"
)


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _month_length(year: int, month: int) -> int:
    if month == 2 and isleap(year):
        return 29
    return _DAYS[month - 1]


class RelativeDate:
    """``N`` units before now; ``apply`` returns None when the result leaves years 1 to 9999."""

    __slots__ = ("amount", "delta", "unit")

    def __init__(self, amount: int, unit: str) -> None:
        self.amount = amount
        self.unit = unit
        self.delta: timedelta | None = None
        if unit == "h":
            self.delta = timedelta(hours=amount)
        elif unit == "d":
            self.delta = timedelta(days=amount)
        elif unit == "w":
            self.delta = timedelta(weeks=amount)

    def apply(self, now: datetime) -> datetime | None:
        if self.delta is not None:
            try:
                return now - self.delta
            except OverflowError:
                return None
        if self.unit == "y":
            year = now.year - self.amount
            if year < 1:
                return None
            day = min(now.day, _month_length(year, now.month))
            return now.replace(year=year, day=day)
        return _minus_months(now, self.amount)

    def __repr__(self) -> str:
        return f"RelativeDate({self.amount}{self.unit})"


def _minus_months(now: datetime, months: int) -> datetime | None:
    """Step back one month at a time, clamping the day to each intermediate month's length."""
    year, month, day = now.year, now.month, now.day
    while months > 0 and day > 28:
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        if year < 1:
            return None
        day = min(day, _month_length(year, month))
        months -= 1
    # Once the day is <= 28 every month can hold it: jump the rest in one go.
    total = year * 12 + (month - 1) - months
    year, month = divmod(total, 12)
    if year < 1:
        return None
    return now.replace(year=year, month=month + 1, day=day)


def parse_relative(text: str) -> RelativeDate | None:
    m = _RELATIVE.fullmatch(text)
    if m is None:
        return None
    amount = int(m.group(1))
    if amount >= 10000:
        return None
    return RelativeDate(amount, m.group(2))


def parse_iso(text: str) -> datetime | None:
    """ISO-8601 date/datetime, ``Z`` or `` UTC`` suffix, or a bare 4-digit year; naive → UTC."""
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    g = m.group
    fraction = g("f")
    micro = int((fraction + "00000")[:6]) if fraction else 0
    tz_text = g("tz")
    tz: timezone = timezone.utc
    try:
        if tz_text and tz_text[0] in "+-":
            digits = tz_text[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            if tz_text[0] == "-":
                offset = -offset
            tz = timezone(offset)
        return datetime(
            int(g("y")),
            int(g("mo") or 1),
            int(g("d") or 1),
            int(g("h") or 0),
            int(g("mi") or 0),
            int(g("s") or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None


def parse_filter_date(value: object) -> RelativeDate | datetime | None:
    """A date filter value, or None when it is not a valid relative or absolute date."""
    if not isinstance(value, str):
        return None
    return parse_relative(value) or parse_iso(value)


_parse_iso_cached = memoized(parse_iso)


def parse_override_date(value: object) -> datetime | date | None:
    """A provided value as an aware datetime (or a plain date); None when unusable."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return _parse_iso_cached(value)
    return None
