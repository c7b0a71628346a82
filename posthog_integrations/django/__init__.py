"""PostHog for Django: ``PosthogContextMiddleware`` and the optional app.

``MIDDLEWARE``: add ``"posthog_integrations.django.PosthogContextMiddleware"`` directly after
``SecurityMiddleware``. ``INSTALLED_APPS`` (optional): ``"posthog_integrations.django"``
configures the default client from ``settings.POSTHOG`` and adds system checks.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "posthog_integrations.django needs Django: pip install 'posthog-integrations[django]'"
    ) from exc

from posthog_integrations.django._config import DjangoConfig, apply_posthog_setting
from posthog_integrations.django._middleware import (
    DjangoAdapter,
    PosthogContextMiddleware,
    loaded_user,
    on_got_request_exception,
)

__all__ = [
    "DjangoAdapter",
    "DjangoConfig",
    "PosthogContextMiddleware",
    "apply_posthog_setting",
    "loaded_user",
    "on_got_request_exception",
]
