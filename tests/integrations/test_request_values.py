"""Pure helpers of the request layer: sanitising (§1.3), `$ip` (§1.6), the posthog-js cookie."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from posthog_integrations import POSTHOG_TRACING_HEADERS
from posthog_integrations._request import (
    client_ip,
    consent_cookie_name,
    cookie_name,
    first_id,
    parse_posthog_cookie,
    sanitize_id,
    sanitize_text,
)
from posthog_integrations._request_values import clamp_idle_timeout, valid_ip


def test_tracing_headers_constant_lists_the_three_browser_headers() -> None:
    assert POSTHOG_TRACING_HEADERS == (
        "x-posthog-distinct-id",
        "x-posthog-session-id",
        "x-posthog-window-id",
    )


# ---------------------------------------------------------------- sanitize_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  user\t-42 ", "user-42"),
        ("abc", "abc"),
        ("a\x00b\x1fc\x7fd\x85e\x9ff", "abcdef"),  # C0, DEL and C1 deleted anywhere
        ("\r\n", None),
        ("", None),
        ("   ", None),
        ("undefined", None),
        ("UNDEFINED", None),
        (" Null ", None),
        ("none", None),
        ("$posthog_cookieless", None),
        ("$POSTHOG_COOKIELESS", None),
        ("undefined-user", "undefined-user"),
        ("a,b", "a,b"),  # a comma is legal in an app-chosen id (joined WSGI headers)
        ("\u00e9t\u00e9", "\u00e9t\u00e9"),
    ],
)
def test_sanitize_id(raw: str, expected: str | None) -> None:
    assert sanitize_id(raw) == expected


def test_sanitize_id_caps_at_1000_after_cleaning() -> None:
    value = "\x01" * 10 + "x" * 1500
    assert sanitize_id(value) == "x" * 1000
    assert sanitize_id(" " + "y" * 999 + "z" * 5) == "y" * 999 + "z"


def test_sanitize_id_decodes_bytes_as_latin1_and_rejects_other_types() -> None:
    assert sanitize_id(b"caf\xe9") == "caf\u00e9"
    assert sanitize_id(bytearray(b" id ")) == "id"
    assert sanitize_id(42) is None
    assert sanitize_id(None) is None
    assert sanitize_id(["x"]) is None


def test_first_id_takes_the_first_usable_value() -> None:
    assert first_id(["undefined", "u2", "u3"]) == "u2"
    assert first_id(["\r\n", None, 5, " u4 "]) == "u4"
    assert first_id([]) is None
    assert first_id(["null", ""]) is None


def test_sanitize_text_keeps_spaces_removes_controls_and_caps() -> None:
    assert sanitize_text("  Mozilla/5.0 (X11)  ", 1000) == "  Mozilla/5.0 (X11)  "
    assert sanitize_text("Moz\r\nilla\x00", 1000) == "Mozilla"
    assert sanitize_text("x" * 50, 32) == "x" * 32
    assert sanitize_text("\x00\x01", 10) is None
    assert sanitize_text("", 10) is None
    assert sanitize_text(b"bytes", 10) is None
    assert sanitize_text(None, 10) is None


# ---------------------------------------------------------------- client_ip


def ip(xff: list[str] | None = None, real: str | None = None, peer: str | None = "198.51.100.8",
       source: object = "forwarded", request: object = None) -> str | None:
    return client_ip(forwarded_for=xff or [], real_ip=real, peer=peer, ip_source=source,
                     request=request)


def test_forwarded_takes_the_leftmost_valid_address() -> None:
    assert ip(["203.0.113.5, 10.0.0.1"]) == "203.0.113.5"
    assert ip(["unknown, 1.2.3.4:8080"]) == "1.2.3.4"
    assert ip(["_hidden, _obf, 9.9.9.9"]) == "9.9.9.9"
    assert ip(["not-an-ip"]) == "198.51.100.8"


def test_forwarded_joins_header_lines_in_order() -> None:
    assert ip(["garbage", "5.6.7.8, 1.1.1.1"]) == "5.6.7.8"


def test_forwarded_falls_back_to_real_ip_then_peer() -> None:
    assert ip([], real=" 192.0.2.9 ") == "192.0.2.9"
    assert ip(["unknown"], real="nope") == "198.51.100.8"
    assert ip([], peer=None) is None
    assert ip([",,, ,"], peer="garbage") is None


def test_ipv6_with_brackets_ports_and_normalisation() -> None:
    assert ip(["[2001:DB8::1]:443"]) == "2001:db8::1"
    assert ip(["[2001:db8::2]"]) == "2001:db8::2"
    assert ip(["2001:0db8:0000::0003"]) == "2001:db8::3"
    assert ip(["[2001:db8::1"]) == "198.51.100.8"  # unclosed bracket: invalid
    assert ip(["1.2.3.4:notaport:9"]) == "198.51.100.8"


def test_integer_source_counts_from_the_right_and_resists_spoofing() -> None:
    header = ["6.6.6.6, 203.0.113.7, 10.0.0.1"]  # client wrote 6.6.6.6
    assert ip(header, source=1) == "10.0.0.1"
    assert ip(header, source=2) == "203.0.113.7"
    assert ip(header, source=4) == "198.51.100.8"  # fewer entries than proxies: peer
    assert ip(["6.6.6.6, unknown"], source=1) == "198.51.100.8"  # invalid n-th entry: peer


def test_peer_source_ignores_headers() -> None:
    assert ip(["203.0.113.5"], real="192.0.2.1", source="peer") == "198.51.100.8"
    assert ip(["203.0.113.5"], source="peer", peer="[::1]") == "::1"


def test_callable_source_gets_the_request_and_is_validated() -> None:
    seen: list[object] = []
    marker = object()

    def pick(request: object) -> str:
        seen.append(request)
        return " 192.0.2.44:80 "

    assert ip(["203.0.113.5"], source=pick, request=marker) == "192.0.2.44"
    assert seen == [marker]
    assert ip(source=lambda r: "bogus") is None
    assert ip(source=lambda r: None) is None


def test_valid_ip_rejects_placeholders() -> None:
    for value in ("unknown", "_hidden", "", " ", "1.2.3", "999.1.1.1"):
        assert valid_ip(value) is None


# ---------------------------------------------------------------- the posthog-js cookie


def test_cookie_names_escape_the_key() -> None:
    assert cookie_name("phc_a+b/c=") == "ph_phc_aPLbSLcEQ_posthog"
    assert cookie_name("phc_plain") == "ph_phc_plain_posthog"
    assert consent_cookie_name("phc_plain") == "__ph_opt_in_out_phc_plain"


NOW = 1_700_000_000_000


def cookie(data: Any) -> str:
    return quote(json.dumps(data))


def parse(value: str | None, *, consent: str | None = None, opt_out: bool = False,
          idle: int = 1800) -> tuple[str | None, str | None]:
    return parse_posthog_cookie(value, api_key="phc_k", now_ms=NOW, idle_timeout_s=idle,
                                consent_value=consent, opt_out_by_default=opt_out)


def fresh_session(last_ago_s: float = 60, start_ago_s: float = 600) -> list[Any]:
    return [NOW - int(last_ago_s * 1000), "sess-1", NOW - int(start_ago_s * 1000)]


def test_identified_cookie_gives_distinct_and_session() -> None:
    value = cookie({"distinct_id": "user-9", "$user_state": "identified",
                    "$sesid": fresh_session()})
    assert parse(value) == ("user-9", "sess-1")


def test_anonymous_cookie_gives_only_the_session() -> None:
    value = cookie({"distinct_id": "anon-1", "$user_state": "anonymous",
                    "$sesid": fresh_session()})
    assert parse(value) == (None, "sess-1")
    assert parse(cookie({"distinct_id": "anon-1", "$sesid": fresh_session()})) == (None, "sess-1")


def test_session_idle_timeout_and_24h_limit() -> None:
    base = {"distinct_id": "u", "$user_state": "identified"}
    assert parse(cookie({**base, "$sesid": fresh_session(last_ago_s=31 * 60)})) == ("u", None)
    assert parse(cookie({**base, "$sesid": fresh_session(last_ago_s=29 * 60)})) == ("u", "sess-1")
    assert parse(cookie({**base, "$sesid": fresh_session(last_ago_s=90)}), idle=60) == ("u", None)
    old_start = fresh_session(last_ago_s=10, start_ago_s=25 * 3600)
    assert parse(cookie({**base, "$sesid": old_start})) == ("u", None)


@pytest.mark.parametrize("consent", ["false", "0", "no", "FALSE", " No "])
def test_no_like_consent_takes_nothing(consent: str) -> None:
    value = cookie({"distinct_id": "u", "$user_state": "identified", "$sesid": fresh_session()})
    assert parse(value, consent=consent) == (None, None)


def test_opt_out_by_default_needs_a_yes_consent() -> None:
    value = cookie({"distinct_id": "u", "$user_state": "identified", "$sesid": fresh_session()})
    assert parse(value, opt_out=True) == (None, None)
    assert parse(value, opt_out=True, consent="maybe") == (None, None)
    assert parse(value, opt_out=True, consent="1") == ("u", "sess-1")
    assert parse(value, consent="true") == ("u", "sess-1")


@pytest.mark.parametrize(
    "value",
    [None, "", "not json", quote("[1, 2]"), cookie({"$sesid": "x"}), cookie({"$sesid": [1, 2]}),
     cookie({"$sesid": [True, "s", True]}), cookie({"$sesid": ["a", "s", "b"]}), "%zz%"],
)
def test_malformed_cookies_give_nothing(value: str | None) -> None:
    assert parse(value) == (None, None)


def test_cookie_ids_are_sanitised() -> None:
    value = cookie({"distinct_id": " u\t1 ", "$user_state": "identified",
                    "$sesid": [NOW, "undefined", NOW]})
    assert parse(value) == ("u1", None)


def test_raw_unencoded_json_cookie_is_read_too() -> None:
    raw = json.dumps({"distinct_id": "u", "$user_state": "identified"})
    assert parse(raw) == ("u", None)


def test_idle_timeout_is_clamped() -> None:
    assert clamp_idle_timeout(10) == 60
    assert clamp_idle_timeout(100_000) == 36_000
    assert clamp_idle_timeout(900) == 900
    assert clamp_idle_timeout("900") == 1800
    assert clamp_idle_timeout(True) == 1800


# ---------------------------------------------------------------- forwarded_ip cache, current_url


def test_forwarded_ip_for_each_source_and_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from posthog_integrations import _request_values

    monkeypatch.setattr(_request_values, "_FORWARDED", {})
    line = " unknown, 203.0.113.5:8080 , 10.0.0.1"
    assert _request_values.forwarded_ip(line, "forwarded") == "203.0.113.5"
    assert _request_values.forwarded_ip(line, 1) == "10.0.0.1"
    assert _request_values.forwarded_ip(line, 3) is None  # "unknown": no fallback here
    assert _request_values.forwarded_ip(line, 4) is None  # fewer entries
    assert _request_values.forwarded_ip("junk", "forwarded") is None
    assert set(_request_values._FORWARDED) == {
        (line, "forwarded"), (line, 1), (line, 3), (line, 4), ("junk", "forwarded")}
    assert _request_values.forwarded_ip(line, "forwarded") == "203.0.113.5"  # from the cache


def test_forwarded_ip_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from posthog_integrations import _request_values

    monkeypatch.setattr(_request_values, "_FORWARDED", {})
    monkeypatch.setattr(_request_values, "_FORWARDED_MAX", 4)
    for n in range(10):
        _request_values.forwarded_ip(f"192.0.2.{n}", "forwarded")
    assert len(_request_values._FORWARDED) <= 4
    long_line = ", ".join(["198.51.100.7"] * 200)  # longer than any key kept
    assert _request_values.forwarded_ip(long_line, "forwarded") == "198.51.100.7"
    assert (long_line, "forwarded") not in _request_values._FORWARDED


@pytest.mark.parametrize(
    ("scheme", "host", "path", "query", "expected"),
    [
        ("https", "example.com", "/a/b", None, "https://example.com/a/b"),
        ("https", "example.com", "/a/b", "", "https://example.com/a/b"),
        ("http", "example.com:8080", "/a", "x=1", "http://example.com:8080/a?x=1"),
        ("http", "u:p@example.com", "/a", None, "http://example.com/a"),
        ("http", "example.com", "/a#frag", None, "http://example.com/a"),
        ("http", "example.com", "no-slash", None, "http://example.com/no-slash"),
        ("http", "example.com", "/a", "?x=1#f", "http://example.com/a?x=1"),
    ],
)
def test_current_url_forms(scheme: str, host: str, path: str, query: str | None,
                           expected: str) -> None:
    from posthog_integrations._request_values import current_url

    assert current_url(scheme, host, path, query) == expected
