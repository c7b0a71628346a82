"""The ``posthog_events`` fixture, as a user's test suite sees it (run through pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_records_module_api_and_own_clients_synchronously(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import posthog

        def test_it(posthog_events):
            posthog.capture("signed up", distinct_id=42, properties={"plan": "pro"})
            with posthog.new_context():
                posthog.identify_context("u1")
                posthog.tag("route", "/x")
                posthog.capture("in scope")
            own = posthog.Client("phc_other", send=False)
            own.capture("own client", distinct_id="o")
            assert posthog_events.names() == ["signed up", "in scope", "own client"]
            signed = posthog_events.last("signed up")
            assert signed["distinct_id"] == "42" and signed["properties"]["plan"] == "pro"
            assert posthog_events.filter(distinct_id="u1")[0]["properties"]["route"] == "/x"
            posthog_events.clear()
            assert len(posthog_events) == 0

        def test_exceptions_are_recorded_rendered(posthog_events):
            try:
                raise ValueError("boom")
            except ValueError as exc:
                posthog.capture_exception(exc, distinct_id="u2")
            (event,) = posthog_events.exceptions()
            first = event["properties"]["$exception_list"][0]
            assert first["type"] == "ValueError" and first["value"] == "boom"
            top = first["stacktrace"]["frames"][-1]
            assert top["function"] == "test_exceptions_are_recorded_rendered"

        def test_nothing_leaks_between_tests(posthog_events):
            assert posthog_events.events == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:django")
    result.assert_outcomes(passed=3)


def test_fixture_restores_the_default_client(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import posthog

        MARK = posthog.Client("phc_mark", send=False)

        def test_uses_fixture(posthog_events):
            assert posthog.default_client is not MARK

        def test_after():
            assert posthog.default_client is MARK
        """
    )
    pytester.makeconftest(
        """
        import posthog, test_fixture_restores_the_default_client as m

        def pytest_runtest_setup(item):
            if posthog.default_client is None:
                posthog.default_client = m.MARK
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:django")
    result.assert_outcomes(passed=2)


def test_works_with_the_flask_extension(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import flask
        import posthog
        from posthog_integrations.flask import PostHog

        def make_app():
            app = flask.Flask("t")

            @app.get("/buy")
            def buy():
                posthog.capture("bought")
                return "ok"

            PostHog(app)
            return app

        def test_middleware_events(posthog_events):
            response = make_app().test_client().get(
                "/buy", headers={"X-POSTHOG-DISTINCT-ID": "browser-1",
                                 "X-POSTHOG-SESSION-ID": "s-1"})
            assert response.status_code == 200
            event = posthog_events.last("bought")
            assert event["distinct_id"] == "browser-1"
            assert event["properties"]["$session_id"] == "s-1"
            assert event["properties"]["$request_path"] == "/buy"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:django")
    result.assert_outcomes(passed=1)
