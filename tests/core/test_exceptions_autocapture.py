"""Exception autocapture: excepthook wrappers, restoring them, rate limiting (spec core §8.5)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest

from posthog import Client
from posthog.autocapture import RateLimiter
from tests.support.http_server import ScriptedServer

MakeClient = Callable[..., Client]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
UNCAUGHT = {"type": "onuncaughtexception", "handled": False, "exception_id": 0, "synthetic": False}


class Recorders:
    """Our own hooks, installed before any client so the wrappers must chain to them."""

    def __init__(self) -> None:
        self.sys_calls: list[tuple[Any, ...]] = []
        self.thread_calls: list[Any] = []

    def sys_hook(self, *args: Any) -> None:
        self.sys_calls.append(args)

    def thread_hook(self, args: Any) -> None:
        self.thread_calls.append(args)


@pytest.fixture
def recorders(monkeypatch: pytest.MonkeyPatch) -> Recorders:
    rec = Recorders()
    monkeypatch.setattr(sys, "excepthook", rec.sys_hook)
    monkeypatch.setattr(threading, "excepthook", rec.thread_hook)
    return rec


def sent(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    client.flush()
    return server.events()


def _crash(exc: BaseException) -> None:
    raise exc


def exc_info_of(exc: BaseException) -> ExcInfo:
    try:
        _crash(exc)
    except BaseException:
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None and info[2] is not None
    return info  # type: ignore[return-value]


# ---------------------------------------------------------------- hooks


def test_sys_excepthook_captures_then_calls_the_previous_hook(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    client = make_client(enable_exception_autocapture=True)
    assert sys.excepthook != recorders.sys_hook
    assert threading.excepthook != recorders.thread_hook

    info = exc_info_of(ValueError("uncaught"))
    sys.excepthook(*info)
    assert recorders.sys_calls == [info]

    (event,) = sent(client, server)
    props = event["properties"]
    assert props["$exception_level"] == "fatal"
    assert props["$exception_source"] == "python.sys_excepthook"
    (entry,) = props["$exception_list"]
    assert entry["type"] == "ValueError"
    assert entry["value"] == "uncaught"
    assert entry["mechanism"] == UNCAUGHT
    assert entry["stacktrace"]["frames"][-1]["function"] == "_crash"
    assert props["$process_person_profile"] is False

    client.shutdown()
    assert sys.excepthook == recorders.sys_hook
    assert threading.excepthook == recorders.thread_hook


def test_uncaught_exception_in_a_thread_is_captured(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    client = make_client(enable_exception_autocapture=True)

    def work() -> None:
        raise KeyError("in thread")

    worker = threading.Thread(target=work, name="ph-worker")
    worker.start()
    worker.join()

    assert len(recorders.thread_calls) == 1
    args = recorders.thread_calls[0]
    assert args.exc_type is KeyError
    assert args.thread is worker
    (event,) = sent(client, server)
    props = event["properties"]
    assert props["$exception_level"] == "error"
    assert props["$exception_source"] == "python.threading_excepthook"
    (entry,) = props["$exception_list"]
    assert entry["type"] == "KeyError"
    assert entry["value"] == "'in thread'"
    assert entry["mechanism"] == UNCAUGHT
    assert entry["stacktrace"]["frames"][-1]["function"] == "work"
    assert recorders.sys_calls == []


def test_shutdown_leaves_hooks_replaced_after_install_alone(
    make_client: MakeClient, recorders: Recorders, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(enable_exception_autocapture=True)

    def later_sys(*args: Any) -> None:
        pass

    def later_thread(args: Any) -> None:
        pass

    monkeypatch.setattr(sys, "excepthook", later_sys)
    monkeypatch.setattr(threading, "excepthook", later_thread)
    client.shutdown()
    assert sys.excepthook is later_sys
    assert threading.excepthook is later_thread


def test_client_without_autocapture_installs_nothing(
    make_client: MakeClient, recorders: Recorders
) -> None:
    make_client()
    assert sys.excepthook == recorders.sys_hook
    assert threading.excepthook == recorders.thread_hook


def test_two_clients_chain_through_each_other(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    first = make_client(enable_exception_autocapture=True, project_api_key="phc_first")
    second = make_client(enable_exception_autocapture=True, project_api_key="phc_second")
    sys.excepthook(*exc_info_of(ValueError("both")))
    assert len(recorders.sys_calls) == 1  # the chain reached our hook exactly once
    first.flush()
    second.flush()
    # the newest hook captures and marks the instance; the older one then skips it (§8.1)
    assert [r.json()["api_key"] for r in server.requests] == ["phc_second"]
    assert len(server.events()) == 1
    second.shutdown()
    first.shutdown()
    assert sys.excepthook == recorders.sys_hook
    assert threading.excepthook == recorders.thread_hook


def test_uncaught_exception_in_a_subprocess_is_delivered_at_exit(
    server: ScriptedServer,
) -> None:
    script = textwrap.dedent(
        """
        import os
        import posthog

        client = posthog.Client(
            "phc_subprocess",
            host=os.environ["PH_TEST_HOST"],
            enable_exception_autocapture=True,
        )

        def crash():
            raise RuntimeError("fatal in subprocess")

        crash()
        """
    )
    env = dict(os.environ, PH_TEST_HOST=server.url)
    env.pop("POSTHOG_CAPTURE_MODE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "RuntimeError: fatal in subprocess" in done.stderr  # the default hook still ran
    server.wait_for(1)
    (event,) = server.events()
    props = event["properties"]
    assert event["event"] == "$exception"
    assert props["$exception_level"] == "fatal"
    assert props["$exception_source"] == "python.sys_excepthook"
    (entry,) = props["$exception_list"]
    assert entry["value"] == "fatal in subprocess"
    assert entry["mechanism"] == UNCAUGHT
    assert [f["function"] for f in entry["stacktrace"]["frames"]] == ["<module>", "crash"]


# ---------------------------------------------------------------- rate limiting


def test_rate_limited_autocapture_lets_49_of_a_type_through(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    client = make_client(
        enable_exception_autocapture=True, enable_exception_autocapture_rate_limiting=True
    )
    for i in range(60):
        sys.excepthook(*exc_info_of(ValueError(str(i))))
    sys.excepthook(*exc_info_of(TypeError("another type")))
    manual = client.capture_exception(ValueError("manual capture is not limited"))
    assert manual is not None
    assert len(recorders.sys_calls) == 61  # the previous hook is always called

    events = sent(client, server)
    values = [e["properties"]["$exception_list"][0]["value"] for e in events]
    assert values[:49] == [str(i) for i in range(49)]
    assert values[49:] == ["another type", "manual capture is not limited"]


def test_autocapture_without_rate_limiting_is_unlimited(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    client = make_client(enable_exception_autocapture=True)
    for i in range(55):
        sys.excepthook(*exc_info_of(ValueError(str(i))))
    assert len(sent(client, server)) == 55


def test_client_bucket_size_is_used(
    server: ScriptedServer, make_client: MakeClient, recorders: Recorders
) -> None:
    client = make_client(
        enable_exception_autocapture=True,
        enable_exception_autocapture_rate_limiting=True,
        exception_autocapture_bucket_size=5,
    )
    for i in range(10):
        sys.excepthook(*exc_info_of(ValueError(str(i))))
    assert len(sent(client, server)) == 4


def drain(limiter: RateLimiter, key: str, now: float, attempts: int = 200) -> int:
    """How many of ``attempts`` calls at time ``now`` are allowed."""
    return sum(limiter.allow(key, now=now) for _ in range(attempts))


def test_rate_limiter_fresh_bucket_and_refill() -> None:
    limiter = RateLimiter(50, 10, 10)
    assert drain(limiter, "ValueError", now=1000.0) == 49
    assert drain(limiter, "ValueError", now=1009.0) == 0  # before one interval passed
    assert drain(limiter, "TypeError", now=1009.0) == 49  # buckets are per key
    assert drain(limiter, "ValueError", now=1010.0) == 9  # +10 tokens, the last is refused
    assert drain(limiter, "ValueError", now=1030.0) == 19  # two more intervals: +20
    assert drain(limiter, "ValueError", now=5000.0) == 49  # never above the bucket size


def test_rate_limiter_clamps_its_parameters() -> None:
    assert drain(RateLimiter(500, 10, 10), "k", now=0.0) == 99  # size clamped to 100
    assert drain(RateLimiter(-5, 10, 10), "k", now=0.0) == 0  # size clamped to 0

    no_refill = RateLimiter(20, -3, 10)  # refill clamped to 0
    assert drain(no_refill, "k", now=0.0) == 19
    assert drain(no_refill, "k", now=10_000.0) == 0

    capped_refill = RateLimiter(20, 500, 10)  # refill clamped to the bucket size
    assert drain(capped_refill, "k", now=0.0) == 19
    assert drain(capped_refill, "k", now=10.0) == 19

    slow = RateLimiter(10, 5, 10**9)  # interval clamped to one day
    assert drain(slow, "k", now=0.0) == 9
    assert drain(slow, "k", now=86_399.0) == 0
    assert drain(slow, "k", now=86_400.0) == 4
