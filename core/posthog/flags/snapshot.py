"""``FeatureFlagEvaluations``: a snapshot of flags for one person (spec §7.3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog.flag_types import decode_payload
from posthog.flags.called import FlagCall
from posthog.flags.errors import UnresolvedFlagReason

if TYPE_CHECKING:
    from posthog.feature_flags import FeatureFlagsMixin


@dataclass(frozen=True)
class Evaluated:
    """One flag of a snapshot."""

    value: Any  # variant str, True/False; None when the server marked it failed
    payload: Any  # as stored (serialised JSON text for remote and local payloads)
    locally_evaluated: bool
    reason: str | None = None
    flag_id: int | None = None
    version: int | None = None
    has_experiment: bool | None = None
    failed: bool = False


class FeatureFlagEvaluations:
    """Flags evaluated once for one distinct id; reads may send ``$feature_flag_called``."""

    def __init__(
        self,
        client: FeatureFlagsMixin | None,
        distinct_id: Any,
        *,
        flags: Mapping[str, Evaluated] | None = None,
        unresolved: Mapping[str, UnresolvedFlagReason] | None = None,
        groups: Mapping[str, Any] | None = None,
        disable_geoip: bool | None = None,
        request_id: str | None = None,
        evaluated_at: int | None = None,
        errors: Iterable[str] = (),
        minimal: bool = False,
    ) -> None:
        self._client = client
        self._distinct_id = distinct_id
        self._flags: dict[str, Evaluated] = dict(flags or {})
        self._unresolved = dict(unresolved or {})
        self._groups = dict(groups or {})
        self._disable_geoip = disable_geoip
        self._request_id = request_id
        self._evaluated_at = evaluated_at
        self._errors = list(errors)
        self._minimal = minimal
        self._accessed: set[str] = set()

    # ------------------------------------------------------------ reads

    @property
    def keys(self) -> list[str]:
        return [k for k, f in self._flags.items() if not f.failed]

    @property
    def unresolved_flags(self) -> Mapping[str, UnresolvedFlagReason]:
        return MappingProxyType(self._unresolved)

    def _value(self, key: str) -> Any:
        found = self._flags.get(key)
        return None if found is None or found.failed else found.value

    def is_enabled(
        self, key: str, default_value: bool = False, *, send_feature_flag_events: bool = True
    ) -> bool:
        value = self._read(key, send_feature_flag_events)
        if value is None:
            return default_value
        return isinstance(value, str) or bool(value)

    def get_flag(self, key: str, *, send_feature_flag_events: bool = True) -> Any:
        return self._read(key, send_feature_flag_events)

    def get_flag_payload(self, key: str) -> Any:
        found = self._flags.get(key)
        if found is None or found.failed:
            return None
        return decode_payload(found.payload)

    def _read(self, key: str, send: bool) -> Any:
        self._accessed.add(key)
        value = self._value(key)
        if send and self._client is not None and self._distinct_id is not None:
            self._client._flag_called(self._call(key, value), self._distinct_id, self._groups,
                                      self._disable_geoip)
        return value

    def _call(self, key: str, value: Any) -> FlagCall:
        found = self._flags.get(key)
        errors = list(self._errors)
        if found is None:
            errors.append("flag_missing")
        elif found.failed:
            errors.append("evaluation_failed")
        local = found is not None and found.locally_evaluated
        return FlagCall(
            key=key,
            value=value,
            locally_evaluated=local,
            payload=self.get_flag_payload(key),
            request_id=self._request_id,
            evaluated_at=None if local else self._evaluated_at,
            reason="Evaluated locally" if local else (found.reason if found else None),
            flag_id=found.flag_id if found else None,
            version=found.version if found else None,
            has_experiment=found.has_experiment if found else None,
            errors=errors,
            minimal=self._minimal,
        )

    # ------------------------------------------------------------ copies

    def _copy(self, keys: Iterable[str]) -> FeatureFlagEvaluations:
        copy = FeatureFlagEvaluations(
            self._client,
            self._distinct_id,
            flags={k: self._flags[k] for k in keys if k in self._flags},
            groups=self._groups,
            disable_geoip=self._disable_geoip,
            request_id=self._request_id,
            evaluated_at=self._evaluated_at,
            errors=self._errors,
            minimal=self._minimal,
        )
        return copy

    def only_accessed(self) -> FeatureFlagEvaluations:
        """A copy holding only the flags read with ``is_enabled``/``get_flag`` so far."""
        return self._copy([k for k in self._flags if k in self._accessed])

    def only(self, keys: Iterable[str]) -> FeatureFlagEvaluations:
        """A copy holding only ``keys`` (unknown keys are dropped with a warning)."""
        wanted = list(keys)
        unknown = [k for k in wanted if k not in self._flags]
        if unknown:
            logger.warning("only(): unknown flag keys dropped: %s", ", ".join(unknown))
        return self._copy(k for k in wanted if k in self._flags)

    # ------------------------------------------------------------ capture(flags=...)

    def event_properties(self) -> dict[str, Any]:
        """``$feature/<key>`` for every flag and the sorted ``$active_feature_flags``."""
        props: dict[str, Any] = {}
        active = []
        for key, flag in self._flags.items():
            if flag.failed:
                continue
            value = flag.value if flag.value is not None else False
            props[f"$feature/{key}"] = value
            if value is not False:
                active.append(key)
        if active:
            props["$active_feature_flags"] = sorted(active)
        return props

    def __repr__(self) -> str:
        return f"FeatureFlagEvaluations(distinct_id={self._distinct_id!r}, keys={self.keys!r})"


def with_reason(flag: Evaluated, reason: str) -> Evaluated:
    return replace(flag, reason=reason)
