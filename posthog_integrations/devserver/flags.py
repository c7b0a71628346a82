"""Feature flags for the dev server: definitions from a JSON file, answered as PostHog does.

Every answer comes from the SDK's own local evaluator (:mod:`posthog.flags.local`),
so a flag that the dev server turns on for someone is one the SDK would turn on too.
The HTTP side (routing, bodies, recording) stays in :mod:`.handler`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from posthog.flags.local import FlagDefinitions, LocalResult, UnresolvedFlagReason
from posthog.flags.remote import group_properties_with_keys

from .payload import PayloadError, invalid

__all__ = [
    "FlagState",
    "FlagStore",
    "FlagsFileError",
    "check_bearer",
    "etag_matches",
    "evaluate_response",
    "flags_response",
    "normalize_definitions",
    "remote_config",
]

logger = logging.getLogger("posthog_integrations.devserver")

_MISSING_KEY = (
    "API key not provided. You can find your project API key in your PostHog project settings."
)
_WHY = {
    UnresolvedFlagReason.MISSING_CONTEXT: (
        "the dev server stores no person or group properties, so what the request does not "
        "carry counts as absent"
    ),
    UnresolvedFlagReason.UNSUPPORTED_DEFINITION: (
        "the dev server cannot evaluate this part of the definition (static cohorts, for "
        "one, live only in PostHog), so it counts as not matching"
    ),
    UnresolvedFlagReason.UNRESOLVED_DEPENDENCY: (
        "a flag it depends on could not be evaluated, so it counts as not matching"
    ),
    UnresolvedFlagReason.EXPERIENCE_CONTINUITY: "experience continuity needs stored overrides",
}


class FlagsFileError(ValueError):
    """Flag definitions that are not in PostHog's ``/flags/definitions`` format."""


def normalize_definitions(data: Any) -> dict[str, Any]:
    """A definitions body from ``data``: the endpoint's object, or a bare list of flags.

    Missing ``group_type_mapping``/``cohorts`` become ``{}``; the result is a deep copy.
    """
    if isinstance(data, list):
        data = {"flags": data}
    if not isinstance(data, Mapping):
        raise FlagsFileError("expected an object with a 'flags' list, or a list of flags")
    flags = data.get("flags")
    if not isinstance(flags, list):
        raise FlagsFileError("'flags' must be a list of flag definitions")
    for index, flag in enumerate(flags):
        if not isinstance(flag, Mapping) or not isinstance(flag.get("key"), str):
            raise FlagsFileError(f"flag definition {index} is not an object with a string 'key'")
    out = dict(data)
    for name in ("group_type_mapping", "cohorts"):
        value = out.get(name)
        if value is None:
            out[name] = {}
        elif not isinstance(value, Mapping):
            raise FlagsFileError(f"'{name}' must be an object")
    version = out.get("property_matching_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise FlagsFileError("'property_matching_version' must be an integer")
    minimal = out.get("minimal_flag_called_events")
    if minimal is not None and not isinstance(minimal, bool):
        raise FlagsFileError("'minimal_flag_called_events' must be a boolean")
    try:
        copy: dict[str, Any] = json.loads(json.dumps(out, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise FlagsFileError(f"definitions are not plain JSON: {exc}") from None
    return copy


@dataclass(frozen=True)
class FlagState:
    """One version of the definitions: the data, its JSON body and ETag, and two compilations.

    ``local`` is what an SDK compiles from ``data``; ``server`` is the server's view, in
    which experience-continuity flags are evaluated instead of deferred.
    """

    data: dict[str, Any]
    body: bytes
    etag: str
    local: FlagDefinitions
    server: FlagDefinitions

    @classmethod
    def build(cls, data: dict[str, Any]) -> FlagState:
        """Compile already-normalised ``data`` (see :func:`normalize_definitions`)."""
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        local = FlagDefinitions.compile(data)
        server = local
        if any(flag.get("ensure_experience_continuity") for flag in data["flags"]):
            flags = [{**flag, "ensure_experience_continuity": False} for flag in data["flags"]]
            server = FlagDefinitions.compile({**data, "flags": flags})
        return cls(data, body, etag, local, server)


_Signature = tuple[int, int, int]


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FlagStore:
    """The current definitions: set in memory, or read from ``path`` whenever it changes.

    A change is seen through the file's mtime, size and inode, checked once per
    :meth:`current` call. A file that cannot be parsed keeps the previous definitions
    (and logs an error); a missing file means no flags.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._lock = threading.Lock()
        self._state = FlagState.build(normalize_definitions([]))
        self._seen: _Signature | None = None
        self._checked = False
        self.current()

    def set(self, data: Any) -> FlagState:
        """Replace the definitions (until the file, if any, changes); raises FlagsFileError."""
        state = FlagState.build(normalize_definitions(data))
        with self._lock:
            self._state = state
            if self.path is not None:
                self._seen, self._checked = _signature(self.path), True
        return state

    def current(self) -> FlagState:
        """The definitions to answer with, re-reading the file first if it changed."""
        path = self.path
        if path is None:
            return self._state
        signature = _signature(path)
        if self._checked and signature == self._seen:
            return self._state
        with self._lock:
            if not (self._checked and signature == self._seen):
                self._load(path, signature)
                self._seen, self._checked = signature, True
            return self._state

    def _load(self, path: str, signature: _Signature | None) -> None:
        if signature is None:
            logger.warning("flags file %s does not exist: serving no flags", path)
            self._state = FlagState.build(normalize_definitions([]))
            return
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
            state = FlagState.build(normalize_definitions(data))
        except (OSError, ValueError, RecursionError) as exc:
            logger.error("flags file %s could not be loaded (%s); keeping the previous "
                         "definitions", path, exc)
            return
        self._state = state
        logger.info("loaded %d flag definitions from %s", len(state.data["flags"]), path)


# -- requests ---------------------------------------------------------------------------


def check_bearer(authorization: str | None) -> None:
    """Raise a PostHog-style 401 unless the header is ``Bearer <something>``."""
    if not authorization:
        raise PayloadError(401, "Authentication credentials were not provided.",
                           type_="authentication_error", code="not_authenticated")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PayloadError(401, "Invalid Authorization header: expected 'Bearer <personal "
                           "API key>'.", type_="authentication_error",
                           code="authentication_failed")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, ``*`` allowed)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@dataclass(frozen=True)
class _Subject:
    distinct_id: str
    groups: dict[str, Any]
    person_properties: dict[str, Any] | None
    group_properties: dict[str, dict[str, Any]]
    device_id: str | None


def _object(request: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object")
    return value


def _subject(request: Mapping[str, Any]) -> _Subject:
    distinct_id = request.get("distinct_id")
    if distinct_id is None or distinct_id == "" or isinstance(distinct_id, (dict, list)):
        raise invalid("'distinct_id' is required (a string)")
    groups = _object(request, "groups") or {}
    given = _object(request, "group_properties") or {}
    if any(not isinstance(props, dict) for props in given.values()):
        raise invalid("'group_properties' must map group types to objects")
    device_id = request.get("device_id")
    # $group_key goes into every passed group's properties, exactly as the SDK sends them.
    return _Subject(
        str(distinct_id),
        groups,
        _object(request, "person_properties"),
        group_properties_with_keys(groups, given),
        None if device_id is None else str(device_id),
    )


def _evaluate(definitions: FlagDefinitions, key: str, who: _Subject) -> LocalResult:
    return definitions.evaluate(
        key, who.distinct_id, groups=who.groups, person_properties=who.person_properties,
        group_properties=who.group_properties, device_id=who.device_id,
    )


def _group_missing(state: FlagState, raw: Mapping[str, Any], groups: Mapping[str, Any]) -> bool:
    filters = raw.get("filters")
    index = filters.get("aggregation_group_type_index") if isinstance(filters, dict) else None
    name = state.data["group_type_mapping"].get(str(index)) if index is not None else None
    return isinstance(name, str) and name not in groups


def _reason(state: FlagState, raw: Mapping[str, Any], result: LocalResult,
            who: _Subject) -> tuple[str, str]:
    """The v4 reason code and description of a conclusive result."""
    filters = raw.get("filters")
    filters = filters if isinstance(filters, dict) else {}
    holdout = filters.get("holdout")
    if not raw.get("active"):
        return "disabled", "Flag is disabled"
    if result.condition_index is not None:
        return "condition_match", result.reason
    if filters.get("feature_enrollment") is True:
        return "super_condition_value", result.reason
    if isinstance(holdout, dict) and result.value == f"holdout-{holdout.get('id')}":
        return "holdout_condition_value", result.reason
    if _group_missing(state, raw, who.groups):
        return "no_group_type", result.reason
    return "no_condition_match", result.reason


def _record(state: FlagState, key: str, who: _Subject) -> tuple[dict[str, Any], bool]:
    """One v4 flag record and whether it failed (an exception while evaluating)."""
    raw = state.server.by_key[key]
    try:
        result: LocalResult | None = _evaluate(state.server, key, who)
    except Exception:  # the evaluator promises not to raise; report it if it does
        logger.exception("evaluating flag %r failed", key)
        result = None
    failed = result is None or result.error
    value: bool | str = False
    if result is None or failed:
        detail = result.reason if result is not None else "an unexpected error"
        code, description, index = "evaluation_error", f"Evaluation failed: {detail}", None
    elif result.inconclusive is not None:
        code, index = "no_condition_match", None
        description = (f"Could not be matched: {result.reason}; "
                       f"{_WHY[result.inconclusive]}")
    else:
        value = result.value if result.value is not None else False
        code, description = _reason(state, raw, result, who)
        index = result.condition_index
    enabled = value is not False
    flag_id, version = raw.get("id"), raw.get("version")
    return {
        "key": key,
        "enabled": enabled,
        "variant": value if isinstance(value, str) else None,
        "value": value,
        "failed": failed,
        "reason": {"code": code, "condition_index": index, "description": description},
        "metadata": {
            "id": flag_id if isinstance(flag_id, int) and not isinstance(flag_id, bool) else None,
            "version": version if isinstance(version, int) and not isinstance(version, bool)
            else None,
            "payload": result.payload if enabled and result is not None else None,
            "description": "",
            "has_experiment": raw.get("has_experiment") is True,
        },
    }, failed


def _api_key(request: Mapping[str, Any]) -> None:
    for name in ("api_key", "token"):
        value = request.get(name)
        if isinstance(value, str) and value.strip():
            return
    raise PayloadError(401, _MISSING_KEY, type_="authentication_error", code="invalid_api_key")


def flags_response(state: FlagState, request: Any) -> dict[str, Any]:
    """The v4 ``/flags`` answer for a decoded request body; raises PayloadError (400/401)."""
    if not isinstance(request, dict):
        raise invalid("Malformed request data: expected a JSON object")
    _api_key(request)
    who = _subject(request)
    wanted = request.get("flag_keys_to_evaluate")
    if wanted is None:
        keys = list(state.server.by_key)
    elif isinstance(wanted, list) and all(isinstance(k, str) for k in wanted):
        keys = [k for k in dict.fromkeys(wanted) if k in state.server.by_key]
    else:
        raise invalid("'flag_keys_to_evaluate' must be a list of flag keys")
    flags: dict[str, Any] = {}
    errors = False
    for key in keys:
        flags[key], failed = _record(state, key, who)
        errors = errors or failed
    return {
        "flags": flags,
        "errorsWhileComputingFlags": errors,
        "quotaLimited": [],
        "requestId": str(uuid.uuid4()),
        "evaluatedAt": int(time.time() * 1000),
        "minimalFlagCalledEvents": state.data.get("minimal_flag_called_events") is True,
    }


def evaluate_response(state: FlagState, request: Any) -> dict[str, Any]:
    """``POST /api/flags/evaluate``: the SDK's raw local evaluation of every flag, with why."""
    if not isinstance(request, dict):
        raise invalid("Malformed request data: expected a JSON object")
    who = _subject(request)
    results: dict[str, Any] = {}
    for key in state.local.by_key:
        result = _evaluate(state.local, key, who)
        results[key] = {
            "value": result.value,
            "payload": result.payload,
            "condition_index": result.condition_index,
            "reason": result.reason,
            "inconclusive": result.inconclusive.value if result.inconclusive else None,
        }
    return {"results": results}


def remote_config(state: FlagState, key: str) -> Any:
    """A flag's ``filters.payloads["true"]``, decoded when it is JSON text; 404 otherwise."""
    raw = state.local.by_key.get(key)
    if raw is None:
        raise PayloadError(404, f"Feature flag {key!r} does not exist.", type_="invalid_request",
                           code="not_found")
    filters = raw.get("filters")
    payloads = filters.get("payloads") if isinstance(filters, dict) else None
    if not isinstance(payloads, dict) or payloads.get("true") is None:
        raise PayloadError(404, f"Feature flag {key!r} has no remote config payload.",
                           type_="invalid_request", code="not_found")
    payload = payloads["true"]
    if isinstance(payload, str):
        try:
            return json.loads(payload)
        except ValueError:
            return payload
    return payload
