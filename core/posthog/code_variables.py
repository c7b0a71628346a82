"""Frame locals for ``$exception`` events, with secrets masked (spec core §8.6).

Runs on the capturing thread (locals change once the frame moves on), so it is
bounded everywhere: depth, items per collection, nodes per value, string length,
and a total budget per event.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

REDACTED = "$$_posthog_redacted_based_on_masking_rules_$$"
TOO_LONG = "$$_posthog_value_too_long_$$"
CIRCULAR = "<circular ref>"

DEFAULT_MASK_PATTERNS = [
    "(?i)password", "(?i)secret", "(?i)passwd", "(?i)pwd", "(?i)api_key", "(?i)apikey",
    "(?i)auth", "(?i)credentials", "(?i)privatekey", "(?i)private_key", "(?i)token",
    "(?i)aws_access_key_id", "(?i)_pass", "(?i)sk_", "(?i)jwt", "(?i)connection_string",
    "(?i)connectionstring", "(?i)conn_str", "(?i)connstr", "(?i)dsn", r"(?i)[?&]sig=",
]
DEFAULT_IGNORE_PATTERNS = ["^__.*"]

MAX_DEPTH = 12
MAX_ITEMS = 50
MAX_NODES = 100
MAX_STRING = 2048
MAX_TEXT = 1024
BUDGET = 10 * 1024

_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_TOKEN_FORMATS = re.compile(
    r"^(sk-[A-Za-z0-9_-]{16,}|sk_(live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}|"
    r"gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|"
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*|phx_[A-Za-z0-9]{20,})$"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class Matcher:
    """Mask patterns: ``(?i)literal`` as a lowercase substring test, others with ``re.search``."""

    __slots__ = ("literals", "regexes")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.literals: list[str] = []
        self.regexes: list[re.Pattern[str]] = []
        for pattern in patterns:
            body = pattern[4:] if pattern.startswith("(?i)") else None
            if body is not None and body and re.escape(body) == body:
                self.literals.append(body.lower())
                continue
            try:
                self.regexes.append(re.compile(pattern))
            except re.error:
                continue

    def __call__(self, text: str) -> bool:
        low = text.lower()
        return any(lit in low for lit in self.literals) or any(
            rx.search(text) for rx in self.regexes
        )


@dataclass(frozen=True)
class Settings:
    mask: Matcher
    ignore: list[re.Pattern[str]]
    mask_url_credentials: bool
    detect_secrets: bool


_matchers: dict[tuple[str, ...], Matcher] = {}


def settings(
    mask_patterns: list[str] | None,
    ignore_patterns: list[str] | None,
    mask_url_credentials: bool | None,
    detect_secrets: bool | None,
) -> Settings:
    """Resolved settings (``None`` → the defaults); compiled patterns are cached."""
    masks = tuple(DEFAULT_MASK_PATTERNS if mask_patterns is None else mask_patterns)
    matcher = _matchers.get(masks)
    if matcher is None:
        matcher = _matchers[masks] = Matcher(masks)
    ignore: list[re.Pattern[str]] = []
    for pattern in DEFAULT_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns:
        try:
            ignore.append(re.compile(pattern))
        except re.error:
            continue
    return Settings(
        matcher,
        ignore,
        True if mask_url_credentials is None else mask_url_credentials,
        True if detect_secrets is None else detect_secrets,
    )


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    size = len(text)
    return -sum(c / size * math.log2(c / size) for c in counts.values())


def looks_secret(text: str) -> bool:
    """PEM keys, well-known token formats, or long high-entropy words."""
    if _PEM.search(text):
        return True
    if len(text) < 16 or " " in text or len(text) > MAX_STRING:
        return False
    if _TOKEN_FORMATS.match(text):
        return True
    if "/" in text or "\\" in text or "://" in text or _UUID.match(text) or _HEX.match(text):
        return False
    classes = (
        any(c.islower() for c in text)
        + any(c.isupper() for c in text)
        + any(c.isdigit() for c in text)
        + any(not c.isalnum() for c in text)
    )
    return classes >= 3 and _entropy(text) >= 3.8


def scrub_text(text: str, cfg: Settings) -> str:
    """A string value as it may be sent: masked, redacted or cut."""
    if len(text) > MAX_STRING:
        return TOO_LONG
    if cfg.mask(text) or (cfg.detect_secrets and looks_secret(text)):
        return REDACTED
    if cfg.mask_url_credentials and "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _AUTH_SCHEME.sub(lambda m: m.group(1) + " " + REDACTED, text)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "..."
    return text


class _Walker:
    """Turns one variable's value into JSON-able data within the node and depth limits."""

    __slots__ = ("active", "cfg", "nodes")

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.nodes = 0
        self.active: set[int] = set()

    def walk(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if value is None or isinstance(value, bool):
            return str(value)
        if isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                return str(value)
            return value
        if isinstance(value, str):
            return scrub_text(value, self.cfg)
        if isinstance(value, bytes):
            return scrub_text(repr(value), self.cfg)
        if self.nodes > MAX_NODES or depth >= MAX_DEPTH:
            return "..."
        key = id(value)
        if key in self.active:
            return CIRCULAR
        self.active.add(key)
        try:
            if isinstance(value, Mapping):
                return self._mapping(value.items(), depth)
            if isinstance(value, (list, tuple, set, frozenset)):
                return [self.walk(item, depth + 1) for item in _first(value, MAX_ITEMS)]
            attrs = getattr(value, "__dict__", None)
            if isinstance(attrs, dict):
                out = self._mapping(attrs.items(), depth)
                out["__class__"] = type(value).__name__
                return out
            return scrub_text(_safe_repr(value), self.cfg)
        finally:
            self.active.discard(key)

    def _mapping(self, items: Iterable[tuple[Any, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in _first(items, MAX_ITEMS):
            name = k if isinstance(k, str) else _safe_repr(k)
            out[name] = REDACTED if self.cfg.mask(name) else self.walk(v, depth + 1)
        return out


def _first(items: Iterable[Any], limit: int) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) >= limit:
            break
        out.append(item)
    return out


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} repr failed>"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def serialise_value(value: Any, cfg: Settings) -> Any:
    """One variable's sent form: simple values as themselves, containers as JSON text."""
    data = _Walker(cfg).walk(value, 0)
    if isinstance(data, (dict, list)):
        return json.dumps(data, default=str)
    return data


def frame_variables(frame: FrameType, cfg: Settings, budget: list[int]) -> dict[str, Any]:
    """The frame's locals as ``{name: value}``; simple values first, each group by name."""
    try:
        local_vars = dict(frame.f_locals)
    except Exception:
        return {}
    simple: list[tuple[str, Any]] = []
    other: list[tuple[str, Any]] = []
    for name, value in local_vars.items():
        if not isinstance(name, str) or any(rx.search(name) for rx in cfg.ignore):
            continue
        is_simple = value is None or isinstance(value, (bool, int, float, str))
        (simple if is_simple else other).append((name, value))
    out: dict[str, Any] = {}
    for group in (sorted(simple, key=_name), sorted(other, key=_name)):
        for name, value in group:
            if budget[0] <= 0:
                return out
            sent = REDACTED if cfg.mask(name) else serialise_value(value, cfg)
            budget[0] -= len(name) + len(str(sent))
            out[name] = sent
    return out


_name: Callable[[tuple[str, Any]], str] = lambda pair: pair[0]  # noqa: E731
