"""Reading one WSGI request (and its Flask request) for the shared request layer.

:class:`WSGIAdapter` implements ``_request.RequestAdapter`` from the WSGI environ; the Flask
request, once it exists, supplies the route template and is what user hooks receive.
Everything here is cheap and never raises.
"""

from __future__ import annotations

import re
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

from flask import g, has_app_context
from werkzeug.http import parse_cookie
from werkzeug.sansio.utils import host_is_trusted

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from posthog_integrations._request import TracingIds

# Header name (lower case, as the request layer asks) -> WSGI environ key.
_ENVIRON_KEYS: dict[str, str] = {
    name: "HTTP_" + name.upper().replace("-", "_")
    for name in (
        "x-posthog-distinct-id",
        "x-posthog-session-id",
        "x-posthog-window-id",
        "x-posthog-device-id",
        "user-agent",
        "x-forwarded-for",
        "x-real-ip",
        "host",
        "cookie",
    )
}
_HOST = re.compile(r"(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# (Host header, scheme) -> checked host; bounded, so junk hosts cannot grow it.
_HOSTS: dict[tuple[str, str], str | None] = {}
_HOSTS_MAX = 256
_MISSING: Any = object()


def _text(value: object) -> str | None:
    """An environ value as ``str`` (PEP 3333 says latin-1 ``str``; tolerate bytes)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return None


def _unicode(value: str) -> str:
    """A PEP 3333 latin-1 string decoded as UTF-8 (bad bytes replaced), as Werkzeug does."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that decoded it already
        return value


def check_host(raw: str, scheme: str) -> str | None:
    """``name[:port]`` in the form Werkzeug's request URL shows it, or ``None`` if not a host.

    Lower-cased, IDNA (``xn--``) labels decoded, the scheme's default port dropped; anything
    with characters a host cannot have (``/``, ``@``, spaces, controls) is rejected.
    """
    if _HOST.fullmatch(raw) is None:
        return None
    host = raw.lower()
    port = ""
    if not host.endswith("]") and ":" in host:
        host, _, port = host.rpartition(":")
        if not host or int(port) > 65535:
            return None
        if port == _DEFAULT_PORTS.get(scheme):
            port = ""
    if "xn--" in host:
        with suppress(UnicodeError):
            host = host.encode("ascii").decode("idna")
    return f"{host}:{port}" if port else host


def _host(environ: WSGIEnvironment, scheme: str) -> str | None:
    raw = environ.get("HTTP_HOST")
    if raw.__class__ is str and raw:
        key = (raw, scheme)
        found: str | None = _HOSTS.get(key, _MISSING)
        if found is _MISSING:
            found = check_host(raw, scheme)
            if len(_HOSTS) < _HOSTS_MAX:
                _HOSTS[key] = found
        return found
    text = _text(raw)
    if text:
        return check_host(text, scheme)
    name = _text(environ.get("SERVER_NAME"))
    if not name:
        return None
    port = _text(environ.get("SERVER_PORT"))
    return check_host(f"{name}:{port}" if port else name, scheme)


class WSGIAdapter:
    """The request layer's view of one WSGI request (``_request.RequestAdapter``).

    ``request`` is the Flask request (hooks receive it; its ``url_rule`` is the route);
    without one, hooks receive the environ.
    """

    __slots__ = (
        "_cookies",
        "_g",
        "environ",
        "path",
        "raw",
        "request",
    )

    url_path = None  # $current_url shows the Unicode path, as Werkzeug's request URL does

    def __init__(self, environ: WSGIEnvironment, request: Any = None) -> None:
        self.environ = environ
        self.request = request
        self.raw: object = request if request is not None else environ  # what hooks receive
        self._g: Any = None
        self._cookies: Any = None
        # The path now (a WSGI middleware may rewrite the environ later); the rest is read
        # when the request's tags are built, which most requests never need.
        get = environ.get
        script = get("SCRIPT_NAME", "")
        path = get("PATH_INFO", "")
        if script.__class__ is not str or path.__class__ is not str:
            script, path = _text(script) or "", _text(path) or ""
        if script:
            path = script.rstrip("/") + "/" + path.lstrip("/")
        elif path[:1] != "/":
            path = "/" + path
        self.path: str = path if path.isascii() else _unicode(path)

    @property
    def method(self) -> str | None:
        method = self.environ.get("REQUEST_METHOD")
        return method.upper() if method.__class__ is str and method else None

    @property
    def scheme(self) -> str:
        scheme = self.environ.get("wsgi.url_scheme")
        return scheme if scheme.__class__ is str and scheme else "http"

    @property
    def query_string(self) -> str:
        query = self.environ.get("QUERY_STRING", "")
        if query.__class__ is not str:
            query = _text(query) or ""
        return query if query.isascii() else _unicode(query)

    @property
    def peer_ip(self) -> str | None:
        peer = self.environ.get("REMOTE_ADDR")
        return peer if peer.__class__ is str else _text(peer)

    @property
    def host(self) -> str | None:
        """The checked host; ``None`` when Flask would refuse it (``TRUSTED_HOSTS``)."""
        environ = self.environ
        scheme = environ.get("wsgi.url_scheme")
        host = _host(environ, scheme if scheme.__class__ is str and scheme else "http")
        request = self.request
        trusted = getattr(request, "trusted_hosts", None) if request is not None else None
        if trusted and host is not None and not host_is_trusted(host, trusted):
            return None  # Flask answers 400; no URL with that host
        return host

    def tracing_ids(self) -> TracingIds:
        """The four id headers (a WSGI server joins repeated lines with ``,``)."""
        get = self.environ.get
        return (
            get("HTTP_X_POSTHOG_DISTINCT_ID"),
            get("HTTP_X_POSTHOG_SESSION_ID"),
            get("HTTP_X_POSTHOG_WINDOW_ID"),
            get("HTTP_X_POSTHOG_DEVICE_ID"),
        )

    def header(self, name: str) -> list[str]:
        """The header's value as one item: a WSGI server joins repeated lines with ``,``."""
        key = _ENVIRON_KEYS.get(name)
        if key is None:
            key = "HTTP_" + name.upper().replace("-", "_")
        value = self.environ.get(key)
        if value.__class__ is not str:
            value = _text(value)
        return [value] if value else []

    def cookie(self, name: str) -> str | None:
        cookies = self._cookies
        if cookies is None:
            raw = _text(self.environ.get("HTTP_COOKIE"))
            try:
                cookies = parse_cookie(raw) if raw else {}
            except Exception:
                cookies = {}
            self._cookies = cookies
        value = cookies.get(name)
        return value if isinstance(value, str) else None

    def route(self) -> str | None:
        rule = getattr(self.request, "url_rule", None)
        found = getattr(rule, "rule", None)
        return found if isinstance(found, str) else None

    def user(self) -> object | None:
        """Flask-Login's user, only if it was already loaded for this request (never loads it).

        Flask-Login keeps the loaded user on ``g._login_user``; ``current_user`` would call
        the user loader, so it is not touched.
        """
        app_g = self._g
        if app_g is None:
            if not has_app_context():
                return None
            app_g = self._g = cast(Any, g)._get_current_object()
        user = getattr(app_g, "_login_user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        return cast(object, user)

    def user_id(self, user: object) -> str | None:
        """Flask-Login's ``get_id()``."""
        get_id = getattr(user, "get_id", None)
        found = get_id() if callable(get_id) else None
        return None if found is None else str(found)

    def user_email(self, user: object) -> str | None:
        email = getattr(user, "email", None)
        return email if isinstance(email, str) else None
