"""Evaluation order (spec §6.4), condition matching (§6.5), payloads and results."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from posthog.flags.errors import UnresolvedFlagReason as R
from posthog.flags.local import FlagDefinitions
from tests.flags.conftest import compile_defs, flag, prop

COMPANY = {"group_type_mapping": {"0": "company", "1": "project"}}
MISSING_COHORT = {"key": "id", "type": "cohort", "value": 999}


def cond(*props: dict[str, Any], rollout: Any = 100, **extra: Any) -> dict[str, Any]:
    return {"properties": list(props), "rollout_percentage": rollout, **extra}


class TestActiveAndContinuity:
    @pytest.mark.parametrize("active", [False, None, 0, ""])
    def test_inactive_is_false(self, active: Any) -> None:
        f = flag("f", active=active, payloads={"false": '"off"'},
                 ensure_experience_continuity=True)
        result = compile_defs(f).evaluate("f", "u")
        assert (result.value, result.inconclusive, result.reason) == (False, None,
                                                                      "Flag is inactive")
        assert result.payload == '"off"' and result.found and result.condition_index is None

    def test_missing_active_is_inactive(self) -> None:
        f = flag("f")
        del f["active"]
        assert compile_defs(f).evaluate("f", "u").value is False

    def test_behaviour_33_experience_continuity_is_inconclusive(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        f = flag("f", ensure_experience_continuity=True)
        with caplog.at_level(logging.INFO, logger="posthog"):
            defs = compile_defs(f)
            compile_defs(f)  # a later poll: not logged again
        result = defs.evaluate("f", "u")
        assert result.value is None and result.found
        assert result.inconclusive is R.EXPERIENCE_CONTINUITY
        assert defs.unresolvable == {"f": R.EXPERIENCE_CONTINUITY}
        assert len([r for r in caplog.records if "experience continuity" in r.getMessage()]) == 1


class TestGroupFlags:
    def test_behaviour_35_group_not_passed_is_false(self, caplog: pytest.LogCaptureFixture) -> None:
        defs = compile_defs(flag("g", aggregation_group_type_index=0), **COMPANY)
        with caplog.at_level(logging.WARNING, logger="posthog"):
            first = defs.evaluate("g", "u", groups={"project": "p"})
            defs.evaluate("g", "u")
            defs.evaluate_all("u")
        assert first.value is False and first.inconclusive is None and first.found
        assert "company" in first.reason
        assert len([r for r in caplog.records if "group was passed" in r.getMessage()]) == 1

    def test_unknown_group_index_is_unsupported(self) -> None:
        defs = compile_defs(flag("g", aggregation_group_type_index=7), **COMPANY)
        result = defs.evaluate("g", "u", groups={"company": "c"})
        assert result.inconclusive is R.UNSUPPORTED_DEFINITION
        assert defs.unresolvable == {"g": R.UNSUPPORTED_DEFINITION}

    def test_bucketed_by_group_key_with_group_properties(self) -> None:
        # h(beta-feature, user_123) = 0.4088…
        def group_flag(rollout: int) -> FlagDefinitions:
            c = cond(prop("tier", "exact", "gold", type="group"), rollout=rollout)
            return compile_defs(flag("beta-feature", [c], aggregation_group_type_index=0),
                                **COMPANY)

        kwargs: dict[str, Any] = {
            "groups": {"company": "user_123"},
            "group_properties": {"company": {"$group_key": "user_123", "tier": "gold"}},
            "person_properties": {"tier": "silver"},  # not used by a group flag
        }
        assert group_flag(41).evaluate("beta-feature", "someone", **kwargs).value is True
        assert group_flag(40).evaluate("beta-feature", "someone", **kwargs).value is False
        kwargs["group_properties"] = {"company": {"tier": "silver"}}
        assert group_flag(41).evaluate("beta-feature", "someone", **kwargs).value is False

    def test_group_key_injected_when_missing(self) -> None:
        c = cond(prop("$group_key", "exact", "acme", type="group"))
        defs = compile_defs(flag("g", [c], aggregation_group_type_index=0), **COMPANY)
        given = {"company": {"size": 3}}
        result = defs.evaluate("g", "u", groups={"company": "acme"}, group_properties=given)
        assert result.value is True
        assert given == {"company": {"size": 3}}  # the caller's dict is untouched
        # No properties for the group at all: still has $group_key.
        assert defs.evaluate("g", "u", groups={"company": "acme"}).value is True
        c = cond(prop("size", "gt", 1, type="group"))
        defs = compile_defs(flag("g", [c], aggregation_group_type_index=0), **COMPANY)
        missing = defs.evaluate("g", "u", groups={"company": "acme"})
        assert missing.inconclusive is R.MISSING_CONTEXT

    def test_integer_group_keys_are_stringified_for_hashing(self) -> None:
        c = cond(rollout=50)
        defs = compile_defs(flag("k", [c], aggregation_group_type_index=0), **COMPANY)
        for key in range(20):
            as_int = defs.evaluate("k", "u", groups={"company": key}).value
            as_str = defs.evaluate("k", "u", groups={"company": str(key)}).value
            assert as_int is as_str


class TestPersonContext:
    def test_distinct_id_is_injected_without_mutating(self) -> None:
        defs = compile_defs(flag("f", [cond(prop("distinct_id", "exact", "u1"))]))
        props = {"plan": "pro"}
        assert defs.evaluate("f", "u1", person_properties=props).value is True
        assert defs.evaluate("f", "u1").value is True
        assert props == {"plan": "pro"}
        # A caller-provided distinct_id property wins (setdefault).
        assert defs.evaluate("f", "u1", person_properties={"distinct_id": "x"}).value is False
        assert defs.evaluate_all("u1")["f"].value is True

    def test_device_id_bucketing(self) -> None:
        # h(simple-flag, some-distinct-id) = 0.48, h(simple-flag, test-id-1) = 0.98.
        for where in ("flag", "filters"):
            f = flag("simple-flag", [cond(rollout=50)])
            target = f if where == "flag" else f["filters"]
            target["bucketing_identifier"] = "device_id"
            defs = compile_defs(f)
            by_device = defs.evaluate("simple-flag", "test-id-1", device_id="some-distinct-id")
            assert by_device.value is True
            assert defs.evaluate("simple-flag", "some-distinct-id",
                                 device_id="test-id-1").value is False
            missing = defs.evaluate("simple-flag", "some-distinct-id")
            assert missing.value is None and missing.inconclusive is R.MISSING_CONTEXT
            empty = defs.evaluate("simple-flag", "some-distinct-id", device_id="")
            assert empty.inconclusive is R.MISSING_CONTEXT
        plain = compile_defs(flag("simple-flag", [cond(rollout=50)]))
        assert plain.evaluate("simple-flag", "test-id-1",
                              device_id="some-distinct-id").value is False

    def test_device_bucketing_does_not_apply_to_group_flags(self) -> None:
        f = flag("g", aggregation_group_type_index=0, bucketing_identifier="device_id")
        defs = compile_defs(f, **COMPANY)
        assert defs.evaluate("g", "u", groups={"company": "c"}).value is True


class TestFeatureEnrollment:
    @pytest.mark.parametrize(("value", "expected"), [
        (True, True), ("true", True), (False, False), ("false", False), ("TRUE", False),
        (1, False), (None, False),
    ])
    def test_enrollment_property_decides(self, value: Any, expected: bool) -> None:
        f = flag("beta", [cond(rollout=0)], feature_enrollment=True)
        result = compile_defs(f).evaluate(
            "beta", "u", person_properties={"$feature_enrollment/beta": value})
        assert result.value is expected and result.inconclusive is None

    def test_absent_enrollment_property_is_inconclusive(self) -> None:
        f = flag("beta", feature_enrollment=True)
        result = compile_defs(f).evaluate("beta", "u", person_properties={"other": 1})
        assert result.inconclusive is R.MISSING_CONTEXT

    def test_group_flag_with_enrollment_goes_to_the_server(self) -> None:
        f = flag("beta", aggregation_group_type_index=0, feature_enrollment=True)
        defs = compile_defs(f, **COMPANY)
        result = defs.evaluate("beta", "u", groups={"company": "c"},
                               person_properties={"$feature_enrollment/beta": True})
        assert result.inconclusive is R.UNSUPPORTED_DEFINITION
        assert defs.evaluate("beta", "u").value is False  # group check comes first


class TestHoldout:
    # holdout_hash(some-distinct-id) = 0.2510…, holdout_hash(user_123) = 0.2482…
    def defs(self, pct: Any, holdout_id: Any = 5) -> FlagDefinitions:
        return compile_defs(flag("f", holdout={"id": holdout_id, "exclusion_percentage": pct},
                                 payloads={"holdout-5": "held", "true": "on"}))

    def test_threshold(self) -> None:
        held = self.defs(25).evaluate("f", "user_123")
        assert (held.value, held.reason, held.payload) == ("holdout-5", "Holdout", "held")
        assert held.condition_index is None
        assert self.defs(25).evaluate("f", "some-distinct-id").value is True
        assert self.defs(25.2).evaluate("f", "some-distinct-id").value == "holdout-5"

    def test_clamping_and_full_exclusion(self) -> None:
        assert self.defs(100).evaluate("f", "anyone").value == "holdout-5"
        assert self.defs(150).evaluate("f", "anyone").value == "holdout-5"
        assert self.defs(-5).evaluate("f", "user_123").value is True
        assert self.defs(0).evaluate("f", "user_123").value is True

    def test_holdout_skips_conditions_and_keeps_id_text(self) -> None:
        f = flag("f", [cond(prop("plan", "exact", "x"))],
                 holdout={"id": 12, "exclusion_percentage": 100})
        assert compile_defs(f).evaluate("f", "u").value == "holdout-12"

    def test_incomplete_or_malformed_holdout(self) -> None:
        assert compile_defs(flag("f", holdout={"exclusion_percentage": 100})).evaluate(
            "f", "u").value is True
        assert compile_defs(flag("f", holdout=None)).evaluate("f", "u").value is True
        bad = self.defs("10").evaluate("f", "u")
        assert bad.inconclusive is R.UNSUPPORTED_DEFINITION

    def test_group_flag_holdout_uses_group_key(self) -> None:
        f = flag("g", aggregation_group_type_index=0,
                 holdout={"id": 1, "exclusion_percentage": 25})
        defs = compile_defs(f, **COMPANY)
        assert defs.evaluate("g", "x", groups={"company": "user_123"}).value == "holdout-1"
        assert defs.evaluate("g", "user_123", groups={"company": "some-distinct-id"}).value is True


class TestConditions:
    def test_first_match_wins_with_index_and_reason(self) -> None:
        f = flag("f", [cond(prop("plan", "exact", "free")), cond(prop("plan", "exact", "pro")),
                       cond()])
        result = compile_defs(f).evaluate("f", "u", person_properties={"plan": "pro"})
        assert (result.value, result.condition_index) == (True, 1)
        assert result.reason == "Matched condition set 2"

    def test_no_conditions_or_no_match_is_false(self) -> None:
        result = compile_defs(flag("f", [])).evaluate("f", "u")
        assert (result.value, result.reason) == (False, "No matching condition set")
        f = flag("f", [cond(prop("plan", "exact", "free"))])
        assert compile_defs(f).evaluate("f", "u", person_properties={"plan": "pro"}).value is False

    def test_negation_is_ignored_on_condition_filters(self) -> None:
        f = flag("f", [cond(prop("plan", "exact", "pro", negation=True))])
        assert compile_defs(f).evaluate("f", "u", person_properties={"plan": "pro"}).value is True

    def test_missing_rollout_means_everyone(self) -> None:
        f = flag("f", [{"properties": [prop("plan", "exact", "pro")]}])
        assert compile_defs(f).evaluate("f", "u", person_properties={"plan": "pro"}).value is True

    def test_inconclusive_filter_with_definitive_false_is_false(self) -> None:
        c = cond(prop("missing", "exact", "x"), prop("plan", "exact", "free"))
        result = compile_defs(flag("f", [c])).evaluate("f", "u", person_properties={"plan": "p"})
        assert (result.value, result.inconclusive) == (False, None)

    def test_inconclusive_condition_lets_others_decide(self) -> None:
        undecided = cond(prop("missing", "exact", "x"), prop("plan", "exact", "pro"))
        props = {"plan": "pro"}
        matched = compile_defs(flag("f", [undecided, cond()])).evaluate(
            "f", "u", person_properties=props)
        assert (matched.value, matched.condition_index) == (True, 1)
        result = compile_defs(flag("f", [undecided, cond(prop("plan", "exact", "x"))])).evaluate(
            "f", "u", person_properties=props)
        assert result.value is None and result.inconclusive is R.MISSING_CONTEXT

    def test_requires_server_aborts_the_whole_flag(self) -> None:
        defs = compile_defs(flag("f", [cond(MISSING_COHORT), cond()]))
        result = defs.evaluate("f", "u")
        assert result.value is None and result.inconclusive is R.UNSUPPORTED_DEFINITION

    def test_requires_server_after_another_unresolved_filter_does_not_abort(self) -> None:
        first = cond(prop("missing", "exact", "x"), MISSING_COHORT)
        defs = compile_defs(flag("f", [first, cond()]))
        assert defs.evaluate("f", "u").value is True

    def test_definitive_false_beats_requires_server_in_a_condition(self) -> None:
        first = cond(MISSING_COHORT, prop("plan", "exact", "free"))
        defs = compile_defs(flag("f", [first, cond()]))
        result = defs.evaluate("f", "u", person_properties={"plan": "pro"})
        assert (result.value, result.condition_index) == (True, 1)

    def test_early_exit_stops_at_an_out_of_rollout_condition(self) -> None:
        # h(simple-flag, test-id-1) = 0.98: out of a 50 % rollout.
        groups = [cond(prop("plan", "exact", "x")), cond(rollout=50), cond()]
        plain = compile_defs(flag("simple-flag", groups))
        early = compile_defs(flag("simple-flag", groups, early_exit=True))
        assert plain.evaluate("simple-flag", "test-id-1").condition_index == 2
        result = early.evaluate("simple-flag", "test-id-1", person_properties={"plan": "p"})
        assert (result.value, result.inconclusive) == (False, None)
        # An earlier inconclusive condition still makes the flag inconclusive.
        assert early.evaluate("simple-flag", "test-id-1").inconclusive is R.MISSING_CONTEXT
        assert early.evaluate("simple-flag", "some-distinct-id",
                              person_properties={"plan": "p"}).condition_index == 1


class TestVariants:
    MV = {"variants": [{"key": "control", "rollout_percentage": 50},
                       {"key": "test", "rollout_percentage": 50}]}

    def test_condition_variant_override(self) -> None:
        f = flag("f", [cond(variant="test")], multivariate=self.MV)
        assert {compile_defs(f).evaluate("f", f"u{i}").value for i in range(30)} == {"test"}

    def test_unknown_override_falls_back_to_the_hash(self) -> None:
        f = flag("f", [cond(variant="nope")], multivariate=self.MV)
        values = {compile_defs(f).evaluate("f", f"u{i}").value for i in range(30)}
        assert values == {"control", "test"}

    def test_override_without_multivariate_is_true(self) -> None:
        assert compile_defs(flag("f", [cond(variant="test")])).evaluate("f", "u").value is True

    def test_empty_or_null_variants(self) -> None:
        options: list[Any] = [{"variants": []}, {"variants": None}, None]
        for mv in options:
            assert compile_defs(flag("f", multivariate=mv)).evaluate("f", "u").value is True


class TestMixedTargeting:
    def defs(self) -> FlagDefinitions:
        person = cond(prop("plan", "exact", "pro"))
        company = cond(prop("tier", "exact", "gold", type="group"), aggregation_group_type_index=0)
        return compile_defs(flag("m", [company, person]), **COMPANY)

    def test_group_condition_uses_the_group(self) -> None:
        result = self.defs().evaluate("m", "u", groups={"company": "c"},
                                      group_properties={"company": {"tier": "gold"}})
        assert (result.value, result.condition_index) == (True, 0)

    def test_group_not_passed_does_not_match(self) -> None:
        result = self.defs().evaluate("m", "u", person_properties={"plan": "free"})
        assert (result.value, result.inconclusive) == (False, None)
        assert self.defs().evaluate("m", "u", person_properties={"plan": "pro"}).value is True

    def test_group_properties_missing_is_inconclusive(self) -> None:
        result = self.defs().evaluate("m", "u", groups={"company": "c"},
                                      person_properties={"plan": "free"})
        assert result.inconclusive is R.MISSING_CONTEXT

    def test_group_properties_missing_is_inconclusive_without_filters_too(self) -> None:
        c = cond(aggregation_group_type_index=0)
        defs = compile_defs(flag("m", [c]), **COMPANY)
        result = defs.evaluate("m", "u", groups={"company": "c"})
        assert result.inconclusive is R.MISSING_CONTEXT
        given = defs.evaluate("m", "u", groups={"company": "c"}, group_properties={"company": {}})
        assert given.value is True

    def test_rollout_bucketed_by_group_key(self) -> None:
        # h(beta-feature, user_123) = 0.41; the person id would be out at 41 %.
        c = cond(rollout=41, aggregation_group_type_index=0)
        defs = compile_defs(flag("beta-feature", [c]), **COMPANY)
        kwargs: dict[str, Any] = {"groups": {"company": "user_123"},
                                  "group_properties": {"company": {}}}
        assert defs.evaluate("beta-feature", "zzz", **kwargs).value is True
        kwargs["groups"] = {"company": "zzz"}
        assert defs.evaluate("beta-feature", "user_123", **kwargs).value is False

    def test_unknown_condition_group_index_only_affects_that_condition(self) -> None:
        bad = cond(aggregation_group_type_index=9)
        defs = compile_defs(flag("m", [bad, cond(prop("plan", "exact", "pro"))]), **COMPANY)
        assert defs.evaluate("m", "u", person_properties={"plan": "pro"}).value is True
        undecided = defs.evaluate("m", "u", person_properties={"plan": "free"})
        assert undecided.inconclusive is R.UNSUPPORTED_DEFINITION


class TestResults:
    PAYLOADS = {"true": '{"on": 1}', "false": "off", "test": [1, 2]}

    def test_payloads_and_metadata(self) -> None:
        mv = {"variants": [{"key": "test", "rollout_percentage": 100}]}
        f = flag("f", [cond(prop("plan", "exact", "pro"))], flag_id=42, version=3,
                 has_experiment=True, payloads=self.PAYLOADS)
        defs = compile_defs(f, flag("v", flag_id="7", version=True, has_experiment="yes",
                                    multivariate=mv, payloads=self.PAYLOADS))
        on = defs.evaluate("f", "u", person_properties={"plan": "pro"})
        assert (on.payload, on.flag_id, on.version, on.has_experiment) == ('{"on": 1}', 42, 3,
                                                                          True)
        off = defs.evaluate("f", "u", person_properties={"plan": "free"})
        assert off.payload == "off"
        assert off.payload_for(True) == '{"on": 1}' and off.payload_for("test") == [1, 2]
        assert off.payload_for("nope") is None and off.payload_for(None) is None
        assert defs.evaluate("f", "u").payload is None  # inconclusive
        variant = defs.evaluate("v", "u")
        assert (variant.value, variant.payload) == ("test", [1, 2])
        assert (variant.flag_id, variant.version, variant.has_experiment) == (None, None, None)
        assert defs.payload_for("f", False) == "off" and defs.payload_for("zz", True) is None

    def test_unknown_key(self) -> None:
        defs = compile_defs(flag("f"))
        result = defs.evaluate("nope", "u")
        assert (result.found, result.value, result.inconclusive) == (False, None, None)
        everything = defs.evaluate_all("u", keys=["f", "nope"])
        assert everything["f"].value is True and everything["nope"].found is False
        assert list(defs.evaluate_all("u")) == ["f"]

    def test_snapshot_and_results_are_immutable(self) -> None:
        raw = flag("f")
        defs = compile_defs(raw, minimal_flag_called_events=True)
        with pytest.raises(AttributeError):
            defs.flags = []
        with pytest.raises(TypeError):
            defs.by_key["g"] = raw  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            defs.evaluate("f", "u").value = False  # type: ignore[misc]
        assert defs.flags == [raw] and defs.by_key["f"] is raw
        assert defs.minimal_flag_called_events is True
        assert defs.property_matching_version == 1
        assert compile_defs(property_matching_version=2).property_matching_version == 2
        assert "f" in defs and len(defs) == 1
        assert len(FlagDefinitions.empty()) == 0

    def test_same_outcome_reuses_the_result_object(self) -> None:
        defs = compile_defs(flag("f"))
        assert defs.evaluate("f", "a") is defs.evaluate("f", "b")


class TestReasonPrecedence:
    def test_unsupported_beats_missing_context(self) -> None:
        f = flag("f", [cond(prop("missing", "exact", "x")), cond(prop("k", "what", 1))])
        assert compile_defs(f).evaluate("f", "u").inconclusive is R.UNSUPPORTED_DEFINITION
        f = flag("f", [cond(prop("k", "what", 1), prop("missing", "exact", "x"))])
        assert compile_defs(f).evaluate("f", "u").inconclusive is R.UNSUPPORTED_DEFINITION

    def test_unresolved_dependency_beats_missing_context(self) -> None:
        dep = {"key": "nope", "type": "flag", "operator": "flag_evaluates_to", "value": True,
               "dependency_chain": ["nope"]}
        f = flag("f", [cond(prop("missing", "exact", "x")), cond(dep)])
        assert compile_defs(f).evaluate("f", "u").inconclusive is R.UNRESOLVED_DEPENDENCY

    def test_experience_continuity_wins(self) -> None:
        f = flag("f", [cond(prop("k", "what", 1))], ensure_experience_continuity=True)
        assert compile_defs(f).evaluate("f", "u").inconclusive is R.EXPERIENCE_CONTINUITY
