"""Framework integrations and developer tools for the ``posthog`` client."""
