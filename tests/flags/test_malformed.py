"""Malformed definitions: only the affected flag (or filter) is inconclusive, logged once."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posthog.flags.errors import UnresolvedFlagReason as R
from posthog.flags.local import FlagDefinitions
from tests.flags.conftest import compile_defs, flag, prop

GOOD = flag("good", [{"properties": [prop("plan", "exact", "pro")], "rollout_percentage": 100}])
C = {"rollout_percentage": 100}

MALFORMED: dict[str, Any] = {
    "no-filters": {"key": "no-filters", "active": True},
    "filters-list": {"key": "filters-list", "active": True, "filters": []},
    "groups-dict": flag("groups-dict") | {"filters": {"groups": {"a": 1}}},
    "condition-str": flag("condition-str", ["everyone"]),
    "properties-str": flag("properties-str", [{"properties": "plan=pro", **C}]),
    "property-str": flag("property-str", [{"properties": ["plan"], **C}]),
    "property-no-key": flag("property-no-key", [{"properties": [{"value": "x"}], **C}]),
    "unknown-operator": flag("unknown-operator", [{"properties": [prop("a", "near", 1)], **C}]),
    "lookbehind": flag("lookbehind", [{"properties": [prop("a", "regex", "(?<=x)y")], **C}]),
    "bad-date": flag("bad-date", [{"properties": [prop("a", "is_date_before", "soon")], **C}]),
    "bad-semver": flag("bad-semver", [{"properties": [prop("a", "semver_gt", "one")], **C}]),
    "bad-number": flag("bad-number", [{"properties": [prop("a", "gt", "ten")], **C}]),
    "rollout-str": flag("rollout-str", [{"properties": [], "rollout_percentage": "50"}]),
    "rollout-bool": flag("rollout-bool", [{"properties": [], "rollout_percentage": True}]),
    "variant-no-key": flag("variant-no-key", multivariate={"variants": [
        {"rollout_percentage": 100}]}),
    "variant-pct-str": flag("variant-pct-str", multivariate={"variants": [
        {"key": "a", "rollout_percentage": "100"}]}),
    "variants-dict": flag("variants-dict", multivariate={"variants": {"a": 100}}),
    "holdout-list": flag("holdout-list", holdout=[1, 10]),
    "missing-cohort": flag("missing-cohort", [{"properties": [
        {"key": "id", "type": "cohort", "value": 77}], **C}]),
    "bad-group-index": flag("bad-group-index", aggregation_group_type_index=5),
}
EXPECTED_REASON = {
    "missing-cohort": R.UNSUPPORTED_DEFINITION,
}


def snapshot() -> FlagDefinitions:
    return compile_defs(GOOD, *MALFORMED.values())


def test_each_malformed_definition_only_affects_itself() -> None:
    defs = snapshot()
    results = defs.evaluate_all("u", person_properties={"plan": "pro", "a": "x"})
    assert results["good"].value is True
    for key in MALFORMED:
        assert results[key].value is None, key
        assert results[key].inconclusive is EXPECTED_REASON.get(key, R.UNSUPPORTED_DEFINITION), key
        assert results[key].found
        assert defs.evaluate(key, "u", person_properties={"a": "x"}) == results[key]


def test_problems_are_logged_once_per_definition(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="posthog"):
        defs = snapshot()
        snapshot()  # the next poll brings the same definitions
        for _ in range(3):
            defs.evaluate_all("u", person_properties={"a": "x"})
    logged = [r.getMessage() for r in caplog.records]
    for key in MALFORMED:
        mentions = [m for m in logged if f"feature flag {key!r}" in m]
        assert len(mentions) == 1, (key, mentions)
    assert not [m for m in logged if "'good'" in m]
    assert all(m.startswith("[PostHog] ") for m in logged)


def test_a_changed_definition_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    bad = flag("x", [{"properties": [prop("a", "near", 1)], **C}], version=1)
    with caplog.at_level(logging.WARNING, logger="posthog"):
        compile_defs(bad)
        compile_defs(bad | {"version": 2})
    assert len([r for r in caplog.records if "'x'" in r.getMessage()]) == 2


def test_filter_level_problem_leaves_other_conditions_usable() -> None:
    f = flag("f", [{"properties": [prop("a", "near", 1)], **C},
                   {"properties": [prop("plan", "exact", "pro")], **C}])
    defs = compile_defs(f)
    assert defs.evaluate("f", "u", person_properties={"plan": "pro"}).value is True
    assert defs.evaluate("f", "u", person_properties={"plan": "x"}).inconclusive is (
        R.UNSUPPORTED_DEFINITION)
    assert defs.unresolvable == {}
    bad_rollout = flag("g", [{"properties": [prop("plan", "exact", "x")],
                              "rollout_percentage": "5"}, C])
    assert compile_defs(bad_rollout).evaluate("g", "u", person_properties={"plan": "y"}).value


def test_payloads_of_the_wrong_type_are_ignored() -> None:
    defs = compile_defs(flag("f", payloads=["x"]))
    result = defs.evaluate("f", "u")
    assert (result.value, result.payload) == (True, None)


@pytest.mark.parametrize("data", [
    None, [], {"flags": "x"}, {"flags": {"a": 1}}, {"flags": [None, 1, "x", {"no": "key"},
                                                              {"key": 5}]},
    {"flags": [GOOD], "group_type_mapping": None, "cohorts": [1], "property_matching_version":
     "2", "minimal_flag_called_events": "yes"},
])
def test_malformed_bodies_compile(data: Any) -> None:
    defs = FlagDefinitions.compile(data)
    assert set(defs.by_key) <= {"good"}
    assert defs.property_matching_version == 1 and defs.minimal_flag_called_events is False
    if defs.by_key:
        assert defs.evaluate("good", "u", person_properties={"plan": "pro"}).value is True


def test_duplicate_keys_last_wins() -> None:
    defs = compile_defs(flag("f", active=False), flag("f"))
    assert defs.evaluate("f", "u").value is True and len(defs.flags) == 2


class Exploding:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("boom")


def test_unexpected_errors_during_evaluation_are_inconclusive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    defs = compile_defs(flag("g", [{"rollout_percentage": 50}], aggregation_group_type_index=0),
                        GOOD,
                        group_type_mapping={"0": "company"})
    with caplog.at_level(logging.WARNING, logger="posthog"):
        result = defs.evaluate("g", "u", groups={"company": Exploding()})
        everything = defs.evaluate_all("u", groups={"company": Exploding()},
                                       person_properties={"plan": "pro"})
    assert result.value is None and result.inconclusive is R.UNSUPPORTED_DEFINITION
    assert everything["g"].inconclusive is R.UNSUPPORTED_DEFINITION
    assert everything["good"].value is True
    assert len([r for r in caplog.records if "unexpected error" in r.getMessage()]) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=False, width=32)
    | st.sampled_from(["", "pro", "AND", "OR", "cohort", "flag", "person", "exact", "regex",
                       "1.2.3", "-7d", "2024-01-01", "flag_evaluates_to", "(a+)+", "device_id",
                       "id", "plan", "f0", "f1"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from([
        "key", "value", "operator", "type", "values", "negation", "properties",
        "rollout_percentage", "variant", "groups", "multivariate", "variants", "payloads",
        "holdout", "id", "exclusion_percentage", "aggregation_group_type_index", "active",
        "filters", "dependency_chain", "early_exit", "feature_enrollment",
        "ensure_experience_continuity", "bucketing_identifier"]), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSON, max_size=4), st.dictionaries(st.sampled_from(["1", "2"]), JSON),
       st.dictionaries(st.sampled_from(["plan", "id", "$feature_enrollment/f0"]), JSON))
def test_arbitrary_definitions_never_raise(flags: list[Any], cohorts: dict[str, Any],
                                           props: dict[str, Any]) -> None:
    body = [{"key": f"f{i}", "active": True, **(f if isinstance(f, dict) else {"filters": f})}
            for i, f in enumerate(flags)]
    defs = FlagDefinitions.compile({"flags": body, "cohorts": cohorts,
                                    "group_type_mapping": {"0": "company"}})
    results = defs.evaluate_all("u", person_properties=props, groups={"company": "c"},
                                device_id="d")
    for result in results.values():
        assert result.found
        assert (result.value is None) == (result.inconclusive is not None)
        assert result.value is None or isinstance(result.value, (bool, str))
