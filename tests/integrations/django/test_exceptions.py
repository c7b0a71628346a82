"""Exception capture: views, other middleware, handled statuses, streaming (§1.8, §2.4, §2.9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.http import FileResponse, HttpRequest, HttpResponse
from django.test import override_settings

from posthog import contexts
from posthog_integrations.django import PosthogContextMiddleware
from tests.integrations.django.conftest import Recorder

HEADERS = {"X-POSTHOG-DISTINCT-ID": "user-1", "X-POSTHOG-SESSION-ID": "sess-1"}
OURS = "posthog_integrations.django.PosthogContextMiddleware"


def _entry(props: dict[str, Any]) -> dict[str, Any]:
    return props["$exception_list"][0]  # type: ignore[no-any-return]


def test_view_exception_captured_once_with_request_state(
    quiet_client: Any, ph: Recorder
) -> None:
    response = quiet_client.get("/boom/", headers=HEADERS)
    assert response.status_code == 500
    event = ph.one("$exception")
    props = event["properties"]
    assert event["distinct_id"] == "user-1"
    assert props["$session_id"] == "sess-1"
    assert props["$request_path"] == "/boom/"
    assert props["$request_route"] == "/boom/"
    assert props["$response_status_code"] == 500
    assert props["$exception_source"] == "django.middleware"
    assert _entry(props)["type"] == "ValueError"
    assert _entry(props)["mechanism"]["handled"] is False
    assert _entry(props)["mechanism"]["type"] == "middleware"


def test_view_exception_reraised_by_test_client_still_once(client: Any, ph: Recorder) -> None:
    with pytest.raises(ValueError, match="view exploded"):
        client.get("/boom/", headers=HEADERS)
    assert ph.one("$exception")["distinct_id"] == "user-1"
    assert contexts.current_scope() is None


@pytest.mark.parametrize("url", ["/not-found/", "/forbidden/", "/suspicious/"])
def test_client_errors_not_captured(quiet_client: Any, ph: Recorder, url: str) -> None:
    assert quiet_client.get(url).status_code in (400, 403, 404)
    assert ph.events("$exception") == []


def test_404_captured_when_listed_in_status_codes(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.POSTHOG_MW_CAPTURE_STATUS_CODES = {404, *range(500, 600)}
    assert quiet_client.get("/not-found/", headers=HEADERS).status_code == 404
    props = ph.props("$exception")
    assert props["$response_status_code"] == 404
    assert props["$exception_source"] == "django.middleware"
    assert _entry(props)["type"] == "Http404"
    assert _entry(props)["mechanism"]["handled"] is True


def test_exception_in_middleware_below_captured_via_signal(
    quiet_client: Any, ph: Recorder
) -> None:
    response = quiet_client.get("/capture/", headers={**HEADERS, "X-Explode": "1"})
    assert response.status_code == 500
    event = ph.one("$exception")
    props = event["properties"]
    assert event["distinct_id"] == "user-1"
    assert props["$exception_source"] == "django.got_request_exception"
    assert props["$request_path"] == "/capture/"
    assert props["$response_status_code"] == 500
    assert _entry(props)["value"] == "middleware exploded"


def test_exception_in_middleware_above_gets_a_short_scope(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.MIDDLEWARE = [
        "tests.integrations.django.middleware.ExplodingMiddleware",
        OURS,
        "django.contrib.sessions.middleware.SessionMiddleware",
    ]
    assert quiet_client.get("/capture/", headers={**HEADERS, "X-Explode": "1"}).status_code == 500
    event = ph.one("$exception")
    assert event["distinct_id"] == "user-1"
    assert event["properties"]["$request_path"] == "/capture/"
    assert event["properties"]["$exception_source"] == "django.got_request_exception"
    assert contexts.current_scope() is None


def test_without_the_middleware_the_app_still_captures(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
    assert quiet_client.get("/boom/", headers=HEADERS).status_code == 500
    event = ph.one("$exception")
    assert event["distinct_id"] == "user-1"
    assert event["properties"]["$request_path"] == "/boom/"


def test_handled_by_a_middleware_above_with_a_5xx(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.MIDDLEWARE = ["tests.integrations.django.middleware.ServiceUnavailableMiddleware",
                           OURS]
    assert quiet_client.get("/boom/", headers=HEADERS).status_code == 503
    props = ph.props("$exception")
    assert props["$response_status_code"] == 503
    assert _entry(props)["mechanism"]["handled"] is True


def test_capture_exceptions_setting_followed_mid_test(quiet_client: Any, ph: Recorder) -> None:
    quiet_client.get("/boom/")
    assert len(ph.events("$exception")) == 1
    with override_settings(POSTHOG_MW_CAPTURE_EXCEPTIONS=False):
        quiet_client.get("/boom/")
        quiet_client.get("/capture/", headers={"X-Explode": "1"})
    assert len(ph.events("$exception")) == 1
    assert len(ph.events("before_boom")) == 2  # still tracked, only not captured


def test_capture_exceptions_none_inherits_client_autocapture(
    quiet_client: Any, ph: Recorder, settings: Any
) -> None:
    settings.POSTHOG_MW_CAPTURE_EXCEPTIONS = None
    assert ph.client.enable_exception_autocapture is False
    quiet_client.get("/boom/", headers=HEADERS)
    assert ph.events("$exception") == []
    assert ph.one("before_boom")["properties"]["$request_path"] == "/boom/"


def test_ignored_exceptions(quiet_client: Any, ph: Recorder, settings: Any) -> None:
    settings.POSTHOG_MW_IGNORED_EXCEPTIONS = (ValueError,)
    quiet_client.get("/boom/")
    quiet_client.get("/capture/", headers={"X-Explode": "1"})
    assert [_entry(e["properties"])["type"] for e in ph.events("$exception")] == ["RuntimeError"]


def test_debug_propagate_exceptions(client: Any, ph: Recorder, settings: Any) -> None:
    settings.DEBUG_PROPAGATE_EXCEPTIONS = True
    with pytest.raises(ValueError):
        client.get("/boom/", headers=HEADERS)
    assert ph.one("$exception")["distinct_id"] == "user-1"
    assert contexts.current_scope() is None


# ---------------------------------------------------------------- ASGI


def test_async_view_exception(quiet_async_client: Any, ph: Recorder) -> None:
    response = async_to_sync(quiet_async_client.get)("/async/boom/", headers=HEADERS)
    assert response.status_code == 500
    event = ph.one("$exception")
    assert event["distinct_id"] == "user-1"
    assert event["properties"]["$response_status_code"] == 500
    assert event["properties"]["$request_route"] == "/async/boom/"


def test_async_middleware_exception(quiet_async_client: Any, ph: Recorder) -> None:
    response = async_to_sync(quiet_async_client.get)(
        "/async/capture/", headers={**HEADERS, "X-Explode": "1"}
    )
    assert response.status_code == 500
    props = ph.props("$exception")
    assert props["$exception_source"] == "django.got_request_exception"
    assert props["$session_id"] == "sess-1"


def test_async_client_errors_not_captured(quiet_async_client: Any, ph: Recorder) -> None:
    assert async_to_sync(quiet_async_client.get)("/not-found/").status_code == 404
    assert ph.events("$exception") == []


# ---------------------------------------------------------------- streaming


def test_streaming_keeps_the_scope_and_captures_mid_stream(client: Any, ph: Recorder) -> None:
    response = client.get("/stream/?fail=1", headers=HEADERS)
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    assert next(chunks) == b"first,"
    with pytest.raises(RuntimeError, match="stream broke"):
        next(chunks)
    event = ph.one("stream_event")
    assert event["distinct_id"] == "user-1"
    assert event["properties"]["$request_route"] == "/stream/"
    exc = ph.one("$exception")
    assert exc["distinct_id"] == "user-1"
    assert exc["properties"]["$exception_source"] == "django.streaming_response"
    assert exc["properties"]["$response_status_code"] == 200
    assert _entry(exc["properties"])["mechanism"]["handled"] is False


def test_streaming_success_and_no_leak_after_abandoned_stream(
    client: Any, ph: Recorder
) -> None:
    abandoned = client.get("/stream/?fail=1", headers=HEADERS)
    next(iter(abandoned.streaming_content))  # started, never finished nor closed
    assert contexts.current_scope() is None
    response = client.get("/stream/")
    assert b"".join(response.streaming_content) == b"first,last"
    first, second = ph.events("stream_event")
    assert first["distinct_id"] == "user-1"
    assert second["distinct_id"] != "user-1"
    assert second["properties"]["$request_path"] == "/stream/"
    assert ph.events("$exception") == []


def test_async_streaming_under_asgi(async_client: Any, ph: Recorder) -> None:
    async def run() -> list[bytes]:
        response = await async_client.get("/astream/?fail=1", headers=HEADERS)
        got = []
        with pytest.raises(RuntimeError, match="async stream broke"):
            async for chunk in response.streaming_content:
                got.append(chunk)
        return got

    assert async_to_sync(run)() == [b"first,"]
    assert ph.one("stream_event")["distinct_id"] == "user-1"
    props = ph.props("$exception")
    assert props["$exception_source"] == "django.streaming_response"
    assert props["$response_status_code"] == 200
    assert props["$request_route"] == "/astream/"


def test_async_iterator_under_wsgi(client: Any, ph: Recorder) -> None:
    response = client.get("/astream/", headers=HEADERS)
    with pytest.warns(Warning, match="synchronous"):
        body = b"".join(response)
    assert body == b"first,last"
    assert ph.one("stream_event")["distinct_id"] == "user-1"


def test_file_response_keeps_its_fast_path(rf: Any, ph: Recorder) -> None:
    handle = Path(__file__).open("rb")  # noqa: SIM115 - FileResponse takes it over

    def view(request: HttpRequest) -> FileResponse:
        return FileResponse(handle)

    response = PosthogContextMiddleware(view)(rf.get("/file/"))
    try:
        assert isinstance(response, FileResponse)
        assert response.file_to_stream is handle
    finally:
        handle.close()


def test_plain_response_is_returned_untouched(rf: Any, ph: Recorder) -> None:
    sent = HttpResponse("x", status=201)
    assert PosthogContextMiddleware(lambda request: sent)(rf.get("/")) is sent
