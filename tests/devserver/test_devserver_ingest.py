"""Ingestion over real loopback HTTP: envelopes, body encodings, deduplication and errors."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from typing import Any

import pytest
import requests

from posthog_integrations.devserver import DevServer

JSON = {"Content-Type": "application/json"}


def _event(name: str = "clicked", distinct_id: Any = "user-1", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuid.uuid4()),
        "timestamp": "2024-05-01T12:00:00+00:00",
        "properties": {"$lib": "posthog-python", "plan": "pro"},
    }
    event.update(extra)
    return event


def _post(
    http: requests.Session, server: DevServer, path: str, body: Any, **kwargs: Any
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kwargs.pop("headers", JSON)
    return http.post(server.url + path, data=data, headers=headers, timeout=5, **kwargs)


# -- envelopes --------------------------------------------------------------------------------


def test_python_sdk_batch_envelope_is_stored_with_all_fields(
    server: DevServer, http: requests.Session
) -> None:
    first = _event("signed_up", "alice", **{"$set": {"email": "a@example.com"}})
    second = _event("$identify", "alice", **{"$set_once": {"first_seen": "2024"}})
    envelope = {
        "api_key": "phc_project",
        "batch": [first, second],
        "historical_migration": False,
        "sent_at": "2024-05-01T12:00:01+00:00",
    }
    response = _post(http, server, "/batch/", envelope)

    assert response.status_code == 200
    assert response.json() == {"status": 1}
    stored = server.events()
    assert [e["event"] for e in stored] == ["signed_up", "$identify"]
    one, two = stored
    assert one["uuid"] == first["uuid"]
    assert one["distinct_id"] == "alice"
    assert one["timestamp"] == "2024-05-01T12:00:00+00:00"
    assert one["properties"] == {"$lib": "posthog-python", "plan": "pro"}
    assert one["api_key"] == "phc_project"
    assert one["$set"] == {"email": "a@example.com"}
    assert "$set_once" not in one
    assert two["$set_once"] == {"first_seen": "2024"}
    assert one["received_at"].startswith("20")
    assert server.count() == 2


@pytest.mark.parametrize(
    "path",
    ["/batch/", "/batch", "/e/", "/e", "/i/v0/e/", "/i/v0/e", "/capture/", "/track/",
     "/track", "/engage/", "/capture/?ip=1&_=1714567890&ver=1.2.3"],
)
def test_single_event_object_accepted_on_every_capture_path(
    server: DevServer, http: requests.Session, path: str
) -> None:
    event = _event("viewed", "bob", token="phc_single")
    response = _post(http, server, path, event)

    assert response.status_code == 200, response.text
    (stored,) = server.events()
    assert stored["event"] == "viewed"
    assert stored["api_key"] == "phc_single"
    assert server.requests[-1]["path"] == path.split("?")[0]


def test_single_event_with_api_key_field(server: DevServer, http: requests.Session) -> None:
    response = _post(http, server, "/capture/", _event("x", api_key="phc_top"))
    assert response.status_code == 200
    assert server.events()[0]["api_key"] == "phc_top"


def test_posthog_js_array_takes_key_and_distinct_id_from_properties(
    server: DevServer, http: requests.Session
) -> None:
    events = [
        {
            "event": "$pageview",
            "uuid": str(uuid.uuid4()),
            "properties": {
                "token": "phc_js",
                "distinct_id": "anon-1",
                "$session_id": "sess-1",
                "$current_url": "http://localhost/",
            },
            "timestamp": "2024-05-01T12:00:00.000Z",
        },
        {
            "event": "$autocapture",
            "properties": {"token": "phc_js", "distinct_id": "anon-1", "$session_id": "sess-1"},
        },
    ]
    response = _post(http, server, "/e/", events)

    assert response.status_code == 200
    stored = server.events()
    assert [e["api_key"] for e in stored] == ["phc_js", "phc_js"]
    assert [e["distinct_id"] for e in stored] == ["anon-1", "anon-1"]
    assert len(server.events(session_id="sess-1")) == 2
    # An event sent without a timestamp is stamped with the time it was received.
    assert stored[1]["timestamp"] == stored[1]["received_at"]


def test_batch_without_top_level_key_uses_each_events_key(
    server: DevServer, http: requests.Session
) -> None:
    envelope = {
        "batch": [
            {"event": "a", "distinct_id": "u", "properties": {"token": "phc_from_props"}},
            {"event": "b", "distinct_id": "u", "api_key": "phc_from_event"},
        ]
    }
    response = _post(http, server, "/batch/", envelope)

    assert response.status_code == 200
    assert [e["api_key"] for e in server.events()] == ["phc_from_props", "phc_from_event"]


def test_engage_without_event_name_is_an_identify(
    server: DevServer, http: requests.Session
) -> None:
    body = {"$token": "phc_engage", "$distinct_id": "carol", "$set": {"name": "Carol"}}
    response = _post(http, server, "/engage/", body)

    assert response.status_code == 200
    (stored,) = server.events()
    assert stored["event"] == "$identify"
    assert stored["distinct_id"] == "carol"
    assert stored["$set"] == {"name": "Carol"}


def test_missing_uuid_gets_a_fresh_uuid4_and_non_string_distinct_id_is_stringified(
    server: DevServer, http: requests.Session
) -> None:
    events = [{"event": "n", "distinct_id": 42}, {"event": "n", "distinct_id": 42}]
    assert _post(http, server, "/batch/", {"api_key": "k", "batch": events}).status_code == 200

    stored = server.events()
    assert [e["distinct_id"] for e in stored] == ["42", "42"]
    uuids = [uuid.UUID(e["uuid"]) for e in stored]
    assert all(u.version == 4 for u in uuids)
    assert uuids[0] != uuids[1]
    assert server.count() == 2
    assert len(server.events(distinct_id="42")) == 2


def test_reposted_batch_is_not_duplicated(server: DevServer, http: requests.Session) -> None:
    envelope = {"api_key": "k", "batch": [_event("a"), _event("b")]}
    for _ in range(3):
        assert _post(http, server, "/batch/", envelope).status_code == 200

    assert server.count() == 2
    assert [r["events"] for r in server.requests] == [2, 2, 2]
    # A uuid repeated inside one batch is stored once too.
    twin = _event("twin")
    assert _post(http, server, "/batch/", {"api_key": "k", "batch": [twin, twin]}).ok
    assert server.count("twin") == 1


# -- body encodings ---------------------------------------------------------------------------


def test_gzip_content_encoding(server: DevServer, http: requests.Session) -> None:
    body = gzip.compress(json.dumps({"api_key": "k", "batch": [_event("gz")]}).encode())
    headers = {**JSON, "Content-Encoding": "gzip"}
    response = _post(http, server, "/batch/", body, headers=headers)

    assert response.status_code == 200
    assert server.count("gz") == 1
    assert server.requests[-1]["headers"]["content-encoding"] == "gzip"
    assert server.batches[-1]["batch"][0]["event"] == "gz"


def test_gzip_js_query_parameter(server: DevServer, http: requests.Session) -> None:
    events = [{"event": "$pageview", "properties": {"token": "phc", "distinct_id": "d"}}]
    body = gzip.compress(json.dumps(events).encode())
    response = _post(
        http, server, "/e/?compression=gzip-js&ip=1", body, headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 200
    assert server.count("$pageview") == 1
    assert server.requests[-1]["query"] == "compression=gzip-js&ip=1"


def test_base64_query_parameter_with_raw_body(server: DevServer, http: requests.Session) -> None:
    raw = json.dumps(_event("b64", token="k", properties={"q": ">>>?"})).encode()
    standard = base64.b64encode(raw)
    url_safe_unpadded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    assert standard != url_safe_unpadded
    for body in (standard, url_safe_unpadded):
        response = _post(http, server, "/capture/?compression=base64", body, headers={})
        assert response.status_code == 200, response.text

    assert server.count("b64") == 1  # same uuid twice: stored once
    assert [r["status"] for r in server.requests] == [200, 200]

    response = _post(http, server, "/capture/?compression=base64", b"@@not base64@@")
    assert response.status_code == 400
    assert "invalid base64" in response.json()["detail"]


def test_form_body_with_url_encoded_json(server: DevServer, http: requests.Session) -> None:
    event = {"event": "plainform", "distinct_id": "d", "api_key": "k"}
    response = http.post(server.url + "/e/", data={"data": json.dumps(event)}, timeout=5)
    assert response.status_code == 200
    assert server.count("plainform") == 1


def test_unknown_content_encoding_and_lz64_query_are_rejected(
    server: DevServer, http: requests.Session
) -> None:
    body = json.dumps(_event("x", token="k")).encode()
    response = _post(http, server, "/batch/", body, headers={**JSON, "Content-Encoding": "br"})
    assert response.status_code == 400
    assert "Unsupported Content-Encoding" in response.json()["detail"]

    response = _post(http, server, "/e/?compression=lz64", body)
    assert response.status_code == 400
    assert response.json()["detail"] == "lz64 not supported"
    assert server.count() == 0


def test_form_encoded_base64_data(server: DevServer, http: requests.Session) -> None:
    # '>>>' makes the base64 contain '+', sent unescaped so the form decoding turns it into ' '.
    event = {"event": "form", "properties": {"token": "k", "distinct_id": "d", "q": ">>>?"}}
    encoded = base64.b64encode(json.dumps(event).encode()).decode()
    assert "+" in encoded
    for body in (
        {"data": encoded, "compression": "base64"},  # requests percent-encodes this
        f"data={encoded}&compression=base64".encode(),  # '+' left as is -> space
    ):
        response = http.post(server.url + "/e/", data=body, timeout=5, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200, response.text

    assert [e["properties"]["q"] for e in server.events("form")] == [">>>?", ">>>?"]
    assert server.batches[-1] == event


def test_lz64_is_rejected_with_a_clear_message(server: DevServer, http: requests.Session) -> None:
    response = http.post(
        server.url + "/e/", data={"data": "N4IgLg9g", "compression": "lz64"}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "lz64 not supported"


# -- rejections -------------------------------------------------------------------------------


def test_malformed_json_is_a_400_with_position(server: DevServer, http: requests.Session) -> None:
    response = _post(http, server, "/batch/", b'{"api_key": nope}')

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["code"] == "invalid_payload"
    assert body["detail"].startswith("Malformed request data: invalid JSON at line 1 column 13")
    assert server.requests[-1]["status"] == 400
    assert server.count() == 0


def test_empty_body_is_a_400(server: DevServer, http: requests.Session) -> None:
    response = _post(http, server, "/batch/", b"")
    assert response.status_code == 400
    assert "empty body" in response.json()["detail"]


def test_bad_gzip_is_a_400(server: DevServer, http: requests.Session) -> None:
    headers = {**JSON, "Content-Encoding": "gzip"}
    response = _post(http, server, "/batch/", b"definitely not gzip", headers=headers)
    assert response.status_code == 400
    assert "invalid gzip body" in response.json()["detail"]

    truncated = gzip.compress(json.dumps({"api_key": "k", "batch": []}).encode())[:-6]
    response = _post(http, server, "/batch/", truncated, headers=headers)
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"]


def test_missing_api_key_is_a_401(server: DevServer, http: requests.Session) -> None:
    response = _post(http, server, "/batch/", {"batch": [_event("nokey")]})

    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "authentication_error"
    assert body["code"] == "invalid_api_key"
    assert body["detail"].startswith("API key not provided.")
    assert server.count() == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"api_key": "k", "batch": [{"distinct_id": "u"}]}, "has no 'event' name"),
        ({"api_key": "k", "batch": [{"event": "", "distinct_id": "u"}]}, "has no 'event' name"),
        ({"api_key": "k", "batch": ["not an object"]}, "index 0 is not a JSON object"),
        ({"api_key": "k", "batch": {"event": "x"}}, "'batch' must be a JSON array"),
        ({"api_key": "k", "event": "x", "distinct_id": "u", "properties": [1]},
         "'properties' of event 0 is not an object"),
        ({"api_key": "k", "event": "x"}, "has no distinct_id"),
        ("just a string", "expected a JSON object or array"),
    ],
)
def test_invalid_events_are_a_400(
    server: DevServer, http: requests.Session, body: Any, fragment: str
) -> None:
    response = _post(http, server, "/batch/", body)

    assert response.status_code == 400
    assert fragment in response.json()["detail"]


def test_one_bad_event_rejects_the_whole_batch(server: DevServer, http: requests.Session) -> None:
    envelope = {"api_key": "k", "batch": [_event("good"), {"distinct_id": "u"}]}
    response = _post(http, server, "/batch/", envelope)

    assert response.status_code == 400
    assert "index 1" in response.json()["detail"]
    assert server.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"api_key": "k", "event": "x", "distinct_id": "\\ud800"}',  # escaped
        b'{"api_key": "k", "event": "x", "distinct_id": "\xed\xa0\x80"}',  # raw UTF-8 bytes
        '{"api_key": "k", "event": "x", "distinct_id": "\\udfff"}'.encode("utf-16-le"),
    ],
)
def test_lone_surrogate_is_a_400_not_a_500(
    server: DevServer, http: requests.Session, body: bytes
) -> None:
    response = _post(http, server, "/batch/", body)
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    # A proper surrogate pair (an emoji) is fine.
    pair = b'{"api_key": "k", "event": "\\ud83d\\ude00", "distinct_id": "u"}'
    assert _post(http, server, "/batch/", pair).status_code == 200
    assert server.count("\U0001f600") == 1


def test_body_over_limit_is_a_413_and_connection_stays_usable(
    http: requests.Session,
) -> None:
    with DevServer(max_body_bytes=2000) as small:
        big = {"api_key": "k", "batch": [_event(f"e{i}") for i in range(40)]}
        raw = json.dumps(big).encode()
        assert len(raw) > 2000

        response = _post(http, small, "/batch/", raw)
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"

        # Small on the wire but over the limit once decompressed.
        headers = {**JSON, "Content-Encoding": "gzip"}
        packed = gzip.compress(raw)
        assert len(packed) < 2000
        response = _post(http, small, "/batch/", packed, headers=headers)
        assert response.status_code == 413

        ok = _post(http, small, "/batch/", {"api_key": "k", "batch": [_event("fits")]})
        assert ok.status_code == 200
        assert small.count() == 1
        assert [r["status"] for r in small.requests] == [413, 413, 200]


# -- routing and CORS -------------------------------------------------------------------------


def test_unknown_path_is_404_and_wrong_method_is_405(
    server: DevServer, http: requests.Session
) -> None:
    missing = http.post(server.url + "/nope/", data=b"{}", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"

    wrong = http.get(server.url + "/batch/", timeout=5)
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]

    assert http.post(server.url + "/api/events", data=b"{}", timeout=5).status_code == 405
    assert http.put(server.url + "/health", timeout=5).status_code == 405
    # The same keep-alive connection still works after the unread bodies above.
    assert http.get(server.url + "/health", timeout=5).json() == {"status": "ok"}


def test_cors_preflight_and_post_headers(server: DevServer, http: requests.Session) -> None:
    origin = "http://localhost:3000"
    preflight = http.options(server.url + "/e/", timeout=5, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"].lower() == "content-type"

    posted = _post(http, server, "/e/", _event("cors", token="k"),
                   headers={**JSON, "Origin": origin})
    assert posted.status_code == 200
    assert posted.headers["Access-Control-Allow-Origin"] == origin

    no_origin = _post(http, server, "/e/", _event("cors2", token="k"))
    assert no_origin.headers["Access-Control-Allow-Origin"] == "*"
