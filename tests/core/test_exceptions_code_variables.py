"""Code variables on ``$exception`` frames: selection, masking, limits (spec core §8.6)."""

from __future__ import annotations

import importlib
import json
import os
import string
import sys
from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog import Client
from tests.support.http_server import ScriptedServer

MakeClient = Callable[..., Client]
HERE_DIR = os.path.dirname(os.path.abspath(__file__))
REDACTED = "$$_posthog_redacted_based_on_masking_rules_$$"
TOO_LONG = "$$_posthog_value_too_long_$$"
CIRCULAR = "<circular ref>"


@pytest.fixture
def capture(
    server: ScriptedServer, make_client: MakeClient
) -> Callable[..., list[dict[str, Any]]]:
    """Raise ``fn`` under a code-variables client; return the sent entries of ``$exception``."""

    def run(fn: Callable[[], Any], **client_kwargs: Any) -> list[dict[str, Any]]:
        client_kwargs.setdefault("capture_exception_code_variables", True)
        client_kwargs.setdefault("project_root", HERE_DIR)
        client = make_client(**client_kwargs)
        before = len(server.events())
        _trigger(fn, client.capture_exception)
        client.flush()
        (event,) = server.events()[before:]
        entries: list[dict[str, Any]] = event["properties"]["$exception_list"]
        return entries

    return run


def _trigger(fn: Callable[[], Any], report: Callable[[BaseException], Any]) -> None:
    """The outermost traceback frame: kept to two small locals (it is in-app too)."""
    try:
        fn()
    except Exception as exc:
        assert report(exc) is not None
        return
    raise AssertionError("fn did not raise")


def variables_of(entries: list[dict[str, Any]], function: str) -> dict[str, Any]:
    frames = [f for e in entries for f in e["stacktrace"]["frames"] if f["function"] == function]
    assert len(frames) == 1, [f["function"] for e in entries for f in e["stacktrace"]["frames"]]
    assert frames[0]["in_app"] is True
    variables: dict[str, Any] = frames[0]["code_variables"]
    return variables


# ---------------------------------------------------------------- names


def _names() -> None:
    # every local below is read from the frame
    __dunder = "ignored"
    _single = "kept"
    password = "p"  # noqa: F841
    user_api_key = "k"  # noqa: F841
    MY_SECRET_VALUE = "s"  # noqa: F841
    refresh_token = "t"  # noqa: F841
    db_dsn = "d"  # noqa: F841
    stripe_sk_live = "x"  # noqa: F841
    harmless = "visible"  # noqa: F841
    raise ValueError("names")


def test_ignore_pattern_and_name_masks(capture: Callable[..., Any]) -> None:
    variables = variables_of(capture(_names), "_names")
    assert variables == {
        "_single": "kept",
        "password": REDACTED,
        "user_api_key": REDACTED,
        "MY_SECRET_VALUE": REDACTED,
        "refresh_token": REDACTED,
        "db_dsn": REDACTED,
        "stripe_sk_live": REDACTED,
        "harmless": "visible",
    }


def test_custom_patterns_from_the_client(capture: Callable[..., Any]) -> None:
    def custom() -> None:
        card_1 = "4111"  # noqa: F841
        mycard_1 = "4222"  # noqa: F841
        xFOOy = "f"  # noqa: F841
        bar_value = "b"  # noqa: F841
        password = "plain now"  # noqa: F841
        skip_me = "gone"  # noqa: F841
        __dunder = "kept now"
        raise ValueError("custom")

    variables = variables_of(
        capture(
            custom,
            code_variables_mask_patterns=[r"^card_\d+$", "(?i)FOO", "Bar"],
            code_variables_ignore_patterns=["^skip_"],
        ),
        "custom",
    )
    assert variables == {
        "card_1": REDACTED,  # regex with re.search
        "mycard_1": "4222",
        "xFOOy": REDACTED,  # (?i)literal: lowercase substring
        "bar_value": "b",  # no (?i): case-sensitive
        "password": "plain now",  # the defaults were replaced
        "__dunder": "kept now",
    }


# ---------------------------------------------------------------- values


GITHUB = "ghp_" + "aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END RSA KEY"
HIGH_ENTROPY = "aB3$xY9!qW2#eR7&tZ"


def _values() -> None:
    note = "my Password is hunter2"  # noqa: F841
    github = GITHUB  # noqa: F841
    aws = AWS  # noqa: F841
    web = JWT  # noqa: F841
    pem = PEM  # noqa: F841
    entropy = HIGH_ENTROPY  # noqa: F841
    low_entropy = "aaaaaaaaaaaaaaaaaaaaaaaa"  # noqa: F841
    path = "/usr/local/lib/python3.11/site-packages/x.py"  # noqa: F841
    ident = "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"  # noqa: F841
    digest = "da39a3ee5e6b4b0d3255bfef95601890afd80709"  # noqa: F841
    sentence = "Hello World 123 with spaces!"  # noqa: F841
    url = "postgres://admin:s3cr3tpw@db.example.com:5432/app"  # noqa: F841
    header = "sent Bearer xyz123 upstream"  # noqa: F841
    basic = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="  # noqa: F841
    raise ValueError("values")


def test_value_masks_and_secret_detection(capture: Callable[..., Any]) -> None:
    variables = variables_of(capture(_values), "_values")
    assert variables == {
        "note": REDACTED,  # value matches a mask pattern
        "github": REDACTED,
        "aws": REDACTED,
        "web": REDACTED,
        "pem": REDACTED,
        "entropy": REDACTED,
        "low_entropy": "aaaaaaaaaaaaaaaaaaaaaaaa",
        "path": "/usr/local/lib/python3.11/site-packages/x.py",
        "ident": "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11",
        "digest": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "sentence": "Hello World 123 with spaces!",
        "url": f"postgres://{REDACTED}@db.example.com:5432/app",
        "header": f"sent Bearer {REDACTED} upstream",
        "basic": f"Basic {REDACTED}",
    }


def test_detection_and_url_masking_switched_off(capture: Callable[..., Any]) -> None:
    variables = variables_of(
        capture(
            _values,
            code_variables_detect_secrets=False,
            code_variables_mask_url_credentials=False,
        ),
        "_values",
    )
    assert variables["note"] == REDACTED  # mask patterns still apply
    assert variables["github"] == GITHUB
    assert variables["aws"] == AWS
    assert variables["web"] == JWT
    assert variables["entropy"] == HIGH_ENTROPY
    assert variables["url"] == "postgres://admin:s3cr3tpw@db.example.com:5432/app"
    # Bearer/Basic credentials are always redacted
    assert variables["header"] == f"sent Bearer {REDACTED} upstream"
    assert variables["basic"] == f"Basic {REDACTED}"


def test_bearer_alone_is_redacted(capture: Callable[..., Any]) -> None:
    def bearer() -> None:
        header = "Bearer xyz"  # noqa: F841
        raise ValueError("b")

    assert variables_of(capture(bearer), "bearer") == {"header": f"Bearer {REDACTED}"}


def test_long_strings_and_scalars(capture: Callable[..., Any]) -> None:
    long_text = "word " * 410  # 2050 characters

    def scalars() -> None:
        too_long = long_text  # noqa: F841
        limit = long_text[:2048]  # noqa: F841
        number = 3  # noqa: F841
        ratio = 2.5  # noqa: F841
        not_a_number = float("nan")  # noqa: F841
        flag = True  # noqa: F841
        nothing = None  # noqa: F841
        raise ValueError("scalars")

    variables = variables_of(capture(scalars), "scalars")
    assert variables["too_long"] == TOO_LONG
    assert variables["limit"] != TOO_LONG
    assert variables["limit"].startswith("word word")
    assert variables["number"] == 3
    assert variables["ratio"] == 2.5
    assert variables["not_a_number"] == "nan"
    assert variables["flag"] == "True"
    assert variables["nothing"] == "None"


class _LongRepr:
    __slots__ = ()

    def __repr__(self) -> str:
        return "r" * 3000


def test_other_values_are_strings_cut_to_1024(capture: Callable[..., Any]) -> None:
    def other() -> None:
        odd = _LongRepr()  # noqa: F841
        raw = b"bytes value"  # noqa: F841
        raise ValueError("other")

    variables = variables_of(capture(other), "other")
    assert variables["odd"] == "r" * 1024 + "..."
    assert variables["raw"] == repr(b"bytes value")


class Point:
    def __init__(self) -> None:
        self.x = 1
        self.label = "p"
        self.api_key = "hidden"


def test_containers_and_objects_are_json_strings(capture: Callable[..., Any]) -> None:
    def containers() -> None:
        user = {"name": "bob", "password": "x", "nested": {"api_key": "k", "n": 1}}  # noqa: F841
        items = [1, "two", None, True, 2.5]  # noqa: F841
        pair = ("a", GITHUB)  # noqa: F841
        point = Point()  # noqa: F841
        many = list(range(120))  # noqa: F841
        raise ValueError("containers")

    variables = variables_of(capture(containers), "containers")
    for name in ("user", "items", "pair", "point", "many"):
        assert isinstance(variables[name], str), name
    assert json.loads(variables["user"]) == {
        "name": "bob",
        "password": REDACTED,
        "nested": {"api_key": REDACTED, "n": 1},
    }
    assert json.loads(variables["items"]) == [1, "two", "None", "True", 2.5]
    assert json.loads(variables["pair"]) == ["a", REDACTED]
    assert json.loads(variables["point"]) == {
        "x": 1, "label": "p", "api_key": REDACTED, "__class__": "Point"
    }
    assert json.loads(variables["many"]) == list(range(50))  # 50 items per collection


def test_cycles_become_circular_ref(capture: Callable[..., Any]) -> None:
    def cycles() -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        mapping: dict[str, Any] = {"k": 1}
        mapping["self"] = mapping
        shared = [0]
        twice = [shared, shared]  # noqa: F841 - a repeat is not a cycle
        raise ValueError("cycles")

    variables = variables_of(capture(cycles), "cycles")
    assert json.loads(variables["loop"]) == [1, CIRCULAR]
    assert json.loads(variables["mapping"]) == {"k": 1, "self": CIRCULAR}
    assert json.loads(variables["twice"]) == [[0], [0]]


def test_simple_variables_first_each_group_sorted(capture: Callable[..., Any]) -> None:
    def ordering() -> None:
        z_num = 1  # noqa: F841
        m_list = [1]  # noqa: F841
        a_str = "s"  # noqa: F841
        b_dict = {"k": 1}  # noqa: F841
        c_none = None  # noqa: F841
        raise ValueError("ordering")

    variables = variables_of(capture(ordering), "ordering")
    assert list(variables) == ["a_str", "c_none", "z_num", "b_dict", "m_list"]


def test_budget_stops_further_variables(capture: Callable[..., Any]) -> None:
    chunk = "x" * 1000

    def big_locals() -> None:
        v00 = v01 = v02 = v03 = v04 = v05 = v06 = v07 = v08 = v09 = chunk  # noqa: F841
        v10 = v11 = v12 = v13 = v14 = v15 = v16 = v17 = v18 = v19 = chunk  # noqa: F841
        v20 = v21 = v22 = v23 = v24 = v25 = v26 = v27 = v28 = v29 = chunk  # noqa: F841
        raise ValueError("budget")

    variables = variables_of(capture(big_locals), "big_locals")
    names = [n for n in variables if n.startswith("v")]
    assert 5 <= len(names) < 30
    assert names == [f"v{i:02d}" for i in range(len(names))]  # in name order, none skipped
    assert sum(len(str(v)) for v in variables.values()) <= 10 * 1024 + 1100


def _deeper_with_big_locals() -> None:
    deep_a = deep_b = deep_c = deep_d = deep_e = deep_f = deep_g = "y" * 1000  # noqa: F841
    raise ValueError("two frames")


def _outer_with_big_locals() -> None:
    out_a = out_b = out_c = out_d = out_e = out_f = out_g = "z" * 1000  # noqa: F841
    _deeper_with_big_locals()


def test_budget_is_per_event_across_frames(capture: Callable[..., Any]) -> None:
    entries = capture(_outer_with_big_locals)
    total = 0
    for frame in entries[0]["stacktrace"]["frames"]:
        total += sum(len(str(v)) for v in frame.get("code_variables", {}).values())
    assert total <= 10 * 1024 + 1100
    frames = {f["function"]: f for f in entries[0]["stacktrace"]["frames"]}
    kept = sum(
        len(frames[name].get("code_variables", {}))
        for name in ("_outer_with_big_locals", "_deeper_with_big_locals")
    )
    assert 7 <= kept < 14  # 14 x 1000 chars do not fit: the budget is shared by the event


def test_only_in_app_frames_get_code_variables(
    server: ScriptedServer, make_client: MakeClient, tmp_path: Any
) -> None:
    client = make_client(capture_exception_code_variables=True, project_root=str(tmp_path))

    def elsewhere() -> None:
        local_value = 1  # noqa: F841
        raise ValueError("not in app")

    try:
        elsewhere()
    except ValueError as exc:
        client.capture_exception(exc)
    client.flush()
    (event,) = server.events()
    for frame in event["properties"]["$exception_list"][0]["stacktrace"]["frames"]:
        assert "in_app" not in frame
        assert "code_variables" not in frame


def test_site_packages_frames_get_no_code_variables(
    server: ScriptedServer, make_client: MakeClient, tmp_path: Any, monkeypatch: Any
) -> None:
    site = tmp_path / "venv" / "site-packages"
    site.mkdir(parents=True)
    (site / "ph_cv_site.py").write_text("def call(fn):\n    lib_local = 1\n    fn()\n")
    monkeypatch.syspath_prepend(str(site))
    ph_cv_site = importlib.import_module("ph_cv_site")
    sys.modules.pop("ph_cv_site", None)

    def app_code() -> None:
        app_local = "a"  # noqa: F841
        raise ValueError("mixed")

    client = make_client(
        capture_exception_code_variables=True,
        project_root=str(tmp_path),
        in_app_modules=[__name__],
    )
    _trigger(lambda: ph_cv_site.call(app_code), client.capture_exception)
    client.flush()
    (event,) = server.events()
    frames = event["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    lib = [f for f in frames if f["module"] == "ph_cv_site"]
    assert lib and lib[0]["in_app"] is False and "code_variables" not in lib[0]
    app = [f for f in frames if f["function"] == "app_code"]
    assert app[0]["in_app"] is True and app[0]["code_variables"] == {"app_local": "a"}


# ---------------------------------------------------------------- chained entries


def _inner_of_chain() -> None:
    inner_local = "I"  # noqa: F841
    raise ValueError("inner")


def _outer_of_chain() -> None:
    outer_local = "O"  # noqa: F841
    try:
        _inner_of_chain()
    except ValueError as exc:
        raise RuntimeError("outer") from exc


def test_each_entry_frame_gets_its_own_locals(capture: Callable[..., Any]) -> None:
    # our reading of §8.6 (the official positional pairing quirk is not reproduced)
    outer_entry, inner_entry = capture(_outer_of_chain)
    outer_frames = outer_entry["stacktrace"]["frames"]
    inner_frames = inner_entry["stacktrace"]["frames"]
    assert [f["function"] for f in inner_frames] == ["_outer_of_chain", "_inner_of_chain"]
    assert inner_frames[-1]["code_variables"] == {"inner_local": "I"}
    assert inner_frames[0]["code_variables"]["outer_local"] == "O"
    assert outer_frames[-1]["function"] == "_outer_of_chain"
    assert outer_frames[-1]["code_variables"]["outer_local"] == "O"
    assert "inner_local" not in outer_frames[-1]["code_variables"]


# ---------------------------------------------------------------- failures are swallowed


class _BrokenRepr:
    __slots__ = ()

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class _BrokenDict:
    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        raise RuntimeError("__dict__ exploded")


def test_repr_raising_in_a_local(capture: Callable[..., Any]) -> None:
    def broken() -> None:
        bad_repr = _BrokenRepr()  # noqa: F841
        fine = "ok"  # noqa: F841
        raise ValueError("broken repr")

    entries = capture(broken)
    assert entries[0]["value"] == "broken repr"
    variables = variables_of(entries, "broken")
    assert variables["fine"] == "ok"
    assert isinstance(variables["bad_repr"], str)
    assert "repr exploded" not in variables["bad_repr"]


def test_failing_serialisation_still_sends_the_event(capture: Callable[..., Any]) -> None:
    def broken() -> None:
        bad_dict = _BrokenDict()  # noqa: F841
        raise ValueError("broken __dict__")

    entries = capture(broken)
    assert entries[0]["value"] == "broken __dict__"
    frame = next(f for f in entries[0]["stacktrace"]["frames"] if f["function"] == "broken")
    assert frame["in_app"] is True
    assert "bad_dict" not in json.dumps(frame.get("code_variables", {})) or isinstance(
        frame["code_variables"]["bad_dict"], str
    )


def test_context_override_enables_for_the_module_client(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    posthog.api_key = "phc_module"
    posthog.host = server.url
    monkeypatch.setattr(posthog, "project_root", HERE_DIR)
    client = posthog.setup()
    assert client.capture_exception_code_variables is False

    def with_local() -> None:
        letters = string.ascii_lowercase[:3]  # noqa: F841
        raise ValueError("module")

    with posthog.new_context():
        posthog.set_capture_exception_code_variables_context(True)
        _trigger(with_local, posthog.capture_exception)
    posthog.flush()
    (event,) = server.events()
    entries = event["properties"]["$exception_list"]
    assert variables_of(entries, "with_local") == {"letters": "abc"}
