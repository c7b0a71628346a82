"""A local PostHog-compatible ingestion server for tests, benchmarks and demos.

``DevServer`` accepts the bodies PostHog's capture endpoints accept, stores each event
in SQLite and hands them back in-process or over a small JSON read API. It also serves
feature flags (definitions for local evaluation, ``/flags``, remote config) from a
definitions file or :meth:`DevServer.set_flags`::

    with DevServer(flags_path="flags.json") as srv:
        ...  # point the SDK at srv.url
        assert srv.count("signed_up") == 1
"""

from __future__ import annotations

from .flags import FlagsFileError
from .server import DEFAULT_MAX_BODY_BYTES, DevServer

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DevServer", "FlagsFileError"]
