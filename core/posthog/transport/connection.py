"""A keep-alive upload connection owned by one sender thread, on the standard library.

Batches are the SDK's hot path: ``http.client`` costs about a fifth of the CPU
``requests`` spends per request, which the caller's thread would otherwise feel
through the GIL. It honours what the ``requests`` sessions honour for this
path: environment proxies (``HTTP(S)_PROXY``/``NO_PROXY``), the CA bundle
(``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else certifi's), the request
helpers' socket options and ``disable_connection_reuse()``.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

from posthog.transport import http as transport_http

_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)
_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """Certificate-verifying TLS context, with the CA bundle ``requests`` would use."""
    global _context
    if _context is None:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if not bundle:
            try:
                import certifi

                bundle = certifi.where()
            except ImportError:
                bundle = None
        _context = ssl.create_default_context(cafile=bundle)
    return _context


class Response:
    """The parts of a response the transport reads (shaped like ``requests.Response``)."""

    def __init__(self, status: int, content: bytes, headers: Message) -> None:
        self.status_code = status
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def _proxy_auth(proxy: Any) -> dict[str, str]:
    if not proxy.username:
        return {}
    pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


class Uploader:
    """One pooled connection to one host at a time; not thread-safe by design."""

    def __init__(self) -> None:
        self.conn: http.client.HTTPConnection | None = None
        self._key: tuple[str, str, str | None] | None = None
        self._path_prefix = ""
        self._headers: dict[str, str] = {}

    @property
    def sock(self) -> Any:
        return self.conn.sock if self.conn is not None else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self._key = None

    def _open(self, url: str, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        proxy_url = transport_http._proxies_for(url).get(parts.scheme)
        key = (parts.scheme, parts.netloc, proxy_url)
        if self.conn is not None and self._key == key:
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            return self.conn
        self.close()
        host, port = parts.hostname or "", parts.port or (443 if secure else 80)
        self._path_prefix, self._headers = "", {}
        conn: http.client.HTTPConnection
        if proxy_url:
            proxy = urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
            proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
            if secure:
                # CONNECT through the proxy, then TLS with the target inside the tunnel.
                conn = http.client.HTTPSConnection(
                    proxy.hostname or "", proxy_port, timeout=timeout, context=tls_context()
                )
                conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
            else:
                conn = http.client.HTTPConnection(proxy.hostname or "", proxy_port,
                                                  timeout=timeout)
                self._path_prefix = f"{parts.scheme}://{parts.netloc}"
                self._headers = _proxy_auth(proxy)
        elif secure:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()
        for level, option, value in transport_http._socket_options or ():
            conn.sock.setsockopt(level, option, value)
        self.conn, self._key = conn, key
        return conn

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        """POST and read the answer; one silent retry when a reused connection went stale."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                conn = self._open(url, timeout)
                conn.request("POST", self._path_prefix + target, body=body,
                             headers={**headers, **self._headers})
                answer = conn.getresponse()
                content = answer.read()
            except _STALE:
                self.close()
                if reused and attempt == 0:
                    continue  # the server dropped an idle keep-alive connection
                raise
            except BaseException:
                self.close()
                raise
            if answer.will_close or not transport_http._reuse_connections:
                self.close()
            return Response(answer.status, content, answer.headers)
        raise AssertionError("unreachable")

