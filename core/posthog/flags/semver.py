"""Semantic-version filters (spec §6.8 ``semver_*``): parsing and the range operators."""

from __future__ import annotations

from posthog.flags._base import memoized

Version = tuple[int, int, int]


def _part(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    return int(text)


def _core(value: object) -> str:
    """``str()``, strip whitespace and every leading v/V, cut at the first '-' then '+'."""
    text = str(value).strip().lstrip("vV")
    return text.split("-", 1)[0].split("+", 1)[0]


def _parts(parts: list[str]) -> Version | None:
    major = _part(parts[0])
    if major is None:
        return None
    numbers = [major]
    for text in parts[1:3]:
        if text == "":
            numbers.append(0)
            continue
        number = _part(text)
        if number is None:
            return None
        numbers.append(number)
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def _parse_text(text: str) -> Version | None:
    return _parts(_core(text).split("."))


_parse_text_cached = memoized(_parse_text)


def parse_version(value: object) -> Version | None:
    """``(major, minor, patch)``: missing/empty minor or patch → 0, parts past the third ignored."""
    if type(value) is str:
        return _parse_text_cached(value)
    return _parts(_core(value).split("."))


def tilde_range(value: object) -> tuple[Version, Version] | None:
    """``X.Y.Z`` → ``[X.Y.Z, X.(Y+1).0)``."""
    low = parse_version(value)
    if low is None:
        return None
    return low, (low[0], low[1] + 1, 0)


def caret_range(value: object) -> tuple[Version, Version] | None:
    """``X.Y.Z`` → ``[X.Y.Z, next breaking version)``."""
    low = parse_version(value)
    if low is None:
        return None
    major, minor, patch = low
    if major > 0:
        return low, (major + 1, 0, 0)
    if minor > 0:
        return low, (0, minor + 1, 0)
    return low, (0, 0, patch + 1)


def wildcard_range(value: object) -> tuple[Version, Version] | None:
    """``X.*`` → next major, ``X.Y.*`` → next minor, anything else → ``[X.Y.Z, X.Y.(Z+1))``."""
    parts = _core(value).split(".")
    if parts[-1] == "*":
        numbers = [_part(p) for p in parts[:-1]]
        if not numbers or len(numbers) > 2 or any(n is None for n in numbers):
            return None
        if len(numbers) == 1:
            major = numbers[0]
            assert major is not None
            return (major, 0, 0), (major + 1, 0, 0)
        major, minor = numbers
        assert major is not None and minor is not None
        return (major, minor, 0), (major, minor + 1, 0)
    if "*" in parts:
        return None
    low = _parts(parts)
    if low is None:
        return None
    return low, (low[0], low[1], low[2] + 1)
