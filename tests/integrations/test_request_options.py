"""``Options`` (§1.7) and the capture policy ``should_capture`` (§1.8)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import warnings

import pytest

import posthog
from posthog_integrations._request import Options, should_capture
from posthog_integrations._request_options import DEFAULT_STATUS_CODES


def test_defaults_are_the_spec_defaults() -> None:
    o = Options()
    assert o.client is None
    assert o.capture_exceptions is None
    assert o.capture_tracing_headers is True
    assert o.identity_precedence == "header"
    assert o.user_id is None
    assert o.capture_user_email is False
    assert o.read_posthog_cookie is False
    assert o.capture_ip is True
    assert o.ip_source == "forwarded"
    assert o.capture_query_string is False
    assert o.capture_route is True
    assert o.request_filter is None
    assert tuple(o.exclude_paths) == ()
    assert o.extra_properties is None
    assert o.properties_map is None
    assert o.capture_status_codes == frozenset(range(500, 600))
    assert o.ignored_exceptions == ()


def test_from_settings_precedence_overrides_then_values_then_defaults() -> None:
    o = Options.from_settings({"capture_ip": False, "capture_route": False}, capture_route=True)
    assert o.capture_ip is False
    assert o.capture_route is True
    assert o.capture_query_string is False


def test_from_settings_warns_once_per_unknown_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="posthog"):
        Options.from_settings({"capture_ipp": True})
        Options.from_settings({"capture_ipp": True})
    assert sum("capture_ipp" in r.getMessage() for r in caplog.records) == 1


def test_trust_tracing_headers_is_a_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="trust_tracing_headers"):
        o = Options.from_settings({"trust_tracing_headers": False})
    assert o.capture_tracing_headers is False
    with pytest.warns(DeprecationWarning):
        o = Options.from_settings({"trust_tracing_headers": False}, capture_tracing_headers=True)
    assert o.capture_tracing_headers is True  # the new name wins
    with pytest.warns(DeprecationWarning):
        o = Options.from_settings({"capture_tracing_headers": False}, trust_tracing_headers=True)
    assert o.capture_tracing_headers is False


def test_from_settings_without_alias_emits_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Options.from_settings({"capture_ip": True})


def test_compiled_form_is_cached_and_rebuilt_after_assignment() -> None:
    o = Options()
    first = o.compiled()
    assert o.compiled() is first
    o.capture_ip = False
    second = o.compiled()
    assert second is not first
    assert second.capture_ip is False


def test_non_bool_capture_tracing_headers_counts_as_false() -> None:
    assert Options(capture_tracing_headers="yes").compiled().headers is False  # type: ignore[arg-type]
    assert Options(capture_tracing_headers=1).compiled().headers is False  # type: ignore[arg-type]
    assert Options().compiled().headers is True


def test_bad_values_fall_back_to_defaults_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="posthog"):
        c = Options(ip_source="sideways", identity_precedence="both",
                    capture_status_codes="x").compiled()  # type: ignore[arg-type]
    assert c.ip_source == "forwarded"
    assert c.prefer_user is False
    assert c.status_codes == DEFAULT_STATUS_CODES
    text = caplog.text
    assert "sideways" in text and "both" in text and "capture_status_codes" in text


def test_ip_source_forms() -> None:
    assert Options(ip_source="2").compiled().ip_source == 2
    assert Options(ip_source=" PEER ").compiled().ip_source == "peer"
    assert Options(ip_source=0).compiled().ip_source == "forwarded"
    assert Options(ip_source=True).compiled().ip_source == "forwarded"


def test_exclude_paths_forms() -> None:
    c = Options(exclude_paths=["/health", re.compile(r"\.css$"), 5]).compiled()
    assert c.excluded("/health")
    assert c.excluded("/healthz/deep")
    assert c.excluded("/static/site.css")
    assert not c.excluded("/api/health")
    assert Options(exclude_paths="/metrics").compiled().excluded("/metrics/x")
    assert not Options(exclude_paths=None).compiled().excluded("/")  # type: ignore[arg-type]


# ---------------------------------------------------------------- should_capture


class Client:
    def __init__(self, autocapture: bool) -> None:
        self.enable_exception_autocapture = autocapture


ON = Options(capture_exceptions=True)


def test_unhandled_exceptions_are_captured_whatever_the_status() -> None:
    assert should_capture(ValueError(), 500, ON, handled=False)
    assert should_capture(ValueError(), 200, ON, handled=False)  # raised mid-stream
    assert should_capture(ValueError(), None, ON, handled=False)


def test_handled_exceptions_need_a_capture_status() -> None:
    assert should_capture(ValueError(), 503, ON, handled=True)
    assert not should_capture(ValueError(), 404, ON, handled=True)
    assert not should_capture(ValueError(), 422, ON, handled=True)
    assert not should_capture(ValueError(), None, ON, handled=True)
    with_404 = Options(capture_exceptions=True, capture_status_codes=frozenset({404}))
    assert should_capture(LookupError(), 404, with_404, handled=True)
    assert not should_capture(LookupError(), 500, with_404, handled=True)


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError(), GeneratorExit()]
)
def test_non_exceptions_are_never_captured(exc: BaseException) -> None:
    assert not should_capture(exc, 500, ON, handled=False)


def test_ignored_exceptions_and_never_types_match_subclasses() -> None:
    class Boring(Exception):
        pass

    class Sub(Boring):
        pass

    opts = Options(capture_exceptions=True, ignored_exceptions=(Boring,))
    assert not should_capture(Sub(), 500, opts, handled=False)
    assert should_capture(ValueError(), 500, opts, handled=False)
    assert not should_capture(KeyError(), 500, ON, handled=False, never=(LookupError,))
    single = Options(capture_exceptions=True, ignored_exceptions=Boring)  # type: ignore[arg-type]
    assert not should_capture(Boring(), 500, single, handled=False)


def test_capture_exceptions_false_never_captures() -> None:
    off = Options(capture_exceptions=False)
    assert not should_capture(ValueError(), 500, off, handled=False, client=Client(True))


def test_capture_exceptions_none_inherits_the_clients_autocapture() -> None:
    inherit = Options()
    assert should_capture(ValueError(), 500, inherit, handled=False, client=Client(True))
    assert not should_capture(ValueError(), 500, inherit, handled=False, client=Client(False))


def test_capture_exceptions_none_without_client_reads_the_module_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(posthog, "default_client", None)
    monkeypatch.setattr(posthog, "enable_exception_autocapture", True)
    assert should_capture(ValueError(), 500, Options(), handled=False)
    monkeypatch.setattr(posthog, "enable_exception_autocapture", False)
    assert not should_capture(ValueError(), 500, Options(), handled=False)


def test_non_bool_capture_exceptions_counts_as_true() -> None:
    odd = Options(capture_exceptions="yes")  # type: ignore[arg-type]
    assert odd.resolve_capture_exceptions(Client(False)) is True
    assert should_capture(ValueError(), 500, odd, handled=False, client=Client(False))


# ---------------------------------------------------------------- framework options


def test_a_framework_subclass_declares_its_own_keys(caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import dataclass

    @dataclass(eq=False)
    class FrameworkOptions(Options):
        capture_handled_errors: bool = False

    assert "capture_handled_errors" in FrameworkOptions.known_keys()
    assert "capture_handled_errors" not in Options.known_keys()
    assert "trust_tracing_headers" in Options.known_keys()
    assert "_compiled_form" not in Options.known_keys()
    with caplog.at_level(logging.WARNING, logger="posthog"):
        o = FrameworkOptions.from_settings({"capture_handled_errors": True}, capture_ip=False)
    assert isinstance(o, FrameworkOptions)
    assert o.capture_handled_errors is True
    assert o.capture_ip is False
    assert "capture_handled_errors" not in caplog.text  # a known key: no warning
    assert o.compiled().capture_ip is False  # compiles like the base options


def test_from_settings_stacklevel_names_the_callers_caller() -> None:
    def framework_init() -> Options:
        return Options.from_settings({"trust_tracing_headers": True}, stacklevel=2)

    with pytest.warns(DeprecationWarning) as record:
        expected = sys._getframe().f_lineno + 1
        framework_init()  # the warning names this line
    assert (record[0].filename, record[0].lineno) == (__file__, expected)
    with pytest.warns(DeprecationWarning) as record:
        expected = sys._getframe().f_lineno + 1
        Options.from_settings({"trust_tracing_headers": True})  # default: the direct caller
    assert (record[0].filename, record[0].lineno) == (__file__, expected)


def test_status_codes_argument_of_should_capture() -> None:
    assert should_capture(ValueError(), 404, ON, handled=True, status_codes={404})
    assert not should_capture(ValueError(), 500, ON, handled=True, status_codes={404})
    assert should_capture(ValueError(), 500, ON, handled=False, status_codes=set())
