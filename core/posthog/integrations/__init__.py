"""Drop-in import paths for PostHog's documented integrations (``posthog.integrations.*``).

The modules here only re-export from ``posthog_integrations`` and import their framework
when the user imports them; no logic lives in this package.
"""
