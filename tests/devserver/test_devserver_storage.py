"""EventStore directly: group-committing writer, read-after-write, back-pressure, failures."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from posthog_integrations.devserver import storage
from posthog_integrations.devserver.storage import EventStore, Row, StoreClosedError


def _rows(n: int, event: str = "e") -> list[Row]:
    rows: list[Row] = []
    for _ in range(n):
        event_uuid = str(uuid.uuid4())
        data = json.dumps({"uuid": event_uuid, "event": event, "distinct_id": "u"})
        rows.append((event_uuid, event, "u", None, "2024", "k", "2024", data))
    return rows


@pytest.fixture
def store() -> Iterator[EventStore]:
    events = EventStore()
    yield events
    events.close()


def test_reads_see_every_submitted_row(store: EventStore) -> None:
    for _ in range(20):
        store.submit(_rows(10))
    assert store.count() == 200  # no explicit flush: reads wait for the writer
    assert len(store.events(limit=5)) == 5
    store.submit(_rows(3, "late"))
    assert store.clear() == 203
    assert store.count() == 0


def test_a_failing_request_does_not_lose_the_others(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad: Any = [("only", "three", "columns")]
    with caplog.at_level(logging.ERROR, logger="posthog_integrations.devserver"):
        with store._write_lock:  # hold the writer so the three requests share a transaction
            store.submit(_rows(2, "good"))
            store.submit(bad)
            store.submit(_rows(2, "good"))
        assert store.flush(timeout=5)
    assert store.count("good") == 4
    assert any("could not store 1 events" in r.getMessage() for r in caplog.records)
    store.submit(_rows(1, "after"))
    assert store.count("after") == 1  # the writer thread survived


def test_submit_blocks_while_the_writer_is_far_behind(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MAX_PENDING_ROWS", 5)
    submitter = threading.Thread(target=lambda: [store.submit(_rows(5)) for _ in range(3)])
    with store._write_lock:
        submitter.start()
        time.sleep(0.2)
        assert submitter.is_alive()  # held back: at most one queued batch plus one in flight
    submitter.join(timeout=5)
    assert not submitter.is_alive()
    assert store.count() == 15


def test_close_commits_queued_rows_then_refuses_work(tmp_path: Any) -> None:
    path = tmp_path / "events.sqlite3"
    events = EventStore(path)
    with events._write_lock:
        events.submit(_rows(7))
    events.close()
    events.close()

    with pytest.raises(StoreClosedError):
        events.submit(_rows(1))
    with pytest.raises(StoreClosedError):
        events.count()
    reopened = EventStore(path)
    try:
        assert reopened.count() == 7
    finally:
        reopened.close()


def test_temporary_database_is_removed_on_close() -> None:
    events = EventStore()
    events.submit(_rows(1))
    directory = os.path.dirname(events.path)
    assert os.path.exists(events.path)
    events.close()
    assert not os.path.exists(directory)
