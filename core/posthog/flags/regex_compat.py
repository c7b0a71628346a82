"""Compile ``regex`` filter values so Python agrees with the server's Rust engine (spec §6.8).

A one-pass scanner looks for constructs whose meaning differs between Python's
``re`` and Rust's ``regex`` crate (or that Python could take exponential time
on) and reports them; such a filter is inconclusive and goes to the server.
``$`` outside a character class is rewritten to ``\\Z`` (end of string).
Patterns that use ``\\d``/``\\w``/``\\s`` (or their negations) agree only on
ASCII text, so they are flagged ``ascii_only``: a non-ASCII subject makes the
match inconclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset("nrtfva")  # control escapes both engines read the same way
_CLASS_ESCAPES = frozenset("dDwWsS")
_QUANT_START = frozenset("*+?{")
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    """Outcome of compiling one pattern: ``regex`` set, or ``problem``, or neither (bad pattern)."""

    regex: re.Pattern[str] | None
    problem: str | None
    ascii_only: bool


class _Unsupported(Exception):
    pass


def _escape(pattern: str, i: int, out: list[str], in_class: bool) -> tuple[int, bool]:
    """Check the escape at ``pattern[i] == '\\\\'``; returns (next index, ascii-sensitive)."""
    if i + 1 >= len(pattern):
        out.append("\\")  # trailing backslash: Python refuses to compile it
        return i + 1, False
    c = pattern[i + 1]
    if c in _CLASS_ESCAPES:
        out.append(pattern[i : i + 2])
        return i + 2, True
    if c in _SIMPLE_ESCAPES or (c == "A" and not in_class):
        out.append(pattern[i : i + 2])
        return i + 2, False
    for letter, width in (("x", 2), ("u", 4), ("U", 8)):
        if c == letter:
            digits = pattern[i + 2 : i + 2 + width]
            if len(digits) == width and all(d in _HEX for d in digits):
                out.append(pattern[i : i + 2 + width])
                return i + 2 + width, False
            raise _Unsupported(f"escape \\{c} in a form Python and Rust read differently")
    if c in "bB":
        raise _Unsupported(f"\\{c} (word boundaries differ from the server's engine)")
    if c.isascii() and (c.isalnum() or c.isspace() or c in "<>"):
        raise _Unsupported(f"escape \\{c} is not supported by both engines")
    if not c.isascii():
        raise _Unsupported("escaped non-ASCII character")
    out.append(pattern[i : i + 2])
    return i + 2, False


def _class(pattern: str, i: int, out: list[str]) -> tuple[int, bool]:
    """Scan a character class starting at ``pattern[i] == '['``; returns (next index, ascii)."""
    n = len(pattern)
    start = i
    i += 1
    if i < n and pattern[i] == "^":
        i += 1
    if i < n and pattern[i] == "]":
        i += 1  # a leading ']' is literal in both engines
    ascii_only = False
    pieces: list[str] = [pattern[start:i]]
    while i < n:
        c = pattern[i]
        if c == "]":
            pieces.append("]")
            out.append("".join(pieces))
            return i + 1, ascii_only
        if c == "\\":
            i, sensitive = _escape(pattern, i, pieces, True)
            ascii_only = ascii_only or sensitive
            continue
        if c == "[":
            raise _Unsupported("nested character class or POSIX class")
        if c in "&-~" and pattern[i + 1 : i + 2] == c:
            raise _Unsupported(f"class set operation {c}{c}")
        pieces.append(c)
        i += 1
    out.append("".join(pieces))  # unterminated: Python refuses to compile it
    return i, ascii_only


def _scan(pattern: str) -> tuple[str, bool]:
    """Return the Python pattern to compile and whether it is ASCII-sensitive."""
    out: list[str] = []
    ascii_only = False
    n = len(pattern)
    i = 0
    # One entry per open group: does it contain a repetition (at any depth)?
    groups: list[bool] = []
    # Did the atom just before the current position end a group with a repetition inside?
    prev_group_repeats = False
    prev_is_quantifier = False
    while i < n:
        c = pattern[i]
        if c in _QUANT_START and (c != "{" or _REPEAT.match(pattern, i)):
            end = i + 1
            if c == "{":
                m = _REPEAT.match(pattern, i)
                assert m is not None
                end = m.end()
            if prev_is_quantifier:
                raise _Unsupported("repeated quantifier (possessive-like sequence)")
            if end < n and pattern[end] == "?":
                end += 1  # lazy form, same meaning in both engines
            unbounded_or_counted = c != "?"
            if prev_group_repeats and unbounded_or_counted:
                raise _Unsupported("nested quantified group")
            if unbounded_or_counted and groups:
                groups[-1] = True
            out.append(pattern[i:end])
            i = end
            prev_is_quantifier = True
            prev_group_repeats = False
            continue
        prev_is_quantifier = False
        prev_group_repeats = False
        if c == "{":
            raise _Unsupported("'{' that is not a repetition")
        if c == "\\":
            i, sensitive = _escape(pattern, i, out, False)
            ascii_only = ascii_only or sensitive
        elif c == "[":
            i, sensitive = _class(pattern, i, out)
            ascii_only = ascii_only or sensitive
        elif c == "(":
            if pattern[i + 1 : i + 2] == "?":
                if pattern[i + 2 : i + 3] != ":":
                    raise _Unsupported("group construct '(?' other than '(?:'")
                out.append("(?:")
                i += 3
            else:
                out.append("(")
                i += 1
            groups.append(False)
        elif c == ")":
            out.append(")")
            i += 1
            if groups:
                inner = groups.pop()
                prev_group_repeats = inner
                if inner and groups:
                    groups[-1] = True
        elif c == "$":
            out.append("\\Z")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), ascii_only


@lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> CompiledPattern:
    """Check and compile a regex filter value (cached: definitions are recompiled on each poll)."""
    try:
        translated, ascii_only = _scan(pattern)
    except _Unsupported as exc:
        return CompiledPattern(None, str(exc), False)
    try:
        regex = re.compile(translated)
    except (re.error, OverflowError, RecursionError):
        return CompiledPattern(None, None, ascii_only)
    return CompiledPattern(regex, None, ascii_only)
