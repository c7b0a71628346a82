"""``POST /flags/?v=4``: the request body, transient retries, and error codes (spec §5)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from posthog._log import logger
from posthog.events import dumps
from posthog.flag_types import FlagsResponse, parse_flags_response
from posthog.transport import http

FLAGS_PATH = "/flags/?v=4"
_RETRY_STATUSES = (502, 504)


def empty_response() -> FlagsResponse:
    return FlagsResponse(flags={}, requestId=None)


def error_code(exc: BaseException) -> str:
    """The ``$feature_flag_error`` code for a failed request."""
    if isinstance(exc, http.QuotaLimitError):
        return "quota_limited"
    if isinstance(exc, http.APIError):
        return f"api_error_{exc.status}"
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    if "Connection" in name or isinstance(exc, ConnectionError):
        return "connection_error"
    return "unknown_error"


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or "refused" in str(current).lower():
            return True
        nxt = current.__cause__ or current.__context__
        if nxt is None:
            nxt = getattr(current, "reason", None)
            if not isinstance(nxt, BaseException):
                nxt = None
        current = nxt
    return False


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, http.APIError):
        return exc.status in _RETRY_STATUSES
    name = type(exc).__name__
    if "Timeout" in name:
        return True
    if "Connection" in name or isinstance(exc, ConnectionError):
        return not _refused(exc)
    return False


def check_quota(body: Any) -> None:
    if isinstance(body, Mapping):
        limited = body.get("quotaLimited")
        if isinstance(limited, list) and "feature_flags" in limited:
            logger.warning(
                "feature flags quota limit exceeded: flags are unavailable until the quota resets"
            )
            raise http.QuotaLimitError(200, "Feature flags quota limited")


def request_flags(
    *,
    host: str,
    api_key: str,
    body: dict[str, Any],
    timeout: float,
    max_retries: int,
) -> FlagsResponse:
    """One ``/flags`` call with its transient retries; raises on failure."""
    url = host + FLAGS_PATH
    attempt = 0
    while True:
        payload = dict(body)
        payload["sent_at"] = http.utc_now_iso()
        payload["api_key"] = api_key
        try:
            response = http.post_body(
                url, dumps(payload).encode("ascii"), timeout=timeout, kind="flags"
            )
            data = response.json()
            check_quota(data)
            if not isinstance(data, Mapping):
                raise ValueError("/flags answered with something other than a JSON object")
            return parse_flags_response(data)
        except Exception as exc:
            if attempt >= max_retries or not _transient(exc):
                raise
            delay = 0.3 * 2**attempt
            logger.debug("/flags request failed (%s); retrying in %.1f s", exc, delay)
            time.sleep(delay)
            attempt += 1


def flags_body(
    distinct_id: Any,
    *,
    groups: Mapping[str, Any] | None,
    person_properties: Mapping[str, Any] | None,
    group_properties: Mapping[str, Any] | None,
    geoip_disable: bool,
    device_id: str | None,
    flag_keys: list[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "distinct_id": distinct_id,
        "groups": dict(groups or {}),
        "person_properties": dict(person_properties or {}),
        "group_properties": dict(group_properties or {}),
        "geoip_disable": geoip_disable,
        "device_id": device_id,
    }
    if flag_keys:
        body["flag_keys_to_evaluate"] = list(flag_keys)
    return body


def group_properties_with_keys(
    groups: Mapping[str, Any] | None, group_properties: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """For each group in ``groups``: ``{"$group_key": key, **given}``; others dropped."""
    out: dict[str, dict[str, Any]] = {}
    given = group_properties or {}
    for name, key in (groups or {}).items():
        props = given.get(name)
        merged: dict[str, Any] = {"$group_key": key}
        if isinstance(props, Mapping):
            merged.update(props)
        out[name] = merged
    return out
