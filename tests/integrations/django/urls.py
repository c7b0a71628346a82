from __future__ import annotations

from django.urls import include, path, re_path

from tests.integrations.django import views

api = [
    path("drf/capture/", views.DrfCapture.as_view()),
    path("drf/boom/", views.DrfBoom.as_view()),
    path("drf/unavailable/", views.DrfUnavailable.as_view()),
    path("drf/not-found/", views.DrfNotFound.as_view()),
    re_path(r"^legacy/(?P<slug>[a-z]+)/$", views.capture),
]

urlpatterns = [
    path("capture/", views.capture),
    path("user/", views.with_user),
    path("items/<int:pk>/", views.item),
    re_path(r"^articles/(?P<year>[0-9]{4})/$", views.capture),
    path("api/", include(api)),
    path("boom/", views.boom),
    path("not-found/", views.not_found),
    path("forbidden/", views.forbidden),
    path("suspicious/", views.suspicious),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("file/", views.file),
    path("async/capture/", views.async_capture),
    path("async/boom/", views.async_boom),
    path("health/", views.capture),
    path("caf\u00e9/", views.capture),
]
