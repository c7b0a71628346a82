"""Hash vectors and variant selection of spec §9 (§6.6, §6.7); behaviour 1."""

from __future__ import annotations

import pytest

from posthog.flags.hashing import hash_value, holdout_hash, sha1_prefix
from tests.flags.conftest import compile_defs, flag

VECTORS = [
    ("simple-flag", "some-distinct-id", "7a4e342ee339130", 0.477755795905271, 0.7770474308392754),
    ("simple-flag", "test-id-1", "fb7a17579a0869a", 0.9823317135688129, 0.9453206211747814),
    ("simple-flag", "test-id-2", "d176ca137422861", 0.8182188317770259, 0.90352312082875),
    ("beta-feature", "user_123", "68a7741b798fa95", 0.40880513830921805, 0.19410592178089206),
    ("multivariate-flag", "distinct_id_1", "516a6f6d2a23671", 0.3180303231730598,
     0.6473165157302697),
]

VARIANTS = [
    {"key": "first-variant", "rollout_percentage": 50},
    {"key": "second-variant", "rollout_percentage": 20},
    {"key": "third-variant", "rollout_percentage": 20},
    {"key": "fourth-variant", "rollout_percentage": 5},
    {"key": "fifth-variant", "rollout_percentage": 5},
]


@pytest.mark.parametrize(("key", "bucket", "prefix", "h", "v"), VECTORS)
def test_hash_vectors(key: str, bucket: str, prefix: str, h: float, v: float) -> None:
    assert sha1_prefix(key, bucket) == prefix
    assert hash_value(key, bucket) == h
    assert hash_value(key, bucket, salt="variant") == v
    assert int(prefix, 16) / float(0xFFFFFFFFFFFFFFF) == h


def test_holdout_vectors() -> None:
    assert holdout_hash("some-distinct-id") == 0.251040535935096
    assert holdout_hash("user_123") == 0.24823847221312947


def test_variant_hash_vectors() -> None:
    assert hash_value("multivariate-flag", "test_id", "variant") == 0.5914075303197696
    assert hash_value("multivariate-flag", "some-distinct-id", "variant") == 0.475653956156663


def test_bucketing_value_is_formatted_like_an_f_string() -> None:
    assert hash_value("k", 42) == hash_value("k", "42")
    assert hash_value("k", 4.0) == hash_value("k", "4.0")


@pytest.mark.parametrize(("distinct_id", "variant"), [
    ("test_id", "second-variant"),
    ("distinct_id_1", "second-variant"),
    ("some-distinct-id", "first-variant"),
    ("user_123", "first-variant"),
])
def test_variant_vectors(distinct_id: str, variant: str) -> None:
    defs = compile_defs(flag("multivariate-flag", multivariate={"variants": VARIANTS}))
    assert defs.evaluate("multivariate-flag", distinct_id).value == variant


def test_behaviour_1_fifty_percent_rollout() -> None:
    defs = compile_defs(flag("simple-flag", [{"properties": [], "rollout_percentage": 50}]))
    assert defs.evaluate("simple-flag", "some-distinct-id").value is True
    assert defs.evaluate("simple-flag", "test-id-1").value is False
    # h(test-id-2) = 0.818…: in at 82 %, out at 81 %.
    for pct, expected in ((82, True), (81.8, False), (81.9, True)):
        defs = compile_defs(flag("simple-flag", [{"properties": [], "rollout_percentage": pct}]))
        assert defs.evaluate("simple-flag", "test-id-2").value is expected


def test_variant_ranges_are_half_open() -> None:
    # v(simple-flag, some-distinct-id) = 0.777…: a first variant of 77.7047… % excludes it.
    edge = 77.70474308392754
    assert edge / 100 == 0.7770474308392754
    variants = [{"key": "a", "rollout_percentage": edge}, {"key": "b", "rollout_percentage": 50}]
    defs = compile_defs(flag("simple-flag", multivariate={"variants": variants}))
    assert defs.evaluate("simple-flag", "some-distinct-id").value == "b"  # [0, v) excludes v
    variants[0]["rollout_percentage"] = 78
    defs = compile_defs(flag("simple-flag", multivariate={"variants": variants}))
    assert defs.evaluate("simple-flag", "some-distinct-id").value == "a"
    variants[0]["rollout_percentage"] = 77
    defs = compile_defs(flag("simple-flag", multivariate={"variants": variants}))
    assert defs.evaluate("simple-flag", "some-distinct-id").value == "b"


def test_variants_not_covering_the_hash_give_true() -> None:
    variants = [{"key": "a", "rollout_percentage": 10}]  # v = 0.777 is past 10 %
    defs = compile_defs(flag("simple-flag", multivariate={"variants": variants}))
    assert defs.evaluate("simple-flag", "some-distinct-id").value is True
