"""``capture_exception`` with hostile inputs: it completes, stays small and never raises (§8)."""

from __future__ import annotations

import importlib
import json
import linecache
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from posthog import Client
from tests.support.http_server import ScriptedServer

MakeClient = Callable[..., Client]
HERE_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_EVENT_BYTES = 900 * 1024


def only_event(client: Client, server: ScriptedServer) -> dict[str, Any]:
    client.flush()
    events = server.events()
    assert len(events) == 1, events
    return events[0]


def first_entry(event: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = event["properties"]["$exception_list"][0]
    return entry


def wire_size(event: dict[str, Any]) -> int:
    return len(json.dumps(event).encode())


def is_uuid4(text: Any) -> bool:
    return isinstance(text, str) and uuid.UUID(text).version == 4


def _trigger(fn: Callable[[], Any], report: Callable[[BaseException], Any]) -> Any:
    try:
        fn()
    except Exception as exc:
        return report(exc)
    raise AssertionError("fn did not raise")


# ---------------------------------------------------------------- broken exceptions


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class _StrRecurses(Exception):
    def __str__(self) -> str:
        return str(self)


class _MessageRaises(Exception):
    @property
    def message(self) -> str:
        raise RuntimeError("no message")


class _RefusesAttributes(Exception):
    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("read-only exception")


class _OddErrno(Exception):
    errno = "not-a-number"


def _raise_str_raises() -> None:
    raise _StrRaises("x")


@pytest.mark.parametrize("debug", [False, True])
def test_unprintable_exceptions_are_still_captured(
    server: ScriptedServer, make_client: MakeClient, debug: bool
) -> None:
    client = make_client(debug=debug)
    returned = [
        _trigger(_raise_str_raises, client.capture_exception),
        client.capture_exception(_StrRecurses()),
        client.capture_exception(_MessageRaises("args text")),
        client.capture_exception(_OddErrno("odd")),
    ]
    assert all(is_uuid4(r) for r in returned)
    client.flush()
    events = server.events()
    assert [e["uuid"] for e in events] == returned
    entries = [first_entry(e) for e in events]
    assert [e["type"] for e in entries] == [
        "_StrRaises", "_StrRecurses", "_MessageRaises", "_OddErrno"
    ]
    for entry in entries:
        assert isinstance(entry["value"], str)
    assert entries[2]["value"] == "args text"  # a raising ``message`` falls back to str()
    assert "meta" not in entries[3]["mechanism"]


def test_exception_refusing_attributes_is_captured_every_time(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    exc = _RefusesAttributes("locked")
    first = client.capture_exception(exc)
    second = client.capture_exception(exc)  # could not be marked: captured again
    assert is_uuid4(first) and is_uuid4(second) and first != second
    client.flush()
    assert len(server.events()) == 2


# ---------------------------------------------------------------- hostile locals


def test_huge_and_cyclic_locals(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client(capture_exception_code_variables=True, project_root=HERE_DIR)

    def hostile() -> None:
        big_list = list(range(1_000_000))  # noqa: F841
        big_dict = {i: str(i) for i in range(100_000)}  # noqa: F841
        big_text = "x" * 5_000_000  # noqa: F841
        big_bytes = b"y" * 5_000_000  # noqa: F841
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        ring: dict[str, Any] = {}
        ring["a"] = {"b": ring}
        deep: list[Any] = []
        node = deep
        for _ in range(5000):
            child: list[Any] = []
            node.append(child)
            node = child
        raise ValueError("hostile locals")

    started = time.monotonic()
    returned = _trigger(hostile, client.capture_exception)
    elapsed = time.monotonic() - started
    assert is_uuid4(returned)
    assert elapsed < 5
    event = only_event(client, server)
    assert event["uuid"] == returned
    assert wire_size(event) < 64 * 1024
    frame = first_entry(event)["stacktrace"]["frames"][-1]
    assert frame["function"] == "hostile"
    variables = frame["code_variables"]
    assert variables["big_text"] == "$$_posthog_value_too_long_$$"
    assert "<circular ref>" in variables["cyclic"]
    assert "<circular ref>" in variables["ring"]


def _dive(depth: int) -> None:
    if depth == 0:
        raise ValueError("bottom")
    _dive(depth - 1)


@pytest.mark.parametrize("code_variables", [False, True])
def test_very_deep_traceback(
    server: ScriptedServer, make_client: MakeClient, code_variables: bool
) -> None:
    client = make_client(
        capture_exception_code_variables=code_variables, project_root=HERE_DIR
    )
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        started = time.monotonic()
        returned = _trigger(lambda: _dive(2500), client.capture_exception)
        elapsed = time.monotonic() - started
    finally:
        sys.setrecursionlimit(limit)
    assert is_uuid4(returned)
    assert elapsed < 3
    event = only_event(client, server)  # delivered: not dropped for its size
    assert event["uuid"] == returned
    assert wire_size(event) < MAX_EVENT_BYTES
    frames = first_entry(event)["stacktrace"]["frames"]
    assert frames[0]["function"] == "_trigger"  # outermost first
    assert frames[-1]["function"] == "_dive"
    assert frames[-1]["context_line"] == '        raise ValueError("bottom")'


# ---------------------------------------------------------------- missing source


def test_frame_whose_source_file_was_deleted(
    server: ScriptedServer,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "ph_rb_gone.py"
    path.write_text("def fail():\n    raise ValueError('source is gone')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("ph_rb_gone")
    finally:
        sys.modules.pop("ph_rb_gone", None)
    path.unlink()
    linecache.checkcache(str(path))
    client = make_client(project_root=str(tmp_path))
    returned = _trigger(module.fail, client.capture_exception)
    event = only_event(client, server)
    assert event["uuid"] == returned
    frame = first_entry(event)["stacktrace"]["frames"][-1]
    assert frame["function"] == "fail"
    assert frame["abs_path"] == str(path)
    assert frame["lineno"] == 2
    assert frame["in_app"] is True
    for key in ("pre_context", "context_line", "post_context"):
        assert key not in frame


def test_frames_of_code_without_a_module_name(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    namespace: dict[str, Any] = {"__builtins__": __builtins__}
    exec(compile("def fail():\n    raise ValueError('anon')\n", "<anon>", "exec"), namespace)
    client = make_client(capture_exception_code_variables=True, project_root=HERE_DIR)
    assert is_uuid4(_trigger(namespace["fail"], client.capture_exception))
    frame = first_entry(only_event(client, server))["stacktrace"]["frames"][-1]
    assert frame["function"] == "fail"
    assert frame["module"] is None
    assert frame["lineno"] == 2


# ---------------------------------------------------------------- concurrency


def test_concurrent_captures_from_many_threads(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(capture_exception_code_variables=True, project_root=HERE_DIR)
    results: list[Any] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            got = _trigger(lambda depth=i: _dive(depth), client.capture_exception)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80 and all(is_uuid4(r) for r in results)
    client.flush()
    assert sorted(e["uuid"] for e in server.events()) == sorted(results)
