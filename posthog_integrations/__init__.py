"""Framework integrations and developer tools for the ``posthog`` client.

Importing this package imports no web framework; each framework module
(``posthog_integrations.django``, ``.flask``, ``.starlette``) does, when imported.
"""

from posthog_integrations._request import POSTHOG_TRACING_HEADERS, run_in_scope

__all__ = ["POSTHOG_TRACING_HEADERS", "run_in_scope"]
