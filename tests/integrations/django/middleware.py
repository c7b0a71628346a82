"""Middleware the tests place around ``PosthogContextMiddleware``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class ExplodingMiddleware:
    """Raises (sync or async) when the request has an ``X-Explode`` header."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        if "HTTP_X_EXPLODE" in request.META:
            raise RuntimeError("middleware exploded")
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> Any:
        if "HTTP_X_EXPLODE" in request.META:
            raise RuntimeError("middleware exploded (async)")
        response: Awaitable[Any] = self.get_response(request)
        return await response


class SyncOnlyMiddleware:
    """A plain sync-only middleware: makes Django adapt the stack under ASGI."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)


class ServiceUnavailableMiddleware:
    """Turns any view exception into a 503 page (a handler above ``PosthogContextMiddleware``)."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        return HttpResponse("down", status=503)
