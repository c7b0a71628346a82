"""Threaded HTTP server that accepts PostHog capture requests and serves them back as JSON.

:class:`DevServer` is the public entry point: it runs the HTTP server on a daemon
thread, stores events through :class:`~.storage.EventStore` and exposes them to
tests in-process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from .payload import PayloadError, build_rows, decode_body, invalid, parse_json, too_large
from .storage import EventStore, StoreClosedError

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DevServer"]

logger = logging.getLogger("posthog_integrations.devserver")

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
#: Capture endpoints (compared without the trailing slash).
INGEST_PATHS = frozenset({"/batch", "/e", "/i/v0/e", "/capture", "/track", "/engage"})
_ROUTES: dict[str, tuple[str, ...]] = {
    **{path: ("POST", "OPTIONS") for path in INGEST_PATHS},
    "/api/events": ("GET", "DELETE", "OPTIONS"),
    "/api/events/count": ("GET", "OPTIONS"),
    "/health": ("GET", "HEAD", "OPTIONS"),
}
_RECORD_LIMIT = 1000
#: Unread bodies up to this size are read and discarded so the connection stays usable.
_DRAIN_LIMIT = 64 * 1024 * 1024
_OK_BODY = json.dumps({"status": 1}).encode()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _header_safe(value: str) -> str:
    """Strip characters that would let an echoed request header break the response."""
    return value.replace("\r", "").replace("\n", "")


class _Recorder:
    """Bounded, thread-safe log of ingestion requests and their decoded JSON bodies."""

    def __init__(self, maxlen: int) -> None:
        self._lock = threading.Lock()
        self._requests: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._bodies: deque[bytes] = deque(maxlen=maxlen)

    def add(self, info: dict[str, Any], body: bytes | None) -> None:
        with self._lock:
            self._requests.append(info)
            if body is not None:
                self._bodies.append(body)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**info, "headers": dict(info["headers"])} for info in self._requests]

    def batches(self) -> list[Any]:
        with self._lock:
            bodies = list(self._bodies)
        # Bodies are kept as bytes (cheap, immutable) and parsed only when asked for.
        return [json.loads(body) for body in bodies]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bodies.clear()


class _Server(ThreadingHTTPServer):
    """HTTP server holding the shared store/recorder and tracking open connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        store: EventStore,
        recorder: _Recorder,
        max_body_bytes: int,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.max_body_bytes = max_body_bytes
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); pointless on loopback.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection error from %s", client_address, exc_info=True)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down idle keep-alive connections so their handler threads exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Routes one keep-alive connection's requests; every response has a Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "posthog-devserver/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    _body_read = True
    _responded = False

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    # -- routing --------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        self._responded = False
        path, _, query = self.path.partition("?")
        route = path.rstrip("/") or "/"
        allowed = _ROUTES.get(route)
        try:
            if allowed is None:
                self._error(404, "not_found", f"Unknown path: {path}", type_="invalid_request")
            elif method not in allowed:
                self._error(
                    405, "method_not_allowed", f"Method {method} not allowed for {path}",
                    type_="invalid_request", extra=[("Allow", ", ".join(allowed))],
                )
            elif method == "OPTIONS":
                self._preflight(allowed)
            elif route in INGEST_PATHS:
                self._ingest(route, path, query)
            elif route == "/health":
                self._send(200, _json_bytes({"status": "ok"}))
            elif route == "/api/events/count":
                filters, _ = self._filters(query)
                self._send(200, _json_bytes({"count": self.server.store.count(**filters)}))
            elif method == "DELETE":
                deleted = self.server.store.clear()
                self.server.recorder.clear()
                self._send(200, _json_bytes({"status": 1, "deleted": deleted}))
            else:
                self._list_events(query)
        except ConnectionError:
            self.close_connection = True
        except StoreClosedError:
            self.close_connection = True
            self._error(503, "shutting_down", "The dev server is shutting down",
                        type_="server_error")
        except Exception as exc:
            self._internal_error(exc)

    def _filters(self, query: str) -> tuple[dict[str, str | None], int | None]:
        """Read ``event``/``distinct_id``/``session_id`` filters and ``limit`` from a query."""
        params = parse_qs(query)

        def last(name: str) -> str | None:
            values = params.get(name)
            return values[-1] if values else None

        limit_text = last("limit")
        limit: int | None = None
        if limit_text is not None:
            try:
                limit = int(limit_text)
            except ValueError:
                limit = -1
            if limit < 0:
                raise invalid(f"limit must be a non-negative integer, got {limit_text!r}")
        filters = {name: last(name) for name in ("event", "distinct_id", "session_id")}
        return filters, limit

    def _list_events(self, query: str) -> None:
        try:
            filters, limit = self._filters(query)
        except PayloadError as exc:
            self._send(exc.status, _json_bytes(exc.body()))
            return
        texts = self.server.store.events_json(**filters, limit=limit)
        # The stored JSON is spliced in as-is: no parse/serialise round trip per event.
        body = '{"results":[' + ",".join(texts) + '],"count":' + str(len(texts)) + "}"
        self._send(200, body.encode("utf-8"))

    def _preflight(self, allowed: Sequence[str]) -> None:
        requested = self.headers.get("Access-Control-Request-Headers")
        self._send(200, b"", content_type=None, extra=[
            ("Access-Control-Allow-Methods", ", ".join(allowed)),
            ("Access-Control-Allow-Headers", _header_safe(requested) if requested else "*"),
            ("Access-Control-Max-Age", "86400"),
        ])

    # -- ingestion ------------------------------------------------------------------------

    def _ingest(self, route: str, path: str, query: str) -> None:
        server = self.server
        headers = {name.lower(): value for name, value in self.headers.items()}
        decoded: bytes | None = None
        count = 0
        try:
            raw = self._read_body(server.max_body_bytes)
            compression = parse_qs(query).get("compression", [None])[-1] if query else None
            data = decode_body(
                raw,
                content_type=headers.get("content-type", ""),
                content_encoding=headers.get("content-encoding", ""),
                compression=compression,
                max_bytes=server.max_body_bytes,
            )
            document = parse_json(data)
            decoded = data
            rows = build_rows(
                document,
                datetime.now(timezone.utc),
                default_event="$identify" if route == "/engage" else None,
            )
            try:
                server.store.insert(rows)
            except UnicodeEncodeError:
                raise invalid(
                    "Malformed request data: string contains a lone surrogate (invalid unicode)"
                ) from None
            status, body = 200, _OK_BODY
            count = len(rows)
        except PayloadError as exc:
            status, body = exc.status, _json_bytes(exc.body())
        except StoreClosedError:
            self.close_connection = True
            status, body = 503, _json_bytes({
                "type": "server_error", "code": "shutting_down",
                "detail": "The dev server is shutting down",
            })
        except ConnectionError:
            raise
        except Exception as exc:
            logger.exception("error handling %s %s", self.command, self.path)
            self.close_connection = True
            status, body = 500, self._internal_error_body(exc)
        # Record before answering so a test sees the request as soon as its call returns.
        server.recorder.add(
            {"path": path, "query": query, "method": self.command, "headers": headers,
             "status": status, "events": count},
            decoded,
        )
        self._send(status, body)

    def _read_body(self, limit: int) -> bytes:
        """Read the request body (Content-Length or chunked), refusing more than ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._body_read = True
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            self._body_read = True
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self._body_read = True
            self.close_connection = True
            raise invalid(f"Invalid Content-Length header: {length_text!r}")
        if length > limit:
            raise too_large(limit)  # _send drains or drops the unread body
        self._body_read = True
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise invalid("Request body is shorter than its Content-Length")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise invalid("Malformed chunked request body") from None
            if size == 0:
                break
            total += size
            if total > limit:
                self.close_connection = True
                raise too_large(limit)
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(3).strip():
                self.close_connection = True
                raise invalid("Malformed chunked request body")
            parts.append(chunk)
        while self.rfile.readline(65537).strip():  # trailer fields, if any
            pass
        return b"".join(parts)

    def _drain_body(self) -> None:
        """Discard an unread body so the next request on this connection parses cleanly."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        try:
            remaining = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            remaining = -1
        if remaining < 0 or remaining > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    # -- responses ------------------------------------------------------------------------

    def _internal_error_body(self, exc: BaseException) -> bytes:
        return _json_bytes({
            "type": "server_error", "code": "internal_error",
            "detail": f"Internal error: {type(exc).__name__}: {exc}",
        })

    def _internal_error(self, exc: BaseException) -> None:
        logger.exception("error handling %s %s", self.command, self.path)
        self.close_connection = True
        if not self._responded:
            try:
                self._send(500, self._internal_error_body(exc))
            except OSError:
                pass

    def _error(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        type_: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._send(status, _json_bytes({"type": type_, "code": code, "detail": detail}),
                   extra=extra)

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str | None = "application/json",
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write status line, headers and body in a single send (no Nagle/delayed-ACK stall)."""
        if not self._body_read:
            self._drain_body()
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Length: {len(body)}",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        origin = self.headers.get("Origin")
        if origin:
            lines.append(f"Access-Control-Allow-Origin: {_header_safe(origin)}")
            lines.append("Access-Control-Allow-Credentials: true")
            lines.append("Vary: Origin")
        else:
            lines.append("Access-Control-Allow-Origin: *")
        lines.extend(f"{name}: {value}" for name, value in extra)
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self._responded = True
        self.wfile.write(head if self.command == "HEAD" else head + body)
        self.log_request(status, len(body))


class DevServer:
    """A local PostHog-compatible capture endpoint backed by SQLite, for tests and demos.

    ``start()`` binds (``port=0`` picks a free port) and serves on a daemon thread;
    ``stop()`` shuts it down and closes the database, deleting it when ``db_path`` is None.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | os.PathLike[str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.host = host
        self.max_body_bytes = max_body_bytes
        self._requested_port = port
        self._db_path = db_path
        self._lock = threading.Lock()
        self._recorder = _Recorder(_RECORD_LIMIT)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._store: EventStore | None = None
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DevServer:
        """Bind and start serving on a background daemon thread; return ``self``."""
        with self._lock:
            if self._httpd is not None:
                return self
            if self._stopped:
                raise RuntimeError("a stopped DevServer cannot be restarted; create a new one")
            store = EventStore(self._db_path)
            server_cls = _Server6 if ":" in self.host else _Server
            try:
                httpd = server_cls(
                    (self.host, self._requested_port), store, self._recorder, self.max_body_bytes
                )
            except BaseException:
                store.close()
                raise
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"posthog-devserver-{httpd.server_port}",
                daemon=True,
            )
            self._httpd, self._thread, self._store = httpd, thread, store
            thread.start()
        logger.debug("dev server listening on %s (db %s)", self.url, store.path)
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and close the database; idempotent."""
        with self._lock:
            httpd, thread, store = self._httpd, self._thread, self._store
            if httpd is None:
                return
            self._httpd = self._thread = self._store = None
            self._stopped = True
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        if store is not None:
            store.close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped"
        return f"<DevServer {self.url} {state}>"

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port while running, else the port requested."""
        httpd = self._httpd
        return httpd.server_port if httpd is not None else self._requested_port

    @property
    def url(self) -> str:
        """Base URL to point an SDK at, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def db_path(self) -> str | None:
        """Path of the SQLite file in use (a temporary one when none was given)."""
        store = self._store
        if store is not None:
            return store.path
        return None if self._db_path is None else os.fspath(self._db_path)

    # -- data access ----------------------------------------------------------------------

    def _require_store(self) -> EventStore:
        store = self._store
        if store is None:
            raise RuntimeError("DevServer is not running (call start(), and read before stop())")
        return store

    def events(
        self,
        event: str | None = None,
        distinct_id: str | None = None,
        limit: int | None = None,
        *,
        session_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events matching the filters, oldest (first received) first."""
        return self._require_store().events(event, distinct_id, session_id, limit)

    def count(
        self,
        event: str | None = None,
        *,
        distinct_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Number of stored events matching the filters."""
        return self._require_store().count(event, distinct_id, session_id)

    def wait_for_events(
        self, count: int, event: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Poll until at least ``count`` matching events are stored and return them.

        For SDKs that flush on a background thread; raises ``TimeoutError`` otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.count(event) >= count:
                return self.events(event)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"expected {count} {event or 'events'}, have {self.count(event)} "
                    f"after {timeout}s"
                )
            time.sleep(0.01)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The last ≤1000 ingestion requests: path, query, method, headers, status, events."""
        return self._recorder.requests()

    @property
    def batches(self) -> list[Any]:
        """Decoded JSON bodies (after gunzip/base64) of the last ≤1000 ingestion requests."""
        return self._recorder.batches()

    def clear(self) -> None:
        """Delete stored events and forget recorded requests."""
        self._recorder.clear()
        store = self._store
        if store is not None:
            store.clear()
