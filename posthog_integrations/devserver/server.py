"""The public :class:`DevServer`: a threaded HTTP server plus SQLite store, run in-process.

It serves on a daemon thread, stores events through :class:`~.storage.EventStore` and
exposes them, and the raw requests it received, to tests without any HTTP round trip.
Feature flags come from a :class:`~.flags.FlagStore` (a JSON file, or set in memory).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .flags import FlagStore
from .handler import Handler
from .storage import EventStore

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DevHTTPServer", "DevServer"]

logger = logging.getLogger("posthog_integrations.devserver")

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
_RECORD_LIMIT = 1000


class _Recorder:
    """Bounded, thread-safe log of ingestion and flag requests, and decoded event bodies."""

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


class DevHTTPServer(ThreadingHTTPServer):
    """HTTP server holding the shared store/recorder and tracking open connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        store: EventStore,
        recorder: _Recorder,
        max_body_bytes: int,
        flags: FlagStore | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.max_body_bytes = max_body_bytes
        self.flags = flags if flags is not None else FlagStore()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind does a reverse DNS lookup (getfqdn): slow, useless.
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
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _DevHTTPServer6(DevHTTPServer):
    address_family = socket.AF_INET6


class DevServer:
    """A local PostHog-compatible capture endpoint backed by SQLite, for tests and demos.

    ``start()`` binds (``port=0`` picks a free port) and serves on a daemon thread;
    ``stop()`` shuts it down and closes the database, deleting it when ``db_path`` is None.
    Feature flags are answered from ``flags_path`` (a ``/flags/definitions`` JSON body or
    a list of flag definitions, re-read when it changes) or from :meth:`set_flags`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | os.PathLike[str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        flags_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self._flags = FlagStore(flags_path)
        self.host = host
        self.max_body_bytes = max_body_bytes
        self._requested_port = port
        self._db_path = db_path
        self._lock = threading.Lock()
        self._recorder = _Recorder(_RECORD_LIMIT)
        self._httpd: DevHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._store: EventStore | None = None
        self._bound_port: int | None = None
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
            server_cls = _DevHTTPServer6 if ":" in self.host else DevHTTPServer
            try:
                httpd = server_cls(
                    (self.host, self._requested_port), store, self._recorder,
                    self.max_body_bytes, self._flags,
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
            self._bound_port = httpd.server_port
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
        if self._httpd is not None:
            state = "running"
        else:
            state = "stopped" if self._stopped else "not started"
        return f"<DevServer {self.url} {state}>"

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port once started (also after stop), else the port requested."""
        return self._bound_port if self._bound_port is not None else self._requested_port

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

    # -- flags ----------------------------------------------------------------------------

    @property
    def flags_path(self) -> str | None:
        """The flag definitions file, if one was given."""
        return self._flags.path

    @property
    def flag_definitions(self) -> dict[str, Any]:
        """A copy of the definitions currently served (re-reading the file if it changed)."""
        return copy.deepcopy(self._flags.current().data)

    def set_flags(self, data: Any) -> None:
        """Serve these definitions (a ``/flags/definitions`` body or a list of flags).

        They stay until the next call or until the flags file, if any, changes.
        Raises :class:`~.flags.FlagsFileError` for data not in that format.
        """
        self._flags.set(data)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The last ≤1000 ingestion and flag requests: path, query, method, headers, status,
        events (0 for flag requests)."""
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
