"""Local flag evaluation figures: µs per flag, µs for 50 flags per person, compile time.

    .venv/bin/python benchmarks/bench_flags.py

Prints figures only; nothing here asserts.  Targets: ≤ 3 µs per flag on the mix,
all 50 flags for one person ≤ 100 µs, 1,000 definitions compiled ≤ 50 ms.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from posthog.flags.local import FlagDefinitions
from posthog.flags.regex_compat import compile_pattern

PERSON = {
    "email": "jane.doe@example.com",
    "plan": "pro",
    "country": "GB",
    "age": 31,
    "seats": "12",
    "app_version": "2.14.3",
    "signup_date": "2023-06-01T10:00:00Z",
    "last_seen": "2025-01-02T03:04:05+00:00",
    "beta_opt_in": True,
    "name": "Jane Doe",
}
GROUPS = {"company": "acme-42"}
GROUP_PROPS = {"company": {"$group_key": "acme-42", "tier": "enterprise", "employees": 250}}


def _flag(key: str, flag_id: int, groups: list[dict[str, Any]], **filters: Any) -> dict[str, Any]:
    return {"id": flag_id, "key": key, "active": True, "version": 1,
            "filters": {"groups": groups, **filters}}


def _prop(key: str, operator: str, value: Any) -> dict[str, Any]:
    return {"key": key, "operator": operator, "value": value, "type": "person"}


VARIANTS = {"variants": [{"key": "control", "rollout_percentage": 34},
                         {"key": "test-a", "rollout_percentage": 33},
                         {"key": "test-b", "rollout_percentage": 33}]}


def mix(copy: int = 0) -> list[dict[str, Any]]:
    """50 flags: rollouts, multivariate, property operators, a cohort, a group, a dependency."""
    s = f"-{copy}" if copy else ""
    rx = f"(?:x{copy})?" if copy else ""  # a distinct pattern per copy, same matches
    n = copy * 100
    flags: list[dict[str, Any]] = []
    for i in range(10):  # simple rollouts
        flags.append(_flag(f"rollout-{i}{s}", n + i, [{"properties": [],
                                                       "rollout_percentage": 10 * i + 5}]))
    for i in range(8):  # multivariate
        flags.append(_flag(f"experiment-{i}{s}", n + 10 + i,
                           [{"properties": [], "rollout_percentage": 50 + 5 * i}],
                           multivariate=VARIANTS, payloads={"control": '{"a": 1}'}))
    operators = [
        ("plan", "exact", ["pro", "enterprise"]), ("country", "exact", "gb"),
        ("plan", "is_not", "free"), ("beta_opt_in", "exact", ["true"]),
        ("email", "is_set", None), ("name", "exact", "Jane Doe"),
        ("email", "icontains", f"@example{s}"[:12]), ("email", "not_icontains", "spam"),
        ("name", "icontains", "DOE"), ("email", "ends_with", ".com"),
        ("email", "starts_with", "jane"),
        ("email", "regex", rf"^[a-z.]+@example\.com{rx}$"), ("email", "not_regex", rf"test{rx}"),
        ("app_version", "regex", rf"^2\.{rx}[0-9]+"), ("name", "regex", rf"(?:Jane|John){rx} Doe"),
        ("age", "gt", 18), ("seats", "gte", "10"), ("age", "lt", 65.5), ("seats", "lte", 100),
        ("app_version", "semver_gte", "2.0.0"), ("app_version", "semver_tilde", "2.14.0"),
        ("app_version", "semver_caret", "2.1"), ("app_version", "semver_wildcard", "2.*"),
        ("signup_date", "is_date_before", "-30d"), ("last_seen", "is_date_after", "2024-01-01"),
        ("signup_date", "is_date_after", "-3y"), ("last_seen", "is_date_before", "-2m"),
    ]
    for i, (key, operator, value) in enumerate(operators):
        flags.append(_flag(f"prop-{i}{s}", n + 20 + i,
                           [{"properties": [_prop(key, operator, value)],
                             "rollout_percentage": 80}]))
    flags.append(_flag(f"cohort{s}", n + 50, [{"properties": [
        {"key": "id", "type": "cohort", "value": 7}], "rollout_percentage": 100}]))
    flags.append(_flag(f"group{s}", n + 51, [{"properties": [
        {"key": "tier", "type": "group", "group_type_index": 0, "value": "enterprise"}],
        "rollout_percentage": 100}], aggregation_group_type_index=0))
    flags.append(_flag(f"dependent{s}", n + 52, [{"properties": [
        {"key": f"rollout-9{s}", "type": "flag", "operator": "flag_evaluates_to", "value": True,
         "dependency_chain": [f"rollout-9{s}"]}], "rollout_percentage": 100}]))
    flags.append(_flag(f"two-conditions{s}", n + 53, [
        {"properties": [_prop("plan", "exact", "free")], "rollout_percentage": 100},
        {"properties": [_prop("country", "exact", ["GB", "US"]), _prop("age", "gte", 21)],
         "rollout_percentage": 60, "variant": "test-a"}], multivariate=VARIANTS))
    flags.append(_flag(f"holdout{s}", n + 54, [{"properties": [], "rollout_percentage": 100}],
                       holdout={"id": 3, "exclusion_percentage": 10}))
    assert len(flags) == 50, len(flags)
    return flags


COHORTS = {"7": {"type": "OR", "values": [{"type": "AND", "values": [
    _prop("plan", "exact", ["pro", "enterprise"]), _prop("age", "gte", 18)]}]}}


def body(flags: list[dict[str, Any]]) -> dict[str, Any]:
    return {"flags": flags, "group_type_mapping": {"0": "company"}, "cohorts": COHORTS,
            "property_matching_version": 2}


def best_of(fn: Any, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    definitions = FlagDefinitions.compile(body(mix()))
    keys = [f["key"] for f in definitions.flags]
    ids = [f"user-{i}" for i in range(2000)]
    results = definitions.evaluate_all("user-1", person_properties=PERSON, groups=GROUPS,
                                       group_properties=GROUP_PROPS)
    undecided = [k for k, r in results.items() if r.inconclusive is not None]
    print(f"mix: {len(keys)} flags, {sum(bool(r.value) for r in results.values())} enabled "
          f"for user-1, inconclusive: {undecided or 'none'}")

    evaluate = definitions.evaluate
    rounds = 40

    def single() -> None:
        for distinct_id in ids[:rounds]:
            for key in keys:
                evaluate(key, distinct_id, person_properties=PERSON, groups=GROUPS,
                         group_properties=GROUP_PROPS)

    def everything() -> None:
        for distinct_id in ids[:rounds]:
            definitions.evaluate_all(distinct_id, person_properties=PERSON, groups=GROUPS,
                                     group_properties=GROUP_PROPS)

    gc.disable()
    per_flag = best_of(single) / (rounds * len(keys)) * 1e6
    all_50 = best_of(everything) / rounds * 1e6
    gc.enable()
    print(f"evaluate (one flag at a time):  {per_flag:6.2f} µs per flag   (target ≤ 3)")
    print(f"evaluate_all (50 flags):        {all_50:6.1f} µs per person  (target ≤ 100)"
          f"  = {all_50 / len(keys):.2f} µs per flag")

    # Per-kind breakdown: which flags cost the most.
    costs = []
    for key in keys:
        t = best_of(lambda key=key: [evaluate(key, d, person_properties=PERSON, groups=GROUPS,
                                              group_properties=GROUP_PROPS)
                                     for d in ids[:200]], repeat=3)
        costs.append((t / 200 * 1e6, key))
    costs.sort(reverse=True)
    print("slowest flags: " + ", ".join(f"{k} {c:.2f} µs" for c, k in costs[:5]))

    thousand = body([f for copy in range(20) for f in mix(copy)])
    assert len(thousand["flags"]) == 1000

    def compile_cold() -> None:
        compile_pattern.cache_clear()
        FlagDefinitions.compile(thousand)

    cold = [best_of(compile_cold, repeat=1) for _ in range(5)]
    warm = best_of(lambda: FlagDefinitions.compile(thousand), repeat=5)
    print(f"compile 1,000 definitions:      {statistics.median(cold) * 1e3:6.1f} ms cold "
          f"(regex cache cleared), {warm * 1e3:.1f} ms warm  (target ≤ 50)")
    load_from_server(thousand)


def load_from_server(data: dict[str, object]) -> None:
    """The whole load: GET from the dev server over loopback, JSON parse, compile, install."""
    import posthog
    from posthog_integrations.devserver import DevServer

    with DevServer() as server:
        server.set_flags(data)
        timings = []
        for _ in range(5):
            compile_pattern.cache_clear()
            client = posthog.Client("phc_bench", host=server.url, secret_key="phs_bench",
                                    send=False, enable_local_evaluation=False)
            start = time.perf_counter()
            client.load_feature_flags()
            timings.append(time.perf_counter() - start)
            assert len(client.feature_flags or []) == 1000
            client.shutdown()
    print(f"load 1,000 definitions (HTTP GET + parse + compile): "
          f"{statistics.median(timings) * 1e3:.1f} ms median of 5  (target ≤ 50)")


if __name__ == "__main__":
    main()
