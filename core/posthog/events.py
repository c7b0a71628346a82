"""Building blocks of an event: ids, timestamps, system properties, value cleaning, JSON.

Everything here is pure and thread-safe. ``capture()`` uses the cheap parts on the
caller's thread (uuid, timestamp); cleaning and serialising run on the consumer.
"""

from __future__ import annotations

import math
import numbers
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from posthog._log import logger

UTC = timezone.utc


# ---------------------------------------------------------------- ids


_randbits = random.getrandbits
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_V4_SET = (0x4 << 76) | (0x2 << 62)


def new_uuid() -> str:
    """A random version-4 UUID string, about 3x faster than ``str(uuid.uuid4())``.

    Event ids need uniqueness, not secrecy: 122 random bits from ``random`` (seeded
    from the OS, and reseeded in forked children) are as unlikely to collide.
    """
    h = "%032x" % ((_randbits(128) & _V4_CLEAR) | _V4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _loaded(module: str, name: str) -> Any:
    """A class from a module only if something already imported it.

    A ``Decimal``, ``UUID`` or dataclass instance can only exist once its module
    is loaded, so checking ``sys.modules`` lets ``import posthog`` skip importing
    them (cold import time matters to CLIs and serverless functions).
    """
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def normalize_uuid(value: object) -> str:
    """The uuid to send: ``None`` gets a fresh one; anything that is not a UUID is replaced.

    A valid string is kept as the caller wrote it, so the returned value is the
    one the caller passed in (an idempotency key they may have stored).
    """
    if value is None:
        return new_uuid()
    import uuid as uuid_mod

    if isinstance(value, uuid_mod.UUID):
        return str(value)
    text = str(value)
    try:
        uuid_mod.UUID(text)
    except (ValueError, TypeError, AttributeError):
        logger.error("uuid %r is not a valid UUID; a new one is used instead", text[:100])
        return new_uuid()
    return text


# ---------------------------------------------------------------- timestamps

_ISO_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?"
    r"\s*(?:([Zz])|(?:UTC)|([+-])(\d{2}):?(\d{2})?)?\s*$"
)
_LOCAL_WINDOW = timedelta(seconds=5)


def parse_iso_datetime(text: str) -> datetime | None:
    """Parse an ISO-8601 date-time (``Z``/``+HH:MM``/``+HHMM`` offsets); ``None`` if not one.

    Date-only strings are rejected. A string without an offset is taken as UTC.
    """
    m = _ISO_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, sec, frac, _z, sign, oh, om = m.groups()
    try:
        micro = int((frac or "0").ljust(6, "0"))
        tz = UTC
        if sign:
            offset = timedelta(hours=int(oh), minutes=int(om or 0))
            tz = timezone(-offset if sign == "-" else offset)
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(sec or 0), micro, tz
        )
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def normalize_timestamp(value: object, now: datetime | None = None) -> str:
    """The event time as a UTC ISO string (spec core §2.1 step 2)."""
    now = now or datetime.now(UTC)
    if value is None:
        return now.isoformat()
    return _normalize_given(value, now)


_second: tuple[int, str] = (-1, "")  # a whole second and its "YYYY-MM-DDTHH:MM:SS" text


def utc_now_text() -> str:
    """``datetime.now(timezone.utc).isoformat()``, about three times faster.

    The date-and-time part is formatted once per second; only the microseconds
    change between calls. Microseconds are omitted when zero, like ``isoformat``.
    """
    global _second
    now = time.time()
    whole = int(now)
    cached_whole, text = _second  # one tuple: threads never see a half-updated pair
    if cached_whole != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    micro = int((now - whole) * 1_000_000)
    if micro:
        return f"{text}.{micro:06d}+00:00"
    return f"{text}+00:00"


def event_time(value: object) -> str:
    """:func:`normalize_timestamp` with a fast path for the usual "now"."""
    if value is None:
        return utc_now_text()
    return _normalize_given(value, datetime.now(UTC))


def _normalize_given(value: object, now: datetime) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            as_local = value.astimezone()  # naive read as local time
            if timedelta(0) <= now - as_local < _LOCAL_WINDOW:
                return as_local.astimezone(UTC).isoformat()
            return value.replace(tzinfo=UTC).isoformat()
        return value.astimezone(UTC).isoformat()
    if isinstance(value, str):
        parsed = parse_iso_datetime(value)
        if parsed is not None:
            return parsed.isoformat()
    logger.warning("timestamp %r is not an ISO-8601 date-time; the current time is used", value)
    return now.isoformat()


# ---------------------------------------------------------------- system properties

_system: dict[str, Any] | None = None


def _os_release() -> dict[str, str]:
    import platform

    try:
        return platform.freedesktop_os_release()
    except (OSError, AttributeError):
        return {}


def system_properties() -> dict[str, Any]:
    """``$python_*`` and ``$os*`` properties, computed once per process.

    The dict is shared by every event: merge it into yours, never mutate it.
    """
    global _system
    if _system is None:
        import platform

        props: dict[str, Any] = {
            "$python_runtime": platform.python_implementation(),
            "$python_version": "{}.{}.{}".format(*sys.version_info[:3]),
        }
        plat = sys.platform
        if plat.startswith("linux"):
            release = _os_release()
            props["$os"] = "Linux"
            props["$os_version"] = release.get("VERSION_ID") or platform.release()
            if release.get("ID"):
                props["$os_distro"] = release["ID"]
        elif plat == "darwin":
            props["$os"] = "Mac OS X"
            props["$os_version"] = platform.mac_ver()[0]
        elif plat in ("win32", "cygwin"):
            props["$os"] = "Windows"
            props["$os_version"] = platform.win32_ver()[0]
        elif plat.startswith("freebsd"):
            props["$os"] = "FreeBSD"
            props["$os_version"] = platform.release()
        else:
            props["$os"] = plat
            props["$os_version"] = platform.release()
        _system = props
    return _system


# ---------------------------------------------------------------- cleaning

_PASS_THROUGH = frozenset({str, bool, int, float, type(None), datetime, date})
_SEQUENCES = (list, tuple, set, frozenset, deque)
_warned_types: set[str] = set()


def _warn_type(kind: str, message: str, *args: object) -> None:
    if kind not in _warned_types:
        _warned_types.add(kind)
        logger.warning(message, *args)


def clean(value: Any) -> Any:
    """Turn ``value`` into JSON-friendly data as the spec's cleaning table says.

    Cycles become ``None`` (with a warning) rather than recursing forever.
    """
    return _clean(value, set())


def _clean(value: Any, active: set[int]) -> Any:
    kind = type(value)
    if kind in _PASS_THROUGH:
        return value
    if kind is dict:
        return _clean_dict(value, active)
    if isinstance(value, (str, bool, datetime, date)):
        return value
    decimal_cls = _loaded("decimal", "Decimal")
    if decimal_cls is not None and isinstance(value, decimal_cls):
        return float(value)
    if isinstance(value, numbers.Number):
        return value
    uuid_cls = _loaded("uuid", "UUID")
    if uuid_cls is not None and isinstance(value, uuid_cls):
        return str(value)
    if isinstance(value, dict):
        return _clean_dict(value, active)
    if isinstance(value, _SEQUENCES):
        key = id(value)
        if key in active:
            _warn_type("cycle", "a property value refers to itself; the repeat is sent as null")
            return None
        active.add(key)
        try:
            return [_clean(item, active) for item in value]
        finally:
            active.discard(key)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            _warn_type("bytes", "bytes property value is not valid UTF-8; sent as null")
            return None
    return _clean_object(value, active)


def _clean_dict(value: dict[Any, Any], active: set[int]) -> dict[Any, Any] | None:
    key = id(value)
    if key in active:
        _warn_type("cycle", "a property value refers to itself; the repeat is sent as null")
        return None
    active.add(key)
    try:
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if type(v) in _PASS_THROUGH:
                out[k] = v
                continue
            try:
                out[k] = _clean(v, active)
            except TypeError as exc:
                logger.warning("dropping property %r: %s", k, exc)
        return out
    finally:
        active.discard(key)


class Deferred:
    """A value whose JSON form is built later, by whoever cleans or encodes it.

    Lets ``capture_exception`` leave formatting (source lines, in-app flags) to
    the consumer thread; ``before_send`` still sees the rendered value.
    """

    __slots__ = ()

    def render(self) -> Any:
        raise NotImplementedError


def _clean_object(value: Any, active: set[int]) -> Any:
    if isinstance(value, Deferred):
        try:
            rendered = value.render()
        except Exception:
            logger.exception("could not render %s; sent as null", type(value).__name__)
            return None
        return _clean(rendered, active)
    for method in ("model_dump", "dict"):
        fn = getattr(value, method, None)
        if callable(fn) and not isinstance(value, type):
            try:
                dumped = fn()
            except Exception as exc:  # a model whose dump fails is still not our caller's crash
                logger.warning("%s() of %s failed (%s); sent as null", method, type(value), exc)
                return None
            if isinstance(dumped, dict):
                return _clean_dict(dumped, active)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        key = id(value)
        if key in active:
            return None
        active.add(key)
        try:
            return _clean_dict(dataclasses.asdict(value), active)
        except Exception as exc:
            logger.warning("dataclass %s not convertible (%s); sent as null", type(value), exc)
            return None
        finally:
            active.discard(key)
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    _warn_type(name, "property value of type %s cannot be sent; sent as null", name)
    return None


# ---------------------------------------------------------------- JSON


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    uuid_cls = _loaded("uuid", "UUID")
    if uuid_cls is not None and isinstance(value, uuid_cls):
        return str(value)
    decimal_cls = _loaded("decimal", "Decimal")
    if decimal_cls is not None and isinstance(value, decimal_cls):
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _clean_default(value: Any) -> Any:
    cleaned = _clean(value, set())
    return _json_default(value) if cleaned is value else cleaned


_encoders: dict[str, Callable[[Any], str]] = {}


def _encoder(name: str) -> Callable[[Any], str]:
    found = _encoders.get(name)
    if found is None:
        import json

        hook = _json_default if name == "strict" else _clean_default
        found = _encoders[name] = json.JSONEncoder(
            default=hook, allow_nan=False, separators=(",", ":")
        ).encode
    return found


def _dumps_strict(value: Any) -> str:
    return _encoder("strict")(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode_event(message: Any) -> str:
    """``dumps(clean(message))`` in one pass for the usual event.

    The C encoder walks the message and only calls back into Python for values
    JSON has no type for, which it cleans on the spot; anything unusual (cycles,
    NaN, odd keys) takes the full ``clean()`` path, so the output is the same.
    """
    try:
        return _encoder("cleaning")(message)
    except (ValueError, TypeError, RecursionError):
        return dumps(clean(message))


def dumps(value: Any) -> str:
    """Compact, ASCII-escaped JSON; non-finite floats anywhere become ``null``."""
    try:
        return _dumps_strict(value)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        return _dumps_strict(_finite(value))
