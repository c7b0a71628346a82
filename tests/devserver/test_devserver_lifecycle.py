"""Server lifecycle, persistence, robustness against handler errors, and concurrency."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from posthog_integrations.devserver import DevServer, handler, storage


def _capture(server: DevServer, session: requests.Session, **event: Any) -> requests.Response:
    body = {"api_key": "k", "event": "e", "distinct_id": "u", **event}
    return session.post(server.url + "/capture/", json=body, timeout=5)


def _handler_threads() -> int:
    return sum("process_request" in t.name for t in threading.enumerate())


def test_start_picks_distinct_free_ports() -> None:
    first, second = DevServer(), DevServer()
    try:
        assert first.start() is first
        assert second.start() is second
        assert first.start() is first  # starting twice is harmless
        assert first.port not in (0, second.port)
        assert first.url == f"http://127.0.0.1:{first.port}"
        for srv in (first, second):
            assert requests.get(srv.url + "/health", timeout=5).status_code == 200
    finally:
        first.stop()
        second.stop()


def test_stop_is_idempotent_and_removes_the_temporary_db(http: requests.Session) -> None:
    srv = DevServer().start()
    _capture(srv, http)
    db_path = srv.db_path
    assert db_path is not None and os.path.exists(db_path)

    srv.stop()
    srv.stop()

    assert not os.path.exists(db_path)
    assert not os.path.exists(os.path.dirname(db_path))
    with pytest.raises(RuntimeError, match="not running"):
        srv.events()
    with pytest.raises(RuntimeError, match="restarted"):
        srv.start()
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/health", timeout=2)


def test_persistent_db_keeps_events_and_dedupes_across_restarts(
    tmp_path: Path, http: requests.Session
) -> None:
    db = tmp_path / "nested" / "events.sqlite3"
    event_uuid = str(uuid.uuid4())
    with DevServer(db_path=db) as srv:
        assert _capture(srv, http, uuid=event_uuid, properties={"$session_id": "s"}).ok
    assert db.exists()

    with DevServer(db_path=db) as srv:
        assert srv.count() == 1
        assert _capture(srv, http, uuid=event_uuid).ok
        assert srv.count() == 1
    assert db.exists()

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        assert {"uuid", "event", "distinct_id", "session_id", "timestamp", "api_key",
                "received_at", "data"} <= columns
        indexed = {
            row[0] for row in conn.execute(
                "SELECT ii.name FROM sqlite_master m, pragma_index_info(m.name) ii "
                "WHERE m.type = 'index' AND m.tbl_name = 'events'"
            )
        }
        assert {"uuid", "event", "distinct_id", "session_id", "timestamp"} <= indexed
        assert conn.execute("SELECT session_id FROM events").fetchone()[0] == "s"
    finally:
        conn.close()


def test_queued_writes_are_committed_before_stop(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    with DevServer(db_path=db) as srv, requests.Session() as session:
        for index in range(50):
            batch = [{"event": "burst", "distinct_id": f"u{index}"} for _ in range(100)]
            assert session.post(srv.url + "/batch/", json={"api_key": "k", "batch": batch},
                                timeout=5).ok
        # No read here: stop() itself must drain the writer queue.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5000
    finally:
        conn.close()


def test_handler_error_is_a_500_and_the_server_keeps_serving(
    server: DevServer, http: requests.Session, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(handler, "build_rows", explode)
    with caplog.at_level(logging.ERROR, logger="posthog_integrations.devserver"):
        response = _capture(server, http)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "boom" in response.json()["detail"]
    assert server.requests[-1]["status"] == 500
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)

    monkeypatch.setattr(storage.EventStore, "count", explode)
    assert http.get(server.url + "/api/events/count", timeout=5).status_code == 500

    monkeypatch.undo()
    assert _capture(server, http).status_code == 200
    assert server.count() == 1
    assert http.get(server.url + "/api/events/count", timeout=5).json() == {"count": 1}


def test_garbage_on_the_wire_does_not_hurt_the_server(server: DevServer) -> None:
    for junk in (b"GARBAGE\r\n\r\n", b"\x00\xff\x10 nonsense\r\n\r\n",
                 b"POST /batch/ HTTP/1.1\r\nContent-Length: nope\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(junk)
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.")
            assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_chunked_request_body(server: DevServer) -> None:
    def chunks() -> Any:
        yield b'{"api_key": "k", "batch": ['
        yield b'{"event": "chunked", "distinct_id": "u"}'
        yield b"]}"

    response = requests.post(server.url + "/batch/", data=chunks(), timeout=5)
    assert response.status_code == 200
    assert server.requests[-1]["headers"]["transfer-encoding"] == "chunked"
    assert server.count("chunked") == 1


def test_stop_closes_idle_keep_alive_connections(http: requests.Session) -> None:
    baseline = _handler_threads()
    srv = DevServer().start()
    for _ in range(3):
        assert _capture(srv, http).ok
    assert _handler_threads() == baseline + 1  # one keep-alive connection, one thread

    srv.stop()
    deadline = time.monotonic() + 3
    while _handler_threads() > baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _handler_threads() == baseline


def test_concurrent_clients_store_every_event(server: DevServer) -> None:
    errors: list[BaseException] = []

    def client(worker: int) -> None:
        try:
            with requests.Session() as session:
                for index in range(25):
                    batch = [{"event": "load", "distinct_id": f"w{worker}",
                              "properties": {"i": index * 20 + n}} for n in range(20)]
                    response = session.post(server.url + "/batch/", timeout=10,
                                            json={"api_key": "k", "batch": batch})
                    assert response.status_code == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert server.count("load") == 8 * 25 * 20
    assert len({e["uuid"] for e in server.events("load")}) == 4000
    assert server.count("load", distinct_id="w3") == 500


def test_quiet_by_default_and_debug_logs_requests(
    server: DevServer, http: requests.Session, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _capture(server, http).ok
    http.get(server.url + "/nope", timeout=5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""

    with caplog.at_level(logging.DEBUG, logger="posthog_integrations.devserver"):
        assert _capture(server, http).ok
    assert any("POST /capture/" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)
