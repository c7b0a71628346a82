from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from posthog.flags import _base
from posthog.flags.local import FlagDefinitions, LocalResult

FIXED_NOW = datetime(2024, 3, 31, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_log_memory() -> Iterator[None]:
    _base.forget_logged()
    yield
    _base.forget_logged()


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Freeze the module clock at 2024-03-31 12:00 UTC."""
    monkeypatch.setattr(_base, "utc_now", lambda: FIXED_NOW)
    return FIXED_NOW


def flag(
    key: str = "flag",
    groups: list[Any] | None = None,
    *,
    active: Any = True,
    flag_id: Any = 1,
    **filters: Any,
) -> dict[str, Any]:
    """A flag definition; ``groups`` defaults to one condition with a 100 % rollout."""
    if groups is None:
        groups = [{"properties": [], "rollout_percentage": 100}]
    extra = {k: filters.pop(k) for k in list(filters)
             if k in ("ensure_experience_continuity", "bucketing_identifier", "version",
                      "has_experiment")}
    return {"id": flag_id, "key": key, "active": active, "filters": {"groups": groups, **filters},
            **extra}


def prop(key: str, operator: str | None, value: Any, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "value": value, "type": "person", **extra}
    if operator is not None:
        out["operator"] = operator
    return out


def compile_defs(*flags: dict[str, Any], **data: Any) -> FlagDefinitions:
    body: dict[str, Any] = {"flags": list(flags), "group_type_mapping": {}, "cohorts": {}}
    body.update(data)
    return FlagDefinitions.compile(body)


def one(filter_: dict[str, Any], props: dict[str, Any], *, pmv: int = 2,
        now: datetime | None = None) -> LocalResult:
    """Evaluate a single-filter, 100 %-rollout flag against ``props``."""
    defs = compile_defs(flag("f", [{"properties": [filter_], "rollout_percentage": 100}]),
                        property_matching_version=pmv)
    return defs.evaluate("f", "some-id", person_properties=props, now=now)
