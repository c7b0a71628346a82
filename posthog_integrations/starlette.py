"""PostHog for Starlette, FastAPI and any ASGI 3 application: a pure ASGI middleware.

``app.add_middleware(PosthogMiddleware, client=client)`` opens one request scope per HTTP
request or WebSocket connection (ids from the posthog-js tracing headers, request tags) and
keeps it open until the application call returns, so streamed bodies and background tasks
run inside it; exceptions escaping the application are captured there and re-raised.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

try:
    import starlette  # noqa: F401  (presence check only; submodules are read lazily)
except ImportError as exc:  # pragma: no cover - exercised in a test through sys.modules
    raise ImportError(
        "posthog_integrations.starlette needs Starlette: "
        "pip install 'posthog-integrations[starlette]'"
    ) from exc

from posthog._log import logger
from posthog_integrations import _request
from posthog_integrations._asgi_adapter import ASGIAdapter
from posthog_integrations._request import Options, RequestScope
from posthog_integrations._request_scope import start_failed

__all__ = [
    "ASGIAdapter",
    "PosthogASGIMiddleware",
    "PosthogMiddleware",
    "capture_handled",
    "instrument_exception_handlers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FRAMEWORK = "asgi"
SOURCE = "asgi.middleware"
HANDLER_SOURCE = "asgi.exception_handler"

# (module, class) never captured: client disconnects, and 4xx the framework answers itself.
_DISCONNECTS = (
    ("starlette.requests", "ClientDisconnect"),
    ("starlette.websockets", "WebSocketDisconnect"),
)
_CLIENT_ERRORS = (
    ("starlette.exceptions", "WebSocketException"),
    ("fastapi.exceptions", "RequestValidationError"),
    ("fastapi.exceptions", "WebSocketRequestValidationError"),
)


def _types(names: Iterable[tuple[str, str]]) -> tuple[type[BaseException], ...]:
    """The named classes of the modules already imported (nothing is imported here)."""
    found: list[type[BaseException]] = []
    for module_name, class_name in names:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _client_error(exc: BaseException) -> bool:
    """A Starlette/FastAPI ``HTTPException`` below 500 (a 4xx nobody handled)."""
    http_exception = getattr(sys.modules.get("starlette.exceptions"), "HTTPException", None)
    if http_exception is None or not isinstance(exc, http_exception):
        return False
    status = getattr(exc, "status_code", 500)
    return isinstance(status, int) and status < 500


class PosthogMiddleware:
    """Pure ASGI middleware: one PostHog request scope per ``http`` / ``websocket`` connection.

    ``options`` are the shared integration options (``capture_exceptions``,
    ``request_filter``, ``extra_properties``, ``exclude_paths``, ``ip_source``...); hooks
    receive the ASGI scope and may be coroutine functions. ``lifespan`` and unknown scope
    types are passed through untouched.
    """

    _stacklevel = 2  # a deprecation warning names the code constructing the middleware

    def __init__(self, app: ASGIApp, client: Any = None, **options: Any) -> None:
        self.app = app
        self.options = Options.from_settings(options, client=client, stacklevel=self._stacklevel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        options = self.options
        try:
            adapter = ASGIAdapter(scope)
        except Exception as exc:  # never the app's problem: the request runs untracked
            start_failed(options, exc)
            request = None
        else:
            if options.request_filter is None and options.extra_properties is None:
                request = RequestScope.start(adapter, options, framework=FRAMEWORK)
            else:
                request = await RequestScope.astart(adapter, options, framework=FRAMEWORK)
        if request is None:
            # Not tracked (filtered, or an outer instance tracks it): an inner instance of
            # this middleware (added twice, a mounted app's own) passes through.
            with RequestScope.untracked(FRAMEWORK):
                await self.app(scope, receive, send)
            return
        if kind == "http":

            def send_noting_status(message: Message) -> Awaitable[None]:
                # The status of ``http.response.start``, for $response_status_code. A plain
                # function handing back send's awaitable: no coroutine of its own per message.
                if request.status is None and message.get("type") == "http.response.start":
                    status = message.get("status")
                    if type(status) is int:
                        request.status = status
                return send(message)

            downstream: Send = send_noting_status
        else:
            downstream = send
        try:
            await self.app(scope, receive, downstream)
        except Exception as exc:
            if not _client_error(exc):
                # Before the response started, ServerErrorMiddleware (or the server)
                # answers 500; afterwards the status already sent is the one that counts.
                status = request.status
                if status is None and kind == "http":
                    status = 500
                request.capture(exc, source=SOURCE, handled=False, status=status, never=_never())
            raise
        finally:
            request.exit()


def _never() -> tuple[type[BaseException], ...]:
    return _types(_DISCONNECTS) + _types(_CLIENT_ERRORS)


class PosthogASGIMiddleware(PosthogMiddleware):
    """:class:`PosthogMiddleware` under PostHog's name, also taking its positional order."""

    _stacklevel = 3

    def __init__(
        self,
        app: ASGIApp,
        client: Any = None,
        capture_exceptions: bool | None = None,
        request_filter: Callable[[Scope], Any] | None = None,
        extra_properties: Callable[[Scope], Any] | None = None,
        trust_tracing_headers: bool | None = None,
        **options: Any,
    ) -> None:
        given = {
            "capture_exceptions": capture_exceptions,
            "request_filter": request_filter,
            "extra_properties": extra_properties,
            "trust_tracing_headers": trust_tracing_headers,
        }
        options.update({key: value for key, value in given.items() if value is not None})
        super().__init__(app, client, **options)


# ---------------------------------------------------------------- handled exceptions

_WRAPPED = "__posthog_wrapped__"


def _is_async(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    )


def _after_handler(exc: BaseException, response: object, codes: frozenset[int] | None) -> None:
    try:
        request = RequestScope.current()
        status = getattr(response, "status_code", None)
        if request is None or not isinstance(status, int):
            return
        request.capture(exc, source=HANDLER_SOURCE, handled=True, status=status,
                        never=_types(_DISCONNECTS), status_codes=codes)
    except Exception:
        logger.exception("could not capture the exception of an exception handler")


def _wrap(handler: Callable[..., Any], codes: frozenset[int] | None) -> Callable[..., Any]:
    wrapped: Callable[..., Any]
    if _is_async(handler):

        async def wrapped_async(conn: Any, exc: Exception) -> Any:
            response = await handler(conn, exc)
            _after_handler(exc, response, codes)
            return response

        wrapped = wrapped_async
    else:

        def wrapped_sync(conn: Any, exc: Exception) -> Any:
            response = handler(conn, exc)
            _after_handler(exc, response, codes)
            return response

        wrapped = wrapped_sync
    with contextlib.suppress(Exception):  # a handler without __name__ etc.
        functools.update_wrapper(wrapped, handler)
    setattr(wrapped, _WRAPPED, True)
    return wrapped


def instrument_exception_handlers(app: Any, status_codes: Iterable[int] | None = None) -> None:
    """Capture exceptions that the app's exception handlers answer with a server status.

    Wraps every entry of ``app.exception_handlers`` (FastAPI's ``HTTPException`` handler
    too): when a handler's response status is in ``status_codes`` (default: the middleware's
    ``capture_status_codes``; give e.g. ``{404, *range(500, 600)}`` to widen them for
    handled exceptions) the exception is captured inside the request scope with
    ``handled: true``, if ``capture_exceptions`` allows. Call it after registering handlers
    and before the app's first call (lifespan included): Starlette copies the handlers when
    it builds its stack.
    ``Exception`` / ``500`` handlers are left alone: they run in ``ServerErrorMiddleware``,
    outside the middleware, which already captured the exception as unhandled.
    """
    if getattr(app, "middleware_stack", None) is not None:
        logger.warning(
            "instrument_exception_handlers: the app's middleware stack is already built;"
            " call it before the app's first request or startup. Nothing instrumented."
        )
        return
    handlers = getattr(app, "exception_handlers", None)
    if not isinstance(handlers, dict):
        logger.warning("instrument_exception_handlers: %r has no exception_handlers", app)
        return
    codes = None if status_codes is None else frozenset(status_codes)
    for key, handler in list(handlers.items()):
        if key is Exception or key == 500 or getattr(handler, _WRAPPED, False):
            continue
        handlers[key] = _wrap(handler, codes)


def capture_handled(exc: BaseException, *, status: int | None = None) -> str | None:
    """Capture ``exc`` from your own exception handler, inside the current request scope.

    Sent with ``handled: true`` and ``$exception_source: "asgi.exception_handler"`` whatever
    ``capture_status_codes`` says (you decided to capture it). Returns the event uuid.
    """
    return _request.capture_handled(exc, source=HANDLER_SOURCE, status=status)
