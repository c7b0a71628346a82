"""A flag definition compiled for fast evaluation (spec §6.4 to §6.7).

Everything derivable from the definition is worked out in :func:`compile_flag`;
:meth:`CompiledFlag.evaluate` then only looks things up, hashes and runs the
compiled matchers.  Results are immutable and, for a given flag, drawn from a
small finite set (one per condition and value, plus a few fixed outcomes), so they
are built on first use and reused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from hashlib import sha1
from typing import Any

from posthog.flags._base import (
    EXPERIENCE_CONTINUITY,
    MISSING,
    MISSING_CONTEXT,
    UNSUPPORTED,
    EvalContext,
    Matcher,
    Props,
    Undecided,
    log_once,
)
from posthog.flags.cohorts import FilterCompiler
from posthog.flags.hashing import SCALE, hash_text, holdout_hash, read_prefix
from posthog.flags.result import LocalResult, payload_lookup


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Condition:
    """One entry of ``filters.groups``."""

    __slots__ = ("bad_rollout", "group_name", "index", "matchers", "no_group_props",
                 "override", "plain", "results", "static", "threshold")

    def __init__(self, index: int) -> None:
        self.index = index
        self.matchers: tuple[Matcher, ...] = ()
        self.threshold: float | None = None  # rollout / 100; None → everyone
        self.bad_rollout: Undecided | None = None
        self.override: str | None = None
        self.group_name: str | None = None  # mixed targeting: the condition's own group
        self.no_group_props: Undecided | None = None
        self.static: Undecided | None = None  # the condition can never be decided locally
        self.results: dict[object, LocalResult] = {}
        # Neither static nor mixed targeting: the common, fast path.
        self.plain = True


class CompiledFlag:
    """A compiled flag definition; also the target of flag-dependency filters."""

    __slots__ = (
        "conditions",
        "device_bucketing",
        "early_exit",
        "enrollment",
        "enrollment_group",
        "enrollment_key",
        "enrollment_missing",
        "flag_id",
        "group_name",
        "has_experiment",
        "holdout_all",
        "holdout_threshold",
        "holdout_value",
        "is_group",
        "key",
        "missing_device",
        "no_group_result",
        "no_match",
        "payloads",
        "prefix",
        "problems",
        "raw",
        "results",
        "static",
        "static_dependency",
        "undecided_results",
        "variants",
        "version",
        "warned_no_group",
    )

    def __init__(self, key: str, raw: Mapping[str, Any]) -> None:
        self.key = key
        self.raw = raw
        flag_id = raw.get("id")
        self.flag_id: int | None = (
            flag_id if isinstance(flag_id, int) and not isinstance(flag_id, bool) else None
        )
        version = raw.get("version")
        self.version: int | None = (
            version if isinstance(version, int) and not isinstance(version, bool) else None
        )
        has_experiment = raw.get("has_experiment")
        self.has_experiment: bool | None = (
            has_experiment if isinstance(has_experiment, bool) else None
        )
        self.prefix = key + "."
        self.payloads: Mapping[str, Any] | None = None
        self.static: LocalResult | None = None  # a fixed outcome (inactive, unsupported…)
        self.static_dependency: object = None  # that outcome as seen by a dependent flag
        self.is_group = False
        self.group_name: str | None = None
        self.no_group_result: LocalResult | None = None
        self.no_match: LocalResult | None = None
        self.warned_no_group = False
        self.device_bucketing = False
        self.missing_device = Undecided(
            MISSING_CONTEXT, "flag is bucketed by device_id and no device_id was given"
        )
        self.enrollment = False
        self.enrollment_key = f"$feature_enrollment/{key}"
        self.enrollment_missing = Undecided(
            MISSING_CONTEXT, f"person property {self.enrollment_key!r} was not provided"
        )
        self.enrollment_group: Undecided | None = None  # enrollment on a group flag
        self.holdout_value: str | None = None
        self.holdout_threshold = -1.0
        self.holdout_all = False
        self.conditions: tuple[Condition, ...] = ()
        self.early_exit = False
        self.variants: tuple[tuple[float, float, str], ...] = ()
        self.results: dict[object, LocalResult] = {}
        self.undecided_results: dict[Undecided, LocalResult] = {}
        self.problems: list[str] = []

    # -- results -----------------------------------------------------------------------

    def make_result(self, value: bool | str | None, index: int | None, reason: str,
                    inconclusive: Undecided | None = None, error: bool = False) -> LocalResult:
        payloads = self.payloads
        lookup = payload_lookup(value)
        payload = payloads.get(lookup) if payloads is not None and lookup is not None else None
        return LocalResult(
            self.key, value, inconclusive.reason if inconclusive is not None else None, True,
            index, reason, payload, self.flag_id, self.version, self.has_experiment, payloads,
            error,
        )

    def fixed(self, name: str, value: bool | str, reason: str) -> LocalResult:
        result = self.results.get(name)
        if result is None:
            result = self.results[name] = self.make_result(value, None, reason)
        return result

    def undecided(self, why: Undecided) -> LocalResult:
        result = self.undecided_results.get(why)
        if result is None:
            result = self.make_result(None, None, why.message, why)
            if len(self.undecided_results) < 64:
                self.undecided_results[why] = result
        return result

    def matched(self, condition: Condition, value: bool | str) -> LocalResult:
        result = condition.results.get(value)
        if result is None:
            result = condition.results[value] = self.make_result(
                value, condition.index, f"Matched condition set {condition.index + 1}"
            )
        return result

    # -- evaluation --------------------------------------------------------------------

    def evaluate(self, ctx: EvalContext) -> LocalResult:
        """Spec §6.4 for a top-level evaluation."""
        static = self.static
        if static is not None:
            return static
        if self.is_group:
            name = self.group_name
            assert name is not None
            group_key = ctx.groups.get(name, MISSING)
            if group_key is MISSING:
                if not self.warned_no_group:
                    self.warned_no_group = True
                    log_once(("no-group", self.key, self.version, name), logging.WARNING,
                             "feature flag %r is a %r group flag but no %r group was passed: "
                             "evaluating to False", self.key, name, name)
                result = self.no_group_result
                assert result is not None
                return result
            props = ctx.group_properties(name, group_key)
            if props is None:
                props = {"$group_key": group_key}
            bucket: Any = group_key
        else:
            props = ctx.person_props
            if self.device_bucketing:
                bucket = ctx.device_id
                if not bucket:
                    return self.undecided(self.missing_device)
            else:
                bucket = ctx.distinct_id
        outcome = self.decide(props, bucket, ctx)
        if outcome.__class__ is LocalResult:
            return outcome
        assert isinstance(outcome, Undecided)
        return self.undecided(outcome)

    def evaluate_dependency(self, props: Props, bucket: Any, ctx: EvalContext) -> object:
        """This flag as a dependency: the caller's properties and bucketing value."""
        if self.static_dependency is not None:
            return self.static_dependency
        outcome = self.decide(props, bucket, ctx)
        if outcome.__class__ is LocalResult:
            return outcome.value
        return outcome

    def decide(self, props: Props, bucket: Any, ctx: EvalContext) -> LocalResult | Undecided:
        """Feature enrollment, holdout and the conditions (§6.4 steps 5 to 7, §6.5)."""
        if self.enrollment:
            if self.enrollment_group is not None:
                return self.enrollment_group
            enrolled = props.get(self.enrollment_key, MISSING)
            if enrolled is MISSING:
                return self.enrollment_missing
            if enrolled is True or (isinstance(enrolled, str) and enrolled == "true"):
                return self.fixed("enrolled", True, "Feature enrollment: enrolled")
            return self.fixed("not-enrolled", False, "Feature enrollment: not enrolled")
        holdout = self.holdout_value
        if holdout is not None and (
            self.holdout_all or holdout_hash(bucket) <= self.holdout_threshold
        ):
            return self.fixed("holdout", holdout, "Holdout")
        best: Undecided | None = None
        prefix = self.prefix
        for condition in self.conditions:
            cond_props = props
            cond_bucket = bucket
            if not condition.plain:
                static = condition.static
                if static is not None:
                    if best is None or static.rank > best.rank:
                        best = static
                    continue
                name = condition.group_name
                assert name is not None
                group_key = ctx.groups.get(name, MISSING)
                if group_key is MISSING:
                    continue  # mixed targeting, group not passed: no match
                group_props = ctx.group_properties(name, group_key)
                if group_props is None:
                    missing = condition.no_group_props
                    assert missing is not None
                    if best is None or missing.rank > best.rank:
                        best = missing
                    continue
                cond_props = group_props
                cond_bucket = group_key
            first: Undecided | None = None
            worst: Undecided | None = None
            failed = False
            for matcher in condition.matchers:
                r = matcher(cond_props, cond_bucket, ctx)
                if r is True:
                    continue
                if r is False:
                    failed = True
                    break
                assert isinstance(r, Undecided)
                if first is None:
                    first = worst = r
                elif worst is not None and r.rank > worst.rank:
                    worst = r
            if failed:
                continue
            if first is not None:
                if first.server:
                    return first  # RequiresServerEvaluation: the whole flag goes to the server
                assert worst is not None
                if best is None or worst.rank > best.rank:
                    best = worst.soft
                continue
            if condition.bad_rollout is not None:
                if best is None or condition.bad_rollout.rank > best.rank:
                    best = condition.bad_rollout
                continue
            threshold = condition.threshold
            if threshold is not None and (
                (read_prefix(sha1(f"{prefix}{cond_bucket}".encode()).digest())[0] >> 4) / SCALE
                > threshold
            ):
                if self.early_exit:
                    break
                continue
            value: bool | str | None = condition.override
            if value is None:
                value = True
                if self.variants:
                    h = hash_text(f"{prefix}{cond_bucket}variant")
                    for low, high, variant in self.variants:
                        if low <= h < high:
                            value = variant
                            break
            result = condition.results.get(value)
            if result is None:
                result = self.matched(condition, value)
            return result
        if best is not None:
            return best
        result = self.no_match
        if result is None:
            result = self.no_match = self.make_result(False, None, "No matching condition set")
        return result

    def make_static(self, why: Undecided, error: bool = False) -> None:
        """Make the whole flag undecided (it can never be evaluated locally)."""
        self.static = self.make_result(None, None, why.message, why, error)
        self.static_dependency = why


def compile_flag(
    key: str,
    raw: Mapping[str, Any],
    group_type_mapping: Mapping[str, Any],
    compiler: FilterCompiler,
) -> CompiledFlag:
    """Compile one definition; never raises (a broken definition becomes undecided)."""
    flag = CompiledFlag(key, raw)
    compiler.begin_flag(key)
    try:
        _compile(flag, raw, group_type_mapping, compiler)
    except Exception as exc:  # a definition we did not anticipate: only this flag suffers
        message = f"could not compile the definition ({exc!r})"
        compiler.problems.append(message)
        flag.make_static(Undecided(UNSUPPORTED, message), error=True)
    flag.problems.extend(compiler.problems)
    return flag


def _unsupported(flag: CompiledFlag, compiler: FilterCompiler, message: str) -> None:
    compiler.problems.append(message)
    flag.make_static(Undecided(UNSUPPORTED, message))


def _compile(
    flag: CompiledFlag,
    raw: Mapping[str, Any],
    group_type_mapping: Mapping[str, Any],
    compiler: FilterCompiler,
) -> None:
    filters = raw.get("filters")
    if isinstance(filters, Mapping):
        payloads = filters.get("payloads")
        if isinstance(payloads, Mapping):
            flag.payloads = payloads
        elif payloads is not None:
            compiler.problems.append("filters.payloads is not an object; payloads ignored")
    if not raw.get("active"):
        flag.static = flag.fixed("inactive", False, "Flag is inactive")
        flag.static_dependency = False
        return
    if raw.get("ensure_experience_continuity"):
        flag.make_static(Undecided(
            EXPERIENCE_CONTINUITY, "flag uses experience continuity: evaluated by the server"
        ))
        return
    if not isinstance(filters, Mapping):
        _unsupported(flag, compiler, "definition has no filters object")
        return

    index = filters.get("aggregation_group_type_index")
    if index is not None:
        name = group_type_mapping.get(str(index))
        if not isinstance(name, str):
            _unsupported(flag, compiler, f"unknown group type index {index!r}")
            return
        flag.is_group = True
        flag.group_name = name
        flag.no_group_result = flag.make_result(
            False, None, f"Group {name!r} was not passed in groups"
        )
    flag.device_bucketing = (
        raw.get("bucketing_identifier") == "device_id"
        or filters.get("bucketing_identifier") == "device_id"
    )
    if filters.get("feature_enrollment") is True:
        flag.enrollment = True
        if flag.is_group:
            flag.enrollment_group = Undecided(
                UNSUPPORTED, "feature enrollment on a group flag is evaluated by the server"
            )

    holdout = filters.get("holdout")
    if holdout is not None:
        if not isinstance(holdout, Mapping):
            _unsupported(flag, compiler, f"filters.holdout is not an object: {holdout!r}")
            return
        holdout_id = holdout.get("id")
        percentage = holdout.get("exclusion_percentage")
        if holdout_id is not None and percentage is not None:
            pct = _number(percentage)
            if pct is None or pct != pct:
                _unsupported(flag, compiler, f"holdout exclusion_percentage {percentage!r}")
                return
            pct = min(max(pct, 0.0), 100.0)
            flag.holdout_value = f"holdout-{holdout_id}"
            flag.holdout_all = pct == 100.0
            flag.holdout_threshold = pct / 100

    variant_keys: set[str] = set()
    multivariate = filters.get("multivariate")
    if multivariate is not None:
        variants = multivariate.get("variants") if isinstance(multivariate, Mapping) else ()
        if variants is None:
            variants = []
        if not isinstance(variants, list):
            _unsupported(flag, compiler, "filters.multivariate.variants is not a list")
            return
        ranges: list[tuple[float, float, str]] = []
        low = 0.0
        for variant in variants:
            variant_key = variant.get("key") if isinstance(variant, Mapping) else None
            share = variant.get("rollout_percentage") if isinstance(variant, Mapping) else None
            pct = _number(share)
            if not isinstance(variant_key, str) or pct is None:
                _unsupported(flag, compiler, f"malformed variant {variant!r}")
                return
            high = low + share / 100  # type: ignore[operator]
            ranges.append((low, high, variant_key))
            variant_keys.add(variant_key)
            low = high
        flag.variants = tuple(ranges)
    flag.early_exit = filters.get("early_exit") is True

    groups = filters.get("groups")
    if groups is None:
        groups = []
    if not isinstance(groups, list):
        _unsupported(flag, compiler, "filters.groups is not a list")
        return
    flag.conditions = tuple(
        _condition(i, c, index, variant_keys, group_type_mapping, compiler)
        for i, c in enumerate(groups)
    )


def _condition(
    position: int,
    raw: object,
    flag_index: object,
    variant_keys: set[str],
    group_type_mapping: Mapping[str, Any],
    compiler: FilterCompiler,
) -> Condition:
    condition = Condition(position)
    if not isinstance(raw, Mapping):
        message = f"condition {position + 1} is not an object"
        compiler.problems.append(message)
        condition.static = Undecided(UNSUPPORTED, message)
        condition.plain = False
        return condition
    index = raw.get("aggregation_group_type_index")
    if index is not None and index != flag_index:
        name = group_type_mapping.get(str(index))
        if not isinstance(name, str):
            message = f"condition {position + 1}: unknown group type index {index!r}"
            compiler.problems.append(message)
            condition.static = Undecided(UNSUPPORTED, message)
            condition.plain = False
            return condition
        condition.group_name = name
        condition.plain = False
        condition.no_group_props = Undecided(
            MISSING_CONTEXT, f"group properties for {name!r} were not provided"
        )
    properties = raw.get("properties")
    if properties is None:
        properties = []
    if not isinstance(properties, list):
        message = f"condition {position + 1}: properties is not a list"
        compiler.problems.append(message)
        condition.static = Undecided(UNSUPPORTED, message)
        condition.plain = False
        return condition
    condition.matchers = tuple(compiler.condition_filter(p) for p in properties)
    rollout = raw.get("rollout_percentage")
    if rollout is not None:
        pct = _number(rollout)
        if pct is None or pct != pct:
            message = f"condition {position + 1}: rollout_percentage {rollout!r}"
            compiler.problems.append(message)
            condition.bad_rollout = Undecided(UNSUPPORTED, message)
        elif rollout / 100 < 1.0:
            condition.threshold = rollout / 100
    variant = raw.get("variant")
    if isinstance(variant, str) and variant in variant_keys:
        condition.override = variant
    return condition
