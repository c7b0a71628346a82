"""Local feature-flag evaluation: compiled, immutable definition snapshots.

Nothing here is imported by ``posthog/__init__.py``; import the submodules
(``posthog.flags.local``, ``posthog.flags.errors``) directly.
"""
