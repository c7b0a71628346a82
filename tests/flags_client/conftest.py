"""Fixtures for the client-side feature flag tests: a routing loopback server and clients.

One HTTP server answers every path; replies are scripted per route so a test can
say "definitions answer X, /flags answers Y, /batch/ answers Z" independently.
Every request is recorded (route, method, path, headers, body).
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog.flags._base import forget_logged
from tests.support.http_server import Reply

SECRET = "phs_secret"
EMPTY_DEFINITIONS: dict[str, Any] = {"flags": [], "group_type_mapping": {}, "cohorts": {}}
ROUTES = ("definitions", "flags", "batch", "remote_config", "other")


def route_of(path: str) -> str:
    if path.startswith("/flags/definitions"):
        return "definitions"
    if path.startswith("/flags"):
        return "flags"
    if path.startswith("/batch"):
        return "batch"
    if path.startswith("/api/projects/"):
        return "remote_config"
    return "other"


@dataclass
class Seen:
    route: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class FlagServer:
    """A loopback HTTP server with one reply script (and default reply) per route."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque[Reply]] = {name: deque() for name in ROUTES}
        self.defaults: dict[str, Reply] = {
            "definitions": Reply(200, EMPTY_DEFINITIONS),
            "flags": Reply(200, {"flags": {}, "requestId": "req-default"}),
            "batch": Reply(200, {"status": 1}),
            "remote_config": Reply(404, {"detail": "not found"}),
            "other": Reply(404, {"detail": "not found"}),
        }
        self.requests: list[Seen] = []
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                route = route_of(self.path)
                with outer._cond:
                    script = outer.scripts[route]
                    reply = script.popleft() if script else outer.defaults[route]
                    outer.requests.append(Seen(
                        route, self.command, self.path,
                        {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(),
                    ))
                    outer._cond.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(
                    reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.status != 304:
                        self.wfile.write(data)
                except OSError:
                    self.close_connection = True

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # scripting -----------------------------------------------------------------

    def push(self, route: str, *replies: Reply) -> None:
        with self._cond:
            self.scripts[route].extend(replies)

    def set_default(self, route: str, reply: Reply) -> None:
        with self._cond:
            self.defaults[route] = reply

    def definitions(self, body: dict[str, Any], etag: str | None = None) -> None:
        """Make ``body`` the standing answer of the definitions endpoint."""
        self.set_default("definitions", Reply(200, body, {"ETag": etag} if etag else {}))

    def flags(self, body: Any, status: int = 200) -> None:
        """Make ``body`` the standing answer of ``/flags``."""
        self.set_default("flags", Reply(status, body))

    # inspection ----------------------------------------------------------------

    def of(self, route: str) -> list[Seen]:
        with self._cond:
            return [r for r in self.requests if r.route == route]

    def wait_for(self, route: str, count: int, timeout: float = 5.0) -> list[Seen]:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(r.route == route for r in self.requests) >= count, timeout
            )
        found = self.of(route)
        if not ok:
            raise AssertionError(f"expected {count} {route} requests, got {len(found)}")
        return found

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for req in self.of("batch"):
            out.extend(req.json()["batch"])
        return out

    def called_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "$feature_flag_called"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -------------------------------------------------------------------- definitions


def flag_def(key: str, *, rollout: float = 100, properties: list[dict[str, Any]] | None = None,
             payloads: dict[str, Any] | None = None, variants: list[tuple[str, float]] | None
             = None, flag_id: int = 1, version: int = 1, active: bool = True,
             **extra: Any) -> dict[str, Any]:
    """A flag definition as ``/flags/definitions`` sends it."""
    filters: dict[str, Any] = {
        "groups": [{"properties": properties or [], "rollout_percentage": rollout}],
    }
    if payloads is not None:
        filters["payloads"] = payloads
    if variants is not None:
        filters["multivariate"] = {
            "variants": [{"key": k, "rollout_percentage": p} for k, p in variants]
        }
    group_index = extra.pop("aggregation_group_type_index", None)
    if group_index is not None:
        filters["aggregation_group_type_index"] = group_index
    return {"id": flag_id, "key": key, "active": active, "version": version,
            "filters": filters, **extra}


def definitions(*flags: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"flags": list(flags), "group_type_mapping": {}, "cohorts": {}, **extra}


# A person-property filter that cannot be decided without ``plan``: local evaluation
# is inconclusive, so the server must decide.
NEEDS_PLAN = [{"key": "plan", "operator": "exact", "value": ["pro"], "type": "person"}]


def record(key: str, value: Any, *, flag_id: int = 7, version: int = 3,
           payload: Any = None, description: str = "Matched condition set 1",
           has_experiment: bool | None = False, failed: bool = False) -> dict[str, Any]:
    """A v4 ``/flags`` record."""
    meta: dict[str, Any] = {"id": flag_id, "version": version, "payload": payload,
                            "description": "", "config_version": 1}
    if has_experiment is not None:
        meta["has_experiment"] = has_experiment
    return {
        "key": key,
        "enabled": bool(value),
        "variant": value if isinstance(value, str) else None,
        "value": value,
        "failed": failed,
        "reason": {"code": "condition_match", "condition_index": 0,
                   "description": description},
        "metadata": meta,
    }


def flags_response(*records: dict[str, Any], request_id: str | None = "req-1",
                   **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flags": {r["key"]: r for r in records},
        "errorsWhileComputingFlags": False,
        "quotaLimited": [],
        "evaluatedAt": 1700000000000,
        **extra,
    }
    if request_id is not None:
        body["requestId"] = request_id
    return body


def closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "posthog" and r.levelno >= level]


# -------------------------------------------------------------------- fixtures


@pytest.fixture
def server() -> Iterator[FlagServer]:
    srv = FlagServer()
    yield srv
    srv.close()


@pytest.fixture
def make_client(server: FlagServer) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**kwargs: Any) -> Client:
        kwargs.setdefault("host", server.url)
        kwargs.setdefault("flush_interval", 0.05)
        kwargs.setdefault("poll_interval", 30)
        client = Client(kwargs.pop("project_api_key", "phc_test"), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout_seconds=2)


@pytest.fixture
def local_client(make_client: Callable[..., Client]) -> Callable[..., Client]:
    """Clients with a secret key (local evaluation on)."""

    def make(**kwargs: Any) -> Client:
        kwargs.setdefault("secret_key", SECRET)
        return make_client(**kwargs)

    return make


@pytest.fixture(autouse=True)
def _quiet_deprecations() -> Iterator[None]:
    # The deprecated getters are exercised everywhere; tests that assert the warnings
    # record them explicitly with ``pytest.warns``/``catch_warnings``.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture(autouse=True)
def _fresh_once_only_logging() -> Iterator[None]:
    forget_logged()
    yield
    forget_logged()


@pytest.fixture
def module_client(server: FlagServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Configure the module-level default client against ``server``; restored afterwards."""
    if posthog.default_client is not None:
        posthog.default_client.shutdown(timeout_seconds=2)
    posthog.default_client = None
    monkeypatch.setattr(posthog, "api_key", "phc_test")
    monkeypatch.setattr(posthog, "project_api_key", None)
    monkeypatch.setattr(posthog, "host", server.url)
    monkeypatch.setattr(posthog, "secret_key", None)
    monkeypatch.setattr(posthog, "personal_api_key", None)
    monkeypatch.setattr(posthog, "disabled", False)
    monkeypatch.setattr(posthog, "send", True)
    monkeypatch.setattr(posthog, "sync_mode", False)
    yield
    if posthog.default_client is not None:
        posthog.default_client.shutdown(timeout_seconds=2)
    posthog.default_client = None
