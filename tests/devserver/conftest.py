"""Fixtures for the dev server tests: a fresh server per test and a keep-alive HTTP session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from posthog_integrations.devserver import DevServer


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer() as srv:
        yield srv


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
