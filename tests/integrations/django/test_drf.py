"""The DRF exception handler (spec §2.10)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from posthog_integrations.drf import SOURCE, create_exception_handler, exception_handler
from tests.integrations.django.conftest import Recorder, make_client
from tests.integrations.django.views import Unavailable

OURS = "posthog_integrations.django.PosthogContextMiddleware"
HEADERS = {"HTTP_X_POSTHOG_DISTINCT_ID": "api-user"}


def _entry(props: dict[str, Any]) -> dict[str, Any]:
    return props["$exception_list"][0]  # type: ignore[no-any-return]


def capture_4xx_handler(exc: Exception, context: Any) -> Any:
    return create_exception_handler(capture_4xx=True)(exc, context)


def json_500_handler(exc: Exception, context: Any) -> Any:
    def inner(exc: Exception, context: Any) -> Response:
        return Response({"error": str(exc)}, status=500)

    return create_exception_handler(inner)(exc, context)


def test_5xx_api_exception_captured_as_handled(quiet_client: Client, ph: Recorder) -> None:
    response = quiet_client.get("/api/drf/unavailable/", **HEADERS)
    assert response.status_code == 503
    event = ph.one("$exception")
    props = event["properties"]
    assert event["distinct_id"] == "api-user"
    assert props["$exception_source"] == SOURCE == "django_rest_framework.exception_handler"
    assert props["$response_status_code"] == 503
    assert props["$request_route"] == "/api/drf/unavailable/"
    assert _entry(props)["type"] == "Unavailable"
    assert _entry(props)["mechanism"]["handled"] is True


def test_4xx_api_exception_not_captured_by_default(quiet_client: Client, ph: Recorder) -> None:
    assert quiet_client.get("/api/drf/not-found/").status_code == 404
    assert ph.events("$exception") == []


def test_capture_4xx(quiet_client: Client, ph: Recorder, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": f"{__name__}.capture_4xx_handler",
    }
    assert quiet_client.get("/api/drf/not-found/").status_code == 404
    props = ph.props("$exception")
    assert props["$response_status_code"] == 404
    assert _entry(props)["type"] == "NotFound"


def test_unhandled_exception_captured_once_by_the_handler(
    quiet_client: Client, ph: Recorder
) -> None:
    # DRF's handler answers None, DRF re-raises, Django answers 500; the signal sees it again
    assert quiet_client.get("/api/drf/boom/", **HEADERS).status_code == 500
    event = ph.one("$exception")
    props = event["properties"]
    assert event["distinct_id"] == "api-user"
    assert props["$exception_source"] == SOURCE
    assert props["$response_status_code"] == 500
    assert _entry(props)["mechanism"]["handled"] is False


def test_custom_handler_answering_500(quiet_client: Client, ph: Recorder, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": f"{__name__}.json_500_handler",
    }
    response = quiet_client.get("/api/drf/boom/")
    assert response.status_code == 500
    assert response.json() == {"error": "drf view exploded"}
    props = ph.props("$exception")
    assert _entry(props)["type"] == "ValueError"
    assert _entry(props)["mechanism"]["handled"] is True


def test_without_the_middleware_a_short_scope_is_used(
    quiet_client: Client, ph: Recorder, settings: Any
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]
    assert quiet_client.get("/api/drf/unavailable/", **HEADERS).status_code == 503
    event = ph.one("$exception")
    assert event["distinct_id"] == "api-user"
    assert event["properties"]["$request_path"] == "/api/drf/unavailable/"


def _context(rf: Any) -> dict[str, Any]:
    return {"request": Request(rf.get("/x/", **HEADERS)), "view": None}


def test_client_precedence(rf: Any, ph: Recorder, ph_server: Any, settings: Any) -> None:
    argument = make_client(ph_server, api_key="phc_argument")
    legacy = make_client(ph_server, api_key="phc_drf")
    try:
        create_exception_handler(client=argument)(Unavailable(), _context(rf))
        settings.POSTHOG_DRF_CLIENT = legacy
        exception_handler(Unavailable(), _context(rf))
        exception_handler(Unavailable(), _context(rf))
        argument.flush()
        legacy.flush()
        keys = sorted(
            r.json()["api_key"] for r in ph_server.requests if r.path.startswith("/batch")
        )
        assert keys == ["phc_argument", "phc_drf"]
        assert len(ph_server.events()) == 3
    finally:
        argument.shutdown(timeout_seconds=2)
        legacy.shutdown(timeout_seconds=2)


def test_capture_switches_and_filters(rf: Any, ph: Recorder, settings: Any) -> None:
    create_exception_handler(capture_exceptions=False)(Unavailable(), _context(rf))
    create_exception_handler(exception_filter=lambda exc, ctx: False)(Unavailable(), _context(rf))
    settings.POSTHOG_MW_CAPTURE_EXCEPTIONS = False
    exception_handler(Unavailable(), _context(rf))
    settings.POSTHOG_MW_REQUEST_FILTER = lambda request: False
    settings.POSTHOG_MW_CAPTURE_EXCEPTIONS = True
    exception_handler(Unavailable(), _context(rf))
    assert ph.events() == []
    create_exception_handler(capture_exceptions=True)(NotFound(), _context(rf))
    assert ph.events() == []


def test_never_changes_the_response_never_raises(rf: Any, ph: Recorder) -> None:
    class Broken:
        api_key = "phc_broken"

        def _capture_exception(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("client broke")

    sent = Response(status=502)
    handler = create_exception_handler(
        lambda exc, ctx: sent, client=Broken()  # type: ignore[arg-type]
    )
    assert handler(ValueError("x"), _context(rf)) is sent
    assert exception_handler(ValueError("x"), {}) is None


def test_drop_in_paths() -> None:
    from posthog.integrations import django as dropin_django
    from posthog.integrations import drf as dropin_drf
    from posthog_integrations import drf
    from posthog_integrations.django import PosthogContextMiddleware

    assert dropin_django.PosthogContextMiddleware is PosthogContextMiddleware
    assert dropin_drf.exception_handler is drf.exception_handler
    assert dropin_drf.create_exception_handler is drf.create_exception_handler


@pytest.mark.parametrize("module", ["posthog_integrations.django", "posthog_integrations.drf",
                                    "posthog.integrations.django"])
def test_import_without_django_names_the_extra(module: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['django'] = None\n"
        f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert "pip install 'posthog-integrations[django]'" in out.stdout
