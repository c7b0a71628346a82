"""HTTP: host normalisation, pooled sessions, POST/GET with PostHog's status rules.

``requests`` is imported on the first request, never at ``import posthog``: cold
import time is paid by every CLI, worker and serverless function.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from posthog._log import logger
from posthog.version import VERSION

if TYPE_CHECKING:
    import requests

SocketOptions = list[tuple[int, int, "int | bytes"]]

DEFAULT_HOST = "https://us.i.posthog.com"
USER_AGENT = f"posthog-python/{VERSION}"
_APP_HOSTS = {
    "https://app.posthog.com": "https://us.i.posthog.com",
    "https://us.posthog.com": "https://us.i.posthog.com",
    "https://eu.posthog.com": "https://eu.i.posthog.com",
}


class APIError(Exception):
    """A PostHog endpoint answered with something other than HTTP 200."""

    def __init__(self, status: int | str, message: str, retry_after: float | None = None):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"[PostHog] {self.message} ({self.status})"


class QuotaLimitError(APIError):
    """A 200 answer whose ``quotaLimited`` list names ``feature_flags``."""


def normalize_host(host: str | None) -> str:
    """The ingestion base URL for ``host`` (spec core §3.2)."""
    text = (host or "").strip()
    if not text:
        return DEFAULT_HOST
    if text.endswith("/"):
        text = text[:-1]
    return _APP_HOSTS.get(text, text)


# ---------------------------------------------------------------- sessions

_lock = threading.Lock()
_socket_options: SocketOptions | None = None
_reuse_connections = True
_sessions: dict[str, requests.Session] = {}


def _default_socket_options() -> SocketOptions:
    from urllib3.connection import HTTPConnection

    return list(HTTPConnection.default_socket_options)


def _build_session(retries: int) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    options = _socket_options

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            if options is not None:
                kwargs["socket_options"] = options
            super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    # Environment lookups (proxies, netrc, CA bundle) cost more CPU than the rest of a
    # request; do them once here, per host in _proxies_for, instead of on every request.
    session.trust_env = False
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    plain = _Adapter()
    session.mount("http://", plain)
    secure = _Adapter(max_retries=Retry(total=retries, connect=retries, read=0, status=0))
    session.mount("https://", secure)
    return session


def session(kind: str = "default") -> requests.Session:
    """The shared pooled session for ``kind`` (``default`` or ``flags``; flags has no retries)."""
    if not _reuse_connections:
        return _build_session(0 if kind == "flags" else 2)
    found = _sessions.get(kind)
    if found is None:
        with _lock:
            found = _sessions.get(kind)
            if found is None:
                found = _sessions[kind] = _build_session(0 if kind == "flags" else 2)
    return found


_proxies: dict[str, dict[str, str]] = {}


def _proxies_for(url: str) -> dict[str, str]:
    """Proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY`` …) for ``url``'s host, cached."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    key = f"{parts.scheme}://{parts.netloc}"
    found = _proxies.get(key)
    if found is None:
        from requests.utils import get_environ_proxies

        found = _proxies[key] = dict(get_environ_proxies(key))
    return found


def _reset_sessions() -> None:
    global _lock
    _lock = threading.Lock()
    _sessions.clear()


os.register_at_fork(after_in_child=_reset_sessions)


def set_socket_options(options: SocketOptions | None) -> None:
    """Use these socket options on every pooled connection (``None`` restores defaults)."""
    global _socket_options
    with _lock:
        if options == _socket_options:
            return
        _socket_options = None if options is None else list(options)
        _sessions.clear()


def enable_keep_alive() -> None:
    """TCP keep-alive on pooled connections: idle 60 s, interval 60 s, 3 probes."""
    import socket

    options = _default_socket_options()
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    set_socket_options(options)


def disable_connection_reuse() -> None:
    """Build a fresh session for every request instead of pooling connections."""
    global _reuse_connections
    _reuse_connections = False


# ---------------------------------------------------------------- requests


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), floored at 0."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_for(response: Any) -> APIError:
    message: str = response.text
    try:
        payload = response.json()
        if isinstance(payload, Mapping) and "detail" in payload:
            message = str(payload["detail"])
    except ValueError:
        pass
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return APIError(response.status_code, message, retry_after)


def prepare_body(body: bytes, gzip: bool) -> tuple[bytes, dict[str, str]]:
    """The body as sent (gzipped when asked and possible) and the POST headers."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if gzip:
        import gzip as gzip_mod

        try:
            body = gzip_mod.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        except Exception as exc:  # compression failing must not lose the batch
            logger.warning("gzip failed (%s); sending uncompressed", exc)
    return body, headers


def raise_for_status(response: Any) -> None:
    """PostHog's rule: anything but exactly HTTP 200 is an :class:`APIError`."""
    if response.status_code != 200:
        raise _error_for(response)


def post_body(
    url: str, body: bytes, *, gzip: bool = False, timeout: float = 15, kind: str = "default"
) -> requests.Response:
    """POST pre-serialised JSON through the pooled ``requests`` session."""
    body, headers = prepare_body(body, gzip)
    response = session(kind).post(
        url, data=body, headers=headers, timeout=timeout, proxies=_proxies_for(url)
    )
    raise_for_status(response)
    return response


def get_json(
    url: str, *, bearer: str, timeout: float, etag: str | None = None
) -> requests.Response:
    """Authenticated GET (definitions, remote config); 304 is returned, not raised."""
    headers = {"Authorization": f"Bearer {bearer}", "User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    response = session().get(url, headers=headers, timeout=timeout, proxies=_proxies_for(url))
    if response.status_code not in (200, 304):
        raise _error_for(response)
    return response
