"""Public enums and aliases shared by the client and the module API."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

BeforeSendCallback = Callable[[dict[str, Any]], dict[str, Any] | None]


class CaptureMode(str, Enum):
    """Wire protocol for events. Only ``V0`` (``/batch/``) is implemented."""

    V0 = "v0"
    V1 = "v1"


class CaptureCompression(str, Enum):
    """Body compression for the V1 protocol (accepted for compatibility)."""

    NONE = "none"
    GZIP = "gzip"


_MODE_ALIASES = {
    "v0": CaptureMode.V0,
    "legacy": CaptureMode.V0,
    "v1": CaptureMode.V1,
    "analytics_v1": CaptureMode.V1,
}


def parse_capture_mode(value: object, *, explicit: bool) -> CaptureMode:
    """``CaptureMode`` from an enum or alias; unknown explicit values raise ``ValueError``."""
    if isinstance(value, CaptureMode):
        return value
    key = str(value or "").strip().lower()
    if key in _MODE_ALIASES:
        return _MODE_ALIASES[key]
    if explicit:
        raise ValueError(f"unknown capture_mode {value!r}; use 'v0' or 'v1'")
    return CaptureMode.V0
