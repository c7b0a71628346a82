"""Contexts: scopes across threads and tasks, inheritance, hooks (spec core §2.2-2.4, §4, §9)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import posthog
from posthog import Client
from posthog.contexts import Scope, current_scope, run_in_context
from posthog.events import system_properties
from tests.support.http_server import ScriptedServer

MakeClient = Callable[..., Client]


def sent(client: Client, server: ScriptedServer) -> list[dict[str, Any]]:
    client.flush()
    return server.events()


def only_event(client: Client, server: ScriptedServer) -> dict[str, Any]:
    events = sent(client, server)
    assert len(events) == 1, events
    return events[0]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "posthog" and r.levelno >= logging.ERROR
    ]


def is_uuid4(text: Any) -> bool:
    return isinstance(text, str) and uuid.UUID(text).version == 4


def frame_named(event: dict[str, Any], function: str) -> dict[str, Any]:
    frames = event["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    matches = [f for f in frames if f["function"] == function]
    assert len(matches) == 1, [f["function"] for f in frames]
    return matches[0]


# ---------------------------------------------------------------- threads


def test_new_thread_starts_with_no_context() -> None:
    seen: dict[str, Any] = {}

    def probe() -> None:
        seen["scope"] = current_scope()
        seen["tags"] = posthog.get_tags()

    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.identify_context("u")
        worker = threading.Thread(target=probe)
        worker.start()
        worker.join()
        assert posthog.get_tags() == {"t": 1}
    assert seen == {"scope": None, "tags": {}}


def test_run_in_context_carries_the_scope_into_a_thread(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["tags"] = posthog.get_tags()
        with posthog.new_context():
            posthog.tag("thread_only", True)
        client.capture("from thread")

    with posthog.new_context():
        posthog.tag("req", "r1")
        posthog.identify_context("u")
        posthog.set_context_session("s")
        worker = threading.Thread(target=run_in_context(work))
        worker.start()
        worker.join()
        # a scope the thread pushed and popped is not visible here
        assert posthog.get_tags() == {"req": "r1"}
    assert seen["tags"] == {"req": "r1"}
    event = only_event(client, server)
    assert event["distinct_id"] == "u"
    assert event["properties"]["req"] == "r1"
    assert event["properties"]["$session_id"] == "s"


def test_same_wrapped_function_runs_concurrently_in_an_executor() -> None:
    workers = 4
    barrier = threading.Barrier(workers, timeout=5)

    def work(i: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
        before = posthog.get_tags()
        with posthog.new_context():
            posthog.tag("i", i)
            barrier.wait()  # every call is inside the wrapped context at the same time
            inner = posthog.get_tags()
        after = posthog.get_tags()
        scope = current_scope()
        assert scope is not None
        return before, inner, after, scope.lookup("distinct_id")

    with posthog.new_context():
        posthog.tag("req", "r1")
        posthog.identify_context("u")
        wrapped = run_in_context(work)
    # the copy was taken when wrapping: still valid after the block ended
    assert current_scope() is None
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(wrapped, range(workers)))
    for i, (before, inner, after, distinct) in enumerate(results):
        assert before == {"req": "r1"}
        assert inner == {"req": "r1", "i": i}
        assert after == {"req": "r1"}
        assert distinct == "u"


def test_run_in_context_preserves_return_value_and_arguments() -> None:
    def add(a: int, b: int = 0) -> tuple[int, dict[str, Any]]:
        return a + b, posthog.get_tags()

    with posthog.new_context():
        posthog.tag("k", "v")
        wrapped = run_in_context(add)
    assert wrapped(2, b=3) == (5, {"k": "v"})
    assert wrapped.__name__ == "add"


# ---------------------------------------------------------------- asyncio


def test_each_asyncio_task_sees_its_own_scope() -> None:
    async def worker(i: int) -> tuple[dict[str, Any], Any]:
        with posthog.new_context():
            posthog.tag("worker", i)
            posthog.identify_context(f"user-{i}")
            await asyncio.sleep(0)
            await asyncio.sleep(0.001 * (3 - i))  # finish in reverse order
            scope = current_scope()
            assert scope is not None
            return posthog.get_tags(), scope.lookup("distinct_id")

    async def main() -> tuple[list[tuple[dict[str, Any], Any]], dict[str, Any]]:
        with posthog.new_context():
            posthog.tag("parent", True)
            results = await asyncio.gather(*(worker(i) for i in range(4)))
            return list(results), posthog.get_tags()

    results, parent_tags = asyncio.run(main())
    for i, (tags, distinct) in enumerate(results):
        assert tags == {"parent": True, "worker": i}
        assert distinct == f"user-{i}"
    assert parent_tags == {"parent": True}


def test_tags_set_in_one_task_do_not_leak_into_another() -> None:
    async def main() -> dict[str, Any]:
        ready = asyncio.Event()
        done = asyncio.Event()
        observed: dict[str, Any] = {}

        async def writer() -> None:
            with posthog.new_context():
                posthog.tag("secret_task_tag", 1)
                ready.set()
                await done.wait()

        async def reader() -> None:
            await ready.wait()
            observed["tags"] = posthog.get_tags()
            observed["scope"] = current_scope()
            done.set()

        await asyncio.gather(writer(), reader())
        observed["after"] = posthog.get_tags()
        return observed

    observed = asyncio.run(main())
    assert observed == {"tags": {}, "scope": None, "after": {}}


def test_scoped_on_an_async_function(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()

    @posthog.scoped()
    async def handler(i: int) -> dict[str, Any]:
        posthog.tag("h", i)
        await asyncio.sleep(0)
        client.capture("in handler", distinct_id="u")
        return posthog.get_tags()

    assert inspect.iscoroutinefunction(handler)
    assert handler.__name__ == "handler"

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        with posthog.new_context():
            posthog.tag("outer", 1)
            inner = await handler(7)
            return inner, posthog.get_tags()

    inner, outer = asyncio.run(main())
    assert inner == {"outer": 1, "h": 7}
    assert outer == {"outer": 1}
    assert only_event(client, server)["properties"]["h"] == 7


def test_client_scoped_async_captures_exception_raised_after_an_await(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()

    @client.scoped(capture_exceptions=True)
    async def handler() -> None:
        posthog.tag("route", "/checkout")
        posthog.identify_context("buyer")
        await asyncio.sleep(0)
        raise ValueError("after await")

    with pytest.raises(ValueError, match="after await"):
        asyncio.run(handler())
    event = only_event(client, server)
    assert event["event"] == "$exception"
    assert event["distinct_id"] == "buyer"
    assert event["properties"]["route"] == "/checkout"
    assert event["properties"]["$exception_list"][0]["value"] == "after await"


def test_scoped_on_a_sync_function_with_fresh() -> None:
    @posthog.scoped(fresh=True)
    def handler() -> tuple[dict[str, Any], Any]:
        posthog.tag("inside", 1)
        scope = current_scope()
        assert scope is not None
        return posthog.get_tags(), scope.lookup("distinct_id")

    with posthog.new_context():
        posthog.tag("outside", 1)
        posthog.identify_context("u")
        assert handler() == ({"inside": 1}, None)
        assert posthog.get_tags() == {"outside": 1}
    assert handler.__name__ == "handler"


# ---------------------------------------------------------------- nesting, fresh, mutators


def test_nested_scopes_inherit_and_children_override() -> None:
    with posthog.new_context() as outer:
        posthog.tag("level", "parent")
        posthog.tag("parent_only", 1)
        posthog.identify_context("parent-user")
        posthog.set_context_session("parent-session")
        posthog.set_context_device_id("parent-device")
        with posthog.new_context() as inner:
            assert current_scope() is inner
            assert inner is not outer
            posthog.tag("level", "child")
            assert posthog.get_tags() == {"level": "child", "parent_only": 1}
            assert inner.lookup("distinct_id") == "parent-user"
            assert inner.lookup("session_id") == "parent-session"
            assert inner.lookup("device_id") == "parent-device"
            posthog.identify_context("child-user")
            assert inner.lookup("distinct_id") == "child-user"
        assert current_scope() is outer
        assert posthog.get_tags() == {"level": "parent", "parent_only": 1}
        assert outer.lookup("distinct_id") == "parent-user"
    assert current_scope() is None


def test_fresh_scope_starts_empty_and_its_children_stop_there() -> None:
    # spec §9 behaviour 17
    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.identify_context("u")
        posthog.set_context_session("s")
        posthog.set_context_device_id("d")
        posthog.set_capture_exception_code_variables_context(True)
        with posthog.new_context(fresh=True) as fresh:
            assert posthog.get_tags() == {}
            for name in ("distinct_id", "session_id", "device_id"):
                assert fresh.lookup(name) is None
            assert fresh.code_variable_setting("capture") is None
            posthog.tag("f", 2)
            with posthog.new_context() as child:
                assert posthog.get_tags() == {"f": 2}
                assert child.lookup("distinct_id") is None
        assert posthog.get_tags() == {"t": 1}


def test_fresh_scope_event_is_personless(server: ScriptedServer, make_client: MakeClient) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.identify_context("u")
        posthog.tag("t", 1)
        with posthog.new_context(fresh=True):
            client.capture("e")
    event = only_event(client, server)
    assert is_uuid4(event["distinct_id"])
    assert event["properties"]["$process_person_profile"] is False
    assert event["properties"]["$context_tags"] == []
    assert "t" not in event["properties"]


def test_mutators_are_no_ops_outside_a_context(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    posthog.tag("t", 1)
    posthog.identify_context("u")
    posthog.set_context_session("s")
    posthog.set_context_device_id("d")
    posthog.set_capture_exception_code_variables_context(True)
    posthog.set_code_variables_mask_patterns_context(["x"])
    posthog.set_code_variables_ignore_patterns_context(["y"])
    posthog.set_code_variables_mask_url_credentials_context(False)
    posthog.set_code_variables_detect_secrets_context(False)
    client.tag("t2", 2)
    client.identify_context("u2")
    assert current_scope() is None
    assert posthog.get_tags() == {}
    assert client.get_tags() == {}
    # and nothing was stored for the next context either
    with posthog.new_context() as scope:
        assert posthog.get_tags() == {}
        assert scope.lookup("distinct_id") is None
        assert scope.code_variable_setting("capture") is None
    client.capture("e")
    props = only_event(client, server)["properties"]
    assert "t" not in props
    assert "$context_tags" not in props
    assert "$session_id" not in props
    assert props["$process_person_profile"] is False


def test_get_tags_returns_a_copy() -> None:
    with posthog.new_context():
        posthog.tag("a", 1)
        with posthog.new_context():
            posthog.tag("b", 2)
            tags = posthog.get_tags()
            tags["a"] = "changed"
            tags["c"] = 3
            assert posthog.get_tags() == {"a": 1, "b": 2}
        only_parent = posthog.get_tags()
        only_parent["a"] = "changed"
        assert posthog.get_tags() == {"a": 1}
    outside = posthog.get_tags()
    outside["x"] = 1
    assert posthog.get_tags() == {}


def test_tag_overwrites_same_name_in_same_scope() -> None:
    with posthog.new_context():
        posthog.tag("k", 1)
        posthog.tag("k", 2)
        assert posthog.get_tags() == {"k": 2}


# ---------------------------------------------------------------- generators


def test_generator_entering_a_context_restores_the_scope_when_closed(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()

    def gen() -> Iterator[dict[str, Any]]:
        with client.new_context(capture_exceptions=True):
            posthog.tag("gen", 1)
            yield posthog.get_tags()
            yield posthog.get_tags()

    with posthog.new_context() as outer:
        posthog.tag("outer", 1)
        g = gen()
        assert next(g) == {"outer": 1, "gen": 1}
        g.close()  # GeneratorExit through the capturing context
        assert current_scope() is outer
        assert posthog.get_tags() == {"outer": 1}

        assert list(gen()) == [{"outer": 1, "gen": 1}] * 2
        assert current_scope() is outer
        assert posthog.get_tags() == {"outer": 1}
    assert current_scope() is None
    assert sent(client, server) == []  # GeneratorExit is never captured


def test_async_generator_entering_a_context_restores_the_scope() -> None:
    async def agen() -> AsyncIterator[dict[str, Any]]:
        with posthog.new_context():
            posthog.tag("agen", 1)
            yield posthog.get_tags()
            await asyncio.sleep(0)
            yield posthog.get_tags()

    async def main() -> None:
        with posthog.new_context() as outer:
            posthog.tag("outer", 1)
            items = [item async for item in agen()]
            assert items == [{"outer": 1, "agen": 1}] * 2
            assert current_scope() is outer

            g = agen()
            assert await g.__anext__() == {"outer": 1, "agen": 1}
            await g.aclose()
            assert current_scope() is outer
            assert posthog.get_tags() == {"outer": 1}
        assert current_scope() is None

    asyncio.run(main())


def test_generator_closed_from_another_thread_does_not_raise() -> None:
    # §4.2: the scope is popped on exit; a generator finalised elsewhere (another thread,
    # hence another contextvars Context) must not blow up in the caller that closes it
    def gen() -> Iterator[int]:
        with posthog.new_context():
            posthog.tag("gen", 1)
            yield 1

    outcome: dict[str, Any] = {}

    def body() -> None:
        # while suspended inside its ``with`` the generator's scope is current here (Python
        # semantics), so run in a throw-away copy of the context
        g = gen()
        assert next(g) == 1

        def closer() -> None:
            try:
                g.close()
                outcome["closed"] = True
            except Exception as exc:
                outcome["error"] = repr(exc)
            outcome["scope_in_closer"] = current_scope()

        worker = threading.Thread(target=closer)
        worker.start()
        worker.join()

    contextvars.copy_context().run(body)
    assert current_scope() is None
    assert outcome == {"closed": True, "scope_in_closer": None}


def test_abandoned_async_generator_is_finalised_without_errors() -> None:
    # asyncio closes an abandoned async generator in a task of its own (another Context)
    async def agen() -> AsyncIterator[int]:
        with posthog.new_context():
            posthog.tag("agen", 1)
            yield 1
            yield 2

    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert [ctx.get("exception") or ctx.get("message") for ctx in reported] == []


# ---------------------------------------------------------------- event properties (§2.4)


def test_behaviour_16_with_the_module_api(server: ScriptedServer, module_client: Client) -> None:
    # spec §9 behaviour 16
    with posthog.new_context():
        posthog.tag("t", 1)
        posthog.tag("shared", "from-tag")
        posthog.tag("$os", "tag-os")
        posthog.identify_context("u")
        posthog.set_context_session("s")
        posthog.capture("plain")
        posthog.capture("override", properties={"shared": "explicit", "extra": True})
        posthog.capture("own session", properties={"$session_id": "mine"})
        posthog.capture("own id", distinct_id="explicit-user")
    posthog.flush()
    plain, override, own_session, own_id = server.events()

    assert plain["distinct_id"] == "u"
    props = plain["properties"]
    assert props["t"] == 1
    assert props["shared"] == "from-tag"
    assert sorted(props["$context_tags"]) == ["$os", "shared", "t"]
    assert props["$session_id"] == "s"
    assert props["$os"] == system_properties()["$os"]  # system context beats tags
    assert "$process_person_profile" not in props

    assert override["properties"]["shared"] == "explicit"
    assert override["properties"]["extra"] is True
    assert override["properties"]["t"] == 1
    # $context_tags lists tag names only
    assert sorted(override["properties"]["$context_tags"]) == ["$os", "shared", "t"]

    assert own_session["properties"]["$session_id"] == "mine"
    assert own_id["distinct_id"] == "explicit-user"
    assert own_id["properties"]["t"] == 1


def test_set_and_set_once_fold_tags_into_the_person_dict(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("plan", "pro")
        posthog.tag("region", "eu")
        posthog.identify_context("u")
        posthog.set_context_session("s")
        client.set(properties={"plan": "free", "a": 1})
        client.set_once(properties={"b": 2})
    set_event, once_event = sent(client, server)

    assert set_event["event"] == "$set"
    assert set_event["distinct_id"] == "u"
    person = set_event["$set"]
    assert {k: v for k, v in person.items() if k != "$context_tags"} == {
        "plan": "free",
        "region": "eu",
        "a": 1,
        "$session_id": "s",
    }
    assert sorted(person["$context_tags"]) == ["plan", "region"]
    assert "$session_id" not in set_event["properties"]
    assert "plan" not in set_event["properties"]

    assert once_event["event"] == "$set_once"
    once = once_event["$set_once"]
    assert once["b"] == 2 and once["plan"] == "pro" and once["$session_id"] == "s"
    assert sorted(once["$context_tags"]) == ["plan", "region"]
    assert "$set" not in once_event


def test_set_in_a_context_without_identity_sends_nothing(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("plan", "pro")
        assert client.set(properties={"a": 1}) is None
    assert sent(client, server) == []


def test_group_identify_and_alias_get_only_the_session(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context():
        posthog.tag("plan", "pro")
        posthog.identify_context("u")
        posthog.set_context_session("s")
        client.group_identify("company", "42", {"n": 1})
        client.alias("old-id")
    group, alias = sent(client, server)

    assert group["event"] == "$groupidentify"
    assert group["properties"]["$session_id"] == "s"
    assert group["properties"]["$group_set"] == {"n": 1}
    assert "plan" not in group["properties"]
    assert "$context_tags" not in group["properties"]

    assert alias["event"] == "$create_alias"
    assert alias["distinct_id"] == "old-id"
    assert alias["properties"]["distinct_id"] == "old-id"
    assert alias["properties"]["alias"] == "u"  # the context identity
    assert alias["properties"]["$session_id"] == "s"
    assert "plan" not in alias["properties"]
    assert "$context_tags" not in alias["properties"]


def test_device_id_is_stored_but_never_added_to_events(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    device = f"device-{uuid.uuid4().hex}"  # built at run time: not in any source line
    with posthog.new_context() as outer:
        posthog.set_context_device_id(device)
        assert outer.lookup("device_id") == device
        with posthog.new_context():
            scope = current_scope()
            assert scope is not None and scope.lookup("device_id") == device
            client.capture("e", distinct_id="u")
            client.set(distinct_id="u", properties={"a": 1})
            client.capture_exception(ValueError("x"), distinct_id="u")
    events = sent(client, server)
    assert len(events) == 3
    for event in events:
        assert device not in json.dumps(event)


# ---------------------------------------------------------------- late resolver (§4.6)


def test_resolver_not_called_when_a_distinct_id_is_known(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    calls: list[int] = []

    def resolver() -> tuple[str | None, dict[str, Any] | None]:
        calls.append(1)
        return "late", None

    with posthog.new_context() as outer:
        outer.resolver = resolver
        client.capture("explicit", distinct_id="given")
        posthog.identify_context("parent-id")
        with posthog.new_context():
            client.capture("from parent")
    assert calls == []
    explicit, from_parent = sent(client, server)
    assert explicit["distinct_id"] == "given"
    assert from_parent["distinct_id"] == "parent-id"


def test_resolver_result_is_cached_and_its_tags_show_up(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    calls: list[int] = []

    def resolver() -> tuple[str | None, dict[str, Any] | None]:
        calls.append(1)
        return "late-user", {"route": "/orders/{id}", "email": "a@example.com"}

    with posthog.new_context() as scope:
        scope.resolver = resolver
        posthog.tag("t", 1)
        client.capture("first")
        assert calls == [1]
        client.capture("second")
        client.capture_exception(ValueError("x"))
        assert calls == [1]
        assert scope.lookup("distinct_id") == "late-user"
        assert posthog.get_tags() == {"t": 1, "route": "/orders/{id}", "email": "a@example.com"}
    first, second, exc = sent(client, server)
    for event in (first, second, exc):
        assert event["distinct_id"] == "late-user"
        assert event["properties"]["route"] == "/orders/{id}"
        assert "$process_person_profile" not in event["properties"]
    assert sorted(first["properties"]["$context_tags"]) == ["email", "route", "t"]


def test_resolver_is_called_at_most_once_per_event_until_it_knows(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    answers: list[str | None] = [None, None, "finally"]
    calls: list[str | None] = []

    def resolver() -> tuple[str | None, dict[str, Any] | None]:
        answer = answers[len(calls)]
        calls.append(answer)
        return answer, None

    with posthog.new_context() as scope:
        scope.resolver = resolver
        client.capture("one")
        assert len(calls) == 1
        client.capture_exception(ValueError("two"))
        assert len(calls) == 2
        client.capture("three")
        client.capture("four")
        assert len(calls) == 3
    one, two, three, four = sent(client, server)
    assert one["properties"]["$process_person_profile"] is False
    assert two["properties"]["$process_person_profile"] is False
    assert three["distinct_id"] == four["distinct_id"] == "finally"


def test_resolver_of_a_parent_scope_is_consulted_but_not_across_fresh(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    calls: list[int] = []

    def resolver() -> tuple[str | None, dict[str, Any] | None]:
        calls.append(1)
        return "parent-late", None

    with posthog.new_context() as outer:
        outer.resolver = resolver
        with posthog.new_context(fresh=True):
            client.capture("fresh child")
        assert calls == []
        with posthog.new_context():
            client.capture("child")
        client.capture("parent again")
    assert calls == [1]
    fresh_child, child, parent = sent(client, server)
    assert fresh_child["properties"]["$process_person_profile"] is False
    assert child["distinct_id"] == parent["distinct_id"] == "parent-late"


@pytest.mark.parametrize("debug", [False, True])
def test_raising_resolver_is_logged_and_event_is_personless(
    server: ScriptedServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    client = make_client(debug=debug)

    def resolver() -> tuple[str | None, dict[str, Any] | None]:
        raise RuntimeError("resolver exploded")

    with posthog.new_context() as scope:
        scope.resolver = resolver
        returned = client.capture("e")
        exc_uuid = client.capture_exception(ValueError("boom"))
    assert is_uuid4(returned)
    assert is_uuid4(exc_uuid)
    event, exc_event = sent(client, server)
    assert event["uuid"] == returned
    assert is_uuid4(event["distinct_id"])
    assert event["properties"]["$process_person_profile"] is False
    assert exc_event["properties"]["$process_person_profile"] is False
    messages = errors(caplog)
    assert messages and all(m.startswith("[PostHog] ") for m in messages)


# ---------------------------------------------------------------- re-activation (§4.6)


def test_reactivated_scope_on_another_thread(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client()
    with posthog.new_context() as scope:
        posthog.tag("route", "/stream")
        posthog.identify_context("streamer")
        posthog.set_context_session("sess")
    assert current_scope() is None  # the "middleware" has returned

    seen: dict[str, Any] = {}

    def produce_body() -> None:
        seen["before"] = current_scope()
        with scope.activated():
            seen["inside"] = current_scope()
            client.capture("chunk")
            try:
                with client.new_context(capture_exceptions=True):
                    posthog.tag("chunk", 3)
                    raise OSError(5, "broken pipe")
            except OSError:
                seen["raised"] = True
        seen["after"] = current_scope()

    worker = threading.Thread(target=produce_body)
    worker.start()
    worker.join()
    assert seen == {"before": None, "inside": scope, "raised": True, "after": None}

    chunk, exc = sent(client, server)
    assert chunk["event"] == "chunk"
    assert chunk["distinct_id"] == "streamer"
    assert chunk["properties"]["route"] == "/stream"
    assert chunk["properties"]["$session_id"] == "sess"
    assert exc["event"] == "$exception"
    assert exc["distinct_id"] == "streamer"
    assert exc["properties"]["route"] == "/stream"
    assert exc["properties"]["chunk"] == 3
    assert exc["properties"]["$session_id"] == "sess"
    assert exc["properties"]["$exception_list"][0]["type"] == "OSError"


def test_reactivation_on_the_same_thread_nests_and_restores() -> None:
    with posthog.new_context() as first:
        posthog.tag("first", 1)
    with posthog.new_context() as second:
        posthog.tag("second", 1)
        with first.activated() as active:
            assert active is first
            assert posthog.get_tags() == {"first": 1}
        assert current_scope() is second
    assert current_scope() is None


def test_scope_is_a_public_hook_type() -> None:
    with posthog.new_context() as scope:
        assert isinstance(scope, Scope)
        assert current_scope() is scope


# ---------------------------------------------------------------- code-variable overrides (§4.5)


def _raise_with_locals() -> None:
    visible_local = "hello"
    raise ValueError(visible_local)


def _capture_raised(client: Client) -> None:
    try:
        _raise_with_locals()
    except ValueError as exc:
        assert client.capture_exception(exc) is not None


def test_context_enables_code_variables_over_client_setting(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(capture_exception_code_variables=False)
    _capture_raised(client)
    with posthog.new_context():
        posthog.set_capture_exception_code_variables_context(True)
        with posthog.new_context():  # inherited by children
            _capture_raised(client)
    without, with_vars = sent(client, server)
    assert "code_variables" not in frame_named(without, "_raise_with_locals")
    frame = frame_named(with_vars, "_raise_with_locals")
    assert frame["in_app"] is True
    assert frame["code_variables"] == {"visible_local": "hello"}


def test_context_disables_code_variables_over_client_setting(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(capture_exception_code_variables=True)
    _capture_raised(client)
    with posthog.new_context():
        posthog.set_capture_exception_code_variables_context(False)
        _capture_raised(client)
    with_vars, without = sent(client, server)
    assert frame_named(with_vars, "_raise_with_locals")["code_variables"] == {
        "visible_local": "hello"
    }
    assert "code_variables" not in frame_named(without, "_raise_with_locals")


def _raise_with_secrets() -> None:
    password = "hunter2-plain"  # noqa: F841 - read from the frame
    foo_value = "plain"  # noqa: F841
    url = "https://user:pw@example.com/path"  # noqa: F841
    high_entropy = "aB3$xY9!qW2#eR7&tZ"  # noqa: F841
    _hidden_name = 1
    raise ValueError("with secrets")


def _capture_secrets(client: Client, server: ScriptedServer) -> dict[str, Any]:
    try:
        _raise_with_secrets()
    except ValueError as exc:
        client.capture_exception(exc)
    event = sent(client, server)[-1]
    return frame_named(event, "_raise_with_secrets")["code_variables"]


def test_context_masking_overrides_beat_client_settings(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    client = make_client(capture_exception_code_variables=True)
    redacted = "$$_posthog_redacted_based_on_masking_rules_$$"

    defaults = _capture_secrets(client, server)
    assert defaults["password"] == redacted
    assert defaults["foo_value"] == "plain"
    assert defaults["url"] == f"https://{redacted}@example.com/path"
    assert defaults["high_entropy"] == redacted
    assert defaults["_hidden_name"] == 1

    with posthog.new_context():
        posthog.set_code_variables_mask_patterns_context(["(?i)foo"])
        posthog.set_code_variables_ignore_patterns_context(["^_hidden"])
        posthog.set_code_variables_mask_url_credentials_context(False)
        posthog.set_code_variables_detect_secrets_context(False)
        overridden = _capture_secrets(client, server)
    assert overridden["password"] == "hunter2-plain"  # the context list replaced the defaults
    assert overridden["foo_value"] == redacted
    assert overridden["url"] == "https://user:pw@example.com/path"
    assert overridden["high_entropy"] == "aB3$xY9!qW2#eR7&tZ"
    assert "_hidden_name" not in overridden


# ---------------------------------------------------------------- capture_exceptions=None (§4.2)


def _raise_in(ctx: Any) -> None:
    with pytest.raises(ValueError), ctx:
        raise ValueError("escaping")


def test_capture_exceptions_none_follows_the_client_setting(
    server: ScriptedServer, make_client: MakeClient
) -> None:
    on = make_client(enable_exception_autocapture=True)
    off = make_client()
    _raise_in(off.new_context())
    _raise_in(on.new_context())
    _raise_in(off.new_context(capture_exceptions=True))  # explicit True forces capture
    _raise_in(on.new_context(capture_exceptions=False))
    on.flush()
    off.flush()
    events = server.events()
    assert len(events) == 2
    assert all(e["event"] == "$exception" for e in events)


def test_no_client_follows_the_global_clients_setting(
    server: ScriptedServer, module_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the global client was built with autocapture off; the module flag changing later
    # does not matter once it exists
    monkeypatch.setattr(posthog, "enable_exception_autocapture", True)
    _raise_in(posthog.new_context())
    module_client.flush()
    assert server.events() == []
    module_client.enable_exception_autocapture = True
    monkeypatch.setattr(posthog, "enable_exception_autocapture", False)
    _raise_in(posthog.new_context())
    module_client.flush()
    assert [e["event"] for e in server.events()] == ["$exception"]


def test_no_client_and_no_global_client_follows_the_module_setting(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    posthog.api_key = "phc_module"
    posthog.host = server.url
    assert posthog.default_client is None
    _raise_in(posthog.new_context())  # module setting off (behaviour 19)
    assert posthog.default_client is None
    monkeypatch.setattr(posthog, "enable_exception_autocapture", True)
    with posthog.new_context():
        posthog.tag("where", "module")
        _raise_in(posthog.new_context())
    assert posthog.default_client is not None
    posthog.flush()
    (event,) = server.events()
    assert event["event"] == "$exception"
    assert event["properties"]["where"] == "module"
