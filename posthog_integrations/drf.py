"""PostHog for Django REST Framework: an exception handler that captures server errors.

``REST_FRAMEWORK = {"EXCEPTION_HANDLER": "posthog_integrations.drf.exception_handler"}``, or
``create_exception_handler(my_handler, capture_4xx=True)`` to wrap your own. Identity for
token-authenticated views needs nothing here: DRF assigns the user to the Django request and
the middleware's late resolver reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:
    import django  # noqa: F401
    import rest_framework  # type: ignore[import-untyped]  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "posthog_integrations.drf needs Django and Django REST framework:"
        " pip install 'posthog-integrations[django]' djangorestframework"
    ) from exc

from django.http import HttpRequest

import posthog
from posthog._log import logger
from posthog_integrations._request import RequestScope, send_exception
from posthog_integrations.django._config import DjangoConfig, current
from posthog_integrations.django._middleware import (
    ATTR,
    DISCONNECTS,
    NEVER_UNHANDLED,
    start,
    status_for,
)

__all__ = ["SOURCE", "create_exception_handler", "exception_handler"]

SOURCE = "django_rest_framework.exception_handler"

Handler = Callable[[Exception, Mapping[str, Any]], Any]
ExceptionFilter = Callable[[Exception, Mapping[str, Any]], bool]


def _drf_default_handler(exc: Exception, context: Mapping[str, Any]) -> Any:
    from rest_framework.views import (  # type: ignore[import-untyped]
        exception_handler as drf_handler,
    )

    return drf_handler(exc, context)


def create_exception_handler(
    handler: Handler | None = None,
    *,
    client: posthog.Client | None = None,
    capture_exceptions: bool | None = None,
    capture_4xx: bool = False,
    exception_filter: ExceptionFilter | None = None,
    inner: Handler | None = None,
) -> Handler:
    """A DRF exception handler: ``handler`` (default: DRF's own), then capture.

    Captured: responses with a 5xx status (4xx too with ``capture_4xx``), ``handled: true``;
    and exceptions ``handler`` leaves unanswered (``None``: DRF re-raises them, Django
    answers 500), ``handled: false``. Never changes the response, never raises.
    ``inner`` is an alias of ``handler``.
    """
    wrapped = handler if handler is not None else inner

    def posthog_exception_handler(exc: Exception, context: Mapping[str, Any]) -> Any:
        response = (wrapped or _drf_default_handler)(exc, context)
        try:
            _capture(exc, context, response, client, capture_exceptions, capture_4xx,
                     exception_filter)
        except Exception:
            logger.exception("PostHog DRF exception handler failed")
        return response

    posthog_exception_handler.__qualname__ = "create_exception_handler.<handler>"
    return posthog_exception_handler


def _capture(
    exc: Exception,
    context: Mapping[str, Any],
    response: Any,
    client: Any,
    capture_exceptions: bool | None,
    capture_4xx: bool,
    exception_filter: ExceptionFilter | None,
) -> None:
    status: Any
    if response is None:
        handled = False
        status = status_for(exc)
        if status < 500:
            return  # Django answers it with a 4xx
    else:
        handled = True
        status = getattr(response, "status_code", None)
        if not isinstance(status, int):
            return
        if not (status >= 500 or (capture_4xx and 400 <= status < 500)):
            return
    if isinstance(exc, DISCONNECTS) or (not handled and isinstance(exc, NEVER_UNHANDLED)):
        return
    config = current()
    compiled = config.options.compiled()
    if compiled.never and isinstance(exc, compiled.never):
        return
    request = _django_request(context)
    rs: Any = request.__dict__.get(ATTR) if request is not None else None
    if rs is False:
        return  # the Django request filter said "don't track"
    if exception_filter is not None:
        try:
            if not exception_filter(exc, context):
                return
        except Exception:
            logger.exception("PostHog DRF exception_filter raised; capturing anyway")
    short = False
    if rs is None and request is not None:
        rs = start(request, config)  # no middleware: a short scope for this capture
        if rs is None:
            return
        short = True
    try:
        target = _client(client, config, rs)
        if not _enabled(capture_exceptions, config, target):
            return
        if rs is not None:  # the rules above are DRF's own: no request-layer policy
            rs.capture(exc, source=SOURCE, handled=handled, status=status, policy=False,
                       client=target)
        else:
            send_exception(target, exc, source=SOURCE, handled=handled, status=status)
    finally:
        if short:
            rs.exit()


def _django_request(context: Mapping[str, Any]) -> HttpRequest | None:
    request = context.get("request") if isinstance(context, Mapping) else None
    inner = getattr(request, "_request", request)
    return inner if isinstance(inner, HttpRequest) else None


def _client(given: Any, config: DjangoConfig, rs: RequestScope | None) -> Any:
    """Argument, ``POSTHOG_DRF_CLIENT``, the request's client (``POSTHOG_MW_CLIENT``), global."""
    if given is not None:
        return given
    if config.drf_client is not None:
        return config.drf_client
    if rs is not None:
        return rs.effective_client()
    if config.mw_client is not None:
        return config.mw_client
    return posthog.setup()


def _enabled(argument: bool | None, config: DjangoConfig, client: Any) -> bool:
    """Argument, a boolean ``POSTHOG_MW_CAPTURE_EXCEPTIONS``, ``None`` -> the client's
    ``enable_exception_autocapture``, absent -> ``True``."""
    if argument is not None:
        return bool(argument)
    present, value = config.capture_setting()
    if not present:
        return True
    if value is None:
        return bool(getattr(client, "enable_exception_autocapture", False))
    return value is not False


exception_handler = create_exception_handler()
"""DRF's default exception handler plus PostHog capture (spec §2.10)."""
