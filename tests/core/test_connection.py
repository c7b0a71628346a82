"""The upload connection: TLS verification, proxies, stale keep-alive, socket options."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import posthog
from posthog.transport import connection, http
from tests.support.connect_proxy import ConnectProxy
from tests.support.http_server import Reply, ScriptedServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[ScriptedServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    server = ScriptedServer(tls=ctx)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_tls_and_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_context", None)
    monkeypatch.setattr(http, "_proxies", {})
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def collect_errors() -> tuple[list[tuple[Exception, Any]], Any]:
    errors: list[tuple[Exception, Any]] = []
    return errors, lambda exc, batch: errors.append((exc, batch))


def test_tls_upload_verifies_against_the_configured_bundle(
    tls_server: ScriptedServer, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    errors, on_error = collect_errors()
    client = posthog.Client("phc_tls", host=tls_server.url, on_error=on_error)
    client.capture("secure", distinct_id="u")
    client.shutdown()
    assert [e["event"] for e in tls_server.events()] == ["secure"]
    assert errors == []


def test_untrusted_certificate_is_refused_and_reported(tls_server: ScriptedServer) -> None:
    errors, on_error = collect_errors()
    client = posthog.Client("phc_tls", host=tls_server.url, on_error=on_error, max_retries=0)
    client.capture("refused", distinct_id="u")
    client.shutdown()
    assert tls_server.events() == []
    ((exc, batch),) = errors
    assert isinstance(exc, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    assert batch[0]["event"] == "refused"


def test_https_through_a_connect_proxy(
    tls_server: ScriptedServer, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://user:pw@"))
        client = posthog.Client("phc_tls", host=tls_server.url)
        client.capture("tunnelled", distinct_id="u")
        client.shutdown()
        assert [e["event"] for e in tls_server.events()] == ["tunnelled"]
        assert proxy.targets == [f"localhost:{tls_server.port}"]
        assert "Proxy-Authorization: Basic dXNlcjpwdw==" in proxy.headers
    finally:
        proxy.close()


def test_no_proxy_bypasses_the_proxy(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = posthog.Client("phc", host=server.url, max_retries=0)
    client.capture("direct", distinct_id="u")
    client.shutdown()
    assert [e["event"] for e in server.events()] == ["direct"]


def test_stale_keep_alive_connection_is_replaced_silently(server: ScriptedServer) -> None:
    server.push(Reply(close_after=True))
    errors, on_error = collect_errors()
    client = posthog.Client("phc", host=server.url, on_error=on_error, flush_interval=0.01)
    client.capture("first", distinct_id="u")
    client.flush()
    time.sleep(0.1)  # the server has dropped the connection by now
    start = time.monotonic()
    client.capture("second", distinct_id="u")
    client.flush()
    elapsed = time.monotonic() - start
    client.shutdown()
    assert [e["event"] for e in server.events()] == ["first", "second"]
    assert errors == []
    assert elapsed < 0.9, "a stale connection must not cost a retry backoff"
    ports = [r.client_port for r in server.requests]
    assert ports[0] != ports[1]


def test_socket_options_apply_to_the_upload_connection(server: ScriptedServer) -> None:
    try:
        posthog.enable_keep_alive()
        client = posthog.Client("phc", host=server.url)
        client.capture("e", distinct_id="u")
        client.flush()
        (uploader,) = client.lane.uploaders
        assert uploader.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert uploader.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        client.shutdown()
    finally:
        http.set_socket_options(None)
