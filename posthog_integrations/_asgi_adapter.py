"""Reading one ASGI connection scope for the shared request layer (``_request.RequestAdapter``).

Everything here is cheap and never raises: the headers are indexed once per request (in C in
the usual case); the route template and the user are read late, when an event is built,
because routing and authentication run after the middleware has started.
"""

from __future__ import annotations

import re
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from posthog_integrations._request import TracingIds

Scope = MutableMapping[str, Any]

# Header names as bytes, for the names the request layer asks for on every request.
_KEYS = {
    name: name.encode("latin-1")
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
_DISTINCT, _SESSION, _WINDOW, _DEVICE = (
    "x-posthog-distinct-id",
    "x-posthog-session-id",
    "x-posthog-window-id",
    "x-posthog-device-id",
)
_DISTINCT_KEY, _SESSION_KEY, _WINDOW_KEY, _DEVICE_KEY = (
    _KEYS[_DISTINCT],
    _KEYS[_SESSION],
    _KEYS[_WINDOW],
    _KEYS[_DEVICE],
)
_NO_HEADERS: dict[bytes, list[Any]] = {}
_HOST = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]{1,255}")
_HOSTS: dict[str, bool] = {}  # Host header -> safe? (bounded: a client can send any Host)
_HOSTS_MAX = 256
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_SCHEMES = frozenset(_DEFAULT_PORTS)
_MAX_MOUNT_DEPTH = 8


# Header names seen to be lower case: the usual names are checked with one set operation.
_LOWER_NAMES: set[bytes] = set()
_LOWER_NAMES_MAX = 512


def _all_lower(headers: dict[bytes, Any]) -> bool:
    """Whether every name is lower case (remembered for the next requests)."""
    if not b"".join(headers).islower():
        return False
    if len(_LOWER_NAMES) < _LOWER_NAMES_MAX:  # bounded: clients choose header names
        _LOWER_NAMES.update(headers)
    return True


def _safe_host(value: str) -> bool:
    safe = _HOSTS.get(value)
    if safe is None:
        safe = _HOST.fullmatch(value) is not None
        if len(_HOSTS) < _HOSTS_MAX:
            _HOSTS[value] = safe
    return safe


def _index_carefully(headers: object) -> dict[bytes, list[Any]]:
    """Headers by lower-cased name, all values in order; malformed items are skipped."""
    every: dict[bytes, list[Any]] = {}
    try:
        items = list(headers)  # type: ignore[call-overload]
    except Exception:
        return every  # not iterable: read as no headers
    for item in items:
        try:
            name, value = item
            key = bytes(name).lower()
        except Exception:
            continue  # a malformed item: skipped, never fatal
        if key in every:
            every[key].append(value)
        else:
            every[key] = [value]
    return every


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return None


def full_path(path: str, root_path: str) -> str:
    """The path the client asked for, whether or not the server put ``root_path`` inside it."""
    if not root_path or path == root_path:
        return path
    if path.startswith(root_path) and path[len(root_path)] == "/":
        return path
    return root_path + path


def _route_path(path: str, root_path: str) -> str:
    """``path`` relative to ``root_path`` (what a router at that level matches against)."""
    if root_path and path.startswith(root_path):
        if path == root_path:
            return ""
        if path[len(root_path)] == "/":
            return path[len(root_path) :]
    return path


def _server_host(server: object, scheme: str) -> str | None:
    if not isinstance(server, (tuple, list)) or len(server) != 2:
        return None
    host, port = server
    if not isinstance(host, str) or not host:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if isinstance(port, int) and port != _DEFAULT_PORTS.get(scheme):
        return f"{host}:{port}"
    return host


class ASGIAdapter:
    """``RequestAdapter`` over an ASGI ``http`` or ``websocket`` scope (``raw``, what hooks
    receive)."""

    __slots__ = (
        "_all",
        "_one",
        "_path",
        "_root",
        "path",
        "raw",
    )

    url_path = None  # $current_url uses the raw path

    def __init__(self, scope: Scope) -> None:
        self.raw = scope
        # Usual case, built in C: a list of unique, lower-case names (ASGI servers send
        # lower case). Duplicates, upper case or malformed items take the careful path.
        headers = scope.get("headers")
        one: dict[bytes, Any] | None = None
        if type(headers) is list or type(headers) is tuple:
            try:
                one = dict(headers)
                if len(one) != len(headers) or not (
                    one.keys() <= _LOWER_NAMES or _all_lower(one)
                ):
                    one = None
            except Exception:
                one = None
        self._one = one
        if one is None:
            self._all = _index_carefully(headers or ())
        # The path as the middleware saw it: routers update the scope in place. The rest is
        # read when the request's tags are built (most requests never need them).
        path = scope.get("path")
        root = scope.get("root_path")
        self._path = path = path if type(path) is str else ""
        self._root = root = root if type(root) is str else ""
        self.path = full_path(path, root) if root else path

    @property
    def method(self) -> str | None:
        """``scope["method"]``; ``None`` for a WebSocket."""
        scope = self.raw
        method = scope.get("method") if scope.get("type") == "http" else None
        return method if type(method) is str else None

    @property
    def scheme(self) -> str:
        scope = self.raw
        scheme = scope.get("scheme")
        if scheme in _SCHEMES:
            return scheme  # type: ignore[no-any-return]
        return "http" if scope.get("type") == "http" else "ws"

    @property
    def host(self) -> str | None:
        """The ``host`` header if safe, else ``scope["server"]``."""
        one = self._one
        host = one.get(b"host") if one is not None else None
        if type(host) is bytes and host:
            text = host.decode("latin-1")
            if _HOSTS.get(text) or _safe_host(text):  # known good: one dict lookup
                return text
            return self._unsafe_host(text)
        return self._any_host()

    @property
    def peer_ip(self) -> str | None:
        """``scope["client"][0]`` (read only when ``$ip`` falls back to the peer)."""
        client = self.raw.get("client")
        if (type(client) is tuple or type(client) is list) and client:
            return client[0] if type(client[0]) is str else None
        return None

    @property
    def query_string(self) -> str:
        """``scope["query_string"]`` latin-1 decoded (read only when it is captured)."""
        query = self.raw.get("query_string")
        return (_text(query) or "") if query else ""

    def _unsafe_host(self, text: str) -> str | None:
        text = text.strip()
        if not text:
            return _server_host(self.raw.get("server"), self.scheme)
        return text if _safe_host(text) else None

    def _any_host(self) -> str | None:
        """Host from a duplicated / str-valued Host header, else ``scope["server"]``."""
        for value in self.header("host"):
            value = value.strip()
            if value:
                return value if _safe_host(value) else None
        return _server_host(self.raw.get("server"), self.scheme)

    def tracing_ids(self) -> TracingIds:
        """The four id headers: one dict lookup each in the usual case."""
        one = self._one
        if one is None:
            return (self.header(_DISTINCT) or None, self.header(_SESSION) or None,
                    self.header(_WINDOW) or None, self.header(_DEVICE) or None)
        d = one.get(_DISTINCT_KEY)
        s = one.get(_SESSION_KEY)
        w = one.get(_WINDOW_KEY)
        v = one.get(_DEVICE_KEY)
        return (
            None if d is None else d.decode("latin-1") if d.__class__ is bytes else _text(d),
            None if s is None else s.decode("latin-1") if s.__class__ is bytes else _text(s),
            None if w is None else w.decode("latin-1") if w.__class__ is bytes else _text(w),
            None if v is None else v.decode("latin-1") if v.__class__ is bytes else _text(v),
        )

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` in arrival order, latin-1 decoded."""
        key = _KEYS.get(name) or name.lower().encode("latin-1", "replace")
        one = self._one
        if one is not None:
            value = one.get(key)
            if value is None:
                return []
            if type(value) is bytes:
                return [value.decode("latin-1")]
            return [value] if type(value) is str else []
        return [text for value in self._all.get(key, ()) if (text := _text(value)) is not None]

    def cookie(self, name: str) -> str | None:
        for line in self.header("cookie"):
            for part in line.split(";"):
                key, sep, value = part.partition("=")
                if sep and key.strip() == name:
                    return value.strip()
        return None

    def route(self) -> str | None:
        scope = self.raw
        if "route" not in scope and "endpoint" not in scope:
            return None  # not routed yet (the usual answer at scope start)
        try:
            # Inside a mounted sub-app, Starlette keeps the top-level root in app_root_path:
            # templates are rebuilt from there, so the mount prefix is part of them.
            base = scope.get("app_root_path")
            if type(base) is not str or not self._root.startswith(base):
                base = self._root
            return route_template(scope, self._path, base)
        except Exception:
            return None

    def user(self) -> object | None:
        """``scope["user"]`` when an authentication middleware set it and it is authenticated."""
        try:
            user: object | None = self.raw.get("user")
            if user is not None and getattr(user, "is_authenticated", False) is True:
                return user
        except Exception:
            pass
        return None

    def user_id(self, user: object) -> str | None:
        for attr in ("identity", "username", "id"):
            try:
                value = getattr(user, attr, None)
            except Exception:  # BaseUser.identity raises NotImplementedError
                continue
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                text = str(value)
                if text:
                    return text
        return None

    def user_email(self, user: object) -> str | None:
        try:
            email = getattr(user, "email", None)
        except Exception:
            return None
        return email if isinstance(email, str) and email else None


# ---------------------------------------------------------------- route templates


def route_template(scope: Scope, path0: str, root0: str) -> str | None:
    """Full route template of the matched route, mount prefixes included; ``None`` for 404.

    ``path0``/``root0`` are ``path``/``root_path`` as the middleware saw them: routers update
    the scope in place, so ``root_path`` grows by the concrete prefix of each matched mount.
    """
    routing = sys.modules.get("starlette.routing")
    mount_cls: Any = getattr(routing, "Mount", None)
    route = scope.get("route")
    if route is None:
        route = _first_full_match(scope, path0, root0, routing)
        if route is None:
            return None
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    late_root = scope.get("root_path")
    late_root = late_root if isinstance(late_root, str) else root0
    prefix = ""
    if late_root != root0:
        prefix = _mount_prefix(scope, path0, root0, late_root, mount_cls)
    if mount_cls is not None and isinstance(route, mount_cls):
        # Still the mount itself: a sub-router found nothing (404), or a plain ASGI app /
        # StaticFiles is mounted, whose template is the mount path.
        return None if route.routes else (prefix or template)
    path = scope.get("path")
    route_path = _route_path(path if isinstance(path, str) else path0, late_root)
    regex = getattr(route, "path_regex", None)
    if regex is not None and not regex.match(route_path):
        # An included router's prefix (FastAPI leaves outer include prefixes out of the
        # route's template): the concrete part before the template's own match.
        for i in range(1, len(route_path)):
            if route_path[i] == "/" and regex.match(route_path[i:]):
                prefix += route_path[:i]
                break
    return prefix + template


def _mount_prefix(scope: Scope, path0: str, root0: str, late_root: str, mount_cls: Any) -> str:
    """Templates of the mounts between the outer router and the matched route."""
    concrete = late_root[len(root0) :] if late_root.startswith(root0) else late_root
    if mount_cls is None:
        return concrete
    routes = getattr(scope.get("router"), "routes", None)
    remaining = _route_path(path0, root0)
    matched = ""
    out = ""
    for _ in range(_MAX_MOUNT_DEPTH):
        if matched == concrete:
            return out
        for candidate in routes or ():
            if isinstance(candidate, mount_cls):
                found = candidate.path_regex.match(remaining)
                if found:
                    rest = "/" + found.group("path")
                    matched += remaining[: len(remaining) - len(rest)]
                    out += candidate.path
                    remaining = rest
                    routes = candidate.routes
                    break
        else:
            break
    if matched == concrete:
        return out
    # No mount explains the new root_path (an app set its own root_path): app-relative.
    return concrete if matched else ""


def _first_full_match(scope: Scope, path0: str, root0: str, routing: Any) -> Any:
    """Old Starlette without ``scope["route"]``: the first route of the router fully matching."""
    router = scope.get("router")
    full = getattr(getattr(routing, "Match", None), "FULL", None)
    if router is None or full is None or "endpoint" not in scope:
        return None
    probe = {
        "type": scope.get("type"),
        "path": _route_path(path0, root0),
        "root_path": "",
        "method": scope.get("method"),
    }
    for route in getattr(router, "routes", ()):
        try:
            match, _ = route.matches(probe)
        except Exception:
            continue
        if match is full:
            return route
    return None
