"""``$feature_flag_called``: the properties, minimal mode and de-duplication (spec §7.1, §7.2)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DISTINCT_IDS = 50_000

MINIMAL_ALLOWLIST = frozenset({
    "$feature_flag", "$feature_flag_response", "$feature_flag_has_experiment",
    "$feature_flag_id", "$feature_flag_version", "$feature_flag_reason",
    "$feature_flag_request_id", "$feature_flag_evaluated_at", "$feature_flag_error",
    "locally_evaluated", "$groups", "$process_person_profile", "$session_id", "$lib",
    "$lib_version", "$is_server", "$geoip_disable", "$os", "$os_version", "$os_distro",
    "$python_runtime", "$python_version",
})


@dataclass
class FlagCall:
    """Everything known about one flag read, from which the event is built."""

    key: str
    value: Any
    locally_evaluated: bool
    payload: Any = None
    request_id: str | None = None
    evaluated_at: int | None = None
    reason: str | None = None
    flag_id: int | None = None
    version: int | None = None
    has_experiment: bool | None = None
    errors: list[str] = field(default_factory=list)
    minimal: bool = False

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "$feature_flag": self.key,
            "$feature_flag_response": self.value,
            f"$feature/{self.key}": self.value,
            "locally_evaluated": self.locally_evaluated,
        }
        if self.payload is not None:
            props["$feature_flag_payload"] = self.payload
        if self.request_id is not None:
            props["$feature_flag_request_id"] = self.request_id
        if self.evaluated_at is not None:
            props["$feature_flag_evaluated_at"] = self.evaluated_at
        if self.reason:
            props["$feature_flag_reason"] = self.reason
        if self.flag_id:
            props["$feature_flag_id"] = self.flag_id
        if self.version:
            props["$feature_flag_version"] = self.version
        if isinstance(self.has_experiment, bool):
            props["$feature_flag_has_experiment"] = self.has_experiment
        if self.errors:
            props["$feature_flag_error"] = ",".join(dict.fromkeys(self.errors))
        return props

    @property
    def use_minimal(self) -> bool:
        return self.minimal and self.has_experiment is False


def groups_key(groups: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (groups or {}).items()))


class CalledTracker:
    """Remembers which (flag, response, groups) each distinct id was already reported for."""

    def __init__(self, limit: int = MAX_DISTINCT_IDS) -> None:
        self.limit = limit
        self._seen: OrderedDict[Any, set[tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, distinct_id: Any, key: str, value: Any, groups: Any) -> bool:
        """Record the read; ``True`` only the first time this tuple is seen for the id."""
        entry = (key, _hashable(value), groups_key(groups))
        with self._lock:
            seen = self._seen.get(distinct_id)
            if seen is None:
                if len(self._seen) >= self.limit:
                    self._seen.popitem(last=False)
                seen = self._seen[distinct_id] = set()
            if entry in seen:
                return False
            seen.add(entry)
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)
