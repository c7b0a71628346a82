"""``PosthogContextMiddleware``: one PostHog request scope per Django request (spec §2).

Hybrid sync/async. Ids and tags come from the shared request layer through
:class:`DjangoAdapter`; the route and a user loaded later (by ``AuthenticationMiddleware``
below this one, by the view, by DRF token authentication) come from the late resolver, so the
middleware never loads a user itself and defines no ``process_view``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import lru_cache
from typing import Any, TypeAlias

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestAborted,
    SuspiciousOperation,
)
from django.core.signals import got_request_exception, setting_changed
from django.http import FileResponse, Http404, HttpRequest, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.utils.encoding import escape_uri_path
from django.utils.functional import LazyObject, empty

from posthog._log import logger
from posthog_integrations._request import RequestScope, TracingIds
from posthog_integrations._request_scope import start_failed
from posthog_integrations.django._config import DjangoConfig, current

SyncGetResponse: TypeAlias = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse: TypeAlias = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

FRAMEWORK = "django"
SOURCE_MIDDLEWARE = "django.middleware"
SOURCE_SIGNAL = "django.got_request_exception"
SOURCE_STREAMING = "django.streaming_response"

# On the HttpRequest: the RequestScope, or False when the request is not tracked.
ATTR = "_posthog_request_scope"
# The exception a view raised, as process_exception saw it.
VIEW_EXC_ATTR = "_posthog_view_exception"

# Client went away: never an error of the application.
DISCONNECTS: tuple[type[BaseException], ...] = (
    UnreadablePostError,
    RequestAborted,
    BrokenPipeError,
    ConnectionResetError,
)
# Answered with a 4xx by Django: never captured as unhandled.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    Http404,
    PermissionDenied,
    SuspiciousOperation,  # includes DisallowedHost, RequestDataTooBig, TooManyFieldsSent
    BadRequest,
    MultiPartParserError,
)
NEVER_UNHANDLED = CLIENT_ERRORS + DISCONNECTS


def status_for(exc: BaseException) -> int:
    """The status Django answers an exception raised by a view with."""
    if isinstance(exc, Http404):
        return 404
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, (BadRequest, SuspiciousOperation, MultiPartParserError)):
        return 400
    return 500


# ---------------------------------------------------------------- the adapter


_META_KEYS: dict[str, str] = {}


@lru_cache(maxsize=512)
def clean_route(route: str) -> str:
    """``resolver_match.route`` as a path template: leading ``/``, no regex anchors."""
    route = re.sub(r"(^|/)\^", r"\1", route)
    if route.endswith("\\Z"):
        route = route[:-2]
    elif route.endswith("$") and not route.endswith("\\$"):
        route = route[:-1]
    return route if route.startswith("/") else "/" + route


_HOSTS: dict[tuple[Any, ...], str | None] = {}
_HOST_SETTINGS = frozenset(
    {"ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT"}
)
_BASE_GET_HOST = HttpRequest.get_host


def validated_host(request: HttpRequest, meta: Any, scheme: str) -> str | None:
    """``request.get_host()``, or ``None`` where it raises (``DisallowedHost``, spec §2.7).

    ``get_host()`` reads four settings and validates against ``ALLOWED_HOSTS`` on every call;
    its answer depends only on the request values in the key below and those settings, so
    it is cached (bounded; cleared when one of the settings changes).
    """
    if type(request).get_host is not _BASE_GET_HOST:
        return _get_host(request)
    get = meta.get
    key = (get("HTTP_HOST"), get("HTTP_X_FORWARDED_HOST"), get("SERVER_NAME"),
           get("SERVER_PORT"), get("HTTP_X_FORWARDED_PORT"), scheme)
    try:
        return _HOSTS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable META value set by a test or another middleware
        return _get_host(request)
    host = _get_host(request)
    if len(_HOSTS) >= 256:
        _HOSTS.clear()  # hostile Host headers cannot grow it
    _HOSTS[key] = host
    return host


def _get_host(request: HttpRequest) -> str | None:
    try:
        return request.get_host()
    except Exception:
        return None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _HOST_SETTINGS:
        _HOSTS.clear()


setting_changed.connect(
    _on_setting_changed, weak=False, dispatch_uid="posthog_integrations.django.hosts"
)


def _is_authenticated(user: object) -> bool:
    flag = getattr(user, "is_authenticated", False)
    if callable(flag):  # very old custom user models
        flag = flag()
    return bool(flag)


def loaded_user(request: HttpRequest) -> object | None:
    """The authenticated user of ``request`` if already loaded; never loads one.

    Looks at what is materialized: the value behind ``AuthenticationMiddleware``'s lazy
    ``request.user`` once something evaluated it, the user cached by ``request.auser()``,
    or a plain user object assigned to ``request.user`` (DRF does this after authenticating).
    """
    state = request.__dict__
    user: Any = state.get("user")
    if isinstance(user, LazyObject):  # AuthenticationMiddleware's, evaluated or not
        user = user.__dict__.get("_wrapped", empty)
        if user is empty:
            user = state.get("_acached_user")  # loaded by ``await request.auser()``
    # else: a plain object assigned by DRF (or the app) is the answer, even None/anonymous
    if user is None or not _is_authenticated(user):
        return None
    return user  # type: ignore[no-any-return]


class DjangoAdapter:
    """:class:`~posthog_integrations._request.RequestAdapter` over a Django ``HttpRequest``."""

    __slots__ = (
        "_meta",
        "host",
        "method",
        "path",
        "peer_ip",
        "query_string",
        "raw",
        "scheme",
    )

    def __init__(self, request: HttpRequest) -> None:
        meta = request.META
        self._meta = meta
        self.raw = request
        self.method: str | None = request.method
        self.path: str = request.path
        self.query_string: str = meta.get("QUERY_STRING", "")
        self.peer_ip: str | None = meta.get("REMOTE_ADDR")
        try:
            self.scheme: str = request.scheme or "http"
        except Exception:  # a misconfigured SECURE_PROXY_SSL_HEADER
            self.scheme = "http"
        self.host: str | None = validated_host(request, meta, self.scheme)

    @property
    def url_path(self) -> str | None:
        """``build_absolute_uri``'s form of the path: a non-ASCII path percent-encoded."""
        path = self.path
        return None if path.isascii() else escape_uri_path(path)

    def tracing_ids(self) -> TracingIds:
        get = self._meta.get
        return (
            get("HTTP_X_POSTHOG_DISTINCT_ID"),
            get("HTTP_X_POSTHOG_SESSION_ID"),
            get("HTTP_X_POSTHOG_WINDOW_ID"),
            get("HTTP_X_POSTHOG_DEVICE_ID"),
        )

    def header(self, name: str) -> list[str]:
        key = _META_KEYS.get(name)
        if key is None:
            key = _META_KEYS[name] = "HTTP_" + name.upper().replace("-", "_")
        value = self._meta.get(key)
        return [value] if value else []

    def cookie(self, name: str) -> str | None:
        try:
            return self.raw.COOKIES.get(name)
        except Exception:
            return None

    def route(self) -> str | None:
        match = self.raw.resolver_match
        if match is None:
            return None
        route = match.route
        return clean_route(route) if isinstance(route, str) else None

    def user(self) -> object | None:
        return loaded_user(self.raw)

    def user_id(self, user: object) -> str | None:
        pk = getattr(user, "pk", None)
        return None if pk is None else str(pk)

    def user_email(self, user: object) -> str | None:
        email = getattr(user, "email", None)
        return email if isinstance(email, str) and email else None


# ---------------------------------------------------------------- opening and closing


def start(request: HttpRequest, config: DjangoConfig) -> RequestScope | None:
    """Open the request's scope (sync hooks) and remember it, or that it is not tracked."""
    try:
        adapter = DjangoAdapter(request)
    except Exception as exc:
        _failed(request, config, exc)
        return None
    rs = RequestScope.start(adapter, config.options, framework=FRAMEWORK)
    request.__dict__[ATTR] = rs if rs is not None else False
    return rs


async def astart(request: HttpRequest, config: DjangoConfig) -> RequestScope | None:
    try:
        adapter = DjangoAdapter(request)
    except Exception as exc:
        _failed(request, config, exc)
        return None
    rs = await RequestScope.astart(adapter, config.options, framework=FRAMEWORK)
    request.__dict__[ATTR] = rs if rs is not None else False
    return rs


def _failed(request: HttpRequest, config: DjangoConfig, exc: Exception) -> None:
    """The request cannot be read: logged once, reported to ``on_error``, not tracked."""
    start_failed(config.options, exc)
    request.__dict__[ATTR] = False


def respond(request: HttpRequest, rs: RequestScope, response: HttpResponseBase) -> None:
    """The response is known: status, handled 5xx, streaming body; then leave the scope.

    A streamed body is produced after the middleware returns: the scope is suspended (it
    keeps resolving the route and a user loaded by the view) and finished when Django
    closes the response.
    """
    streaming = False
    try:
        status = rs.status = response.status_code
        exc = request.__dict__.get(VIEW_EXC_ATTR)
        if exc is not None:
            # A middleware above turned the view's exception into this response (spec §1.8);
            # a no-op when the signal or process_exception captured it already.
            rs.capture(exc, source=SOURCE_MIDDLEWARE, handled=True, status=status,
                       never=DISCONNECTS)
        if response.streaming and not isinstance(response, FileResponse):
            _wrap_streaming(rs, response)
            streaming = True
    except Exception:
        logger.exception("PostHog middleware could not finish the request")
    finally:
        if streaming:
            rs.suspend()
        else:
            rs.exit()


def _wrap_streaming(rs: RequestScope, response: Any) -> None:
    if response.is_async:
        response.streaming_content = _stream_async(rs, response.streaming_content)
    else:
        response.streaming_content = _stream_sync(rs, response.streaming_content)
    close = response.close

    def close_in_scope() -> None:
        try:
            with rs.activated():
                close()
        finally:
            rs.finish()

    response.close = close_in_scope


def _stream_sync(rs: RequestScope, content: Iterator[bytes]) -> Iterator[bytes]:
    iterator = iter(content)
    while True:
        with rs.activated():
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                rs.capture(exc, source=SOURCE_STREAMING, handled=False, never=DISCONNECTS)
                raise
        yield chunk


async def _stream_async(rs: RequestScope, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    iterator = aiter(content)
    while True:
        with rs.activated():
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except Exception as exc:
                rs.capture(exc, source=SOURCE_STREAMING, handled=False, never=DISCONNECTS)
                raise
        yield chunk


# ---------------------------------------------------------------- the middleware


class PosthogContextMiddleware:
    """Opens a PostHog context per request: ids from tracing headers, request tags,
    late route and user identity, and exception capture (sync and async stacks).

    Place it directly after ``SecurityMiddleware``. Configured by ``POSTHOG_MW_*`` settings,
    which follow ``override_settings``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: SyncGetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        connect_signal()

    def __call__(
        self, request: HttpRequest
    ) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._async:
            return self.__acall__(request)
        get_response: SyncGetResponse = self.get_response  # type: ignore[assignment]
        if ATTR in request.__dict__:  # listed twice: the outer instance tracks the request
            return get_response(request)
        rs = start(request, current())
        if rs is None:
            return get_response(request)
        try:
            response = get_response(request)
        except BaseException:  # DEBUG_PROPAGATE_EXCEPTIONS: the signal captured it already
            rs.exit()
            raise
        respond(request, rs, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: AsyncGetResponse = self.get_response  # type: ignore[assignment]
        if ATTR in request.__dict__:
            return await get_response(request)
        rs = await astart(request, current())
        if rs is None:
            return await get_response(request)
        try:
            response = await get_response(request)
        except BaseException:
            rs.exit()
            raise
        respond(request, rs, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Remember a view's exception; capture it here when Django answers it with a 4xx
        listed in ``capture_status_codes``. 5xx are captured once by the signal receiver."""
        try:
            rs = request.__dict__.get(ATTR)
            if not rs:
                return None
            request.__dict__[VIEW_EXC_ATTR] = exception
            status = status_for(exception)
            if status < 500:
                rs.capture(exception, source=SOURCE_MIDDLEWARE, handled=True, status=status,
                           never=DISCONNECTS)
        except Exception:
            logger.exception("PostHog process_exception failed")
        return None


# ---------------------------------------------------------------- got_request_exception


def connect_signal() -> None:
    got_request_exception.connect(
        on_got_request_exception, weak=False, dispatch_uid="posthog_integrations.django"
    )


def on_got_request_exception(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Capture the exception Django is about to answer with a 500 (views and middleware)."""
    try:
        exc = sys.exc_info()[1]
        if exc is None:
            return
        if not isinstance(request, HttpRequest):
            rs = RequestScope.current()
            if rs is not None:
                rs.capture(exc, source=SOURCE_SIGNAL, handled=False, status=500,
                           never=NEVER_UNHANDLED)
            return
        state = request.__dict__
        source = SOURCE_MIDDLEWARE if state.get(VIEW_EXC_ATTR) is exc else SOURCE_SIGNAL
        rs = state.get(ATTR)
        if rs is False:
            return  # filtered out
        if rs is not None:
            rs.capture(exc, source=source, handled=False, status=500, never=NEVER_UNHANDLED)
            return
        # Raised above our middleware, or it is not installed: a short scope for the capture.
        rs = start(request, current())
        if rs is not None:
            try:
                rs.capture(exc, source=source, handled=False, status=500, never=NEVER_UNHANDLED)
            finally:
                rs.exit()
    except Exception:
        logger.exception("PostHog could not capture the request's exception")
