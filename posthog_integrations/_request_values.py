"""Pure helpers of the request layer: id sanitising, text caps, ``$ip`` and the posthog-js cookie.

Everything here is a plain function of its arguments (no framework, no client), so it is
cheap to test and to call on every request. Public names are re-exported by ``_request``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

POSTHOG_TRACING_HEADERS: tuple[str, ...] = (
    "x-posthog-distinct-id",
    "x-posthog-session-id",
    "x-posthog-window-id",
)
"""Header names posthog-js adds to API calls; list them in your CORS allowed headers."""

DISTINCT_ID_HEADER = "x-posthog-distinct-id"
SESSION_ID_HEADER = "x-posthog-session-id"
WINDOW_ID_HEADER = "x-posthog-window-id"
DEVICE_ID_HEADER = "x-posthog-device-id"

MAX_ID_LENGTH = 1000
IDLE_TIMEOUT_DEFAULT_S = 30 * 60
IDLE_TIMEOUT_MIN_S = 60
IDLE_TIMEOUT_MAX_S = 10 * 60 * 60
SESSION_MAX_LENGTH_MS = 24 * 60 * 60 * 1000

# C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]+")
_SENTINELS = frozenset({"undefined", "null", "none", "$posthog_cookieless"})
_NO_LIKE = frozenset({"false", "0", "no"})
_YES_LIKE = frozenset({"true", "1", "yes"})


def _strip_controls(text: str) -> str:
    # ``isprintable`` is a fast C scan that is True for almost every real header value;
    # it is also False for other non-printables (e.g. U+00A0), hence the regex to confirm.
    if text.isprintable():
        return text
    return _CONTROL.sub("", text)


def sanitize_id(value: object) -> str | None:
    """Clean one header-derived id (spec §1.3); ``None`` when nothing usable is left.

    Bytes are decoded as latin-1. Control characters are deleted, surrounding whitespace
    stripped, the result cut to 1000 characters; empty values and the placeholders
    ``undefined``/``null``/``none``/``$posthog_cookieless`` (any case) count as absent.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1")
    else:
        return None
    text = (text if text.isprintable() else _CONTROL.sub("", text)).strip()
    if len(text) > MAX_ID_LENGTH:
        text = text[:MAX_ID_LENGTH]
    if not text or (len(text) <= 19 and text.lower() in _SENTINELS):
        return None
    return text


def first_id(values: Iterable[object]) -> str | None:
    """The first value that survives :func:`sanitize_id` (duplicate headers, §1.2)."""
    for value in values:
        found = sanitize_id(value)
        if found is not None:
            return found
    return None


def sanitize_text(value: object, cap: int) -> str | None:
    """Control characters removed and cut to ``cap``; ``None`` if not a str or empty.

    Unlike ids, text is not stripped: a User-Agent keeps its spaces.
    """
    if not isinstance(value, str):
        return None
    text = _strip_controls(value)
    if len(text) > cap:
        text = text[:cap]
    return text or None


# ---------------------------------------------------------------- $ip (spec §1.6)


@lru_cache(maxsize=2048)
def valid_ip(candidate: str) -> str | None:
    """Normalised address from one proxy-list entry, or ``None`` (``unknown``, ``_hidden``...).

    Strips whitespace, a port (``1.2.3.4:80``, ``[::1]:443``) and brackets. Cached: the same
    few addresses (proxies, the load balancer) come back on most requests.
    """
    text = candidate.strip()
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _peer(peer: str | None) -> str | None:
    return valid_ip(peer) if isinstance(peer, str) else None


# (X-Forwarded-For line, ip_source) -> address; bounded: the header is client-written.
_FORWARDED: dict[tuple[str, object], str | None] = {}
_FORWARDED_MAX = 1024
_FORWARDED_KEY_MAX = 512
_MISS: Any = object()


def forwarded_ip(line: str, ip_source: object) -> str | None:
    """The address an ``X-Forwarded-For`` value gives for ``ip_source``, or ``None``.

    ``ip_source`` is ``"forwarded"`` (the leftmost valid entry) or an int ``n >= 1`` (the
    ``n``-th entry from the right, if valid). Several header lines are passed joined with
    ``,``. Cached per ``(line, ip_source)``: the same proxy chains come back on most requests.
    """
    key = (line, ip_source)
    found: str | None = _FORWARDED.get(key, _MISS)
    if found is not _MISS:
        return found
    found = None
    entries = line.split(",")
    if ip_source == "forwarded":
        for entry in entries:
            found = valid_ip(entry)
            if found is not None:
                break
    elif type(ip_source) is int and 1 <= ip_source <= len(entries):
        found = valid_ip(entries[-ip_source])
    if len(line) <= _FORWARDED_KEY_MAX:
        if len(_FORWARDED) >= _FORWARDED_MAX:
            _FORWARDED.clear()
        _FORWARDED[key] = found
    return found


def _joined(forwarded_for: Sequence[str]) -> str | None:
    lines = [line for line in forwarded_for if isinstance(line, str)]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else ",".join(lines)


def client_ip(
    *,
    forwarded_for: Sequence[str],
    real_ip: str | None,
    peer: str | None,
    ip_source: object,
    request: object = None,
) -> str | None:
    """One validated client address for ``$ip`` (spec §1.6).

    ``ip_source``: ``"forwarded"`` (leftmost valid ``X-Forwarded-For`` entry, else
    ``X-Real-IP``, else the peer), ``"peer"``, an int ``n >= 1`` (``n``-th entry from the
    right, else the peer) or a callable ``request -> str | None`` (its answer is validated;
    its exceptions propagate to the caller, which treats them as a hook failure).
    """
    if ip_source == "peer":
        return _peer(peer)
    if isinstance(ip_source, int) and not isinstance(ip_source, bool) and ip_source >= 1:
        line = _joined(forwarded_for)
        found = forwarded_ip(line, ip_source) if line is not None else None
        return found if found is not None else _peer(peer)
    if callable(ip_source):
        answer = ip_source(request)
        return valid_ip(answer) if isinstance(answer, str) else None
    line = _joined(forwarded_for)
    found = forwarded_ip(line, "forwarded") if line is not None else None
    if found is not None:
        return found
    if isinstance(real_ip, str):
        found = valid_ip(real_ip)
        if found is not None:
            return found
    return _peer(peer)


def check_ip_source(value: object) -> str | int | Callable[..., Any] | None:
    """``value`` in canonical form, or ``None`` if it is not a valid ``ip_source``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("forwarded", "peer"):
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 1 else None
    if callable(value):
        return value
    return None


# ---------------------------------------------------------------- posthog-js cookie (§1.4)


def cookie_name(api_key: str) -> str:
    """``ph_<key>_posthog`` with ``+``, ``/``, ``=`` escaped as posthog-js does."""
    key = api_key.replace("+", "PL").replace("/", "SL").replace("=", "EQ")
    return f"ph_{key}_posthog"


def consent_cookie_name(api_key: str) -> str:
    """``__ph_opt_in_out_<key>``: posthog-js's consent cookie."""
    return f"__ph_opt_in_out_{api_key}"


def clamp_idle_timeout(value: object) -> int:
    """The session idle timeout in seconds, kept within posthog-js's 60 s - 10 h."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return IDLE_TIMEOUT_DEFAULT_S
    return int(min(max(value, IDLE_TIMEOUT_MIN_S), IDLE_TIMEOUT_MAX_S))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_posthog_cookie(
    cookie_value: str | None,
    *,
    api_key: str,
    now_ms: int,
    idle_timeout_s: int,
    consent_value: str | None,
    opt_out_by_default: bool,
) -> tuple[str | None, str | None]:
    """``(distinct_id, session_id)`` from the posthog-js cookie; never raises.

    The distinct id only for ``$user_state == "identified"``; the session id only while
    ``$sesid`` is within the idle timeout and 24 h of its start. A no-like consent cookie
    (or no consent cookie with ``opt_out_by_default``) means nothing is taken.
    ``api_key`` names the cookie; it is accepted here for symmetry with the cookie names.
    """
    del api_key
    try:
        if consent_value is not None:
            consent = unquote(consent_value).strip().lower()
            if consent in _NO_LIKE:
                return None, None
            if opt_out_by_default and consent not in _YES_LIKE:
                return None, None
        elif opt_out_by_default:
            return None, None
        if not cookie_value:
            return None, None
        data = json.loads(unquote(cookie_value))
        if not isinstance(data, dict):
            return None, None
        distinct = None
        if data.get("$user_state") == "identified":
            distinct = sanitize_id(data.get("distinct_id"))
        session = None
        sesid = data.get("$sesid")
        if isinstance(sesid, list) and len(sesid) >= 3:
            last, start = _number(sesid[0]), _number(sesid[2])
            if (
                last is not None
                and start is not None
                and now_ms - last <= idle_timeout_s * 1000
                and now_ms - start <= SESSION_MAX_LENGTH_MS
            ):
                session = sanitize_id(sesid[1])
        return distinct, session
    except Exception:
        return None, None


# ---------------------------------------------------------------- $current_url (§1.5)


def current_url(scheme: str, host: str, path: str, query: str | None) -> str:
    """``scheme://host/path[?query]`` without userinfo or fragment."""
    if not query and path[:1] == "/" and "#" not in path and "@" not in host:
        return f"{scheme}://{host}{path}"  # the usual request
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    if "#" in path:
        path = path.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}{path}"
    if query:
        query = query.split("#", 1)[0].lstrip("?")
        if query:
            url = f"{url}?{query}"
    return url
