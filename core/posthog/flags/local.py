"""Local feature-flag evaluation over an immutable, compiled snapshot of definitions (spec §6).

    definitions = FlagDefinitions.compile(body_of_flags_definitions_endpoint)
    result = definitions.evaluate("beta", "user-1", person_properties={"plan": "pro"})
    if result.inconclusive is None: ...   # decided locally: result.value
    else: ...                              # ask the server (result.inconclusive says why)

Compilation never raises and evaluation never raises: a definition (or one filter of
it) that cannot be handled locally makes only that flag inconclusive, and the reason
is logged once on the ``posthog`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from posthog.flags._base import EvalContext, log_once, logger
from posthog.flags.cohorts import FilterCompiler
from posthog.flags.compiled import CompiledFlag, compile_flag
from posthog.flags.errors import (
    InconclusiveMatchError,
    RequiresServerEvaluation,
    UnresolvedFlagReason,
)
from posthog.flags.hashing import hash_value, holdout_hash
from posthog.flags.operators import match_property
from posthog.flags.result import LocalResult, payload_lookup

__all__ = [
    "FlagDefinitions",
    "InconclusiveMatchError",
    "LocalResult",
    "RequiresServerEvaluation",
    "UnresolvedFlagReason",
    "hash_value",
    "holdout_hash",
    "match_property",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _not_found(key: str) -> LocalResult:
    return LocalResult(key, None, None, False, None, "Flag not found", None, None, None, None)


def _failed(flag: CompiledFlag, exc: BaseException) -> LocalResult:
    log_once(("evaluation-error", flag.key, flag.version, type(exc).__name__), logging.WARNING,
             "unexpected error evaluating feature flag %r locally (%r): the server decides",
             flag.key, exc)
    return LocalResult(
        flag.key, None, UnresolvedFlagReason.UNSUPPORTED_DEFINITION, True, None,
        f"Local evaluation failed: {exc!r}", None, flag.flag_id, flag.version,
        flag.has_experiment, flag.payloads, error=True,
    )


class FlagDefinitions:
    """An immutable compiled snapshot of ``/flags/definitions``; safe to share across threads."""

    __slots__ = ("_compiled", "_inject_distinct_id", "by_key", "cohorts", "flags",
                 "group_type_mapping", "minimal_flag_called_events", "property_matching_version",
                 "unresolvable")

    flags: list[dict[str, Any]]
    by_key: Mapping[str, dict[str, Any]]
    group_type_mapping: Mapping[str, str]
    cohorts: Mapping[str, Any]
    minimal_flag_called_events: bool
    property_matching_version: int
    unresolvable: Mapping[str, UnresolvedFlagReason]
    _compiled: dict[str, CompiledFlag]
    _inject_distinct_id: bool

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FlagDefinitions is immutable")

    @classmethod
    def empty(cls) -> FlagDefinitions:
        return cls.compile({})

    @classmethod
    def compile(cls, data: Mapping[str, Any]) -> FlagDefinitions:
        """Compile a definitions body (``flags``, ``group_type_mapping``, ``cohorts``, …)."""
        self = object.__new__(cls)
        setattr_ = object.__setattr__
        if not isinstance(data, Mapping):
            logger.warning("flag definitions are not an object; no flags loaded")
            data = {}
        raw_flags = data.get("flags")
        if raw_flags is None:
            raw_flags = []
        if not isinstance(raw_flags, list):
            logger.warning("flag definitions: 'flags' is not a list; no flags loaded")
            raw_flags = []
        mapping = data.get("group_type_mapping")
        if not isinstance(mapping, Mapping):
            mapping = {}
        cohorts = data.get("cohorts")
        if not isinstance(cohorts, Mapping):
            cohorts = {}
        version = data.get("property_matching_version")
        if isinstance(version, bool) or not isinstance(version, int):
            version = 1

        compiler = FilterCompiler(cohorts, version)
        flags: list[dict[str, Any]] = []
        by_key: dict[str, dict[str, Any]] = {}
        compiled: dict[str, CompiledFlag] = {}
        for raw in raw_flags:
            key = raw.get("key") if isinstance(raw, dict) else None
            if not isinstance(key, str):
                log_once(("no-key", repr(raw)[:200]), logging.WARNING,
                         "ignoring a flag definition without a string key: %.200r", raw)
                continue
            flags.append(raw)
            by_key[key] = raw
            compiled[key] = compile_flag(key, raw, mapping, compiler)
        for owner, dependency in compiler.dependencies:
            problem = dependency.link(compiled)
            if problem is not None and owner in compiled:
                compiled[owner].problems.append(problem)

        unresolvable: dict[str, UnresolvedFlagReason] = {}
        for key, flag in compiled.items():
            static = flag.static
            if static is not None and static.inconclusive is not None:
                unresolvable[key] = static.inconclusive
                if static.inconclusive is UnresolvedFlagReason.EXPERIENCE_CONTINUITY:
                    log_once(("continuity", key, flag.version), logging.INFO,
                             "feature flag %r uses experience continuity: it is always "
                             "evaluated by the server", key)
            for problem in flag.problems:
                log_once(("problem", key, flag.version, problem), logging.WARNING,
                         "feature flag %r: %s; the server evaluates what cannot be decided "
                         "locally", key, problem)

        setattr_(self, "flags", flags)
        setattr_(self, "by_key", MappingProxyType(by_key))
        setattr_(self, "group_type_mapping", MappingProxyType(dict(mapping)))
        setattr_(self, "cohorts", MappingProxyType(dict(cohorts)))
        setattr_(self, "minimal_flag_called_events",
                 data.get("minimal_flag_called_events") is True)
        setattr_(self, "property_matching_version", version)
        setattr_(self, "unresolvable", MappingProxyType(unresolvable))
        setattr_(self, "_compiled", compiled)
        setattr_(self, "_inject_distinct_id", compiler.uses_distinct_id)
        return self

    def __len__(self) -> int:
        return len(self._compiled)

    def __contains__(self, key: object) -> bool:
        return key in self._compiled

    def __repr__(self) -> str:
        return f"<FlagDefinitions {len(self._compiled)} flags>"

    # -- evaluation --------------------------------------------------------------------

    def _context(
        self,
        distinct_id: Any,
        groups: Mapping[str, Any] | None,
        person_properties: Mapping[str, Any] | None,
        group_properties: Mapping[str, Mapping[str, Any]] | None,
        device_id: str | None,
        now: datetime | None,
    ) -> EvalContext:
        person: Mapping[str, Any]
        if person_properties is None:
            person = {"distinct_id": distinct_id} if self._inject_distinct_id else _EMPTY
        elif not self._inject_distinct_id or "distinct_id" in person_properties:
            person = person_properties
        else:
            person = {"distinct_id": distinct_id, **person_properties}
        return EvalContext(
            distinct_id, device_id, groups or _EMPTY, person, group_properties or _EMPTY, now
        )

    def evaluate(
        self,
        key: str,
        distinct_id: str,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        device_id: str | None = None,
        now: datetime | None = None,
    ) -> LocalResult:
        """Evaluate one flag; ``now`` (aware UTC) fixes the clock for relative dates."""
        flag = self._compiled.get(key)
        if flag is None:
            return _not_found(key)
        ctx = self._context(distinct_id, groups, person_properties, group_properties,
                            device_id, now)
        try:
            return flag.evaluate(ctx)
        except Exception as exc:
            return _failed(flag, exc)

    def evaluate_all(
        self,
        distinct_id: str,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        device_id: str | None = None,
        keys: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> dict[str, LocalResult]:
        """Evaluate every flag (or ``keys``; unknown keys come back with ``found=False``)."""
        ctx = self._context(distinct_id, groups, person_properties, group_properties,
                            device_id, now)
        compiled = self._compiled
        out: dict[str, LocalResult] = {}
        if keys is None:
            flags: Iterable[CompiledFlag] = compiled.values()
        else:
            wanted: list[CompiledFlag] = []
            for key in keys:
                flag = compiled.get(key)
                if flag is None:
                    out[key] = _not_found(key)
                else:
                    wanted.append(flag)
            flags = wanted
        for flag in flags:
            ctx.dep_cache = None
            try:
                out[flag.key] = flag.evaluate(ctx)
            except Exception as exc:
                out[flag.key] = _failed(flag, exc)
        return out

    def payload_for(self, key: str, value: object) -> Any:
        """The stored payload of flag ``key`` for ``value`` (``match_value``)."""
        flag = self._compiled.get(key)
        lookup = payload_lookup(value)
        if flag is None or flag.payloads is None or lookup is None:
            return None
        return flag.payloads.get(lookup)
