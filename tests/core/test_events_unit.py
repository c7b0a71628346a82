"""Unit tests of ``posthog.events``: timestamps, uuids, cleaning, JSON (spec core §2.1, §2.5)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from posthog import events
from posthog.events import (
    clean,
    dumps,
    new_uuid,
    normalize_timestamp,
    normalize_uuid,
    system_properties,
)

UTC = timezone.utc


def _parse(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "posthog" and r.levelno == level]


@pytest.fixture
def india_tz() -> Iterator[None]:
    """Run with local time at UTC+05:30 so "local" and "UTC" readings differ."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"  # POSIX form: UTC+05:30, no tzdata needed
    time.tzset()
    assert datetime.now().astimezone().utcoffset() == timedelta(hours=5, minutes=30)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


# ---------------------------------------------------------------- normalize_timestamp


def test_timestamp_none_is_now_utc() -> None:
    before = datetime.now(UTC)
    out = normalize_timestamp(None)
    after = datetime.now(UTC)
    assert out.endswith("+00:00")
    assert before <= _parse(out) <= after


def test_naive_datetime_from_now_is_read_as_local(india_tz: None) -> None:
    value = datetime.now()  # naive, local wall clock (UTC+05:30 here)
    out = normalize_timestamp(value)
    assert out == value.astimezone().astimezone(UTC).isoformat()
    # it really is "now", not now shifted by the local offset
    assert abs(_parse(out) - datetime.now(UTC)) < timedelta(seconds=5)


def test_naive_old_datetime_is_read_as_utc(india_tz: None) -> None:
    # spec §9 behaviour 6
    assert normalize_timestamp(datetime(2020, 1, 1, 12)) == "2020-01-01T12:00:00+00:00"


@pytest.mark.parametrize("delta", [timedelta(seconds=-30), timedelta(minutes=10)])
def test_naive_datetime_outside_the_now_window_is_utc(india_tz: None, delta: timedelta) -> None:
    value = datetime.now() + delta
    assert normalize_timestamp(value) == value.replace(tzinfo=UTC).isoformat()


def test_aware_datetime_is_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert (
        normalize_timestamp(datetime(2020, 1, 1, 12, tzinfo=plus_two))
        == "2020-01-01T10:00:00+00:00"
    )
    minus_eight = timezone(timedelta(hours=-8))
    assert (
        normalize_timestamp(datetime(2020, 12, 31, 20, 30, tzinfo=minus_eight))
        == "2021-01-01T04:30:00+00:00"
    )


def test_microseconds_only_when_non_zero() -> None:
    assert normalize_timestamp(datetime(2020, 1, 1, tzinfo=UTC)) == "2020-01-01T00:00:00+00:00"
    assert (
        normalize_timestamp(datetime(2020, 1, 1, 0, 0, 1, 123456, tzinfo=UTC))
        == "2020-01-01T00:00:01.123456+00:00"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-02-03T04:05:06Z", "2021-02-03T04:05:06+00:00"),
        ("2021-02-03T04:05:06+00:00", "2021-02-03T04:05:06+00:00"),
        ("2021-02-03T04:05:06+05:30", "2021-02-02T22:35:06+00:00"),
        ("2021-02-03T04:05:06+0530", "2021-02-02T22:35:06+00:00"),
        ("2021-02-03T04:05:06-08:00", "2021-02-03T12:05:06+00:00"),
        ("2021-02-03T04:05:06.250000Z", "2021-02-03T04:05:06.250000+00:00"),
    ],
)
def test_iso_strings_are_parsed_to_utc(text: str, expected: str) -> None:
    assert normalize_timestamp(text) == expected


@pytest.mark.parametrize(
    "value",
    ["2021-02-03", "not a date", "", "2021-13-45T99:00:00Z", 12345, date(2021, 2, 3)],
)
def test_invalid_timestamps_use_now_with_a_warning(
    caplog: pytest.LogCaptureFixture, value: object
) -> None:
    caplog.set_level(logging.WARNING, logger="posthog")
    before = datetime.now(UTC)
    out = normalize_timestamp(value)
    after = datetime.now(UTC)
    assert before <= _parse(out) <= after
    warnings = _messages(caplog, logging.WARNING)
    assert warnings, "an invalid timestamp must be logged"
    assert all(w.startswith("[PostHog] ") for w in warnings)


def test_valid_timestamps_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="posthog")
    normalize_timestamp("2021-02-03T04:05:06Z")
    normalize_timestamp(datetime(2020, 1, 1, tzinfo=UTC))
    normalize_timestamp(None)
    assert _messages(caplog, logging.WARNING) == []


# ---------------------------------------------------------------- uuids


def _is_v4(text: str) -> bool:
    parsed = uuid.UUID(text)
    return parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_new_uuid_is_a_unique_canonical_v4() -> None:
    values = [new_uuid() for _ in range(2000)]
    assert all(isinstance(v, str) and _is_v4(v) for v in values)
    assert len(set(values)) == len(values)


def test_normalize_uuid_none_gives_a_fresh_v4() -> None:
    first, second = normalize_uuid(None), normalize_uuid(None)
    assert _is_v4(first) and _is_v4(second)
    assert first != second


def test_normalize_uuid_accepts_uuid_objects_of_any_version() -> None:
    v4 = uuid.uuid4()
    v1 = uuid.uuid1()
    assert normalize_uuid(v4) == str(v4)
    assert normalize_uuid(v1) == str(v1)
    assert isinstance(normalize_uuid(v4), str)


@pytest.mark.parametrize(
    "text",
    [
        "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11",
        "0B6C3B49-8A53-4C1E-9A39-0C2F4A7E1E11",
        "0b6c3b498a534c1e9a390c2f4a7e1e11",
        str(uuid.uuid1()),
    ],
)
def test_normalize_uuid_keeps_a_valid_string_as_given(
    caplog: pytest.LogCaptureFixture, text: str
) -> None:
    assert normalize_uuid(text) == text
    assert _messages(caplog, logging.ERROR) == []


def test_normalize_uuid_stringifies_other_values() -> None:
    class Wrapper:
        def __str__(self) -> str:
            return "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"

    assert normalize_uuid(Wrapper()) == "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"


@pytest.mark.parametrize("value", ["not-a-uuid", "", 12345, "0b6c3b49-8a53"])
def test_normalize_uuid_replaces_invalid_values_and_logs(
    caplog: pytest.LogCaptureFixture, value: object
) -> None:
    out = normalize_uuid(value)
    assert _is_v4(out)
    assert out != str(value)
    errors = _messages(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].startswith("[PostHog] ")


# ---------------------------------------------------------------- clean


def test_clean_passes_scalars_through_unchanged() -> None:
    moment = datetime(2020, 1, 1, 12, tzinfo=UTC)
    day = date(2020, 1, 2)
    values: list[Any] = ["s", "", True, False, 0, 7, 2**80, 1.5, complex(1, 2), None, moment, day]
    for value in values:
        out = clean(value)
        assert out == value
        assert type(out) is type(value)
    assert clean(moment) is moment
    assert clean(day) is day


def test_clean_non_finite_floats_are_left_for_the_encoder() -> None:
    out = clean({"d": float("nan"), "i": float("inf")})
    assert out["i"] == float("inf")
    assert dumps(out) == '{"d":null,"i":null}'


def test_clean_decimal_becomes_float() -> None:
    out = clean(Decimal("1.5"))
    assert out == 1.5 and type(out) is float


def test_clean_uuid_becomes_str() -> None:
    value = uuid.UUID("0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11")
    assert clean(value) == "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"
    assert type(clean(value)) is str


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, "a", None], [1, "a", None]),
        ((1, 2), [1, 2]),
        ({3}, [3]),
        (frozenset({"x"}), ["x"]),
        (deque([1, 2, 3]), [1, 2, 3]),
        ([], []),
        ((), []),
        (set(), []),
    ],
)
def test_clean_containers_become_lists(value: Any, expected: list[Any]) -> None:
    out = clean(value)
    assert type(out) is list
    assert out == expected


def test_clean_set_items_are_all_kept() -> None:
    assert sorted(clean({1, 2, 3, 4})) == [1, 2, 3, 4]


def test_clean_nested_containers_are_cleaned_recursively() -> None:
    value = {
        "outer": [
            (1, {2}),
            {"u": uuid.UUID(int=1), "d": Decimal("2.5"), "deep": [deque([b"hi"])]},
        ],
    }
    assert clean(value) == {
        "outer": [
            [1, [2]],
            {"u": "00000000-0000-0000-0000-000000000001", "d": 2.5, "deep": [["hi"]]},
        ],
    }


def test_clean_dict_is_a_new_dict_with_keys_untouched() -> None:
    key_obj = ("tuple", "key")
    value: dict[Any, Any] = {1: "int key", key_obj: {"x": 1}, "s": {2}, None: "none"}
    out = clean(value)
    assert out is not value
    assert list(out.keys()) == [1, key_obj, "s", None]
    assert out[key_obj] == {"x": 1}
    assert out["s"] == [2]
    assert value["s"] == {2}, "the caller's dict must not be modified"


def test_clean_dict_value_raising_type_error_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Hostile:
        """Any isinstance() check on this object raises TypeError."""

        @property  # type: ignore[misc]
        def __class__(self) -> type:
            raise TypeError("no class for you")

    caplog.set_level(logging.WARNING, logger="posthog")
    assert clean({"ok": 1, "bad": Hostile(), "also": "kept"}) == {"ok": 1, "also": "kept"}
    assert any("bad" in m for m in _messages(caplog, logging.WARNING))


def test_clean_dict_subclass_is_cleaned() -> None:
    out = clean(OrderedDict([("a", {1}), ("b", Decimal("1"))]))
    assert out == {"a": [1], "b": 1.0}


def test_clean_spec_behaviour_10() -> None:
    props = {
        "a": {1, 2},
        "b": b"\xff",
        "c": object(),
        "d": float("nan"),
        "e": Decimal("1.5"),
    }
    out = clean(props)
    assert json.loads(dumps(out)) == {"a": [1, 2], "b": None, "c": None, "d": None, "e": 1.5}


class _PydanticV2Like:
    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def model_dump(self) -> dict[str, Any]:
        return dict(self._fields)


class _PydanticV1Like:
    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def dict(self) -> dict[str, Any]:
        return dict(self._fields)


def test_clean_model_dump_objects() -> None:
    model = _PydanticV2Like(name="n", tags={"a"}, nested=_PydanticV1Like(when=Decimal("3")))
    assert clean(model) == {"name": "n", "tags": ["a"], "nested": {"when": 3.0}}


def test_clean_v1_dict_objects() -> None:
    assert clean(_PydanticV1Like(x=1, y=(2, 3))) == {"x": 1, "y": [2, 3]}


def test_clean_model_dump_that_raises_is_none() -> None:
    class Broken:
        def model_dump(self) -> dict[str, Any]:
            raise RuntimeError("boom")

    assert clean(Broken()) is None
    assert clean({"m": Broken(), "ok": 1}) == {"m": None, "ok": 1}


@dataclasses.dataclass
class _Point:
    x: int
    y: Any
    tags: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Line:
    start: _Point
    end: _Point


def test_clean_dataclasses() -> None:
    assert clean(_Point(1, Decimal("2.5"), {"t"})) == {"x": 1, "y": 2.5, "tags": ["t"]}
    line = _Line(_Point(0, 0), _Point(1, uuid.UUID(int=2)))
    assert clean(line) == {
        "start": {"x": 0, "y": 0, "tags": []},
        "end": {"x": 1, "y": "00000000-0000-0000-0000-000000000002", "tags": []},
    }


def test_clean_dataclass_class_itself_is_not_converted() -> None:
    assert clean(_Point) is None


def test_clean_bytes() -> None:
    assert clean(b"hello") == "hello"
    assert clean("é".encode()) == "é"
    assert clean(b"") == ""


def test_clean_undecodable_bytes_are_none_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warning may be rate-limited to once per process; forget earlier occurrences.
    monkeypatch.setattr(events, "_warned_types", set(), raising=False)
    caplog.set_level(logging.WARNING, logger="posthog")
    assert clean(b"\xff\xfe") is None
    assert _messages(caplog, logging.WARNING)


def test_clean_unknown_objects_are_none(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="posthog")

    class Opaque:
        pass

    assert clean(Opaque()) is None
    assert clean(object()) is None
    assert clean(len) is None
    assert clean(bytearray(b"x")) is None
    assert clean({"o": Opaque(), "k": [Opaque()]}) == {"o": None, "k": [None]}
    assert any("Opaque" in m for m in _messages(caplog, logging.WARNING))


def test_clean_cyclic_list_terminates() -> None:
    items: list[Any] = [1, "a"]
    items.append(items)
    assert clean(items) == [1, "a", None]


def test_clean_cyclic_dict_terminates() -> None:
    data: dict[str, Any] = {"a": 1}
    data["self"] = data
    data["list"] = [data]
    assert clean(data) == {"a": 1, "self": None, "list": [None]}


def test_clean_shared_non_cyclic_values_are_kept() -> None:
    shared = [1, 2]
    assert clean({"x": shared, "y": shared, "z": [shared, shared]}) == {
        "x": [1, 2],
        "y": [1, 2],
        "z": [[1, 2], [1, 2]],
    }


# ---------------------------------------------------------------- dumps


def test_dumps_is_compact() -> None:
    assert dumps({"a": 1, "b": [1, 2], "c": {"d": None}}) == '{"a":1,"b":[1,2],"c":{"d":null}}'


def test_dumps_escapes_non_ascii() -> None:
    text = dumps({"k": "é😀"})
    assert text == '{"k":"\\u00e9\\ud83d\\ude00"}'
    assert text.isascii()
    assert json.loads(text) == {"k": "é😀"}


def test_dumps_non_finite_floats_anywhere_become_null() -> None:
    value = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "list": [1.5, float("nan"), (float("inf"), 2)],
        "nested": {"deep": {"x": float("-inf")}},
        "ok": 2.5,
    }
    assert json.loads(dumps(value)) == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "list": [1.5, None, [None, 2]],
        "nested": {"deep": {"x": None}},
        "ok": 2.5,
    }
    assert dumps(float("nan")) == "null"
    assert dumps([float("inf")]) == "[null]"


def test_dumps_handles_datetime_date_uuid_decimal() -> None:
    value = {
        "t": datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        "naive": datetime(2020, 1, 2, 3, 4, 5, 6),
        "d": date(2021, 2, 3),
        "u": uuid.UUID("0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"),
        "dec": Decimal("1.25"),
    }
    assert json.loads(dumps(value)) == {
        "t": "2020-01-02T03:04:05+00:00",
        "naive": "2020-01-02T03:04:05.000006",
        "d": "2021-02-03",
        "u": "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11",
        "dec": 1.25,
    }


def test_dumps_rejects_unserialisable_values() -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps({"c": complex(1, 2)})
    with pytest.raises((TypeError, ValueError)):
        dumps({"x": {(1, 2): "tuple key"}})


# ---------------------------------------------------------------- system properties


def test_system_properties_keys() -> None:
    import platform
    import sys

    props = system_properties()
    required = {"$python_runtime", "$python_version", "$os", "$os_version"}
    assert required <= set(props)
    assert set(props) - required <= {"$os_distro"}
    assert props["$python_runtime"] == platform.python_implementation()
    assert props["$python_version"] == "{}.{}.{}".format(*sys.version_info[:3])
    if sys.platform.startswith("linux"):
        assert props["$os"] == "Linux"
    elif sys.platform == "darwin":
        assert props["$os"] == "Mac OS X"
    elif sys.platform == "win32":
        assert props["$os"] == "Windows"
    assert isinstance(props["$os_version"], str)
