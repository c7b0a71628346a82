"""The optional app ``posthog_integrations.django`` (spec §2.8)."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class PosthogConfig(AppConfig):
    """Configures the default client from ``settings.POSTHOG``, connects the exception
    receiver and registers the ``posthog.*`` system checks."""

    name = "posthog_integrations.django"
    label = "posthog_integrations"
    verbose_name = "PostHog"
    default = True

    def ready(self) -> None:
        from posthog_integrations.django import _config
        from posthog_integrations.django._middleware import connect_signal
        from posthog_integrations.django.checks import check_posthog

        connect_signal()
        checks.register(check_posthog)
        _config.app_ready = True
        if hasattr(settings, "POSTHOG"):
            _config.apply_posthog_setting(settings.POSTHOG)
