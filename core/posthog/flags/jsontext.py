"""Text forms of property values (spec §6.8), PostHog truthiness and ASCII lowercasing.

Non-string values are rendered as compact JSON built by hand so that the result
is the same on every Python version and matches the server: ``None`` → ``null``,
bools → ``true``/``false``, ints → ``str``, floats → ``repr`` with the exponent
rules below, containers with sorted keys and non-ASCII kept.  Anything else has
no text form: :func:`to_text` returns ``None``.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from math import isfinite

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def ascii_lower(text: str) -> str:
    """Lowercase A-Z only (``"ÄB"`` → ``"Äb"``), as the text operators require."""
    if text.isascii():
        return text.lower()
    return text.translate(_ASCII_LOWER)


def float_text(value: float) -> str | None:
    """``repr`` except for exponents: -5..-1 → plain decimal, else ``e`` + sign + digits."""
    if not isfinite(value):
        return None
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text)
    if -5 <= exponent <= -1:
        sign = ""
        if mantissa.startswith("-"):
            sign, mantissa = "-", mantissa[1:]
        whole, _, fraction = mantissa.partition(".")
        point = len(whole) + exponent  # <= 0: digits start after (-point) zeros
        return f"{sign}0.{'0' * -point}{whole}{fraction}"
    return f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _json(value: object) -> str | None:
    if isinstance(value, str):
        return encode_basestring(value)
    return _scalar_or_container(value)


def _scalar_or_container(value: object) -> str | None:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            return None
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            text = _json(item)
            if text is None:
                return None
            parts.append(text)
        return "[" + ",".join(parts) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return None
        items: list[str] = []
        for k in sorted(value):
            text = _json(value[k])
            if text is None:
                return None
            items.append(encode_basestring(k) + ":" + text)
        return "{" + ",".join(items) + "}"
    return None


def to_text(value: object) -> str | None:
    """The text a value is compared as; a top-level string is used as is."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return _scalar_or_container(value)


def truthy(value: object) -> bool:
    """PostHog's ``T(x)``: bools are themselves, ``"true"`` (any case) is true, lists all-true."""
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() == "true"
    if isinstance(value, list):
        return all(truthy(item) for item in value)
    return False


def boolean_like(value: object) -> bool:
    """A bool, ``"true"``/``"false"`` in any case, or a list of boolean-like items."""
    if value is True or value is False:
        return True
    if isinstance(value, str):
        return value.lower() in ("true", "false")
    if isinstance(value, list):
        return all(boolean_like(item) for item in value)
    return False
