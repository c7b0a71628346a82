"""``capture_exception`` and the ``$exception`` payload (spec core §4.2, §8.1-8.4, §9 18-21)."""

from __future__ import annotations

import builtins
import importlib
import logging
import os
import sys
import textwrap
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import posthog
from posthog import Client
from tests.support.http_server import ScriptedServer

MakeClient = Callable[..., Client]
Loader = Callable[..., ModuleType]
HERE = os.path.abspath(__file__)
ExceptionGroup = builtins.ExceptionGroup  # Python 3.11+
FRAME_KEYS = {
    "platform", "filename", "abs_path", "function", "module", "lineno",
    "pre_context", "context_line", "post_context",
}


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Write modules under ``tmp_path`` (or a sub-root) and import them."""
    loaded: list[str] = []
    roots: set[Path] = set()

    def load_module(relpath: str, source: str, root: str = "") -> ModuleType:
        base = tmp_path / root if root else tmp_path
        if base not in roots:
            base.mkdir(parents=True, exist_ok=True)
            monkeypatch.syspath_prepend(str(base))
            roots.add(base)
        path = base / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
        name = relpath[: -len(".py")].replace("/", ".")
        name = name.removesuffix(".__init__")
        importlib.invalidate_caches()
        module = importlib.import_module(name)
        loaded.append(name)
        return module

    yield load_module
    for name in list(sys.modules):
        if any(name == n or name.startswith(n.split(".")[0] + ".") for n in loaded):
            sys.modules.pop(name, None)
    for name in loaded:
        sys.modules.pop(name.split(".")[0], None)


def sent(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    client.flush()
    return server.events()


def only_event(client: Client, server: ScriptedServer) -> dict[str, Any]:
    events = sent(client, server)
    assert len(events) == 1, events
    return events[0]


def exception_list(event: dict[str, Any]) -> list[dict[str, Any]]:
    assert event["event"] == "$exception"
    entries = event["properties"]["$exception_list"]
    assert isinstance(entries, list)
    return entries


def frames_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    frames = entry["stacktrace"]["frames"]
    assert entry["stacktrace"]["type"] == "raw"
    return frames


def is_uuid4(text: Any) -> bool:
    return isinstance(text, str) and uuid.UUID(text).version == 4


def this_line() -> int:
    return sys._getframe(1).f_lineno


def capture_raised(client: Client, fn: Callable[[], Any], **kwargs: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        assert client.capture_exception(exc, **kwargs) is not None
        return exc
    raise AssertionError("fn did not raise")


class AppError(Exception):
    pass


class Outer:
    class Inner(Exception):
        pass


# ---------------------------------------------------------------- contexts capturing (§4.2)


def test_nested_capturing_contexts_send_exactly_one_event(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    # spec §9 behaviour 18
    client = make_client()
    original = ValueError("once")
    with pytest.raises(ValueError) as info:  # noqa: SIM117 - the nesting is the point
        with client.new_context(capture_exceptions=True):
            posthog.tag("outer", 1)
            posthog.identify_context("ctx-user")
            with client.new_context(capture_exceptions=True):
                posthog.tag("inner", 2)
                raise original
    assert info.value is original  # re-raised unchanged
    event = only_event(client, server)
    assert event["distinct_id"] == "ctx-user"
    assert event["properties"]["inner"] == 2  # captured inside the innermost scope
    assert event["properties"]["outer"] == 1
    assert exception_list(event)[0]["value"] == "once"
    assert getattr(original, "__posthog_exception_captured") is True
    assert getattr(original, "__posthog_exception_uuid") == event["uuid"]
    assert client.capture_exception(original) is None
    assert posthog.capture_exception(original) is None
    assert sent(client, server) == [event]


def test_default_context_does_not_capture(
    server: ScriptedServer, make_client: MakeClient, module_client: Client
) -> None:
    # spec §9 behaviour 19
    client = make_client()
    with pytest.raises(ValueError), client.new_context():
        raise ValueError("not captured")
    with pytest.raises(ValueError), posthog.new_context():
        raise ValueError("not captured either")
    assert sent(client, server) == []
    assert sent(module_client, server) == []


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_escaping_a_capturing_context_are_not_captured(
    server: ScriptedServer,
    make_client: MakeClient,
    module_client: Client,
    exc_type: type[BaseException],
) -> None:
    client = make_client()
    with pytest.raises(exc_type), client.new_context(capture_exceptions=True):
        raise exc_type()
    with pytest.raises(exc_type), posthog.new_context(capture_exceptions=True):
        raise exc_type()
    assert sent(client, server) == []
    assert sent(module_client, server) == []


# ---------------------------------------------------------------- chains (§8.3)


def _outer_from_root() -> None:
    try:
        raise ValueError("root")
    except ValueError as exc:
        raise RuntimeError("outer") from exc


def test_explicit_cause_chain(server: ScriptedServer, make_client: MakeClient) -> None:
    # spec §9 behaviour 20
    client = make_client()
    capture_raised(client, _outer_from_root)
    first, second = exception_list(only_event(client, server))
    assert first["type"] == "RuntimeError"
    assert first["value"] == "outer"
    assert first["module"] is None
    assert first["mechanism"] == {
        "type": "generic", "handled": True, "exception_id": 0, "synthetic": False
    }
    assert second["type"] == "ValueError"
    assert second["value"] == "root"
    assert second["mechanism"] == {
        "type": "chained", "exception_id": 1, "parent_id": 0, "source": "cause",
        "synthetic": False,
    }
    assert frames_of(second)[-1]["function"] == "_outer_from_root"


def _three_levels() -> None:
    try:
        try:
            raise KeyError("a")
        except KeyError as a:
            raise TypeError("b") from a
    except TypeError:
        raise LookupError("c")  # noqa: B904 - implicit context on purpose


def test_implicit_context_chain_three_levels(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    capture_raised(client, _three_levels)
    entries = exception_list(only_event(client, server))
    assert [e["type"] for e in entries] == ["LookupError", "TypeError", "KeyError"]
    assert [e["value"] for e in entries] == ["c", "b", "'a'"]
    assert entries[1]["mechanism"] == {
        "type": "chained", "exception_id": 1, "parent_id": 0, "source": "context",
        "synthetic": False,
    }
    assert entries[2]["mechanism"] == {
        "type": "chained", "exception_id": 2, "parent_id": 1, "source": "cause",
        "synthetic": False,
    }
    assert "handled" not in entries[1]["mechanism"]


def _from_none() -> None:
    try:
        raise ValueError("hidden")
    except ValueError:
        raise RuntimeError("alone") from None


def test_raise_from_none_has_no_chain(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    capture_raised(client, _from_none)
    (entry,) = exception_list(only_event(client, server))
    assert entry["type"] == "RuntimeError"


def test_chain_is_limited_and_cycles_are_skipped(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    long_chain = ValueError("0")
    current = long_chain
    for i in range(1, 80):
        nxt = ValueError(str(i))
        current.__cause__ = nxt
        current = nxt
    client.capture_exception(long_chain)

    a, b = ValueError("a"), ValueError("b")
    a.__context__ = b
    b.__context__ = a
    client.capture_exception(a)
    long_event, cycle_event = sent(client, server)
    entries = exception_list(long_event)
    assert len(entries) == 50
    assert [e["value"] for e in entries] == [str(i) for i in range(50)]
    assert [e["value"] for e in exception_list(cycle_event)] == ["a", "b"]


def _raise_group() -> None:
    def inner_fail() -> None:
        raise TypeError("b")

    members: list[Exception] = []
    try:
        inner_fail()
    except TypeError as exc:
        members.append(exc)
    raise ExceptionGroup(
        "outer group",
        [ValueError("a"), ExceptionGroup("inner group", members), KeyError("c")],
    )


def test_exception_group_members_depth_first(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    capture_raised(client, _raise_group)
    entries = exception_list(only_event(client, server))
    assert [(e["type"], e["value"]) for e in entries] == [
        # a group's ``message`` attribute is its value (not "... (3 sub-exceptions)")
        ("ExceptionGroup", "outer group"),
        ("ValueError", "a"),
        ("ExceptionGroup", "inner group"),
        ("TypeError", "b"),
        ("KeyError", "'c'"),
    ]
    assert entries[0]["mechanism"] == {
        "type": "generic", "handled": True, "exception_id": 0, "synthetic": False,
        "is_exception_group": True,
    }
    assert entries[1]["mechanism"] == {
        "type": "chained", "exception_id": 1, "parent_id": 0, "source": "member",
        "synthetic": False,
    }
    assert entries[2]["mechanism"]["is_exception_group"] is True
    assert entries[2]["mechanism"]["parent_id"] == 0
    assert entries[3]["mechanism"]["parent_id"] == 2
    assert entries[3]["mechanism"]["source"] == "member"
    assert entries[4]["mechanism"]["parent_id"] == 0
    assert entries[4]["mechanism"]["exception_id"] == 4
    # never-raised members have no frames; the raised one does
    assert "stacktrace" not in entries[1]
    assert "stacktrace" not in entries[2]
    assert frames_of(entries[3])[-1]["function"] == "inner_fail"
    assert frames_of(entries[0])[-1]["function"] == "_raise_group"


# ---------------------------------------------------------------- entry fields (§8.3)


def test_never_raised_exception_gets_a_synthetic_stack(
    server: ScriptedServer, make_client: MakeClient, module_client: Client
) -> None:
    # spec §9 behaviour 21
    client = make_client()
    line = this_line() + 1
    client.capture_exception(KeyError("x"))
    module_line = this_line() + 1
    posthog.capture_exception(KeyError("y"))
    module_client.flush()
    events = sent(client, server)
    assert len(events) == 2
    by_value = {exception_list(e)[0]["value"]: e for e in events}
    for value, expected_line in (("'x'", line), ("'y'", module_line)):
        (entry,) = exception_list(by_value[value])
        assert entry["type"] == "KeyError"
        assert entry["module"] is None
        assert entry["mechanism"] == {
            "type": "generic", "handled": True, "exception_id": 0, "synthetic": True
        }
        frames = frames_of(entry)
        assert frames
        for frame in frames:
            module = frame.get("module") or ""
            assert module != "posthog" and not module.startswith("posthog.")
        assert frames[-1]["function"] == "test_never_raised_exception_gets_a_synthetic_stack"
        assert frames[-1]["lineno"] == expected_line
        assert frames[-1]["abs_path"] == HERE


def test_type_and_module_of_exception_classes(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    client.capture_exception(AppError("mine"))
    client.capture_exception(Outer.Inner("nested"))
    client.capture_exception(ValueError("builtin"))
    client.capture_exception(OSError(2, "No such file or directory"))
    client.capture_exception(OSError("no errno"))
    mine, nested, builtin, with_errno, without_errno = (
        exception_list(e)[0] for e in sent(client, server)
    )
    assert (mine["type"], mine["module"]) == ("AppError", __name__)
    assert (nested["type"], nested["module"]) == ("Outer.Inner", __name__)
    assert (builtin["type"], builtin["module"]) == ("ValueError", None)
    assert with_errno["type"] == "FileNotFoundError"  # OSError(2, ...) builds the subclass
    assert with_errno["mechanism"]["meta"] == {"errno": {"number": 2}}
    assert with_errno["value"] == "[Errno 2] No such file or directory"
    assert "meta" not in without_errno["mechanism"]


def test_errno_of_a_real_os_error(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    capture_raised(client, lambda: open(os.path.join(os.sep, "no", "such", "file")))  # noqa: SIM115
    entry = exception_list(only_event(client, server))[0]
    assert entry["mechanism"]["meta"]["errno"]["number"] == 2


class _WithMessage(Exception):
    def __init__(self, message: Any) -> None:
        super().__init__("from args")
        self.message = message


class _WithDetail(Exception):
    def __init__(self, detail: Any) -> None:
        super().__init__("from args")
        self.detail = detail


class _WithBoth(Exception):
    message = "the message"
    detail = "the detail"


def test_value_from_message_or_detail_attribute(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    for exc in (
        _WithMessage("from message"),
        _WithMessage({"code": 7}),
        _WithMessage(None),
        _WithDetail("from detail"),
        _WithBoth(),
    ):
        client.capture_exception(exc)
    values = [exception_list(e)[0]["value"] for e in sent(client, server)]
    assert values == [
        "from message",
        str({"code": 7}),
        "from args",
        "from detail",
        "the message",
    ]


# ---------------------------------------------------------------- frames (§8.3, §8.4)

HELPER_SOURCE = """
\"\"\"helper module\"\"\"
# line 2
# line 3
# line 4
# line 5
# line 6


def fail(flag):
    value = flag
    raise ValueError("boom")  # line 11
# after 1
# after 2
# after 3
# after 4
# after 5
# after 6
"""


def test_every_frame_field(
    server: ScriptedServer, make_client: MakeClient, load: Loader, tmp_path: Path
) -> None:
    mod = load("ph_fr_pkg/__init__.py", "")
    mod = load("ph_fr_pkg/sub/__init__.py", "")
    mod = load("ph_fr_pkg/sub/mod.py", HELPER_SOURCE)
    client = make_client(project_root=str(tmp_path))
    try:
        call_line = this_line() + 1
        mod.fail(1)
    except ValueError as exc:
        client.capture_exception(exc)
    entry = exception_list(only_event(client, server))[0]
    outer, inner = frames_of(entry)

    lines = textwrap.dedent(HELPER_SOURCE).lstrip("\n").splitlines()
    assert inner == {
        "platform": "python",
        "filename": "ph_fr_pkg/sub/mod.py",
        "abs_path": str(tmp_path / "ph_fr_pkg" / "sub" / "mod.py"),
        "function": "fail",
        "module": "ph_fr_pkg.sub.mod",
        "lineno": 11,
        "pre_context": lines[5:10],
        "context_line": '    raise ValueError("boom")  # line 11',
        "post_context": lines[11:16],
        "in_app": True,
    }
    assert inner["post_context"][0] == "# after 1"
    assert inner["pre_context"][0] == "# line 6"

    assert set(outer) == FRAME_KEYS  # not under project_root: in_app left out
    assert outer["platform"] == "python"
    assert outer["filename"] == "tests/core/test_exceptions.py"
    assert outer["abs_path"] == HERE
    assert outer["function"] == "test_every_frame_field"
    assert outer["module"] == __name__
    assert outer["lineno"] == call_line
    assert outer["context_line"] == "        mod.fail(1)"
    assert len(outer["pre_context"]) == 5 and len(outer["post_context"]) == 5
    assert outer["pre_context"][-1] == "        call_line = this_line() + 1"


def test_filename_for_top_level_modules_and_package_inits(
    server: ScriptedServer, make_client: MakeClient, load: Loader, tmp_path: Path
) -> None:
    top = load("ph_fr_top.py", "def fail():\n    raise ValueError('top')\n# end\n")
    init = load("ph_fr_pkg2/__init__.py", "def fail():\n    raise ValueError('init')\n")
    sub = load("ph_fr_pkg2/sub/__init__.py", "def fail():\n    raise ValueError('sub')\n")
    client = make_client(project_root=str(tmp_path))
    capture_raised(client, top.fail)
    capture_raised(client, init.fail)
    capture_raised(client, sub.fail)
    top_event, init_event, sub_event = sent(client, server)
    top_frame = frames_of(exception_list(top_event)[0])[-1]
    init_frame = frames_of(exception_list(init_event)[0])[-1]
    sub_frame = frames_of(exception_list(sub_event)[0])[-1]
    assert top_frame["filename"] == "ph_fr_top.py"
    assert top_frame["module"] == "ph_fr_top"
    assert top_frame["pre_context"] == ["def fail():"]  # short file: fewer than 5 lines
    assert top_frame["context_line"] == "    raise ValueError('top')"
    assert top_frame["post_context"] == ["# end"]
    # a top-level package's module name has no dot: treated as a top-level module
    assert init_frame["filename"] == "__init__.py"
    assert init_frame["module"] == "ph_fr_pkg2"
    assert init_frame["abs_path"] == str(tmp_path / "ph_fr_pkg2" / "__init__.py")
    assert init_frame["post_context"] == []
    assert sub_frame["filename"] == "ph_fr_pkg2/sub/__init__.py"
    assert sub_frame["module"] == "ph_fr_pkg2.sub"


def test_source_lines_over_1024_bytes_become_null(
    server: ScriptedServer, make_client: MakeClient, load: Loader, tmp_path: Path
) -> None:
    exactly = "    #" + "x" * 1019  # 1024 bytes: kept
    over = "    #" + "x" * 1020  # 1025 bytes
    wide = "    #" + "é" * 600  # 605 characters but 1205 bytes
    source = "\n".join(["def fail():", exactly, over, "    raise ValueError('x')", wide, ""])
    long_raise = "def fail():\n    raise ValueError('y')  #" + "y" * 1100 + "\n"
    mod = load("ph_fr_long.py", source)
    mod2 = load("ph_fr_long2.py", long_raise)
    client = make_client(project_root=str(tmp_path))
    capture_raised(client, mod.fail)
    capture_raised(client, mod2.fail)
    first, second = sent(client, server)
    frame = frames_of(exception_list(first)[0])[-1]
    assert frame["pre_context"] == ["def fail():", exactly, None]
    assert frame["context_line"] == "    raise ValueError('x')"
    assert frame["post_context"] == [None]
    frame2 = frames_of(exception_list(second)[0])[-1]
    assert frame2["context_line"] is None
    assert frame2["lineno"] == 2


def test_frames_are_ordered_outermost_first(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    def level_c() -> None:
        raise ValueError("deep")

    def level_b() -> None:
        level_c()

    def level_a() -> None:
        level_b()

    client = make_client()
    capture_raised(client, level_a)
    frames = frames_of(exception_list(only_event(client, server))[0])
    assert [f["function"] for f in frames] == [
        "capture_raised", "level_a", "level_b", "level_c"
    ]
    linenos = [f["lineno"] for f in frames]
    assert linenos[1:] == sorted(linenos[1:], reverse=True)  # defined bottom-up above


def _innermost_visible() -> None:
    raise ValueError("hidden frames")


def _hidden_by_traceback_hide() -> None:
    __traceback_hide__ = True  # read from the frame
    _innermost_visible()


def _hidden_by_tracebackhide() -> None:
    __tracebackhide__ = True
    _hidden_by_traceback_hide()


def _visible_outer() -> None:
    _hidden_by_tracebackhide()


def test_frames_marked_hidden_are_skipped(
    server: ScriptedServer, make_client: MakeClient, load: Loader, tmp_path: Path
) -> None:
    sentry = load("sentry_sdk/__init__.py", "")
    sentry = load(
        "sentry_sdk/integ.py",
        "def wrap(fn):\n    fn()\n",
    )
    client = make_client()
    capture_raised(client, lambda: sentry.wrap(_visible_outer))
    functions = [f["function"] for f in frames_of(exception_list(only_event(client, server))[0])]
    assert functions == ["capture_raised", "<lambda>", "_visible_outer", "_innermost_visible"]


def test_in_app_rules(
    server: ScriptedServer, make_client: MakeClient, load: Loader, tmp_path: Path
) -> None:
    app = load("ph_ia_app.py", "def call(fn):\n    fn()\n", root="proj")
    site = load("ph_ia_site.py", "def call(fn):\n    fn()\n", root="proj/venv/site-packages")
    dist = load("ph_ia_dist.py", "def call(fn):\n    fn()\n", root="proj/venv/dist-packages")
    forced = load("ph_ia_forced.py", "def call(fn):\n    fn()\n", root="proj/venv/site-packages")
    load("ph_ia_mods/__init__.py", "", root="elsewhere")
    prefixed = load("ph_ia_mods/sub.py", "def call(fn):\n    fn()\n", root="elsewhere")
    similar = load("ph_ia_modsx.py", "def call(fn):\n    fn()\n", root="elsewhere")
    code = compile("def call(fn):\n    fn()\n", "<generated>", "exec")
    generated: dict[str, Any] = {"__name__": "ph_ia_generated"}
    exec(code, generated)

    def boom() -> None:
        raise ValueError("in app?")

    def chain() -> None:
        app.call(
            lambda: site.call(
                lambda: dist.call(
                    lambda: forced.call(
                        lambda: prefixed.call(
                            lambda: similar.call(lambda: generated["call"](boom))
                        )
                    )
                )
            )
        )

    client = make_client(
        project_root=str(tmp_path / "proj"), in_app_modules=["ph_ia_forced", "ph_ia_mods"]
    )
    capture_raised(client, chain)
    frames = frames_of(exception_list(only_event(client, server))[0])
    by_module = {f["module"]: f for f in frames if f["function"] == "call"}
    assert by_module["ph_ia_app"]["in_app"] is True  # under project_root
    assert by_module["ph_ia_site"]["in_app"] is False  # site-packages beats project_root
    assert by_module["ph_ia_dist"]["in_app"] is False
    assert by_module["ph_ia_forced"]["in_app"] is True  # in_app_modules wins
    assert by_module["ph_ia_mods.sub"]["in_app"] is True  # dotted prefix
    assert "in_app" not in by_module["ph_ia_modsx"]  # not under root, not a dotted prefix
    gen_frame = by_module["ph_ia_generated"]
    assert "in_app" not in gen_frame  # no abs_path
    assert gen_frame.get("abs_path") is None
    assert "context_line" not in gen_frame
    # frames of this test file are outside project_root
    assert "in_app" not in frames[0]


def test_project_root_defaults_to_the_working_directory(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(os.path.dirname(HERE))
    client = make_client()
    assert client.project_root == os.path.dirname(HERE)
    monkeypatch.chdir(os.sep)  # later changes do not matter
    capture_raised(client, _innermost_visible)
    frame = frames_of(exception_list(only_event(client, server))[0])[-1]
    assert frame["in_app"] is True


# ---------------------------------------------------------------- properties (§8.2)


def test_manual_capture_properties(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exc = capture_raised(
            client, _innermost_visible, properties={"custom": 1, "$lib": "ignored-later"}
        )
    event = only_event(client, server)
    props = event["properties"]
    assert props["$exception_level"] == "error"
    assert "$exception_source" not in props
    assert "$exception_fingerprint" not in props
    assert "$exception_personURL" not in props
    assert props["custom"] == 1
    assert props["$process_person_profile"] is False
    assert is_uuid4(event["distinct_id"])
    assert getattr(exc, "__posthog_exception_uuid") == event["uuid"]


def test_overriding_reserved_exception_keys_warns(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with pytest.warns(DeprecationWarning):
        client.capture_exception(
            ValueError("x"), properties={"$exception_level": "warning", "other": True}
        )
    props = only_event(client, server)["properties"]
    assert props["$exception_level"] == "warning"
    assert props["other"] is True


def test_capture_kwargs_are_forwarded(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    mine = "0b6c3b49-8a53-4c1e-9a39-0c2f4a7e1e11"
    returned = client.capture_exception(
        ValueError("x"),
        distinct_id="explicit",
        uuid=mine,
        timestamp="2021-02-03T04:05:06+00:00",
        groups={"company": "42"},
        disable_geoip=False,
    )
    event = only_event(client, server)
    assert returned == mine == event["uuid"]
    assert event["distinct_id"] == "explicit"
    assert event["timestamp"] == "2021-02-03T04:05:06+00:00"
    assert event["properties"]["$groups"] == {"company": "42"}
    assert "$geoip_disable" not in event["properties"]


def test_distinct_id_argument_context_and_personless(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("ctx-user")
        posthog.set_context_session("s1")
        client.capture_exception(ValueError("a"), distinct_id="arg-user")
        client.capture_exception(ValueError("b"))
    client.capture_exception(ValueError("c"))
    arg, ctx, none = sent(client, server)
    assert arg["distinct_id"] == "arg-user"
    assert ctx["distinct_id"] == "ctx-user"
    assert ctx["properties"]["$session_id"] == "s1"
    assert "$process_person_profile" not in ctx["properties"]
    assert is_uuid4(none["distinct_id"])
    assert none["properties"]["$process_person_profile"] is False


def test_before_send_sees_the_rendered_exception_list(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    seen: list[Any] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message["properties"]["$exception_list"])
        message["properties"]["$exception_list"][0]["value"] = "edited"
        return message

    client = make_client(before_send=hook)
    client.capture_exception(ValueError("original"))
    entry = exception_list(only_event(client, server))[0]
    assert isinstance(seen[0], list) and seen[0][0]["type"] == "ValueError"
    assert entry["value"] == "edited"


class _SpanContext:
    def __init__(self, valid: bool) -> None:
        self.is_valid = valid
        self.trace_id = 0x0AF7651916CD43DD8448EB211C80319C
        self.span_id = 0x00F067AA0BA902B7


def _fake_opentelemetry(monkeypatch: pytest.MonkeyPatch, valid: bool) -> None:
    class Span:
        def get_span_context(self) -> _SpanContext:
            return _SpanContext(valid)

    trace = types.ModuleType("opentelemetry.trace")
    trace.get_current_span = Span  # type: ignore[attr-defined]
    package = types.ModuleType("opentelemetry")
    package.trace = trace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry", package)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)


def test_active_span_ids_are_always_added_to_exceptions(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_opentelemetry(monkeypatch, valid=True)
    client = make_client()  # capture_trace_context stays False
    client.capture_exception(ValueError("traced"))
    client.capture("plain", distinct_id="u")
    exc, plain = sent(client, server)
    assert exc["properties"]["$trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert exc["properties"]["$span_id"] == "00f067aa0ba902b7"
    assert "$trace_id" not in plain["properties"]


def test_invalid_span_adds_no_ids(
    server: ScriptedServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_opentelemetry(monkeypatch, valid=False)
    client = make_client()
    client.capture_exception(ValueError("untraced"))
    props = only_event(client, server)["properties"]
    assert "$trace_id" not in props and "$span_id" not in props


# ---------------------------------------------------------------- argument forms (§8.1)


def test_no_argument_inside_except_does_not_mark_the_exception(
    server: ScriptedServer, make_client: MakeClient, module_client: Client
) -> None:
    client = make_client()
    with pytest.raises(ValueError) as info, client.new_context(capture_exceptions=True):
        try:
            raise ValueError("handled then re-raised")
        except ValueError as exc:
            assert client.capture_exception(None) is not None
            assert not hasattr(exc, "__posthog_exception_captured")
            raise
    events = sent(client, server)
    assert len(events) == 2  # the enclosing context captured it again
    assert all(exception_list(e)[0]["value"] == "handled then re-raised" for e in events)
    assert all(exception_list(e)[0]["mechanism"]["synthetic"] is False for e in events)
    assert getattr(info.value, "__posthog_exception_captured") is True

    try:
        raise KeyError("module level")
    except KeyError as exc:
        assert posthog.capture_exception() is not None
        assert not hasattr(exc, "__posthog_exception_captured")
    (module_event,) = sent(module_client, server)[2:]
    assert exception_list(module_event)[0]["value"] == "'module level'"


def test_no_exception_at_all_returns_none_and_warns(
    server: ScriptedServer,
    make_client: MakeClient,
    module_client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="posthog"):
        assert client.capture_exception(None) is None
        assert posthog.capture_exception() is None
    warnings_logged = [
        r.getMessage() for r in caplog.records
        if r.name == "posthog" and r.levelno == logging.WARNING
    ]
    assert len(warnings_logged) == 2
    assert all(m.startswith("[PostHog] ") for m in warnings_logged)
    assert sent(client, server) == []


def test_exc_info_tuple_argument(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    try:
        _innermost_visible()
    except ValueError:
        info = sys.exc_info()
    returned = client.capture_exception(info)
    event = only_event(client, server)
    assert returned == event["uuid"]
    entry = exception_list(event)[0]
    assert entry["type"] == "ValueError"
    assert entry["mechanism"]["synthetic"] is False
    assert [f["function"] for f in frames_of(entry)] == [
        "test_exc_info_tuple_argument", "_innermost_visible"
    ]


def test_log_captured_exceptions(
    server: ScriptedServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = make_client()
    loud = make_client(log_captured_exceptions=True)
    with caplog.at_level(logging.DEBUG, logger="posthog"):
        quiet.capture_exception(ValueError("quiet"))
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        exc = capture_raised(loud, _innermost_visible)
    records = [r for r in caplog.records if r.name == "posthog" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].getMessage().startswith("[PostHog] ")
    assert records[0].exc_info is not None and records[0].exc_info[1] is exc


def test_disabled_client_captures_nothing(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(disabled=True)
    exc = ValueError("x")
    assert client.capture_exception(exc) is None
    assert not hasattr(exc, "__posthog_exception_captured")
    assert sent(client, server) == []


def test_debug_client_never_raises_from_capture_exception(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(debug=True)

    def bad_hook(message: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("before_send broke")

    assert client.capture_exception(ValueError("x"), properties=["not", "a", "dict"]) is None
    assert client.capture_exception(ValueError("x"), no_such_argument=1) is None
    assert client.capture_exception("not an exception") is None
    client.before_send = bad_hook
    assert client.capture_exception(ValueError("x")) is None
    client.before_send = None
    assert client.capture_exception(ValueError("fine")) is not None
    assert [exception_list(e)[0]["value"] for e in sent(client, server)] == ["fine"]
