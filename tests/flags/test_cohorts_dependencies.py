"""Cohorts, property groups and flag dependencies (spec §6.9); behaviour 40."""

from __future__ import annotations

from typing import Any

import pytest

from posthog.flags.compiled import CompiledFlag
from posthog.flags.errors import UnresolvedFlagReason as R
from posthog.flags.local import FlagDefinitions
from tests.flags.conftest import compile_defs, flag, prop


def cohort_filter(cohort_id: Any = 1, operator: str | None = "in", **extra: Any) -> dict[str, Any]:
    out = {"key": "id", "type": "cohort", "value": cohort_id, **extra}
    if operator is not None:
        out["operator"] = operator
    return out


def group(kind: str, *values: Any) -> dict[str, Any]:
    return {"type": kind, "values": list(values)}


def cohort_flag(cohorts: dict[str, Any], *filters: dict[str, Any]) -> FlagDefinitions:
    f = flag("f", [{"properties": list(filters) or [cohort_filter()], "rollout_percentage": 100}])
    return compile_defs(f, cohorts=cohorts)


def outcome(defs: FlagDefinitions, props: dict[str, Any]) -> bool | str | None:
    result = defs.evaluate("f", "u", person_properties=props)
    return result.inconclusive.value if result.inconclusive else result.value


PRO = prop("plan", "exact", "pro")
GB = prop("country", "exact", "GB")


class TestCohorts:
    def test_nested_and_or(self) -> None:
        cohorts = {"1": group("OR", group("AND", PRO, GB), group("AND", prop("age", "gt", 60)))}
        defs = cohort_flag(cohorts)
        assert outcome(defs, {"plan": "pro", "country": "GB", "age": 1}) is True
        assert outcome(defs, {"plan": "pro", "country": "US", "age": 61}) is True
        assert outcome(defs, {"plan": "pro", "country": "US", "age": 1}) is False
        # OR: one branch inconclusive, the other false → inconclusive.
        assert outcome(defs, {"plan": "pro", "country": "US"}) == "missing_context"
        # OR: one branch true decides even if another is inconclusive.
        assert outcome(defs, {"plan": "pro", "country": "GB"}) is True

    def test_and_false_decides_over_inconclusive(self) -> None:
        defs = cohort_flag({"1": group("AND", PRO, GB)})
        assert outcome(defs, {"plan": "free"}) is False
        assert outcome(defs, {"plan": "pro"}) == "missing_context"

    def test_negation_flips_filters_not_groups(self) -> None:
        negated = dict(PRO, negation=True)
        defs = cohort_flag({"1": group("AND", negated, GB)})
        assert outcome(defs, {"plan": "free", "country": "GB"}) is True
        assert outcome(defs, {"plan": "pro", "country": "GB"}) is False
        assert outcome(defs, {"country": "GB"}) == "missing_context"  # ¬inconclusive
        nested = dict(group("AND", PRO), negation=True)  # ignored on a nested group
        defs = cohort_flag({"1": group("AND", nested)})
        assert outcome(defs, {"plan": "pro"}) is True

    def test_not_in_and_exact_operators(self) -> None:
        cohorts = {"1": group("AND", PRO)}
        assert outcome(cohort_flag(cohorts, cohort_filter(1, "not_in")), {"plan": "pro"}) is False
        assert outcome(cohort_flag(cohorts, cohort_filter(1, "not_in")), {"plan": "x"}) is True
        assert outcome(cohort_flag(cohorts, cohort_filter("1", "exact")), {"plan": "pro"}) is True
        assert outcome(cohort_flag(cohorts, cohort_filter(1, None)), {"plan": "pro"}) is True
        negated_not_in = cohort_filter(1, "not_in", negation=True)
        outer = {"2": group("AND", negated_not_in), **cohorts}
        assert outcome(cohort_flag(outer, cohort_filter(2)), {"plan": "pro"}) is True
        unsupported = cohort_flag(cohorts, cohort_filter(1, "gt"))
        assert outcome(unsupported, {"plan": "pro"}) == "unsupported_definition"

    def test_empty_groups_are_true(self) -> None:
        assert outcome(cohort_flag({"1": {}}), {}) is True
        assert outcome(cohort_flag({"1": group("OR")}), {}) is True
        assert outcome(cohort_flag({"1": group("AND", {})}), {}) is True

    def test_missing_cohort_requires_server(self) -> None:
        defs = cohort_flag({}, cohort_filter(5))
        result = defs.evaluate("f", "u")
        assert result.value is None and result.inconclusive is R.UNSUPPORTED_DEFINITION

    def test_behaviour_40_requires_server_is_not_short_circuited(self) -> None:
        false_prop = prop("plan", "exact", "pro")
        cohorts = {"1": group("AND", false_prop, cohort_filter(404))}
        # A later condition that matches must not be used: the flag goes to the server.
        f = flag("f", [{"properties": [cohort_filter(1)], "rollout_percentage": 100},
                       {"properties": [], "rollout_percentage": 100}])
        defs = compile_defs(f, cohorts=cohorts)
        result = defs.evaluate("f", "u", person_properties={"plan": "free"})
        assert result.value is None and result.inconclusive is not None
        # The same tree without the missing cohort is a local False (so condition 2 matches).
        ok = compile_defs(f, cohorts={"1": group("AND", false_prop)})
        assert ok.evaluate("f", "u", person_properties={"plan": "free"}).condition_index == 1

    @pytest.mark.parametrize("tree", [
        {"type": "XOR", "values": []}, {"values": [PRO]}, {"type": "AND"},
        {"type": "AND", "values": "x"}, [PRO], "cohort", group("AND", "not-an-object"),
        group("AND", {"type": "OR", "values": None}),
    ])
    def test_malformed_groups_require_server(self, tree: Any) -> None:
        f = flag("f", [{"properties": [cohort_filter(1)], "rollout_percentage": 100},
                       {"properties": [], "rollout_percentage": 100}])
        result = compile_defs(f, cohorts={"1": tree}).evaluate("f", "u")
        assert result.value is None and result.inconclusive is R.UNSUPPORTED_DEFINITION

    def test_cohort_referencing_cohorts(self) -> None:
        cohorts = {"1": group("AND", cohort_filter(2), GB), "2": group("OR", PRO)}
        defs = cohort_flag(cohorts)
        assert outcome(defs, {"plan": "pro", "country": "GB"}) is True
        assert outcome(defs, {"plan": "free", "country": "GB"}) is False

    def test_self_referencing_cohort_does_not_loop(self) -> None:
        cohorts = {"1": group("AND", cohort_filter(2)), "2": group("AND", cohort_filter(1))}
        assert outcome(cohort_flag(cohorts), {}) == "unsupported_definition"

    def test_cohort_trees_are_compiled_once_per_snapshot(self) -> None:
        cohorts = {"1": group("AND", PRO)}
        f1 = flag("a", [{"properties": [cohort_filter(1)], "rollout_percentage": 100}])
        f2 = flag("b", [{"properties": [cohort_filter(1, "not_in")], "rollout_percentage": 100}])
        defs = compile_defs(f1, f2, cohorts=cohorts)
        results = defs.evaluate_all("u", person_properties={"plan": "pro"})
        assert (results["a"].value, results["b"].value) == (True, False)


def dep(key: str, value: Any = True, chain: Any = None, **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "flag", "operator": "flag_evaluates_to", "value": value,
            "dependency_chain": [key] if chain is None else chain, **extra}


def dependent(*filters: dict[str, Any], key: str = "child") -> dict[str, Any]:
    return flag(key, [{"properties": list(filters), "rollout_percentage": 100}])


MV = {"variants": [{"key": "red", "rollout_percentage": 100}]}


class TestFlagDependencies:
    def test_boolean_and_variant_matching(self) -> None:
        defs = compile_defs(flag("on"), flag("off", [], flag_id=2),
                            flag("colour", multivariate=MV),
                            dependent(dep("on"), key="a"), dependent(dep("off", False), key="b"),
                            dependent(dep("off"), key="c"), dependent(dep("colour"), key="d"),
                            dependent(dep("colour", "red"), key="e"),
                            dependent(dep("colour", "blue"), key="f"),
                            dependent(dep("colour", False), key="g"),
                            dependent(dep("on", "true"), key="h"))
        results = defs.evaluate_all("u")
        expected = {"a": True, "b": True, "c": False, "d": True, "e": True, "f": False,
                    "g": False, "h": False}
        assert {k: results[k].value for k in expected} == expected

    def test_dependency_uses_callers_properties_and_bucketing(self) -> None:
        parent = flag("simple-flag", [{"properties": [prop("plan", "exact", "pro")],
                                       "rollout_percentage": 50}])
        defs = compile_defs(parent, dependent(dep("simple-flag")))
        assert defs.evaluate("child", "some-distinct-id",
                             person_properties={"plan": "pro"}).value is True
        assert defs.evaluate("child", "test-id-1", person_properties={"plan": "pro"}).value is False
        assert defs.evaluate("child", "some-distinct-id",
                             person_properties={"plan": "free"}).value is False

    def test_dependency_inside_a_group_flag_is_bucketed_by_the_group_key(self) -> None:
        parent = flag("simple-flag", [{"properties": [], "rollout_percentage": 50}],
                      aggregation_group_type_index=0)
        child = flag("child", [{"properties": [dep("simple-flag")], "rollout_percentage": 100}],
                     aggregation_group_type_index=0)
        defs = compile_defs(parent, child, group_type_mapping={"0": "company"})
        assert defs.evaluate("child", "test-id-1",
                             groups={"company": "some-distinct-id"}).value is True
        assert defs.evaluate("child", "some-distinct-id",
                             groups={"company": "test-id-1"}).value is False

    def test_inactive_and_continuity_dependencies(self) -> None:
        defs = compile_defs(flag("sleepy", active=False), flag("sticky",
                            ensure_experience_continuity=True),
                            dependent(dep("sleepy", False), key="a"),
                            dependent(dep("sticky"), key="b"))
        assert defs.evaluate("a", "u").value is True
        sticky = defs.evaluate("b", "u")
        assert sticky.value is None and sticky.inconclusive is R.UNRESOLVED_DEPENDENCY

    @pytest.mark.parametrize("filter_", [
        dep("ghost"),  # no definition
        dep("parent", chain=[]),  # circular (the server sends an empty chain)
        dep("parent", chain=None) | {"dependency_chain": None},
        dep("parent", chain="parent"),
        dep("parent", chain=["ghost", "parent"]),
        dep("parent", chain=["other"]),  # chain does not contain the key
    ])
    def test_unresolvable_dependencies_are_inconclusive(self, filter_: dict[str, Any]) -> None:
        defs = compile_defs(flag("parent"), flag("other"), dependent(filter_))
        result = defs.evaluate("child", "u")
        assert result.value is None and result.inconclusive is R.UNRESOLVED_DEPENDENCY

    @pytest.mark.parametrize("filter_", [
        dep("parent", operator="exact"), dep("parent", value=None), dep("parent") | {"key": None},
    ])
    def test_malformed_dependency_filters_are_false(self, filter_: dict[str, Any]) -> None:
        defs = compile_defs(flag("parent"), dependent(filter_),
                            flag("fallback", [{"properties": [filter_]},
                                              {"properties": [], "rollout_percentage": 100}]))
        result = defs.evaluate("child", "u")
        assert (result.value, result.inconclusive) == (False, None)
        assert defs.evaluate("fallback", "u").condition_index == 1

    def test_circular_definitions_do_not_recurse_forever(self) -> None:
        a = flag("a", [{"properties": [dep("b", chain=["a", "b"])], "rollout_percentage": 100}])
        b = flag("b", [{"properties": [dep("a", chain=["b", "a"])], "rollout_percentage": 100}])
        defs = compile_defs(a, b)
        assert defs.evaluate("a", "u").inconclusive is R.UNRESOLVED_DEPENDENCY
        assert defs.evaluate_all("u")["b"].inconclusive is R.UNRESOLVED_DEPENDENCY

    def test_chain_flags_are_evaluated_once_per_top_level_evaluation(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []
        original = CompiledFlag.decide

        def counting(self: CompiledFlag, *args: Any) -> Any:
            calls.append(self.key)
            return original(self, *args)

        monkeypatch.setattr(CompiledFlag, "decide", counting)
        # child needs base twice (directly and through mid): base is decided once.
        defs = compile_defs(flag("base"), flag("mid", [{"properties": [dep("base")]}]),
                            dependent(dep("base"), dep("mid", chain=["base", "mid"])))
        assert defs.evaluate("child", "u").value is True
        assert sorted(calls) == ["base", "child", "mid"]
        calls.clear()
        defs.evaluate_all("u", keys=["child", "mid"])
        assert sorted(calls) == ["base", "base", "child", "mid", "mid"]  # per top-level flag

    def test_dependency_on_a_requires_server_flag_aborts(self) -> None:
        server = flag("server", [{"properties": [{"key": "id", "type": "cohort", "value": 9}]}])
        child = flag("child", [{"properties": [dep("server")]},
                               {"properties": [], "rollout_percentage": 100}])
        result = compile_defs(server, child).evaluate("child", "u")
        assert result.value is None and result.inconclusive is R.UNSUPPORTED_DEFINITION

    def test_negated_dependency_in_a_cohort(self) -> None:
        cohorts = {"1": group("AND", dep("parent", negation=True))}
        f = flag("f", [{"properties": [cohort_filter(1)], "rollout_percentage": 100}])
        defs = compile_defs(flag("parent", []), f, cohorts=cohorts)
        assert defs.evaluate("f", "u").value is True

    def test_holdout_dependency_is_a_variant_string(self) -> None:
        held = flag("held", holdout={"id": 3, "exclusion_percentage": 100})
        defs = compile_defs(held, dependent(dep("held"), key="a"),
                            dependent(dep("held", "holdout-3"), key="b"),
                            dependent(dep("held", False), key="c"))
        results = defs.evaluate_all("u")
        assert [results[k].value for k in "abc"] == [True, True, False]
