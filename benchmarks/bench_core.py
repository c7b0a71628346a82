"""Core client figures: cold import, RSS, capture() cost, delivery rate, memory, server down.

    .venv/bin/python benchmarks/bench_core.py            # everything
    .venv/bin/python benchmarks/bench_core.py capture    # one section

Each section prints its figures; nothing here asserts. The dev server runs in
its own process so that it does not share the client's GIL.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROPS = {f"key_{i}": (f"value {i}" if i % 2 else i) for i in range(10)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_PID: list[int] = []


@contextmanager
def devserver() -> Iterator[tuple[str, Path]]:
    """A dev server in a child process; yields its URL and SQLite path."""
    tmp = Path(tempfile.mkdtemp(prefix="posthog-bench-"))
    db = tmp / "events.sqlite3"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_integrations.devserver", "--port", str(port), "--db",
         str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SERVER_PID[:] = [proc.pid]
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield url, db
    finally:
        proc.terminate()
        proc.wait(10)


def stored_uuids(url: str, db: Path) -> list[str]:
    # The dev server acknowledges a batch before its writer commits; asking it for the
    # count waits for everything acknowledged so far to be committed.
    urllib.request.urlopen(url + "/api/events/count", timeout=60).read()
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT uuid FROM events")]


def python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


# ---------------------------------------------------------------- sections


def bench_import() -> None:
    code = """
        import sys, time
        t = time.perf_counter()
        import posthog
        print((time.perf_counter() - t) * 1000, int("requests" in sys.modules))
    """
    runs = [python(code).split() for _ in range(21)]
    times = sorted(float(ms) for ms, _ in runs)
    heavy = any(flag == "1" for _, flag in runs)
    print(f"cold import posthog: median {statistics.median(times):.1f} ms "
          f"(min {times[0]:.1f}, max {times[-1]:.1f}; 21 fresh interpreters); "
          f"requests imported: {'yes' if heavy else 'no'}")


def bench_rss() -> None:
    code = """
        import posthog
        client = posthog.Client("phc_bench", host="http://127.0.0.1:9")
        with open("/proc/self/status") as f:
            rss = next(l for l in f if l.startswith("VmRSS")).split()[1]
        print(int(rss) / 1024)
        client.shutdown(timeout_seconds=0)
    """
    values = sorted(float(python(code)) for _ in range(5))
    print(f"RSS after import + Client(): median {statistics.median(values):.1f} MB "
          f"(5 runs, {values[0]:.1f}-{values[-1]:.1f})")


def bench_capture() -> None:
    import posthog

    with devserver() as (url, db):
        client = posthog.Client("phc_bench", host=url, max_queue_size=1_000_000)
        capture = client.capture
        # warm up: system properties, HTTP session, first batches in flight
        for _ in range(2000):
            capture("warmup", distinct_id="user", properties=PROPS)
        client.flush()
        n = 100_000
        samples: list[float] = []
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for i in range(n):
            if i % 100 == 0:
                t = time.perf_counter()
                capture("bench", distinct_id="user", properties=PROPS)
                samples.append(time.perf_counter() - t)
            else:
                capture("bench", distinct_id="user", properties=PROPS)
        wall = time.perf_counter() - wall0
        cpu = time.thread_time() - cpu0
        client.flush(timeout_seconds=120)
        delivered = len(stored_uuids(url, db)) - 2000
        client.shutdown()
    samples.sort()
    print(f"capture() with a 10-key dict, consumer sending to the dev server: "
          f"{wall / n * 1e6:.2f} µs per call wall, {cpu / n * 1e6:.2f} µs caller CPU; "
          f"sampled calls p50 {samples[len(samples) // 2] * 1e6:.2f} µs, "
          f"p99 {samples[int(len(samples) * 0.99)] * 1e6:.2f} µs; "
          f"{delivered}/{n} delivered")


def bench_delivery() -> None:
    import posthog

    n = 50_000
    with devserver() as (url, db):
        client = posthog.Client("phc_bench", host=url, max_queue_size=n)
        server_cpu0, own_cpu0 = process_cpu(SERVER_PID[0]), process_cpu(os.getpid())
        start = time.perf_counter()
        sent = [client.capture("delivery", distinct_id=f"user-{i % 100}", properties=PROPS)
                for i in range(n)]
        client.flush(timeout_seconds=300)
        acknowledged = time.perf_counter() - start
        stored = stored_uuids(url, db)
        committed = time.perf_counter() - start
        server_cpu = process_cpu(SERVER_PID[0]) - server_cpu0
        own_cpu = process_cpu(os.getpid()) - own_cpu0
        client.shutdown()
    missing = set(sent) - set(stored)
    dupes = len(stored) - len(set(stored))
    print(f"delivery of {n} events into the dev server (capture() to HTTP 200 for every batch): "
          f"{acknowledged:.2f} s = {n / acknowledged:,.0f} events/s; to committed in SQLite: "
          f"{committed:.2f} s = {n / committed:,.0f} events/s; stored {len(stored)}, "
          f"missing {len(missing)}, duplicates {dupes}, refused {sent.count(None)}; "
          f"CPU per event: client process {own_cpu / n * 1e6:.1f} µs, "
          f"dev server process {server_cpu / n * 1e6:.1f} µs")


SINK = """
import socket, sys, threading
def handle(conn):
    reader = conn.makefile("rb")
    while True:
        if not reader.readline():
            return
        length = 0
        while True:
            line = reader.readline()
            if line in (b"\\r\\n", b""):
                break
            if line.lower().startswith(b"content-length"):
                length = int(line.split(b":")[1])
        reader.read(length)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\n{\\"status\\":1}")
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


def bench_sink() -> None:
    """The client's own delivery capacity: a sink that answers 200 without parsing."""
    import posthog

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        time.sleep(0.5)
        n = 100_000
        client = posthog.Client("phc_bench", host=f"http://127.0.0.1:{port}", max_queue_size=n)
        own_cpu0 = process_cpu(os.getpid())
        start = time.perf_counter()
        refused = sum(1 for i in range(n) if client.capture(
            "delivery", distinct_id=f"user-{i % 100}", properties=PROPS) is None)
        client.flush(timeout_seconds=300)
        elapsed = time.perf_counter() - start
        own_cpu = process_cpu(os.getpid()) - own_cpu0
        client.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"delivery of {n} events to a do-nothing loopback sink (client capacity): "
          f"{n / elapsed:,.0f} events/s, client CPU {own_cpu / n * 1e6:.1f} µs per event, "
          f"refused {refused}")


def bench_server_down() -> None:
    code = """
        import posthog, threading
        dropped = [0]
        lock = threading.Lock()
        def on_error(exc, batch):
            with lock:
                dropped[0] += len(batch)
        def rss():
            with open("/proc/self/status") as f:
                return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) / 1024
        client = posthog.Client("phc_bench", host="http://127.0.0.1:9", on_error=on_error,
                                max_queue_size=10000)
        before = rss()
        accepted = sum(1 for i in range(100_000)
                       if client.capture("down", distinct_id="u", properties={"i": i}))
        after = rss()
        print(before, after, accepted, dropped[0], len(client.lane._queue))
        client.shutdown(timeout_seconds=0)
    """
    before, after, accepted, dropped, queued = python(code).split()
    print(f"server down, 100,000 captures, max_queue_size=10000: RSS {float(before):.1f} -> "
          f"{float(after):.1f} MB; accepted {accepted}, reported via on_error {dropped}, "
          f"still queued {queued}")


SECTIONS: dict[str, Callable[[], None]] = {
    "import": bench_import,
    "rss": bench_rss,
    "capture": bench_capture,
    "delivery": bench_delivery,
    "sink": bench_sink,
    "down": bench_server_down,
}


def main(argv: list[str]) -> None:
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} cores")
    for name in argv or list(SECTIONS):
        thread = threading.Thread(target=SECTIONS[name])
        thread.start()
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
