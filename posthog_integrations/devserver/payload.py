"""Decoding of capture request bodies and their conversion into storage rows.

Kept free of HTTP details so the envelope rules (which key is the project key,
what makes an event invalid) can be read and tested in one place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs

from .storage import Row

__all__ = [
    "PayloadError",
    "build_rows",
    "decode_body",
    "gunzip",
    "invalid",
    "may_contain_surrogates",
    "parse_document",
    "parse_json",
    "too_large",
]

GZIP_MAGIC = b"\x1f\x8b"
_FORM_TYPE = "application/x-www-form-urlencoded"
_MISSING_KEY = (
    "API key not provided. You can find your project API key in your PostHog project settings."
)
_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


class PayloadError(Exception):
    """A request the server rejects, carrying the HTTP status and PostHog-style error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "validation_error",
        code: str = "invalid_payload",
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.code = code

    def body(self) -> dict[str, str]:
        """The JSON object sent back to the client."""
        return {"type": self.type, "code": self.code, "detail": self.detail}


def invalid(detail: str) -> PayloadError:
    """A 400 ``invalid_payload`` error with the given detail."""
    return PayloadError(400, detail)


def too_large(limit: int) -> PayloadError:
    """A 413 error for a body (raw or decompressed) larger than ``limit`` bytes."""
    return PayloadError(
        413, f"Request body is larger than the limit of {limit} bytes", code="payload_too_large"
    )


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress (possibly multi-member) gzip data, refusing to inflate past ``max_bytes``."""
    parts: list[bytes] = []
    total = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data, max_bytes - total + 1)
        except zlib.error as exc:
            raise invalid(f"Malformed request data: invalid gzip body ({exc})") from None
        total += len(chunk)
        if total > max_bytes:
            raise too_large(max_bytes)
        if not inflater.eof:
            raise invalid("Malformed request data: truncated gzip body")
        parts.append(chunk)
        data = inflater.unused_data
        if not data.strip(b"\x00"):
            return b"".join(parts)
        if data[:2] != GZIP_MAGIC:
            raise invalid("Malformed request data: unexpected bytes after the gzip body")


def _b64decode(text: str, *, spaces_are_plus: bool = False) -> bytes:
    """Decode standard or URL-safe base64, tolerating line breaks and missing padding.

    In a form body an unescaped ``+`` arrives as a space, hence ``spaces_are_plus``.
    """
    if spaces_are_plus:
        text = text.replace(" ", "+")
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Malformed request data: invalid base64 data") from None


def decode_body(
    body: bytes,
    *,
    content_type: str = "",
    content_encoding: str = "",
    compression: str | None = None,
    max_bytes: int,
) -> bytes:
    """Undo gzip / base64 / form encoding and return the JSON document's bytes.

    ``compression`` is the query-string parameter posthog-js uses (``gzip-js``,
    ``base64``, ``lz64``); gzip is also recognised by ``Content-Encoding`` or its magic bytes.
    """
    encoding = content_encoding.strip().lower()
    comp = (compression or "").strip().lower()
    if encoding in ("gzip", "x-gzip") or comp in ("gzip", "gzip-js") or body[:2] == GZIP_MAGIC:
        body = gunzip(body, max_bytes)
    elif encoding not in ("", "identity"):
        raise invalid(f"Unsupported Content-Encoding: {content_encoding!r}")
    if comp == "lz64":
        raise invalid("lz64 not supported")

    is_form = content_type.split(";", 1)[0].strip().lower() == _FORM_TYPE
    if (is_form or body[:5] == b"data=") and body.lstrip()[:1] not in (b"{", b"["):
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise invalid("Malformed request data: form body is not valid UTF-8") from None
        if fields.get("compression", [""])[-1].strip().lower() == "lz64":
            raise invalid("lz64 not supported")
        values = fields.get("data")
        if not values:
            raise invalid("Malformed request data: form body has no 'data' field")
        data = values[-1].strip()
        if data[:1] in ("{", "["):  # url-encoded JSON rather than base64
            return data.encode("utf-8")
        body = _b64decode(data, spaces_are_plus=True)
    elif comp == "base64":
        try:
            body = _b64decode(body.decode("ascii"))
        except UnicodeDecodeError:
            raise invalid("Malformed request data: invalid base64 data") from None
    if body[:2] == GZIP_MAGIC:
        body = gunzip(body, max_bytes)
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    return body


def parse_json(data: bytes) -> Any:
    """Parse the request's JSON, turning every failure into a 400 with a precise message."""
    if not data.strip():
        raise invalid("Malformed request data: empty body")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise invalid(
            f"Malformed request data: invalid JSON at line {exc.lineno} column {exc.colno}"
            f" ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise invalid("Malformed request data: body is not valid UTF-8") from None
    except RecursionError:
        raise invalid("Malformed request data: JSON is nested too deeply") from None


_WS = re.compile(r"[ \t\n\r]*")
# ``scan_once`` is undocumented (so untyped) but stable since Python 2.
_Scanner = Callable[[str, int], tuple[Any, int]]
_scan: _Scanner = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# ``_WS`` matches the empty string, so its ``match`` never returns None.
_ws_match = cast(Callable[[str, int], "re.Match[str]"], _WS.match)
_WS_CHARS = " \t\n\r"
_encode_str = json.JSONEncoder(separators=(",", ":")).encode


def split_batch(text: str) -> tuple[dict[str, Any], list[str]] | None:
    """Parse a ``{..., "batch": [...]}`` envelope, keeping each event's JSON text as sent.

    Storing that text saves re-encoding every event, the largest cost of ingestion.
    Anything unusual (another shape, a syntax error, a repeated key) returns ``None``
    and the request goes through :func:`parse_json`, which also words the errors.
    """
    ws = _ws_match
    envelope: dict[str, Any] = {}
    raws: list[str] | None = None
    try:
        i = ws(text, 0).end()
        if text[i] != "{":
            return None
        i = ws(text, i + 1).end()
        while True:
            if text[i] != '"':
                return None
            key, i = _scan(text, i)
            if key in envelope:
                return None
            i = ws(text, i).end()
            if text[i] != ":":
                return None
            i = ws(text, i + 1).end()
            if key == "batch" and text[i] == "[":
                raws = []
                items: list[Any] = []
                i = ws(text, i + 1).end()
                if text[i] == "]":
                    i += 1
                else:
                    add_item, add_raw = items.append, raws.append
                    while True:  # the hot loop: SDK bodies are compact, so skip ws() calls
                        start = i
                        value, i = _scan(text, i)
                        add_item(value)
                        add_raw(text[start:i])
                        sep = text[i]
                        if sep in _WS_CHARS:
                            i = ws(text, i).end()
                            sep = text[i]
                        i += 1
                        if sep == ",":
                            if text[i] in _WS_CHARS:
                                i = ws(text, i).end()
                            continue
                        if sep != "]":
                            return None
                        i = ws(text, i).end()
                        break
                envelope[key] = items
            else:
                envelope[key], i = _scan(text, i)
                i = ws(text, i).end()
            sep = text[i]
            i = ws(text, i + 1).end()
            if sep == "}":
                break
            if sep != ",":
                return None
        if i != len(text) or raws is None:
            return None
    except (StopIteration, IndexError, ValueError, RecursionError):
        return None
    return envelope, raws


def parse_document(data: bytes, *, suspicious: bool) -> tuple[Any, list[str] | None]:
    """The request's JSON, with the raw text of each batch event when the fast path applies.

    ``suspicious`` is :func:`may_contain_surrogates` of ``data`` (the caller needs it too).
    """
    if data[:1] == b"{" and not suspicious and b'"batch"' in data:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        split = split_batch(text) if text else None
        if split is not None:
            return split
    return parse_json(data), None


def may_contain_surrogates(data: bytes) -> bool:
    """Cheap test for JSON bytes that could decode to lone surrogates SQLite cannot store.

    That needs a ``\\udXXX`` escape, UTF-8-encoded surrogates (``json`` decodes with
    ``surrogatepass``; they start with byte 0xED) or a UTF-16/32 body.
    """
    return b"\\ud" in data or b"\\uD" in data or b"\xed" in data or b"\x00" in data[:4]


def _key_of(obj: dict[str, Any]) -> str | None:
    """The project key carried directly by an envelope or event, if any."""
    for name in ("api_key", "token", "$token"):
        value = obj.get(name)
        if type(value) is str and value:
            return value
    return None


def build_rows(
    payload: Any,
    received: datetime,
    *,
    default_event: str | None = None,
    check_unicode: bool = True,
    raws: list[str] | None = None,
) -> list[Row]:
    """Validate an envelope and build one storage row per event.

    Accepts a ``{"batch": [...]}`` envelope, a single event object or a JSON array of
    events. The project key is the envelope's ``api_key``/``token`` or, failing that,
    each event's own ``api_key``/``token``/``properties.token``; a missing key is a 401.
    The whole request is rejected if any event is invalid, as PostHog does.
    ``check_unicode=False`` skips the lone-surrogate check, for bodies that
    :func:`may_contain_surrogates` clears. ``raws`` (from :func:`parse_document`) holds
    each batch event's JSON text: an event that needed no normalising is stored as that
    text plus its project key and receive time, instead of being encoded again.
    """
    top_key: str | None = None
    if type(payload) is list:
        events: Any = payload
    elif type(payload) is dict:
        top_key = _key_of(payload)
        if "batch" in payload:
            events = payload["batch"]
            if type(events) is not list:
                raise invalid("Invalid payload: 'batch' must be a JSON array")
        else:
            events = [payload]
    else:
        raise invalid("Malformed request data: expected a JSON object or array")

    received_at = received.isoformat()
    rows: list[Row] = []
    append = rows.append
    new_uuid = uuid.uuid4
    for index, event in enumerate(events):
        if type(event) is not dict:
            raise invalid(f"Invalid payload: event at index {index} is not a JSON object")
        props = event.get("properties")
        if props is None:
            props = {}
        elif type(props) is not dict:
            raise invalid(f"Invalid payload: 'properties' of event {index} is not an object")

        key = top_key or _key_of(event)
        if key is None:
            token = props.get("token")
            if type(token) is not str or not token:
                raise PayloadError(
                    401, _MISSING_KEY, type_="authentication_error", code="invalid_api_key"
                )
            key = token

        name = event.get("event", default_event)
        if type(name) is not str or not name:
            raise invalid(f"Invalid payload: event at index {index} has no 'event' name")

        distinct_id = event.get("distinct_id")
        if distinct_id is None:
            distinct_id = event.get("$distinct_id")
            if distinct_id is None:
                distinct_id = props.get("distinct_id")
        if distinct_id is None or distinct_id == "":
            raise invalid(f"Invalid payload: event at index {index} ({name}) has no distinct_id")
        if type(distinct_id) is not str:
            distinct_id = str(distinct_id)

        event_uuid = event.get("uuid")
        if not event_uuid:
            event_uuid = str(new_uuid())
        elif type(event_uuid) is not str:
            event_uuid = str(event_uuid)

        timestamp = event.get("timestamp")
        if timestamp is None:
            offset = event.get("offset")
            timestamp = received_at
            if isinstance(offset, (int, float)) and not isinstance(offset, bool):
                with contextlib.suppress(OverflowError, ValueError):
                    timestamp = (received - timedelta(milliseconds=offset)).isoformat()
        ts_text = timestamp if type(timestamp) is str else str(timestamp)

        session_id = props.get("$session_id")
        if session_id is not None and type(session_id) is not str:
            session_id = str(session_id)

        raw = raws[index] if raws is not None else None
        if (
            raw is not None
            and event.get("uuid") is event_uuid
            and event.get("event") is name
            and event.get("distinct_id") is distinct_id
            and event.get("timestamp") is timestamp
            and event.get("properties") is props
            and "api_key" not in event
            and "received_at" not in event
            and raw[-1:] == "}"
        ):
            text = f'{raw[:-1]},"api_key":{_encode_str(key)},"received_at":"{received_at}"}}'
            # The ``is`` checks above make mypy widen these to Any | None; they are str here.
            row = (event_uuid, name, distinct_id, session_id, ts_text, key, received_at, text)
            append(row)  # type: ignore[arg-type]
            continue
        stored = {
            **event,
            "uuid": event_uuid,
            "event": name,
            "distinct_id": distinct_id,
            "properties": props,
            "timestamp": timestamp,
            "api_key": key,
            "received_at": received_at,
        }
        text = _dumps(stored)
        if check_unicode:
            try:
                text.encode("utf-8")  # SQLite needs UTF-8, which a lone surrogate is not
            except UnicodeEncodeError:
                raise invalid(
                    f"Malformed request data: event at index {index} contains a lone"
                    " surrogate (invalid unicode)"
                ) from None
        append((event_uuid, name, distinct_id, session_id, ts_text, key, received_at, text))
    return rows
