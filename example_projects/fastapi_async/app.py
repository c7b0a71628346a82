"""A FastAPI app that uses ``AsyncPosthog`` through its lifespan.

    python3 -m posthog_integrations.devserver --flags example_projects/flags.json &
    POSTHOG_PERSONAL_API_KEY=phs_local uvicorn example_projects.fastapi_async.app:app

By default events go to the local dev server (``POSTHOG_HOST``, ``127.0.0.1:8010``);
set ``POSTHOG_PROJECT_API_KEY`` and ``POSTHOG_HOST`` for a real project. The client is
created at import (construction binds no event loop and opens nothing), started and
shut down by the lifespan, so events still queued when the server stops are delivered.
Request handlers capture without awaiting: nothing on the request path waits on PostHog.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

import posthog
from posthog import AsyncPosthog
from posthog_integrations.starlette import PosthogMiddleware

posthog_client = AsyncPosthog(
    os.environ.get("POSTHOG_PROJECT_API_KEY", "phc_example"),
    host=os.environ.get("POSTHOG_HOST", "http://127.0.0.1:8010"),
    # A personal API key enables local flag evaluation (no request per evaluate_flags).
    secret_key=os.environ.get("POSTHOG_PERSONAL_API_KEY"),
    super_properties={"service": "fastapi-example"},
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with posthog_client:  # starts the workers; shutdown() delivers what is queued
        yield


app = FastAPI(lifespan=lifespan)
# One request scope per request (ids from posthog-js headers, request tags), and
# unhandled exceptions captured as $exception, through the same AsyncPosthog.
app.add_middleware(PosthogMiddleware, client=posthog_client, capture_exceptions=True)


@app.post("/checkout/{user_id}")
async def checkout(user_id: str, request: Request) -> dict[str, Any]:
    posthog.identify_context(user_id)  # the request scope's identity
    plan = request.headers.get("x-plan", "free")
    flags = await posthog_client.evaluate_flags(
        user_id, person_properties={"plan": plan}, flag_keys=["new-checkout"]
    )
    new_flow = flags.is_enabled("new-checkout")
    posthog_client.capture(
        "checkout started",
        properties={"new_flow": new_flow},
        flags=flags,  # adds $feature/new-checkout, no extra request
    )
    return {"new_flow": new_flow}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("checkout exploded")  # captured by the middleware, then a 500
