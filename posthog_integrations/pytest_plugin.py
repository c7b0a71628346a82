"""pytest plugin: the ``posthog_events`` fixture records what your code captures.

Installed with the package (entry point ``posthog``); nothing happens until a test asks
for the fixture. While it is active the default client (the one ``posthog.capture()``
and the framework middlewares use) is an in-memory client that never touches the
network, and every event any client accepts is recorded the moment it is captured,
cleaned exactly as it would be sent::

    def test_checkout(client, posthog_events):
        client.post("/checkout", headers={"X-POSTHOG-DISTINCT-ID": "u1"})
        (event,) = posthog_events.filter("order completed")
        assert event["distinct_id"] == "u1"
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import posthog
from posthog import client as client_module
from posthog.events import clean

Event = dict[str, Any]


class PosthogEvents:
    """The events captured during one test, oldest first."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def _record(self, _client: Any, message: Event) -> None:
        cleaned = clean(message)
        with self._lock:
            self._events.append(cleaned)

    @property
    def events(self) -> list[Event]:
        """A copy of everything recorded so far."""
        with self._lock:
            return list(self._events)

    def filter(self, event: str | None = None, *, distinct_id: str | None = None) -> list[Event]:
        """Events with this name and/or distinct id."""
        return [
            e for e in self.events
            if (event is None or e.get("event") == event)
            and (distinct_id is None or e.get("distinct_id") == str(distinct_id))
        ]

    def names(self) -> list[str]:
        return [str(e.get("event")) for e in self.events]

    def exceptions(self) -> list[Event]:
        """The ``$exception`` events."""
        return self.filter("$exception")

    def last(self, event: str | None = None) -> Event:
        """The newest event (with this name); ``AssertionError`` when there is none."""
        found = self.filter(event)
        assert found, f"no {event or 'PostHog'} event was captured"
        return found[-1]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


@pytest.fixture
def posthog_events() -> Iterator[PosthogEvents]:
    """Record every PostHog event captured during the test (no network, synchronous)."""
    recorder = PosthogEvents()
    saved_client = posthog.default_client
    posthog.default_client = posthog.Client("phc_pytest", send=False)
    client_module.observers.append(recorder._record)
    try:
        yield recorder
    finally:
        client_module.observers.remove(recorder._record)
        test_client, posthog.default_client = posthog.default_client, saved_client
        if test_client is not None:
            test_client.shutdown(timeout_seconds=0)
