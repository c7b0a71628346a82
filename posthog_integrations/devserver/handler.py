"""Request handling for the dev server: routing, body reading, ingestion and responses.

Flag endpoints are routed here and answered by :mod:`.flags`.

Each connection gets one :class:`Handler` on its own thread; it answers every request
with a Content-Length (a 304 has no body) so HTTP/1.1 keep-alive works for SDK clients
and benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .flags import check_bearer, etag_matches, evaluate_response, flags_response, remote_config
from .payload import (
    PayloadError,
    build_rows,
    decode_body,
    invalid,
    may_contain_surrogates,
    parse_document,
    parse_json,
    too_large,
)
from .storage import StoreClosedError

if TYPE_CHECKING:
    from .server import DevHTTPServer

__all__ = ["DEFINITIONS_PATHS", "FLAGS_PATHS", "INGEST_PATHS", "Handler"]

logger = logging.getLogger("posthog_integrations.devserver")

#: Capture endpoints (compared without the trailing slash).
INGEST_PATHS = frozenset({"/batch", "/e", "/i/v0/e", "/capture", "/track", "/engage"})
#: Flag definitions for local evaluation (Bearer auth).
DEFINITIONS_PATHS = frozenset({"/flags/definitions", "/api/feature_flag/local_evaluation"})
#: Remote flag evaluation (``api_key`` in the body).
FLAGS_PATHS = frozenset({"/flags", "/decide"})
_REMOTE_CONFIG = re.compile(r"/api/projects/[^/]+/feature_flags/(?P<key>[^/]+)/remote_config")
_ROUTES: dict[str, tuple[str, ...]] = {
    **{path: ("POST", "OPTIONS") for path in INGEST_PATHS},
    **{path: ("POST", "OPTIONS") for path in FLAGS_PATHS},
    **{path: ("GET", "OPTIONS") for path in DEFINITIONS_PATHS},
    "/api/flags": ("GET", "OPTIONS"),
    "/api/flags/evaluate": ("POST", "OPTIONS"),
    "/api/events": ("GET", "DELETE", "OPTIONS"),
    "/api/events/count": ("GET", "OPTIONS"),
    "/health": ("GET", "HEAD", "OPTIONS"),
}
#: Unread bodies up to this size are read and discarded so the connection stays usable.
_DRAIN_LIMIT = 64 * 1024 * 1024
_OK_BODY = json.dumps({"status": 1}).encode()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _header_safe(value: str) -> str:
    """Strip characters that would let an echoed request header break the response."""
    return value.replace("\r", "").replace("\n", "")


class Handler(BaseHTTPRequestHandler):
    """Routes one keep-alive connection's requests; every response has a known length."""

    protocol_version = "HTTP/1.1"
    server_version = "posthog-devserver/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    server: DevHTTPServer

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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol-level errors (bad request line, unsupported method) in JSON too."""
        self.close_connection = True
        self._body_read = True
        detail = message or self.responses.get(code, ("Error",))[0]
        with contextlib.suppress(OSError):
            self._error(code, "bad_request", detail, type_="invalid_request")

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
        config_key: str | None = None
        if allowed is None:
            match = _REMOTE_CONFIG.fullmatch(route)
            if match is not None:
                allowed, config_key = ("GET", "OPTIONS"), unquote(match["key"])
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
            elif route in FLAGS_PATHS or route in DEFINITIONS_PATHS or config_key is not None:
                self._flag_endpoint(route, path, query, config_key)
            elif route == "/api/flags":
                body = b'{"definitions":' + self.server.flags.current().body + b"}"
                self._send(200, body)
            elif route == "/api/flags/evaluate":
                answer = evaluate_response(self.server.flags.current(), self._json_body(query))
                self._send(200, _json_bytes(answer))
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
        except PayloadError as exc:
            self._send(exc.status, _json_bytes(exc.body()))
        except (ConnectionError, TimeoutError):
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
        filters, limit = self._filters(query)
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
            suspicious = may_contain_surrogates(data)
            document, raws = parse_document(data, suspicious=suspicious)
            decoded = data
            rows = build_rows(
                document,
                datetime.now(timezone.utc),
                default_event="$identify" if route == "/engage" else None,
                check_unicode=suspicious,
                raws=raws,
            )
            server.store.submit(rows)
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
        except (ConnectionError, TimeoutError):
            raise  # the client went away or stalled: nothing to answer
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

    # -- flags ----------------------------------------------------------------------------

    def _json_body(self, query: str) -> Any:
        """The request body decoded (gzip, base64, form) and parsed as JSON; 400 if it is not."""
        compression = parse_qs(query).get("compression", [None])[-1] if query else None
        data = decode_body(
            self._read_body(self.server.max_body_bytes),
            content_type=self.headers.get("Content-Type", ""),
            content_encoding=self.headers.get("Content-Encoding", ""),
            compression=compression,
            max_bytes=self.server.max_body_bytes,
        )
        return parse_json(data)

    def _flag_endpoint(self, route: str, path: str, query: str, config_key: str | None) -> None:
        """``/flags``, ``/flags/definitions`` and remote config; recorded like ingestion."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        extra: list[tuple[str, str]] = []
        try:
            state = self.server.flags.current()
            if route in FLAGS_PATHS:
                status, body = 200, _json_bytes(flags_response(state, self._json_body(query)))
            else:
                check_bearer(self.headers.get("Authorization"))
                if config_key is not None:
                    status, body = 200, _json_bytes(remote_config(state, config_key))
                else:
                    extra.append(("ETag", state.etag))
                    if etag_matches(self.headers.get("If-None-Match"), state.etag):
                        status, body = 304, b""
                    else:
                        status, body = 200, state.body
        except PayloadError as exc:
            status, body = exc.status, _json_bytes(exc.body())
            if status == 401 and route not in FLAGS_PATHS:
                extra.append(("WWW-Authenticate", 'Bearer realm="api"'))
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            logger.exception("error handling %s %s", self.command, self.path)
            self.close_connection = True
            status, body = 500, self._internal_error_body(exc)
        self.server.recorder.add(
            {"path": path, "query": query, "method": self.command, "headers": headers,
             "status": status, "events": 0},
            None,
        )
        self._send(status, body, content_type=None if status == 304 else "application/json",
                   extra=extra)

    # -- bodies ---------------------------------------------------------------------------

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
            with contextlib.suppress(OSError):
                self._send(500, self._internal_error_body(exc))

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
        ]
        if status != 304:  # a 304's Content-Length would describe the 200 body it stands for
            lines.append(f"Content-Length: {len(body)}")
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        # ``headers`` is missing when the request line itself could not be parsed.
        request_headers = getattr(self, "headers", None)
        origin = request_headers.get("Origin") if request_headers is not None else None
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
        self.log_request(status, len(body))  # before writing, so it precedes the client's return
        self._responded = True
        self.wfile.write(head if self.command == "HEAD" else head + body)

