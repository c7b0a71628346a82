"""Batching, limits, retries and lifecycle, over real loopback HTTP."""

from __future__ import annotations

import gzip
import itertools
import logging
import threading
import time
from typing import Any

import pytest

from posthog.transport import http
from posthog.transport.lane import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    ClientClosedError,
    EventTooLargeError,
    QueueFullError,
    backoff_delay,
)
from tests.support.http_server import Reply, ScriptedServer


class Errors:
    """An ``on_error`` that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Exception, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()

    def __call__(self, exc: Exception, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            self.calls.append((exc, batch))

    def of(self, kind: type) -> list[tuple[Exception, list[dict[str, Any]]]]:
        return [c for c in self.calls if isinstance(c[0], kind)]


def test_batches_by_flush_at_and_envelope(server: ScriptedServer, make_client: Any) -> None:
    client = make_client(flush_at=100, flush_interval=30)
    uuids = [client.capture("e", distinct_id="u", properties={"i": i}) for i in range(250)]
    server.wait_for(2)
    client.flush()
    reqs = server.wait_for(3)
    assert [len(r.json()["batch"]) for r in reqs] == [100, 100, 50]
    body = reqs[0].json()
    assert sorted(body) == ["api_key", "batch", "historical_migration", "sent_at"]
    assert body["api_key"] == "phc_test" and body["historical_migration"] is False
    assert [e["uuid"] for e in server.events()] == uuids
    headers = reqs[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("posthog-python/")
    assert "content-encoding" not in headers
    assert reqs[0].path == "/batch/"


def test_partial_batch_sent_after_flush_interval(server: ScriptedServer, make_client: Any) -> None:
    client = make_client(flush_at=100, flush_interval=0.2)
    start = time.monotonic()
    client.capture("e", distinct_id="u")
    reqs = server.wait_for(1, timeout=5)
    assert len(reqs[0].json()["batch"]) == 1
    assert reqs[0].at - start >= 0.15


def test_gzip_body(server: ScriptedServer, make_client: Any) -> None:
    client = make_client(gzip=True)
    client.capture("zipped", distinct_id="u", properties={"text": "x" * 5000})
    client.flush()
    (req,) = server.wait_for(1)
    assert req.headers["content-encoding"] == "gzip"
    assert len(req.raw) < 1000
    assert gzip.decompress(req.raw) == req.body
    assert req.json()["batch"][0]["properties"]["text"] == "x" * 5000


def test_keep_alive_reuses_one_connection(server: ScriptedServer, make_client: Any) -> None:
    client = make_client()
    for _ in range(3):
        client.capture("e", distinct_id="u")
        client.flush()
    reqs = server.wait_for(3)
    assert len({r.client_port for r in reqs}) == 1


def test_retry_keeps_uuid_and_timestamp_and_backs_off(
    server: ScriptedServer, make_client: Any
) -> None:
    server.push(Reply(503), Reply(503))
    client = make_client(max_retries=3)
    uuid = client.capture("e", distinct_id="u")
    client.flush(timeout_seconds=15)
    reqs = server.wait_for(3)
    bodies = [r.json() for r in reqs]
    assert {b["batch"][0]["uuid"] for b in bodies} == {uuid}
    assert len({b["batch"][0]["timestamp"] for b in bodies}) == 1
    assert len({b["sent_at"] for b in bodies}) == 3
    gaps = [reqs[1].at - reqs[0].at, reqs[2].at - reqs[1].at]
    assert 0.9 <= gaps[0] < 1.9
    assert 1.9 <= gaps[1] < 3.5


def test_retry_after_is_a_floor(server: ScriptedServer, make_client: Any) -> None:
    server.push(Reply(429, headers={"Retry-After": "3"}))
    client = make_client(max_retries=1)
    client.capture("e", distinct_id="u")
    client.flush(timeout_seconds=15)
    reqs = server.wait_for(2)
    assert reqs[1].at - reqs[0].at >= 2.9


@pytest.mark.parametrize("status", [408, 500, 502])
def test_retryable_statuses(server: ScriptedServer, make_client: Any, status: int) -> None:
    server.push(Reply(status))
    errors = Errors()
    client = make_client(on_error=errors)
    client.capture("e", distinct_id="u")
    client.flush(timeout_seconds=10)
    assert len(server.wait_for(2)) == 2
    assert errors.calls == []


@pytest.mark.parametrize("status", [400, 401, 413])
def test_client_errors_are_not_retried(
    server: ScriptedServer, make_client: Any, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server.push(Reply(status, body={"detail": "nope"}))
    errors = Errors()
    client = make_client(on_error=errors)
    client.capture("e", distinct_id="u")
    client.flush()
    time.sleep(0.3)
    assert len(server.requests) == 1
    ((exc, batch),) = errors.calls
    assert isinstance(exc, http.APIError) and exc.status == status and exc.message == "nope"
    assert batch[0]["event"] == "e"
    assert "failed to upload 1 events" in caplog.text


def test_exhausted_retries_report_once(server: ScriptedServer, make_client: Any) -> None:
    server.default = Reply(500)
    errors = Errors()
    client = make_client(max_retries=1, on_error=errors)
    client.capture("e", distinct_id="u")
    client.flush(timeout_seconds=10)
    assert len(server.requests) == 2
    assert len(errors.calls) == 1
    assert errors.calls[0][1][0]["event"] == "e"


def test_timeout_and_connection_reset_are_retried(
    server: ScriptedServer, make_client: Any
) -> None:
    server.push(Reply(delay=1.5), Reply(reset=True))
    errors = Errors()
    client = make_client(timeout=0.3, on_error=errors)
    uuid = client.capture("e", distinct_id="u")
    client.flush(timeout_seconds=15)
    reqs = server.wait_for(3)
    assert all(r.json()["batch"][0]["uuid"] == uuid for r in reqs)
    assert errors.calls == []


def test_backoff_schedule() -> None:
    assert [backoff_delay(i, None) for i in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(0, 10) == 10
    assert backoff_delay(3, 2) == 8
    assert backoff_delay(0, 120) == 30


def test_retry_after_parsing() -> None:
    assert http.parse_retry_after("10") == 10
    assert http.parse_retry_after("-3") == 0
    assert http.parse_retry_after(None) is None
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0
    future = http.parse_retry_after(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    )
    assert future is not None and 90 < future <= 100


def test_oversize_event_dropped_reported_and_logged_once(
    server: ScriptedServer, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    errors = Errors()
    client = make_client(on_error=errors, flush_interval=30)
    big = "x" * (MAX_EVENT_BYTES + 10)
    client.capture("small-1", distinct_id="u")
    for _ in range(3):
        assert client.capture("big", distinct_id="u", properties={"blob": big}) is not None
    client.capture("small-2", distinct_id="u")
    client.flush()
    assert [e["event"] for e in server.events()] == ["small-1", "small-2"]
    too_large = errors.of(EventTooLargeError)
    assert len(too_large) == 3 and too_large[0][1][0]["event"] == "big"
    logged = [r for r in caplog.records if "byte limit" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert "3 events were dropped" in caplog.text


def test_event_just_under_the_limit_is_delivered(
    server: ScriptedServer, make_client: Any
) -> None:
    client = make_client()
    client.capture("big", distinct_id="u", properties={"blob": "y" * (MAX_EVENT_BYTES - 2000)})
    client.flush()
    assert server.events()[0]["properties"]["blob"] == "y" * (MAX_EVENT_BYTES - 2000)


def test_batches_split_at_five_mib(server: ScriptedServer, make_client: Any) -> None:
    client = make_client(flush_interval=30)
    blob = "z" * 800_000
    for i in range(9):
        client.capture("chunk", distinct_id="u", properties={"i": i, "blob": blob})
    client.flush(timeout_seconds=20)
    reqs = server.requests
    assert len(reqs) >= 2
    sizes = [len(r.body) for r in reqs]
    assert all(size < MAX_BATCH_BYTES + 900_000 for size in sizes)
    assert sorted(e["properties"]["i"] for e in server.events()) == list(range(9))


def test_full_queue_drops_are_reported_and_logged_per_burst(
    server: ScriptedServer, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.push(Reply(delay=2.0))
    errors = Errors()
    client = make_client(max_queue_size=1, flush_at=1, on_error=errors)
    assert client.capture("first", distinct_id="u") is not None
    server.wait_for(1)  # the sender is now stuck on the slow request
    # Keep offering events for a while: the queue holds max_queue_size events, and one
    # encoded batch may wait between the encoding and the sending stage.
    outcomes = [True]  # "first" was accepted
    until = time.monotonic() + 0.6
    while time.monotonic() < until:
        outcomes.append(client.capture("filler", distinct_id="u") is not None)
        time.sleep(0.02)
    accepted = outcomes.count(True) - 1
    assert 1 <= accepted <= 3, "the queue bound was not enforced"
    results = [client.capture("dropped", distinct_id="u") for _ in range(20)]
    assert results == [None] * 20
    outcomes += [False] * 20
    assert len(errors.of(QueueFullError)) == outcomes.count(False)
    # One warning when a burst of refusals starts, none for the rest of it.
    bursts = sum(1 for a, b in itertools.pairwise(outcomes) if a and not b)
    assert len([r for r in caplog.records if "queue is full (" in r.getMessage()]) == bursts
    client.flush(timeout_seconds=5)
    assert client.capture("after", distinct_id="u") is not None
    last_burst = len(outcomes) - 1 - max(i for i, ok in enumerate(outcomes) if ok)
    assert f"queue is full: {last_burst} events were dropped in total" in caplog.text
    client.flush(timeout_seconds=5)
    names = [e["event"] for e in server.events()]
    assert names == ["first"] + ["filler"] * accepted + ["after"]


def test_capture_after_shutdown_is_rejected_and_reported(
    server: ScriptedServer, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    errors = Errors()
    client = make_client(on_error=errors)
    client.capture("before", distinct_id="u")
    client.shutdown()
    assert [e["event"] for e in server.events()] == ["before"]
    assert client.capture("late", distinct_id="u") is None
    assert client.capture("later", distinct_id="u") is None
    assert len(errors.of(ClientClosedError)) == 2
    assert caplog.text.count("received event after shutdown") == 1


def test_shutdown_wait_is_bounded_and_reports_what_was_left(
    server: ScriptedServer, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = Reply(503)
    errors = Errors()
    client = make_client(on_error=errors, flush_at=1, max_retries=10)
    for i in range(5):
        client.capture("e", distinct_id="u", properties={"i": i})
    start = time.monotonic()
    client.shutdown(timeout_seconds=1.0)
    assert time.monotonic() - start < 5
    reported = sum(len(batch) for _, batch in errors.calls)
    assert reported == 5
    assert "not delivered before shutdown" in caplog.text or "failed to upload" in caplog.text


def test_flush_inside_on_error_does_not_deadlock(
    server: ScriptedServer, make_client: Any
) -> None:
    server.push(Reply(400))
    done = threading.Event()
    holder: dict[str, Any] = {}

    def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        holder["client"].flush()
        done.set()

    client = make_client(on_error=on_error)
    holder["client"] = client
    client.capture("e", distinct_id="u")
    assert done.wait(3), "flush() called from on_error blocked the consumer"


def test_flush_timeout_logs_warning(
    server: ScriptedServer, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.push(Reply(delay=1.0))
    client = make_client()
    client.capture("e", distinct_id="u")
    caplog.set_level(logging.WARNING, logger="posthog")
    client.flush(timeout_seconds=0.1)
    assert "flush timed out" in caplog.text


def test_request_helpers(server: ScriptedServer, make_client: Any) -> None:
    import socket

    try:
        http.enable_keep_alive()
        adapter = http.session().get_adapter("https://example.invalid")
        options = adapter.poolmanager.connection_pool_kw["socket_options"]
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
        client = make_client()
        client.capture("e", distinct_id="u")
        client.flush()
        assert len(server.events()) == 1

        http.disable_connection_reuse()
        for _ in range(2):
            client.capture("fresh", distinct_id="u")
            client.flush()
        ports = [r.client_port for r in server.wait_for(3)]
        assert ports[1] != ports[2]
    finally:
        http.set_socket_options(None)
        http._reuse_connections = True


def test_proxy_from_environment_is_used(
    server: ScriptedServer, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setattr(http, "_proxies", {})
    client = make_client(host="http://posthog.invalid")
    client.capture("via-proxy", distinct_id="u")
    client.flush()
    (req,) = server.wait_for(1)
    assert req.path == "http://posthog.invalid/batch/"
    assert req.json()["batch"][0]["event"] == "via-proxy"
