"""Per-request cost of the framework integrations, in-process (no server, no network).

    .venv/bin/python benchmarks/bench_middleware.py              # every framework
    .venv/bin/python benchmarks/bench_middleware.py flask asgi   # some of them

For each framework a trivial app is called directly (Django through its WSGI handler,
Flask as a WSGI callable, ASGI apps awaited in one event loop) with and without the
integration, with the four PostHog tracing headers, ``X-Forwarded-For`` and a browser
``User-Agent`` on every request. The client is built with ``send=False``. Rounds of the
variants alternate; each figure is the best round (µs per request), and the overhead is
the difference.

The request's tags (``$current_url``, ``$ip``...) are built when first read, so a second
line measures a view that reads them (``posthog.get_tags()``, what every event built in the
request does) against the same bare view: the overhead of a request that sends events,
without the cost of the events themselves. Nothing here asserts.
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "core"), str(ROOT)]

import posthog  # noqa: E402

UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36"
    " (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
HEADERS = {
    "Host": "example.com",
    "X-POSTHOG-DISTINCT-ID": "018f3a5c-0c2e-7d4b-9a55-6f1f0d2e3b4c",
    "X-POSTHOG-SESSION-ID": "018f3a5c-1111-7d4b-9a55-6f1f0d2e3b4c",
    "X-POSTHOG-WINDOW-ID": "018f3a5c-2222-7d4b-9a55-6f1f0d2e3b4c",
    "X-POSTHOG-DEVICE-ID": "018f3a5c-3333-7d4b-9a55-6f1f0d2e3b4c",
    "X-Forwarded-For": "203.0.113.5, 10.0.0.1",
    "User-Agent": UA,
}
PATH = "/items/42"  # the view that does nothing
TAGS_PATH = "/tags/42"  # the view that reads the request's tags
ROUNDS = 20
CALLS = 2_000

CLIENT = posthog.Client("phc_bench", send=False)

Runner = Callable[[int], float]  # runs n requests, returns seconds


# ---------------------------------------------------------------- timing and report


def best_of(variants: dict[str, Runner], rounds: int = ROUNDS) -> dict[str, float]:
    """Best µs per request of each variant (rounds alternate between the variants)."""
    best = dict.fromkeys(variants, float("inf"))
    for run in variants.values():
        run(CALLS // 4)  # warm up caches (compiled options, host checks, routes)
    for _ in range(rounds):
        for name, run in variants.items():
            gc.collect()
            gc.disable()
            try:
                seconds = run(CALLS)
            finally:
                gc.enable()
            best[name] = min(best[name], seconds / CALLS * 1e6)
    return best


def measure(
    framework: str, bare: Callable[[str], Runner], wrapped: Callable[[str], Runner]
) -> None:
    """``bare(path)`` / ``wrapped(path)`` give a runner for requests to ``path``."""
    best = best_of({
        "bare": bare(PATH),
        "with": wrapped(PATH),
        "bare+tags": bare(TAGS_PATH),
        "with+tags": wrapped(TAGS_PATH),
    })
    print(f"{framework:<10} bare {best['bare']:7.2f} µs   with integration {best['with']:7.2f} µs"
          f"   overhead {best['with'] - best['bare']:6.2f} µs")
    tags_overhead = best["with+tags"] - best["bare+tags"]
    print(f"{'':<10} view reading the tags: bare {best['bare+tags']:7.2f} µs   with integration"
          f" {best['with+tags']:7.2f} µs   overhead {tags_overhead:6.2f} µs")


# ---------------------------------------------------------------- WSGI


def wsgi_environ(path: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in HEADERS.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def wsgi_runner(app: Callable[..., Iterable[bytes]]) -> Callable[[str], Runner]:
    """Runners calling ``app`` as a WSGI server would: a fresh environ each, the body
    consumed and closed."""

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def for_path(path: str) -> Runner:
        base = wsgi_environ(path)

        def run(n: int) -> float:
            environs = []
            for _ in range(n):
                environ = dict(base)
                environ["wsgi.input"] = io.BytesIO()
                environs.append(environ)
            start = time.perf_counter()
            for environ in environs:
                body = app(environ, start_response)
                for _chunk in body:
                    pass
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            return time.perf_counter() - start

        return run

    return for_path


# ---------------------------------------------------------------- Django


def bench_django() -> None:
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    def item(request: Any, pk: int) -> HttpResponse:
        return HttpResponse(b"ok")

    def tagged(request: Any, pk: int) -> HttpResponse:
        posthog.get_tags()
        return HttpResponse(b"ok")

    urls = types.ModuleType("bench_middleware_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("items/<int:pk>", item),
        path("tags/<int:pk>", tagged),
    ]
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["example.com"],
        ROOT_URLCONF=urls.__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        POSTHOG_MW_CLIENT=CLIENT,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    bare = WSGIHandler()
    settings.MIDDLEWARE = ["posthog_integrations.django.PosthogContextMiddleware"]
    wrapped = WSGIHandler()
    measure("django", wsgi_runner(bare), wsgi_runner(wrapped))


# ---------------------------------------------------------------- Flask


def bench_flask() -> None:
    from flask import Flask

    from posthog_integrations.flask import PostHog

    def make() -> Flask:
        app = Flask("bench")

        @app.get("/items/<int:pk>")
        def item(pk: int) -> str:
            return "ok"

        @app.get("/tags/<int:pk>")
        def tagged(pk: int) -> str:
            posthog.get_tags()
            return "ok"

        return app

    bare = make()
    wrapped = make()
    PostHog(wrapped, client=CLIENT)
    measure("flask", wsgi_runner(bare), wsgi_runner(wrapped))


# ---------------------------------------------------------------- ASGI


def asgi_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in HEADERS.items()],
        "client": ("10.0.0.1", 51000),
        "server": ("10.0.0.2", 8000),
    }


def asgi_runner(app: Any) -> Callable[[str], Runner]:
    """Runners awaiting ``app`` once per request in one event loop (a fresh scope each)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def calls(scopes: list[dict[str, Any]]) -> float:
        start = time.perf_counter()
        for scope in scopes:
            await app(scope, receive, send)
        return time.perf_counter() - start

    def for_path(path: str) -> Runner:
        base = asgi_scope(path)

        def run(n: int) -> float:
            return asyncio.run(calls([dict(base) for _ in range(n)]))

        return run

    return for_path


START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"ok"}


async def raw_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == TAGS_PATH:
        posthog.get_tags()
    await send(START)
    await send(BODY)


def bench_asgi() -> None:
    from posthog_integrations.starlette import PosthogMiddleware

    wrapped = PosthogMiddleware(raw_app, client=CLIENT)
    measure("asgi", asgi_runner(raw_app), asgi_runner(wrapped))


def bench_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from posthog_integrations.starlette import PosthogMiddleware

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def tagged(request: Any) -> PlainTextResponse:
        posthog.get_tags()
        return PlainTextResponse("ok")

    routes = [Route("/items/{pk:int}", item), Route("/tags/{pk:int}", tagged)]
    bare = Starlette(routes=routes)
    wrapped = Starlette(routes=routes, middleware=[Middleware(PosthogMiddleware, client=CLIENT)])
    measure("starlette", asgi_runner(bare), asgi_runner(wrapped))


BENCHES = {
    "django": bench_django,
    "flask": bench_flask,
    "asgi": bench_asgi,
    "starlette": bench_starlette,
}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {list(BENCHES)}")
    print(f"Python {sys.version.split()[0]}; best of {ROUNDS} rounds x {CALLS} requests")
    for name in names:
        BENCHES[name]()
    CLIENT.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
