"""Drop-in path for PostHog's documented DRF exception handler (re-exports only)."""

from posthog_integrations.drf import create_exception_handler, exception_handler

__all__ = ["create_exception_handler", "exception_handler"]
