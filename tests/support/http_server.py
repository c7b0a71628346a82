"""A scriptable loopback HTTP server for transport tests.

Each request takes the next scripted reply (status, headers, delay, or a
connection reset); with the script empty it answers 200. Every request is
recorded with its headers and (gunzipped) body, so tests assert on what really
went over the wire.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"status": 1})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    close_after: bool = False  # answer normally, then drop the keep-alive connection unannounced


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    at: float
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.default = Reply()
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    # The client went away mid-request (e.g. a process exiting): not a request.
                    self.close_connection = True
                    return
                body = raw
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(raw)
                with outer._cond:
                    reply = outer.script.popleft() if outer.script else outer.default
                    outer.requests.append(
                        Recorded(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            raw,
                            body,
                            time.monotonic(),
                            self.client_address[1],
                        )
                    )
                    outer._cond.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                data = (
                    reply.body
                    if isinstance(reply.body, bytes)
                    else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True
                if reply.close_after:
                    self.wfile.flush()
                    self.close_connection = True

            do_POST = _handle
            do_GET = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def push(self, *replies: Reply) -> None:
        with self._cond:
            self.script.extend(replies)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Block until ``count`` requests arrived; fails the test on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.requests) >= count, timeout)
            if not ok:
                raise AssertionError(
                    f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                )
            return list(self.requests)

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for req in self.requests:
            if req.path.startswith("/batch"):
                out.extend(req.json()["batch"])
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
