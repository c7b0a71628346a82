"""Drop-in path ``posthog.integrations.flask`` (PostHog's documented import); re-exports only."""

from posthog_integrations.flask import PostHog, PosthogFlaskIntegration, capture_handled

__all__ = ["PostHog", "PosthogFlaskIntegration", "capture_handled"]
