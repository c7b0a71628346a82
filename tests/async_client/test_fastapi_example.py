"""The FastAPI example app: AsyncPosthog through the lifespan, with the ASGI middleware."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthog_integrations.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]
MODULE = "example_projects.fastapi_async.app"


@pytest.fixture
def devserver(monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    with DevServer() as srv:
        srv.set_flags(json.loads((ROOT / "example_projects" / "flags.json").read_text()))
        monkeypatch.setenv("POSTHOG_HOST", srv.url)
        monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phs_example")
        sys.modules.pop(MODULE, None)
        yield srv
        sys.modules.pop(MODULE, None)


def test_example_app_captures_through_its_lifespan(devserver: DevServer) -> None:
    example = importlib.import_module(MODULE)
    app = example.app

    async def serve() -> list[Any]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            pro = await http.post("/checkout/user-42", headers={"x-plan": "pro"})
            boom = await http.get("/boom")
            return [pro.json(), boom.status_code]

    assert asyncio.run(serve()) == [{"new_flow": True}, 500]
    assert example.posthog_client._closed  # the lifespan shut it down, delivering the queue
    (checkout,) = devserver.events("checkout started")
    assert checkout["distinct_id"] == "user-42"
    assert checkout["properties"]["$feature/new-checkout"] is True
    assert checkout["properties"]["$active_feature_flags"] == ["new-checkout"]
    assert checkout["properties"]["service"] == "fastapi-example"
    (called,) = devserver.events("$feature_flag_called")
    assert called["properties"]["locally_evaluated"] is True
    (error,) = devserver.events("$exception")
    assert error["properties"]["$exception_source"] == "asgi.middleware"
    assert error["properties"]["$exception_list"][0]["value"] == "checkout exploded"
    assert error["properties"]["$exception_level"] == "error"
    flag_calls = [r for r in devserver.requests if r["path"].rstrip("/") == "/flags"]
    assert flag_calls == []  # evaluated locally from the loaded definitions
