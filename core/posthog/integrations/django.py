"""Drop-in path for PostHog's documented Django middleware (re-exports only)."""

from posthog_integrations.django import PosthogContextMiddleware

__all__ = ["PosthogContextMiddleware"]
