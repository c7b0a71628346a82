"""``RequestScope`` lifecycle (suspend / finish / exit / activated), the shared double-install
guard, tags built on first read, start failures, and the core pieces they rest on
(``Scope.activated()``, ``collect_tags``)."""

# ruff: noqa: F811 - pytest fixtures imported from test_request_helpers are parameters here

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import posthog
from posthog import Client, contexts
from posthog_integrations import run_in_scope
from posthog_integrations._request import Options, RequestScope, TracingIds
from tests.integrations.test_request_helpers import (  # noqa: F401 - fixtures
    FakeAdapter,
    User,
    _reset_module_state,
    _shared_server,
    client,
    make_client,
    only,
    props,
    sent,
    server,
)
from tests.support.http_server import ScriptedServer

DISTINCT = "X-POSTHOG-DISTINCT-ID"


def start(adapter: FakeAdapter, options: Options, framework: str = "fake") -> RequestScope:
    rs = RequestScope.start(adapter, options, framework=framework)
    assert rs is not None
    return rs


# ---------------------------------------------------------------- core: Scope.activated()


def test_core_activation_is_a_token_safe_context_manager() -> None:
    with posthog.new_context() as first:
        posthog.tag("first", 1)
    activation = first.activated()
    assert isinstance(activation, contexts.Activation)
    with posthog.new_context() as second:
        with activation as active:
            assert active is first
            assert contexts.current_scope() is first
        assert contexts.current_scope() is second
        activation.__exit__(None, None, None)  # a second exit is a no-op
        assert contexts.current_scope() is second
    assert contexts.current_scope() is None


def test_core_activation_left_from_another_context_restores_that_context() -> None:
    with posthog.new_context() as scope:
        pass
    activation = scope.activated()
    ctx = contextvars.copy_context()
    ctx.run(activation.__enter__)
    assert ctx.run(contexts.current_scope) is scope
    activation.__exit__(None, None, None)  # here, not in ctx: the token does not fit
    assert contexts.current_scope() is None
    # ctx itself still shows the scope (nothing could reset it from here)
    assert ctx.run(contexts.current_scope) is scope


def test_collect_tags_children_override_parents_at_every_depth() -> None:
    with posthog.new_context():
        posthog.tag("a", "root")
        posthog.tag("b", "root")
        assert posthog.get_tags() == {"a": "root", "b": "root"}
        with posthog.new_context():
            posthog.tag("b", "child")
            posthog.tag("c", "child")
            assert posthog.get_tags() == {"a": "root", "b": "child", "c": "child"}
            with posthog.new_context():
                posthog.tag("c", "grandchild")
                assert posthog.get_tags() == {"a": "root", "b": "child", "c": "grandchild"}
                tags = posthog.get_tags()
                tags["mutated"] = True  # a copy
                assert "mutated" not in posthog.get_tags()


def test_core_scope_sets_every_field_of_the_core_scope(client: Client) -> None:
    """``CoreScope`` fills ``Scope``'s slots itself; a field added to the core must be too."""
    rs = start(FakeAdapter(), Options(client=client))
    try:
        for name in contexts.Scope.__slots__:
            getattr(rs.scope, name)  # AttributeError for a slot left unset
        assert rs.scope.fresh is True
        assert rs.scope.parent is None
        assert rs.scope.capture_exceptions is False
        assert rs.scope._gen == contexts._generation
    finally:
        rs.exit()


# ---------------------------------------------------------------- suspend / finish / exit


def test_suspend_leaves_the_thread_but_keeps_late_resolution(
    client: Client, server: ScriptedServer
) -> None:
    adapter = FakeAdapter()
    with posthog.new_context() as outer:
        rs = start(adapter, Options(client=client))
        rs.suspend()
        rs.suspend()  # idempotent
        assert contexts.current_scope() is outer
        assert RequestScope.current() is None
        # the body is produced later: the route is known now, the view loaded the user
        adapter.current_route = "/items/{id}"
        adapter.current_user = User(12)
        with rs.activated():
            assert RequestScope.current() is rs
            client.capture("chunk")
        assert contexts.current_scope() is outer
        rs.finish()
        rs.finish()  # idempotent
        adapter.current_user = User(99)
        with rs.activated():
            assert RequestScope.current() is None  # finished
            client.capture("after_finish")
    chunk, after = sent(client, server)
    assert chunk["distinct_id"] == "12"
    assert chunk["properties"]["$request_route"] == "/items/{id}"
    assert after["distinct_id"] == "12"  # settled; nothing resolved after finish
    assert after["properties"]["$request_path"] == "/items/42"


def test_finish_stops_late_resolution(client: Client, server: ScriptedServer) -> None:
    adapter = FakeAdapter()
    rs = start(adapter, Options(client=client))
    rs.scope.tags  # noqa: B018 - built now, without a route (not routed yet)
    rs.suspend()
    rs.finish()
    adapter.current_user = User(5)
    adapter.current_route = "/late"
    calls = dict(adapter.calls)
    with rs.activated():
        client.capture("late")
    event = only(client, server, "late")
    assert event["properties"]["$process_person_profile"] is False
    assert "$request_route" not in event["properties"]
    assert adapter.calls.get("user", 0) == calls.get("user", 0)
    assert event["properties"]["$request_path"] == "/items/42"  # the tags are still built


def test_exit_is_suspend_and_finish(client: Client) -> None:
    rs = start(FakeAdapter(), Options(client=client))
    rs.exit()
    assert contexts.current_scope() is None
    assert rs._finished and not rs._entered
    assert rs.scope._rs is None  # no reference cycle is left behind
    rs.suspend()
    rs.finish()
    rs.exit()


def test_finish_from_another_thread_while_entered(client: Client) -> None:
    ctx = contextvars.copy_context()  # the request's own context, as a worker thread's
    rs = ctx.run(start, FakeAdapter(), Options(client=client))
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            rs.finish()
        except BaseException as exc:  # pragma: no cover - reported by the assertion
            errors.append(exc)

    worker = threading.Thread(target=finish)
    worker.start()
    worker.join()
    assert errors == []
    assert rs._finished
    # the other thread could not reset this context: finished, but still current here...
    assert ctx.run(RequestScope.current) is None
    assert ctx.run(contexts.current_scope) is rs.scope
    ctx.run(rs.suspend)  # ...until the owning context leaves it itself
    assert ctx.run(contexts.current_scope) is None
    assert not rs._entered
    rs.exit()  # idempotent


def test_activated_is_the_core_activation(client: Client) -> None:
    rs = start(FakeAdapter(), Options(client=client))
    rs.suspend()
    activation = rs.activated()
    assert isinstance(activation, contexts.Activation)
    with activation:
        assert contexts.current_scope() is rs.scope
    rs.finish()


def test_current_is_found_from_nested_scopes(client: Client) -> None:
    rs = start(FakeAdapter(), Options(client=client))
    try:
        with posthog.new_context():
            assert RequestScope.current() is rs
    finally:
        rs.exit()
    assert RequestScope.current() is None


# ---------------------------------------------------------------- tags built on first read


def test_tags_are_built_on_first_read_and_only_once(client: Client, server: ScriptedServer) -> None:
    maps: list[dict[str, Any]] = []

    def mapper(tags: dict[str, Any]) -> dict[str, Any]:
        maps.append(dict(tags))
        return tags

    adapter = FakeAdapter({"User-Agent": "ua"}, route="/items/{id}")
    opts = Options(client=client, properties_map=mapper)
    rs = start(adapter, opts)
    rs.exit()
    assert maps == []  # nothing read the tags: nothing built
    assert adapter.calls.get("route", 0) == 0

    rs = start(FakeAdapter({"User-Agent": "ua"}, route="/items/{id}"), opts)
    client.capture("one")
    client.capture("two")
    rs.exit()
    assert len(maps) == 1
    assert maps[0]["$request_route"] == "/items/{id}"
    assert [e["properties"]["$user_agent"] for e in sent(client, server)] == ["ua", "ua"]


def test_tags_are_built_for_a_thread_running_after_the_request(
    client: Client, server: ScriptedServer
) -> None:
    rs = start(FakeAdapter({DISTINCT: "bg", "User-Agent": "ua"}), Options(client=client))
    worker = threading.Thread(target=run_in_scope(client.capture), args=("background",))
    rs.exit()
    worker.start()
    worker.join()
    event = only(client, server, "background")
    assert event["distinct_id"] == "bg"
    assert event["properties"]["$request_path"] == "/items/42"
    assert event["properties"]["$user_agent"] == "ua"


def test_tags_replaced_before_first_read_stay_replaced(client: Client) -> None:
    rs = start(FakeAdapter(), Options(client=client))
    try:
        rs.scope.tags = {"only": 1}
        assert posthog.get_tags() == {"only": 1}
    finally:
        rs.exit()


def test_tag_added_in_the_view_joins_the_defaults(client: Client) -> None:
    rs = start(FakeAdapter(), Options(client=client))
    try:
        posthog.tag("mine", 1)
        tags = posthog.get_tags()
        assert tags["mine"] == 1
        assert tags["$request_path"] == "/items/42"
    finally:
        rs.exit()


# ---------------------------------------------------------------- the double-install guard


class CopyingAdapter(FakeAdapter):
    """The same request seen through a new object (middleware that copies the ASGI scope)."""


def test_same_request_object_passes_through_per_framework(client: Client) -> None:
    adapter = FakeAdapter()
    opts = Options(client=client)
    outer = start(adapter, opts, "one")
    try:
        other = start(adapter, opts, "two")  # another framework: its own scope
        try:
            assert RequestScope.start(adapter, opts, framework="one") is None  # via the chain
            assert RequestScope.start(adapter, opts, framework="two") is None
        finally:
            other.exit()
    finally:
        outer.exit()


def test_a_copied_request_object_passes_through_in_async_code(client: Client) -> None:
    opts = Options(client=client)

    async def main() -> tuple[Any, Any]:
        outer = start(FakeAdapter(), opts, "asgi")
        try:
            inner = RequestScope.start(CopyingAdapter(), opts, framework="asgi")

            async def in_child_task() -> Any:
                return RequestScope.start(CopyingAdapter(), opts, framework="asgi")

            child = await asyncio.create_task(in_child_task())
            return inner, child
        finally:
            outer.exit()

    assert asyncio.run(main()) == (None, None)


def test_a_stale_scope_on_a_reused_thread_never_swallows_a_new_request(client: Client) -> None:
    opts = Options(client=client)
    stale = start(FakeAdapter(), opts, "sync")  # never exited: a framework bug
    fresh = RequestScope.start(FakeAdapter(), opts, framework="sync")
    assert fresh is not None
    fresh.exit()
    stale.exit()

    async def sequential() -> None:  # in one task, one request after the other
        for _ in range(2):
            rs = RequestScope.start(FakeAdapter(), opts, framework="asgi")
            assert rs is not None
            rs.exit()

    asyncio.run(sequential())


def test_a_suspended_scope_does_not_make_a_request_pass_through(client: Client) -> None:
    opts = Options(client=client)
    adapter = FakeAdapter()
    rs = start(adapter, opts)
    rs.suspend()
    with rs.activated():  # a chunk of its body
        again = RequestScope.start(adapter, opts, framework="fake")
        assert again is not None
        again.exit()
    rs.finish()


def test_untracked_makes_nested_starts_of_that_framework_pass_through(client: Client) -> None:
    calls: list[object] = []
    opts = Options(client=client, request_filter=lambda r: calls.append(r) or True)
    with RequestScope.untracked("asgi"):
        assert RequestScope.start(FakeAdapter(), opts, framework="asgi") is None
        other = RequestScope.start(FakeAdapter(), opts, framework="django")
        assert other is not None
        other.exit()
        with RequestScope.untracked("asgi"):
            pass
        assert RequestScope.start(FakeAdapter(), opts, framework="asgi") is None
    assert len(calls) == 1  # only the other framework decided
    rs = RequestScope.start(FakeAdapter(), opts, framework="asgi")
    assert rs is not None
    rs.exit()


# ---------------------------------------------------------------- start failures


class BrokenIds(FakeAdapter):
    def tracing_ids(self) -> TracingIds:
        raise RuntimeError("adapter bug")


def test_start_failures_are_logged_once_and_reported_every_time(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    client = make_client(on_error=lambda exc, batch: errors.append(exc))
    opts = Options(client=client)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        for _ in range(3):
            assert RequestScope.start(BrokenIds(), opts, framework="f") is None
            assert contexts.current_scope() is None
        assert asyncio.run(RequestScope.astart(BrokenIds(), opts, framework="f")) is None
    logged = [r for r in caplog.records if "could not open the PostHog" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert [str(e) for e in errors] == ["adapter bug"] * 4


def test_options_that_cannot_compile_are_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = Options()

    def broken() -> Any:
        raise ValueError("cannot compile")

    monkeypatch.setattr(opts, "compiled", broken)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        for _ in range(2):
            assert RequestScope.start(FakeAdapter(), opts, framework="f") is None
    assert sum("could not open" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- adapters with properties


class PropertyAdapter:
    """An adapter with read-only properties, computed on demand (what the Protocol allows)."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.raw = {"kind": "raw request"}

    def _read(self, name: str, value: Any) -> Any:
        self.reads.append(name)
        return value

    method = property(lambda self: self._read("method", "PUT"))
    scheme = property(lambda self: self._read("scheme", "https"))
    host = property(lambda self: self._read("host", "props.example"))
    path = property(lambda self: self._read("path", "/p"))
    url_path = property(lambda self: self._read("url_path", "/p%20"))
    query_string = property(lambda self: self._read("query_string", ""))
    peer_ip = property(lambda self: self._read("peer_ip", "192.0.2.1"))

    def tracing_ids(self) -> TracingIds:
        return ("prop-user", None, None, None)

    def header(self, name: str) -> list[str]:
        return []

    def cookie(self, name: str) -> str | None:
        return None

    def route(self) -> str | None:
        return None

    def user(self) -> object | None:
        return None

    def user_id(self, user: object) -> str | None:
        return None

    def user_email(self, user: object) -> str | None:
        return None


def test_adapter_properties_are_read_only_when_the_tags_are_built(
    client: Client, server: ScriptedServer
) -> None:
    adapter = PropertyAdapter()
    rs = RequestScope.start(adapter, Options(client=client), framework="props")
    assert rs is not None
    assert "host" not in adapter.reads and "method" not in adapter.reads
    client.capture("probe")
    rs.exit()
    p = props(client, server)
    assert p["$current_url"] == "https://props.example/p%20"  # url_path, not path
    assert p["$request_path"] == "/p"
    assert p["$request_method"] == "PUT"
    assert p["$ip"] == "192.0.2.1"
    assert only(client, server)["distinct_id"] == "prop-user"
