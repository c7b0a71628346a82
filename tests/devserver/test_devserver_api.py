"""The JSON read API and the in-process accessors: events(), count(), clear(), requests, batches."""

from __future__ import annotations

import gzip
import json
from http.client import HTTPConnection
from typing import Any

import requests

from posthog_integrations.devserver import DevServer


def _seed(server: DevServer, http: requests.Session) -> None:
    batch: list[dict[str, Any]] = [
        {"event": "signup", "distinct_id": "alice", "properties": {"$session_id": "s1"}},
        {"event": "pageview", "distinct_id": "alice", "properties": {"$session_id": "s1"}},
        {"event": "pageview", "distinct_id": "bob", "properties": {"$session_id": "s2"}},
        {"event": "pageview", "distinct_id": "alice", "properties": {"$session_id": "s3"}},
    ]
    for index, event in enumerate(batch):
        event["properties"]["n"] = index
    response = http.post(server.url + "/batch/", json={"api_key": "k", "batch": batch}, timeout=5)
    assert response.status_code == 200


def test_health_and_head(server: DevServer, http: requests.Session) -> None:
    response = http.get(server.url + "/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    head = http.head(server.url + "/health", timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    assert http.get(server.url + "/health/", timeout=5).status_code == 200


def test_read_api_filters_and_order(server: DevServer, http: requests.Session) -> None:
    _seed(server, http)
    url = server.url + "/api/events"

    everything = http.get(url, timeout=5).json()
    assert everything["count"] == 4
    assert [e["properties"]["n"] for e in everything["results"]] == [0, 1, 2, 3]

    pageviews = http.get(url, params={"event": "pageview"}, timeout=5).json()
    assert [e["properties"]["n"] for e in pageviews["results"]] == [1, 2, 3]

    alice = http.get(url, params={"event": "pageview", "distinct_id": "alice"}, timeout=5).json()
    assert [e["properties"]["n"] for e in alice["results"]] == [1, 3]

    limited = http.get(url, params={"limit": "2"}, timeout=5).json()
    assert limited["count"] == 2
    assert [e["properties"]["n"] for e in limited["results"]] == [0, 1]

    blank = http.get(url + "?event=&distinct_id=&limit=", timeout=5).json()
    assert blank["count"] == 4

    by_session = http.get(url, params={"session_id": "s1"}, timeout=5).json()
    assert by_session["count"] == 2


def test_read_api_rejects_a_bad_limit(server: DevServer, http: requests.Session) -> None:
    for path in ("/api/events", "/api/events/count"):
        for value in ("ten", "-1"):
            response = http.get(server.url + path, params={"limit": value}, timeout=5)
            assert response.status_code == 400
            assert "limit" in response.json()["detail"]


def test_count_endpoint_and_delete(server: DevServer, http: requests.Session) -> None:
    _seed(server, http)
    count_url = server.url + "/api/events/count"
    assert http.get(count_url, timeout=5).json() == {"count": 4}
    assert http.get(count_url, params={"event": "pageview"}, timeout=5).json() == {"count": 3}
    assert http.get(count_url, params={"distinct_id": "bob"}, timeout=5).json() == {"count": 1}

    deleted = http.delete(server.url + "/api/events", timeout=5)
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] == 4
    assert http.get(count_url, timeout=5).json() == {"count": 0}
    assert server.count() == 0
    assert server.requests == []


def test_in_process_accessors(server: DevServer, http: requests.Session) -> None:
    _seed(server, http)

    assert server.count() == 4
    assert server.count("pageview") == 3
    assert server.count("pageview", distinct_id="alice") == 2
    assert [e["properties"]["n"] for e in server.events()] == [0, 1, 2, 3]
    assert [e["properties"]["n"] for e in server.events(event="pageview", limit=2)] == [1, 2]
    assert [e["properties"]["n"] for e in server.events(distinct_id="bob")] == [2]
    assert server.events(limit=0) == []
    assert server.wait_for_events(4)[0]["event"] == "signup"

    server.clear()
    assert server.count() == 0
    assert server.events() == []
    assert server.requests == []
    assert server.batches == []


def test_requests_and_batches_record_what_was_sent(
    server: DevServer, http: requests.Session
) -> None:
    envelope = {
        "api_key": "k",
        "batch": [{"event": "a", "distinct_id": "u"}],
        "historical_migration": True,
        "sent_at": "2024-05-01T00:00:00+00:00",
    }
    body = gzip.compress(json.dumps(envelope).encode())
    response = http.post(server.url + "/batch/", data=body, timeout=5, headers={
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "User-Agent": "posthog-python/9.9.9",
    })
    assert response.status_code == 200
    http.post(server.url + "/batch/", data=b"[", timeout=5)
    http.get(server.url + "/api/events", timeout=5)  # reads are not recorded

    first, second = server.requests
    assert first["path"] == "/batch/"
    assert first["method"] == "POST"
    assert first["status"] == 200
    assert first["events"] == 1
    assert first["headers"]["content-encoding"] == "gzip"
    assert first["headers"]["user-agent"] == "posthog-python/9.9.9"
    assert all(key == key.lower() for key in first["headers"])
    assert second["status"] == 400
    assert second["events"] == 0

    # Only bodies that decoded to JSON are kept; they are the envelope as sent.
    assert server.batches == [envelope]

    # Returned lists are copies: mutating them changes nothing recorded.
    server.requests[0]["headers"].clear()
    assert server.requests[0]["headers"]["content-encoding"] == "gzip"


def test_recording_is_bounded_to_the_last_1000(server: DevServer) -> None:
    conn = HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for index in range(1005):
            body = json.dumps({"api_key": "k", "event": "tick", "distinct_id": "u",
                               "properties": {"i": index}})
            conn.request("POST", "/capture/", body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()

    assert server.count("tick") == 1005
    assert len(server.requests) == 1000
    batches = server.batches
    assert len(batches) == 1000
    assert batches[0]["properties"]["i"] == 5
    assert batches[-1]["properties"]["i"] == 1004
