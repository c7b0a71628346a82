"""User identity: loaded users only, precedence, no extra queries, async, DRF tokens (§2.5)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.authtoken.models import Token

import posthog
from tests.integrations.django import urls as test_urls
from tests.integrations.django.conftest import Recorder

pytestmark = pytest.mark.django_db

OURS = "posthog_integrations.django.PosthogContextMiddleware"


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada", email="ada@example.com", password="pw")


@pytest.fixture
def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def test_session_user_becomes_identity_after_authentication(
    logged_in: Client, user: User, ph: Recorder
) -> None:
    # our middleware sits before AuthenticationMiddleware; the view loads the user
    assert logged_in.get("/user/").content == b"ada"
    event = ph.one("view_event")
    assert event["distinct_id"] == str(user.pk)
    assert event["properties"]["email"] == "ada@example.com"


def test_header_wins_by_default_user_wins_with_precedence_user(
    logged_in: Client, user: User, ph: Recorder, settings: Any
) -> None:
    logged_in.get("/user/", HTTP_X_POSTHOG_DISTINCT_ID="browser-id")
    assert ph.one("view_event")["distinct_id"] == "browser-id"
    ph.server.requests.clear()
    settings.POSTHOG_MW_IDENTITY_PRECEDENCE = "user"
    logged_in.get("/user/", HTTP_X_POSTHOG_DISTINCT_ID="browser-id")
    assert ph.one("view_event")["distinct_id"] == str(user.pk)


def test_precedence_user_falls_back_to_header_for_anonymous(
    client: Client, ph: Recorder, settings: Any
) -> None:
    settings.POSTHOG_MW_IDENTITY_PRECEDENCE = "user"
    client.get("/user/", HTTP_X_POSTHOG_DISTINCT_ID="browser-id")
    assert ph.one("view_event")["distinct_id"] == "browser-id"


def test_unusable_header_or_headers_off_use_the_user(
    logged_in: Client, user: User, ph: Recorder, settings: Any
) -> None:
    logged_in.get("/user/", HTTP_X_POSTHOG_DISTINCT_ID="\r\n")
    settings.POSTHOG_MW_CAPTURE_TRACING_HEADERS = False
    logged_in.get("/user/", HTTP_X_POSTHOG_DISTINCT_ID="browser-id")
    assert [e["distinct_id"] for e in ph.events("view_event")] == [str(user.pk)] * 2


def test_anonymous_user_gives_no_identity(client: Client, ph: Recorder) -> None:
    client.get("/user/")
    event = ph.one("view_event")
    assert event["properties"]["$process_person_profile"] is False
    assert "email" not in event["properties"]


def test_user_id_hook_and_email_off(
    logged_in: Client, user: User, ph: Recorder, settings: Any
) -> None:
    settings.POSTHOG_MW_USER_ID = lambda request, u: f"user:{u.username}" if u else None
    settings.POSTHOG_MW_CAPTURE_USER_EMAIL = False
    logged_in.get("/user/")
    event = ph.one("view_event")
    assert event["distinct_id"] == "user:ada"
    assert "email" not in event["properties"]


def test_user_not_loaded_by_the_middleware(
    logged_in: Client, ph: Recorder, django_assert_num_queries: Any
) -> None:
    # the view never touches request.user: no session or user query at all
    with django_assert_num_queries(0):
        logged_in.get("/capture/", HTTP_X_POSTHOG_DISTINCT_ID="browser-id")
    props = ph.props("view_event")
    assert "email" not in props


def test_same_queries_with_and_without_the_middleware(
    logged_in: Client, ph: Recorder, settings: Any, django_assert_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as with_ours:
        logged_in.get("/user/")
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]
    without = Client()
    without.cookies = logged_in.cookies
    with CaptureQueriesContext(connection) as without_ours:
        without.get("/user/")
    assert len(with_ours) == len(without_ours) > 0


def test_async_view_makes_no_user_query(
    async_client: Any, user: User, ph: Recorder, django_assert_num_queries: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async_to_sync(async_client.aforce_login)(user)
    with caplog.at_level(logging.WARNING, logger="posthog"), django_assert_num_queries(0):
        response = async_to_sync(async_client.get)(
            "/async/capture/", headers={"X-POSTHOG-DISTINCT-ID": "browser-id"}
        )
    assert response.status_code == 200
    assert ph.one("async_event")["distinct_id"] == "browser-id"
    assert [r for r in caplog.records if r.name.startswith("posthog")] == []


async def _auser_view(request: HttpRequest) -> HttpResponse:
    found = await request.auser()
    posthog.capture("async_event")
    return HttpResponse(found.get_username())


def test_async_view_user_loaded_with_auser_is_identity(
    async_client: Any, user: User, ph: Recorder, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    patterns = [path("auser/", _auser_view), *test_urls.urlpatterns]
    monkeypatch.setattr(test_urls, "urlpatterns", patterns)
    settings.ROOT_URLCONF = "tests.integrations.django.urls"  # clears the url caches
    async_to_sync(async_client.aforce_login)(user)
    response = async_to_sync(async_client.get)("/auser/")
    assert response.content == b"ada"
    event = ph.one("async_event")
    assert event["distinct_id"] == str(user.pk)
    assert event["properties"]["email"] == "ada@example.com"


def test_drf_token_user_is_late_identity(client: Client, user: User, ph: Recorder) -> None:
    token = Token.objects.create(user=user)
    response = client.get("/api/drf/capture/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.json() == {"user": user.pk}
    event = ph.one("drf_event")
    assert event["distinct_id"] == str(user.pk)
    assert event["properties"]["email"] == "ada@example.com"
    assert event["properties"]["$request_route"] == "/api/drf/capture/"


def test_drf_token_user_on_captured_exception(
    quiet_client: Client, user: User, ph: Recorder
) -> None:
    token = Token.objects.create(user=user)
    response = quiet_client.get("/api/drf/boom/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 500
    assert ph.one("$exception")["distinct_id"] == str(user.pk)


def test_loaded_user_reads_only_what_is_materialized(rf: Any) -> None:
    from django.contrib.auth.models import AnonymousUser
    from django.utils.functional import SimpleLazyObject

    from posthog_integrations.django import loaded_user

    class Legacy:
        pk = 7

        def is_authenticated(self) -> bool:
            return True

    loads: list[int] = []

    def load() -> Legacy:
        loads.append(1)
        return Legacy()

    request = rf.get("/")
    assert loaded_user(request) is None
    request.user = SimpleLazyObject(load)
    assert loaded_user(request) is None and loads == []  # never evaluates the lazy user
    request._acached_user = Legacy()
    assert loaded_user(request) is request._acached_user  # cached by auser()
    del request._acached_user
    assert request.user.pk == 7  # the app evaluates it
    found = loaded_user(request)
    assert isinstance(found, Legacy) and loads == [1]
    request.user = AnonymousUser()
    assert loaded_user(request) is None
    request._acached_user = Legacy()
    request.user = None  # DRF assigned "nobody": that is the answer
    assert loaded_user(request) is None


def _stream_loading_the_user(request: HttpRequest) -> Any:
    from django.http import StreamingHttpResponse

    def body() -> Any:
        posthog.capture("before_user")
        yield request.user.get_username().encode()  # the user is loaded while streaming
        posthog.capture("after_user")
        yield b"."

    return StreamingHttpResponse(body())


def test_user_loaded_while_streaming_names_the_later_events(
    logged_in: Client, user: User, ph: Recorder, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    patterns = [path("stream-user/", _stream_loading_the_user), *test_urls.urlpatterns]
    monkeypatch.setattr(test_urls, "urlpatterns", patterns)
    settings.ROOT_URLCONF = "tests.integrations.django.urls"  # clears the url caches
    response = logged_in.get("/stream-user/")
    assert b"".join(response.streaming_content) == b"ada."
    response.close()
    before = ph.one("before_user")
    after = ph.one("after_user")
    assert before["properties"]["$process_person_profile"] is False
    assert after["distinct_id"] == str(user.pk)  # the scope kept resolving after return
    assert after["properties"]["email"] == "ada@example.com"
    assert after["properties"]["$request_route"] == "/stream-user/"
