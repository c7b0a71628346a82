"""Flask extension: one PostHog request scope per request (spec §3).

``PostHog(app)`` or ``PostHog().init_app(app)`` wraps ``app.wsgi_app``, so the scope is left
whatever happens, and re-entered around each chunk and ``close()`` of a streamed body. The
scope opens when Flask starts dispatching (URL matched, just before ``request_started``), so
it covers ``before_request`` functions, the view, error handlers and teardown, and hooks can
read ``request.endpoint``. Ids and tags come from the shared request layer (``_request``).
Unhandled exceptions are captured from ``got_request_exception``; errors raised while a
body streams, by the body wrapper.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

try:
    from flask import Flask, has_request_context, request, signals
    from werkzeug.exceptions import HTTPException
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "posthog_integrations.flask needs Flask: pip install 'posthog-integrations[flask]'"
    ) from _missing

import posthog
from posthog._log import logger
from posthog_integrations import _request
from posthog_integrations._flask_adapter import WSGIAdapter
from posthog_integrations._request import Options, RequestScope
from posthog_integrations._request_scope import start_failed

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Response

__all__ = [
    "FlaskOptions",
    "PostHog",
    "PostHogState",
    "PosthogFlaskIntegration",
    "WSGIAdapter",
    "capture_handled",
]

FRAMEWORK = "flask"
EXTENSION_KEY = "posthog"
SOURCE_SIGNAL = "flask.got_request_exception"
SOURCE_HANDLED = "flask.handled"
SOURCE_STREAM = "flask.streaming_response"
SOURCE_APP = "flask.wsgi_app"  # escaped wsgi_app without going through the signal



@dataclass(eq=False)
class FlaskOptions(Options):
    """The shared options (spec §1.7) plus Flask's own ``capture_handled_errors`` (§3.3)."""

    capture_handled_errors: bool = False


# Config keys read: ``POSTHOG_`` + upper-case option name.
_OPTION_NAMES = FlaskOptions.known_keys()


class _Flight:
    """One request inside the wrapper: its scope (once opened) and the Flask response."""

    __slots__ = ("opened", "response", "rs", "state")

    def __init__(self, state: PostHogState) -> None:
        self.state = state
        self.opened = False
        self.rs: RequestScope | None = None
        self.response: Response | None = None


# The request being handled by a wrapper in this context (None outside one).
_flight: contextvars.ContextVar[_Flight | None] = contextvars.ContextVar(
    "posthog_flask_request", default=None
)


def _capturable(exc: BaseException) -> bool:
    """Werkzeug ``HTTPException`` below 500 (``abort(404)``, redirects) is never captured."""
    if isinstance(exc, HTTPException):
        code = exc.code
        return code is None or code >= 500
    return True


class PostHogState:
    """Per-app state, ``app.extensions["posthog"]``: ``extension``, ``app``, ``options``."""

    def __init__(self, extension: PostHog, app: Flask, options: FlaskOptions) -> None:
        self.extension = extension
        self.app = app
        self.options = options
        self.capture_handled_errors = options.capture_handled_errors is True

    # ------------------------------------------------------------ opening the scope

    def wrap_full_dispatch_request(
        self, original: Callable[[], Response]
    ) -> Callable[[], Response]:
        """Open the scope where Flask starts dispatching: URL matched, ``request_started`` next.

        One plain call instead of a ``request_started`` receiver (the same point, cheaper).
        """

        options = self.options

        def full_dispatch_request() -> Response:
            flight = _flight.get()
            if flight is None or flight.opened:  # not through our wrapper, or decided already
                return original()
            _open(flight, options)
            response = original()
            flight.response = response
            return response

        return full_dispatch_request

    def open(self, flight: _Flight) -> RequestScope | None:
        """Start the scope of the current Flask request (once per request; never raises)."""
        return _open(flight, self.options)

    # ------------------------------------------------------------ exceptions

    def on_exception(self, sender: Any, exception: BaseException, **_: Any) -> None:
        """``got_request_exception``: Flask is about to answer 500 (or to propagate)."""
        try:
            if not _capturable(exception):
                return
            rs = RequestScope.current()
            if rs is None:  # failed before dispatching (opening the session, say)
                flight = _flight.get()
                if flight is None or flight.opened or not has_request_context():
                    return
                rs = self.open(flight)
                if rs is None:
                    return
            rs.status = 500
            rs.capture(exception, source=SOURCE_SIGNAL, handled=False, status=500)
        except Exception:
            logger.exception("PostHog could not capture a Flask request exception")

    def wrap_handle_user_exception(
        self, original: Callable[[Exception], Any]
    ) -> Callable[[Exception], Any]:
        """``capture_handled_errors``: what an error handler answered in the capture codes."""

        def handle_user_exception(e: Exception) -> Any:
            rv = original(e)
            try:
                if _capturable(e):
                    rs = RequestScope.current()
                    status = _returned_status(rv)
                    if rs is not None and status is not None:
                        rs.capture(e, source=SOURCE_HANDLED, handled=True, status=status)
            except Exception:
                logger.exception("PostHog could not capture a handled Flask exception")
            return rv

        return handle_user_exception


def _open(flight: _Flight, options: FlaskOptions) -> RequestScope | None:
    flight.opened = True
    try:
        current = request._get_current_object()  # type: ignore[attr-defined]
        adapter = WSGIAdapter(current.environ, current)
    except Exception as exc:  # logged once, reported to on_error; the request runs on
        start_failed(options, exc)
        return None
    flight.rs = RequestScope.start(adapter, options, framework=FRAMEWORK)
    return flight.rs


def _returned_status(rv: Any) -> int | None:
    """The status of what an error handler returned (raw: not yet a response object)."""
    if isinstance(rv, tuple):
        status = rv[1] if len(rv) > 1 else None
        if isinstance(status, int) and not isinstance(status, bool):
            return status
        if isinstance(status, str):
            try:
                return int(status.split(None, 1)[0])
            except (IndexError, ValueError):
                return None
        return 200  # (body, headers) or (body,)
    if isinstance(rv, HTTPException):
        return rv.code
    code = getattr(rv, "status_code", None)
    if isinstance(code, int):
        return code
    return 200


class _PosthogWSGI:
    """``app.wsgi_app`` wrapped: the scope is left on return and re-entered for the body."""

    __slots__ = ("state", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApplication, state: PostHogState) -> None:
        self.wsgi_app = wsgi_app
        self.state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        outer = _flight.get()
        if outer is not None and outer.state is self.state:  # this app wrapped twice
            return self.wsgi_app(environ, start_response)
        flight = _Flight(self.state)
        token = _flight.set(flight)
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException as exc:
            rs = flight.rs
            if rs is not None:
                if _capturable(exc):
                    rs.capture(exc, source=SOURCE_APP, handled=False, status=500)
                rs.exit()
            raise
        finally:
            _flight.reset(token)
        rs = flight.rs
        if rs is None:
            return body
        response = flight.response
        if response is not None:
            try:
                status = response.status_code
                if isinstance(status, int):
                    rs.status = status
                # A buffered body with no close callbacks runs no code of the app: no wrapper.
                if response.is_sequence and not response._on_close:
                    rs.exit()
                    return body
            except AttributeError:  # not a Werkzeug response: wrap the body
                pass
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(body, wrapper):
            rs.exit()
            return body  # keep the server's sendfile / offload
        # The body is produced after this call returns: leave the thread, keep resolving
        # the route and the user (loaded by the view) until the server closes the body.
        rs.suspend()
        return _ScopedBody(body, rs)


class _ScopedBody:
    """The response iterable, each chunk and ``close()`` produced inside the request scope."""

    __slots__ = ("_body", "_iter", "_rs")

    def __init__(self, body: Iterable[bytes], rs: RequestScope) -> None:
        self._body = body
        self._iter: Iterator[bytes] | None = None
        self._rs = rs

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        rs = self._rs
        with rs.activated():
            try:
                it = self._iter
                if it is None:
                    it = self._iter = iter(self._body)
                return next(it)
            except StopIteration:
                raise
            except BaseException as exc:
                if _capturable(exc):
                    rs.capture(exc, source=SOURCE_STREAM, handled=False)
                raise

    def close(self) -> None:
        rs = self._rs
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                with rs.activated():
                    try:
                        close()
                    except BaseException as exc:
                        if _capturable(exc):
                            rs.capture(exc, source=SOURCE_STREAM, handled=False)
                        raise
        finally:
            rs.finish()


class PostHog:
    """The Flask extension: ``PostHog(app)`` or ``ext = PostHog(); ext.init_app(app)``.

    Keyword options are the request layer's (spec §1.7) plus ``capture_handled_errors``;
    they win over ``app.config["POSTHOG_<NAME>"]``, which wins over the defaults.
    """

    def __init__(self, app: Flask | None = None, client: Any = None, **options: Any) -> None:
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"unknown PostHog option(s): {', '.join(sorted(unknown))}")
        self.client = client
        self.options = options
        if app is not None:
            self._init_app(app)

    def init_app(self, app: Flask) -> None:
        """Instrument ``app``; one extension object may serve many apps."""
        self._init_app(app)

    def _init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("PostHog is already installed on this Flask app")
        config = app.config
        values: dict[str, Any] = {}
        for key, value in config.items():
            if key.startswith("POSTHOG_"):
                name = key[8:].lower()
                if name in _OPTION_NAMES:
                    values[name] = value
        explicit = dict(self.options)
        if self.client is not None:
            explicit["client"] = self.client
        # stacklevel 3: a deprecation warning names the user's PostHog(...) / init_app call
        options = FlaskOptions.from_settings(values, stacklevel=3, **explicit)
        if options.client is None:
            _configure_module_client(config)
        state = PostHogState(self, app, options)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = _PosthogWSGI(app.wsgi_app, state)  # type: ignore[method-assign]
        app.full_dispatch_request = state.wrap_full_dispatch_request(  # type: ignore[method-assign]
            app.full_dispatch_request
        )
        signals.got_request_exception.connect(state.on_exception, app, weak=False)
        if state.capture_handled_errors:
            wrapped = state.wrap_handle_user_exception(app.handle_user_exception)
            app.handle_user_exception = wrapped  # type: ignore[method-assign,assignment]


def _configure_module_client(config: Mapping[str, Any]) -> None:
    """``POSTHOG_API_KEY`` / ``POSTHOG_HOST`` set up the module client if none exists yet."""
    api_key = config.get("POSTHOG_API_KEY")
    if not api_key or posthog.default_client is not None:
        return
    posthog.api_key = api_key
    host = config.get("POSTHOG_HOST")
    if host:
        posthog.host = host


def capture_handled(exc: BaseException, *, status: int | None = None) -> str | None:
    """Capture ``exc`` from your own error handler, inside the request scope, ``handled: true``.

    Explicit, so it ignores ``capture_exceptions`` and ``capture_status_codes``. Returns the
    event uuid, or ``None``. Never raises.
    """
    return _request.capture_handled(exc, source=SOURCE_HANDLED, status=status)


PosthogFlaskIntegration = PostHog
