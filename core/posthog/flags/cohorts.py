"""Cohort trees, property groups and flag-dependency filters (spec §6.9).

:class:`FilterCompiler` compiles every filter of one definitions snapshot.  Cohorts
are compiled once per snapshot and shared by all flags that use them; flag
dependencies are linked to the compiled flags after all flags are compiled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from posthog.flags._base import (
    MISSING,
    UNRESOLVED_DEPENDENCY,
    DependencyTarget,
    EvalContext,
    Matcher,
    MatchResult,
    Props,
    Undecided,
)
from posthog.flags.operators import FilterProblem, compile_property, unsupported_matcher

_IN_PROGRESS: Final = object()


def _constant(result: bool) -> Matcher:
    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        return result

    return match


def _negated(matcher: Matcher) -> Matcher:
    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        r = matcher(props, bucket, ctx)
        if r is True:
            return False
        if r is False:
            return True
        return r

    return match


def _group(entries: Sequence[Matcher], is_and: bool) -> Matcher:
    """AND/OR over every entry (no short-circuit: a server-only entry always wins)."""

    def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        server: Undecided | None = None
        undecided: Undecided | None = None
        any_true = any_false = False
        for entry in entries:
            r = entry(props, bucket, ctx)
            if r is True:
                any_true = True
            elif r is False:
                any_false = True
            else:
                assert isinstance(r, Undecided)
                if r.server:
                    if server is None:
                        server = r
                elif undecided is None or r.rank > undecided.rank:
                    undecided = r
        if server is not None:
            return server
        if is_and:
            if any_false:
                return False
        elif any_true:
            return True
        if undecided is not None:
            return undecided
        return is_and

    return match


class FlagDependency:
    """A ``type: "flag"`` filter: evaluate the dependency chain, compare the referenced flag."""

    __slots__ = ("chain", "circular", "expected", "key", "missing", "position", "targets",
                 "unresolved")

    def __init__(self, key: str, expected: object, chain: tuple[str, ...]) -> None:
        self.key = key
        self.expected = expected
        self.chain = chain
        self.position = len(chain) - 1 - chain[::-1].index(key) if key in chain else -1
        self.targets: tuple[DependencyTarget, ...] | None = None
        self.missing = Undecided(UNRESOLVED_DEPENDENCY, f"flag dependency {key!r} is not linked")
        self.unresolved = Undecided(
            UNRESOLVED_DEPENDENCY, f"flag dependency {key!r} could not be evaluated locally"
        )
        self.circular = Undecided(UNRESOLVED_DEPENDENCY, f"flag dependency {key!r} is circular")

    def link(self, table: Mapping[str, DependencyTarget]) -> str | None:
        """Resolve the chain to compiled flags; returns a problem description if it cannot."""
        if self.position < 0:
            self.missing = Undecided(
                UNRESOLVED_DEPENDENCY,
                f"dependency chain {list(self.chain)!r} does not contain {self.key!r}",
            )
            return self.missing.message
        targets: list[DependencyTarget] = []
        for key in self.chain:
            target = table.get(key)
            if target is None:
                self.missing = Undecided(
                    UNRESOLVED_DEPENDENCY, f"flag dependency {key!r} has no definition"
                )
                return self.missing.message
            targets.append(target)
        self.targets = tuple(targets)
        return None

    def __call__(self, props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
        targets = self.targets
        if targets is None:
            return self.missing
        cache = ctx.dep_cache
        if cache is None:
            cache = ctx.dep_cache = {}
        for target in targets:
            key = target.key
            value = cache.get(key, MISSING)
            if value is MISSING:
                cache[key] = _IN_PROGRESS
                value = target.evaluate_dependency(props, bucket, ctx)
                cache[key] = value
            elif value is _IN_PROGRESS:
                return self.circular
            if value.__class__ is Undecided:
                assert isinstance(value, Undecided)
                return value if value.server else self.unresolved
        actual = cache[targets[self.position].key]
        expected = self.expected
        if actual.__class__ is str:
            return expected is True or expected == actual
        if actual is True or actual is False:
            return actual is expected
        return False


class FilterCompiler:
    """Compiles the filters of one snapshot, collecting problems for the flag being compiled."""

    def __init__(self, cohorts: Mapping[str, Any], property_matching_version: int) -> None:
        self.cohorts = cohorts
        self.pmv = property_matching_version
        self.problems: list[str] = []
        self.dependencies: list[tuple[str, FlagDependency]] = []
        self.flag_key = ""
        # Does any filter read the "distinct_id" property?  If not, evaluation can skip
        # copying the person properties to inject it (spec §6.4 step 4).
        self.uses_distinct_id = False
        self._cohorts: dict[str, Matcher] = {}
        self._cohort_problems: dict[str, list[str]] = {}
        self._compiling: set[str] = set()

    def begin_flag(self, key: str) -> None:
        self.flag_key = key
        self.problems = []

    # -- entry points ------------------------------------------------------------------

    def condition_filter(self, prop: object) -> Matcher:
        """A filter of a flag condition (``negation`` applies only inside property groups)."""
        if not isinstance(prop, Mapping):
            return self._unsupported(f"filter is not an object: {prop!r}")
        return self._filter(prop)

    def property_group(self, group: object) -> Matcher:
        """``{}`` → true; ``{"type": "AND"|"OR", "values": [...]}``; anything else → server."""
        if not isinstance(group, Mapping):
            return self._server(f"property group is not an object: {group!r}")
        if not group:
            return _constant(True)
        kind = group.get("type")
        values = group.get("values")
        if kind not in ("AND", "OR") or not isinstance(values, list):
            return self._server(f"malformed property group {dict(group)!r}")
        if not values:
            return _constant(True)
        entries = [self._entry(entry) for entry in values]
        return _group(tuple(entries), kind == "AND")

    # -- internals ---------------------------------------------------------------------

    def _unsupported(self, message: str) -> Matcher:
        self.problems.append(message)
        return unsupported_matcher(message)

    def _server(self, message: str) -> Matcher:
        self.problems.append(message)
        return unsupported_matcher(message, server=True)

    def _entry(self, entry: object) -> Matcher:
        if not isinstance(entry, Mapping):
            return self._server(f"property group entry is not an object: {entry!r}")
        if not entry or "values" in entry or entry.get("type") in ("AND", "OR"):
            return self.property_group(entry)  # nested group: negation is ignored
        matcher = self._filter(entry)
        if entry.get("negation"):
            return _negated(matcher)
        return matcher

    def _filter(self, prop: Mapping[str, Any]) -> Matcher:
        kind = prop.get("type")
        if kind == "cohort":
            return self._cohort_filter(prop)
        if kind == "flag":
            return self._flag_filter(prop)
        try:
            matcher = compile_property(prop, self.pmv)
        except FilterProblem as exc:
            return self._unsupported(str(exc))
        if prop.get("key") == "distinct_id":
            self.uses_distinct_id = True
        return matcher

    def _cohort_filter(self, prop: Mapping[str, Any]) -> Matcher:
        value = prop.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return self._server(f"cohort filter with an invalid cohort id {value!r}")
        cohort_id = str(value)
        if cohort_id not in self.cohorts:
            # Static cohorts are not shipped with the definitions: only the server knows.
            return self._server(f"cohort {cohort_id} is not in the definitions")
        operator = prop.get("operator")
        if operator not in (None, "exact", "in", "not_in"):
            return self._unsupported(f"cohort filter with unsupported operator {operator!r}")
        member = self._cohort(cohort_id)
        return _negated(member) if operator == "not_in" else member

    def _cohort(self, cohort_id: str) -> Matcher:
        compiled = self._cohorts.get(cohort_id)
        if compiled is not None:
            self.problems.extend(self._cohort_problems.get(cohort_id, ()))
            return compiled
        if cohort_id in self._compiling:
            return self._server(f"cohort {cohort_id} refers to itself")
        self._compiling.add(cohort_id)
        outer, self.problems = self.problems, []
        try:
            compiled = self.property_group(self.cohorts[cohort_id])
        finally:
            self._compiling.discard(cohort_id)
            inner, self.problems = self.problems, outer
        self._cohorts[cohort_id] = compiled
        self._cohort_problems[cohort_id] = [f"cohort {cohort_id}: {p}" for p in inner]
        self.problems.extend(self._cohort_problems[cohort_id])
        return compiled

    def _flag_filter(self, prop: Mapping[str, Any]) -> Matcher:
        key = prop.get("key")
        expected = prop.get("value")
        if prop.get("operator") != "flag_evaluates_to" or not isinstance(key, str) or (
            expected is None
        ):
            self.problems.append(
                f"flag dependency filter {dict(prop)!r} needs a key, a value and the "
                "flag_evaluates_to operator; it never matches"
            )
            return _constant(False)
        chain = prop.get("dependency_chain")
        if not isinstance(chain, list) or not all(isinstance(k, str) for k in chain):
            return self._inconclusive_dependency(f"flag dependency {key!r} has no usable chain")
        if not chain:
            return self._inconclusive_dependency(f"flag dependency {key!r} is circular")
        dependency = FlagDependency(key, expected, tuple(chain))
        self.dependencies.append((self.flag_key, dependency))
        return dependency

    def _inconclusive_dependency(self, message: str) -> Matcher:
        self.problems.append(message)
        undecided = Undecided(UNRESOLVED_DEPENDENCY, message)

        def match(props: Props, bucket: Any, ctx: EvalContext) -> MatchResult:
            return undecided

        return match

