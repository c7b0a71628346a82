"""Public feature-flag types (spec core §1.7), and parsing of ``/flags`` records (§5.3).

Imported on first use (``posthog.FeatureFlagResult`` etc. resolve lazily), so that
``import posthog`` does not pay for ``dataclasses``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, Protocol, TypedDict, Union, runtime_checkable

from posthog.flags.errors import UnresolvedFlagReason

logger = logging.getLogger("posthog")

FlagValue = Union[bool, str]  # noqa: UP007 - a runtime alias users may inspect


class FeatureFlagEvaluationRuntime(str, Enum):
    ALL = "all"
    CLIENT = "client"
    SERVER = "server"


class FlagsAndPayloads(TypedDict):
    featureFlags: dict[str, FlagValue] | None
    featureFlagPayloads: dict[str, Any] | None


class SendFeatureFlagsOptions(TypedDict, total=False):
    should_send: bool
    only_evaluate_locally: bool
    person_properties: dict[str, Any]
    group_properties: dict[str, dict[str, Any]]
    flag_keys_filter: list[str]


class _CacheDataRequired(TypedDict):
    flags: list[dict[str, Any]]
    group_type_mapping: dict[str, str]
    cohorts: dict[str, Any]


class FlagDefinitionCacheData(_CacheDataRequired, total=False):
    minimal_flag_called_events: bool
    property_matching_version: int


@runtime_checkable
class FlagDefinitionCacheProvider(Protocol):
    """Shares flag definitions between worker processes (spec §6.12). Methods may be async."""

    def should_fetch_flag_definitions(self) -> bool | Awaitable[bool]: ...

    def get_flag_definitions(
        self,
    ) -> FlagDefinitionCacheData | Awaitable[FlagDefinitionCacheData | None] | None: ...

    def on_flag_definitions_received(self, data: FlagDefinitionCacheData) -> Any: ...

    def shutdown(self) -> Any: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def decode_payload(payload: Any) -> Any:
    """A payload as the caller sees it: JSON text decoded; invalid JSON → ``None``."""
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except ValueError:
        logger.debug("[PostHog] flag payload is not valid JSON; returned as None")
        return None


def valid_json_text(payload: Any) -> Any:
    """The original serialised payload when it is valid JSON, else ``None`` (non-strings as is)."""
    if not isinstance(payload, str):
        return payload
    return payload if decode_payload(payload) is not None or payload.strip() == "null" else None


@dataclass(frozen=True)
class FlagReason:
    code: str
    condition_index: Optional[int]  # noqa: UP045
    description: str


@dataclass(frozen=True)
class FlagMetadata:
    id: int
    payload: Optional[str]  # noqa: UP045
    version: int
    description: str
    has_experiment: Optional[bool] = None  # noqa: UP045
    config_version: Optional[int] = None  # noqa: UP045


@dataclass(frozen=True)
class LegacyFlagMetadata:
    payload: Any


class _Malformed(Exception):
    pass


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Malformed(name)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Malformed(name)


def _typed(value: Any, kinds: type | tuple[type, ...], name: str) -> Any:
    if value is not None and not isinstance(value, kinds):
        raise _Malformed(name)
    return value


@dataclass(frozen=True)
class FeatureFlag:
    """One record of a ``/flags`` answer."""

    key: str
    enabled: bool
    variant: Optional[str]  # noqa: UP045
    reason: Optional[FlagReason]  # noqa: UP045
    metadata: Union[FlagMetadata, LegacyFlagMetadata]  # noqa: UP007
    failed: bool = field(default=False, compare=False)

    def get_value(self) -> FlagValue:
        return self.variant or self.enabled

    @property
    def payload(self) -> Any:
        return None if self.failed else self.metadata.payload

    @classmethod
    def from_value_and_payload(cls, key: str, value: Any, payload: Any) -> FeatureFlag:
        enabled = isinstance(value, str) or bool(value)
        variant = value if isinstance(value, str) else None
        return cls(key, enabled, variant, None, LegacyFlagMetadata(payload))

    @classmethod
    def from_json(cls, record: Mapping[str, Any], key: str | None = None) -> FeatureFlag:
        """Parse one record; a record with a mistyped known field comes back disabled+failed."""
        name = str(record.get("key") or key or "")
        try:
            return cls._parse(name, record)
        except _Malformed as exc:
            logger.warning("[PostHog] /flags record %r is malformed (%s); treated as failed",
                           name, exc)
            return cls(name, False, None, None, LegacyFlagMetadata(None), failed=True)

    @classmethod
    def _parse(cls, key: str, record: Mapping[str, Any]) -> FeatureFlag:
        if not isinstance(record, Mapping):
            raise _Malformed("record")
        failed = _typed(record.get("failed"), bool, "failed") is True
        reason_raw = _typed(record.get("reason"), Mapping, "reason")
        reason = None
        if reason_raw is not None:
            reason = FlagReason(
                str(_typed(reason_raw.get("code"), str, "reason.code") or ""),
                _int(reason_raw.get("condition_index"), "reason.condition_index"),
                str(_typed(reason_raw.get("description"), str, "reason.description") or ""),
            )
        meta_raw = _typed(record.get("metadata"), Mapping, "metadata") or {}
        payload = meta_raw.get("payload")
        metadata = FlagMetadata(
            _int(meta_raw.get("id"), "metadata.id") or 0,
            None if failed else payload,
            _int(meta_raw.get("version"), "metadata.version") or 0,
            str(_typed(meta_raw.get("description"), str, "metadata.description") or ""),
            _typed(meta_raw.get("has_experiment"), bool, "metadata.has_experiment"),
            _int(meta_raw.get("config_version"), "metadata.config_version"),
        )
        if "value" in record:
            value = None if failed else record["value"]
            variant = value if isinstance(value, str) else None
            enabled = variant is not None or (value is not None and value is not False)
            if value is not None and not isinstance(value, (bool, str)):
                compact = json.dumps(value, separators=(",", ":"))
                metadata = FlagMetadata(metadata.id, compact, metadata.version,
                                        metadata.description, metadata.has_experiment,
                                        metadata.config_version)
            return cls(key, bool(enabled), variant, reason, metadata, failed)
        enabled = _typed(record.get("enabled"), bool, "enabled")
        variant = _typed(record.get("variant"), str, "variant")
        return cls(key, bool(enabled) and not failed, None if failed else variant, reason,
                   metadata, failed)


@dataclass(frozen=True)
class FeatureFlagResult:
    """A flag's value with its payload, as the single-flag getters return it."""

    key: str
    enabled: bool
    variant: Optional[str]  # noqa: UP045
    payload: Any
    reason: Optional[str]  # noqa: UP045

    def get_value(self) -> FlagValue:
        return self.variant or self.enabled

    @classmethod
    def from_value_and_payload(
        cls, key: str, value: Any, payload: Any, reason: str | None = None
    ) -> FeatureFlagResult | None:
        if value is None:
            return None
        enabled = isinstance(value, str) or bool(value)
        variant = value if isinstance(value, str) else None
        return cls(key, enabled, variant, decode_payload(payload), reason)

    @classmethod
    def from_flag_details(
        cls, details: FeatureFlag | None, override_match_value: Any = None
    ) -> FeatureFlagResult | None:
        if details is None or details.failed:
            return None
        enabled, variant = details.enabled, details.variant
        if override_match_value is not None:
            enabled = isinstance(override_match_value, str) or bool(override_match_value)
            variant = override_match_value if isinstance(override_match_value, str) else None
        reason = details.reason.description if details.reason else None
        return cls(details.key, enabled, variant, decode_payload(details.payload), reason)


class FlagsResponse(TypedDict, total=False):
    flags: dict[str, FeatureFlag]
    errorsWhileComputingFlags: bool
    quotaLimited: list[str]
    requestId: Optional[str]  # noqa: UP045
    evaluatedAt: Optional[int]  # noqa: UP045
    minimalFlagCalledEvents: bool


def parse_flags_response(body: Mapping[str, Any]) -> FlagsResponse:
    """Any of the three answer shapes (v4 records, v2 records, v1 maps) as records."""
    flags: dict[str, FeatureFlag] = {}
    raw = body.get("flags")
    if isinstance(raw, Mapping):
        for key, record in raw.items():
            flags[str(key)] = FeatureFlag.from_json(record if isinstance(record, Mapping) else {},
                                                    key=str(key))
    elif isinstance(body.get("featureFlags"), Mapping):
        payloads = body.get("featureFlagPayloads") or {}
        for key, value in body["featureFlags"].items():
            flags[str(key)] = FeatureFlag.from_value_and_payload(
                str(key), value, payloads.get(key) if isinstance(payloads, Mapping) else None
            )
    evaluated = body.get("evaluatedAt")
    return FlagsResponse(
        flags=flags,
        errorsWhileComputingFlags=bool(body.get("errorsWhileComputingFlags")),
        quotaLimited=list(body.get("quotaLimited") or []),
        requestId=body.get("requestId") if isinstance(body.get("requestId"), str) else None,
        evaluatedAt=evaluated if isinstance(evaluated, int) else None,
        minimalFlagCalledEvents=bool(body.get("minimalFlagCalledEvents")),
    )


def values_of(response: FlagsResponse) -> dict[str, FlagValue]:
    """``to_values``: every record not marked failed by the server, as its value."""
    return {k: f.get_value() for k, f in response.get("flags", {}).items() if not f.failed}


def payloads_of(response: FlagsResponse) -> dict[str, Any]:
    """Serialised payloads of enabled, non-failed records that have one."""
    out: dict[str, Any] = {}
    for key, flag in response.get("flags", {}).items():
        if flag.enabled and not flag.failed and flag.payload is not None:
            text = valid_json_text(flag.payload)
            if text is not None:
                out[key] = text
    return out


__all__ = [
    "FeatureFlag",
    "FeatureFlagEvaluationRuntime",
    "FeatureFlagResult",
    "FlagDefinitionCacheData",
    "FlagDefinitionCacheProvider",
    "FlagMetadata",
    "FlagReason",
    "FlagValue",
    "FlagsAndPayloads",
    "FlagsResponse",
    "LegacyFlagMetadata",
    "SendFeatureFlagsOptions",
    "UnresolvedFlagReason",
    "decode_payload",
    "parse_flags_response",
    "payloads_of",
    "values_of",
]
