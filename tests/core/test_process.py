"""Process life: flush at interpreter exit, and delivery from forked children."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from tests.support.http_server import Reply, ScriptedServer


def run_script(code: str, server: ScriptedServer) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PH_HOST=server.url)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_are_flushed_at_interpreter_exit(server: ScriptedServer) -> None:
    result = run_script(
        """
        import os, posthog
        client = posthog.Client("phc_exit", host=os.environ["PH_HOST"], flush_interval=60)
        for i in range(3):
            client.capture("queued-at-exit", distinct_id="u", properties={"i": i})
        """,
        server,
    )
    assert result.returncode == 0, result.stderr
    assert [e["properties"]["i"] for e in server.events()] == [0, 1, 2]


def test_module_api_flushes_at_exit(server: ScriptedServer) -> None:
    result = run_script(
        """
        import os, posthog
        posthog.api_key = "phc_exit"
        posthog.host = os.environ["PH_HOST"]
        posthog.capture("module-exit", distinct_id="u")
        """,
        server,
    )
    assert result.returncode == 0, result.stderr
    assert [e["event"] for e in server.events()] == ["module-exit"]


def test_exit_flush_is_bounded_and_says_what_was_lost(server: ScriptedServer) -> None:
    server.default = Reply(503)
    start = time.monotonic()
    result = run_script(
        """
        import os, posthog
        client = posthog.Client("phc_exit", host=os.environ["PH_HOST"], flush_interval=60,
                                flush_at=1)
        for i in range(5):
            client.capture("never", distinct_id="u")
        """,
        server,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 15
    assert "not delivered before shutdown" in result.stderr


def test_forked_child_gets_fresh_queue_and_delivers(server: ScriptedServer) -> None:
    result = run_script(
        """
        import os, sys, posthog
        client = posthog.Client("phc_fork", host=os.environ["PH_HOST"], flush_interval=60)
        client.capture("parent-before-fork", distinct_id="p")
        pid = os.fork()
        if pid == 0:
            client.capture("child", distinct_id="c")
            client.flush(timeout_seconds=30)  # generous: the machine may be busy
            if client.lane.pending or not client.lane.alive:
                print("child: pending", client.lane.pending, "alive", client.lane.alive,
                      file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        client.capture("parent-after-fork", distinct_id="p")
        client.shutdown()
        """,
        server,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(e["event"] for e in server.events())
    assert names == ["child", "parent-after-fork", "parent-before-fork"]
