"""Views of the integration tests; each captures with the default client where it matters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

import posthog


def capture(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    posthog.capture("view_event", properties={"from": "view"})
    return HttpResponse("ok")


def with_user(request: HttpRequest) -> HttpResponse:
    """Touches ``request.user`` (loads it), then captures."""
    name = request.user.get_username() if request.user.is_authenticated else ""
    posthog.capture("view_event")
    return HttpResponse(name)


def item(request: HttpRequest, pk: int) -> HttpResponse:
    posthog.capture("view_event")
    return HttpResponse(str(pk))


def boom(request: HttpRequest) -> HttpResponse:
    posthog.capture("before_boom")
    raise ValueError("view exploded")


def not_found(request: HttpRequest) -> HttpResponse:
    raise Http404("nope")


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("no")


def suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("odd")


def _chunks(fail: bool) -> Iterator[bytes]:
    posthog.capture("stream_event")
    yield b"first,"
    if fail:
        raise RuntimeError("stream broke")
    yield b"last"


async def _achunks(fail: bool) -> AsyncIterator[bytes]:
    posthog.capture("stream_event")
    yield b"first,"
    if fail:
        raise RuntimeError("async stream broke")
    yield b"last"


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks("fail" in request.GET))


def astream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_achunks("fail" in request.GET))


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(iter([b"file-body"]))


async def async_capture(request: HttpRequest) -> HttpResponse:
    posthog.capture("async_event")
    return HttpResponse("async ok")


async def async_boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("async view exploded")


# ---------------------------------------------------------------- DRF


class Unavailable(APIException):
    status_code = 503
    default_detail = "try later"


class DrfCapture(APIView):
    def get(self, request: Any) -> Response:
        posthog.capture("drf_event")
        return Response({"user": getattr(request.user, "pk", None)})


class DrfBoom(APIView):
    def get(self, request: Any) -> Response:
        raise ValueError("drf view exploded")


class DrfUnavailable(APIView):
    def get(self, request: Any) -> Response:
        raise Unavailable()


class DrfNotFound(APIView):
    def get(self, request: Any) -> Response:
        raise NotFound()
