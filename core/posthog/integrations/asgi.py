"""Drop-in path ``posthog.integrations.asgi`` (PostHog's documented import); re-exports only."""

from posthog_integrations.starlette import (
    PosthogASGIMiddleware,
    PosthogMiddleware,
    capture_handled,
    instrument_exception_handlers,
)

__all__ = [
    "PosthogASGIMiddleware",
    "PosthogMiddleware",
    "capture_handled",
    "instrument_exception_handlers",
]
