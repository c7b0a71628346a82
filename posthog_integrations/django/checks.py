"""``manage.py check`` messages for PostHog settings (spec §2.8), registered by the app.

Errors: ``posthog.E001`` ``POSTHOG`` not a dict, ``E002`` a ``POSTHOG`` value of the wrong
type, ``E003`` a ``POSTHOG_MW_*`` value of the wrong type. Warnings: ``W001`` client
configured but middleware missing, ``W002`` middleware listed twice, ``W003`` CORS headers,
``W004`` user identity wanted without ``AuthenticationMiddleware``, ``W005`` unknown
``POSTHOG`` key, ``W006`` ``POSTHOG`` without ``api_key``, ``W007`` unknown ``POSTHOG_MW_*``
setting, ``W008`` deprecated setting. Info: ``I001`` middleware placed low in ``MIDDLEWARE``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage

import posthog
from posthog_integrations._request import POSTHOG_TRACING_HEADERS
from posthog_integrations._request_values import check_ip_source
from posthog_integrations.django._config import (
    CLIENT_KEYS,
    MW_PREFIX,
    MW_SETTINGS,
    type_problem,
)

OURS = (
    "posthog_integrations.django.PosthogContextMiddleware",
    "posthog.integrations.django.PosthogContextMiddleware",
)
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
# Middleware that should run inside the request scope (spec §2.6).
_BELOW = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    AUTH_MIDDLEWARE,
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
# django-cors-headers' default allowed headers (corsheaders.defaults.default_headers).
_CORS_DEFAULT_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-csrftoken",
    "x-requested-with",
)
_MISSING: Any = object()


def check_posthog(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every PostHog check (the function registered with Django's check framework)."""
    return [*check_posthog_dict(), *check_mw_settings(), *check_middleware(), *check_cors()]


def _setting(name: str) -> Any:
    return getattr(settings, name, _MISSING)


# ---------------------------------------------------------------- POSTHOG = {...}


def check_posthog_dict() -> list[CheckMessage]:
    config = _setting("POSTHOG")
    if config is _MISSING or config is None:
        return []
    if not isinstance(config, Mapping):
        return [
            checks.Error(
                f"settings.POSTHOG must be a dict, not {type(config).__name__}.",
                hint='POSTHOG = {"api_key": "phc_...", "host": "https://us.i.posthog.com"}',
                id="posthog.E001",
            )
        ]
    messages: list[CheckMessage] = []
    for key, value in config.items():
        if key not in CLIENT_KEYS:
            close = difflib.get_close_matches(str(key), list(CLIENT_KEYS), n=1)
            messages.append(
                checks.Warning(
                    f"settings.POSTHOG has an unknown key {key!r}; it is ignored.",
                    hint=f"Did you mean {close[0]!r}?" if close else None,
                    id="posthog.W005",
                )
            )
        elif (problem := type_problem(key, value)) is not None:
            messages.append(
                checks.Error(f"settings.POSTHOG[{key!r}]: {problem}.", id="posthog.E002")
            )
    if not config.get("api_key") and not config.get("project_api_key"):
        messages.append(
            checks.Warning(
                "settings.POSTHOG has no 'api_key'; the PostHog client is not configured.",
                hint="Add your project API key (phc_...) as POSTHOG['api_key'].",
                id="posthog.W006",
            )
        )
    return messages


# ---------------------------------------------------------------- POSTHOG_MW_*

_BOOLS = (
    "CAPTURE_TRACING_HEADERS",
    "TRUST_TRACING_HEADERS",
    "CAPTURE_USER_EMAIL",
    "CAPTURE_IP",
    "CAPTURE_QUERY_STRING",
    "CAPTURE_ROUTE",
)
_CALLABLES = (
    "REQUEST_FILTER",
    "EXTRA_PROPERTIES",
    "EXTRA_TAGS",
    "PROPERTIES_MAP",
    "TAG_MAP",
    "USER_ID",
    "CLIENT_RESOLVER",
)


def _mw_problem(suffix: str, value: Any) -> str | None:
    """Why ``POSTHOG_MW_<suffix> = value`` is wrong, or ``None``."""
    if suffix in _BOOLS:
        return None if isinstance(value, bool) else "must be True or False"
    if suffix in _CALLABLES:
        return None if value is None or callable(value) else "must be a callable or None"
    if suffix == "CLIENT":
        ok = value is None or isinstance(value, posthog.Client)
        return None if ok else "must be a posthog.Client (use POSTHOG_MW_CLIENT_RESOLVER " \
            "for a callable)"
    if suffix == "CAPTURE_EXCEPTIONS":
        return None if value is None or isinstance(value, bool) else "must be True, False or None"
    if suffix == "IDENTITY_PRECEDENCE":
        return None if value in ("header", "user") else "must be 'header' or 'user'"
    if suffix == "IP_SOURCE":
        ok = check_ip_source(value) is not None
        return None if ok else "must be 'forwarded', 'peer', an int >= 1 or a callable"
    if suffix == "READ_POSTHOG_COOKIE":
        return None if isinstance(value, (bool, Mapping)) else "must be a bool or a dict"
    if suffix == "CAPTURE_STATUS_CODES":
        ok = _iterable_of(value, lambda v: isinstance(v, int) and not isinstance(v, bool))
        return None if ok else "must be a set of int status codes"
    if suffix == "IGNORED_EXCEPTIONS":
        ok = _iterable_of(value, lambda v: isinstance(v, type) and issubclass(v, BaseException))
        return None if ok else "must be a tuple of exception classes"
    if suffix == "EXCLUDE_PATHS":
        ok = _iterable_of(value, lambda v: isinstance(v, (str, re.Pattern)))
        return None if ok else "must be a list of path prefixes or compiled regexes"
    return None


def _iterable_of(value: Any, test: Any) -> bool:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return False
    return all(test(v) for v in value)


def check_mw_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name in sorted(n for n in dir(settings) if n.startswith(MW_PREFIX)):
        value = getattr(settings, name)
        if name not in MW_SETTINGS:
            close = difflib.get_close_matches(name, sorted(MW_SETTINGS), n=1)
            messages.append(
                checks.Warning(
                    f"Unknown PostHog setting {name}; it is ignored.",
                    hint=f"Did you mean {close[0]}?" if close else None,
                    id="posthog.W007",
                )
            )
            continue
        problem = _mw_problem(name[len(MW_PREFIX):], value)
        if problem is not None:
            messages.append(checks.Error(f"{name} {problem}.", id="posthog.E003"))
        if name == MW_PREFIX + "TRUST_TRACING_HEADERS":
            messages.append(
                checks.Warning(
                    f"{name} is deprecated.",
                    hint="Use POSTHOG_MW_CAPTURE_TRACING_HEADERS.",
                    id="posthog.W008",
                )
            )
    return messages


# ---------------------------------------------------------------- MIDDLEWARE


def check_middleware() -> list[CheckMessage]:
    middleware = [m for m in (_setting("MIDDLEWARE") or ()) if isinstance(m, str)]
    positions = [i for i, m in enumerate(middleware) if m in OURS]
    messages: list[CheckMessage] = []
    config = _setting("POSTHOG")
    configured = isinstance(config, Mapping) and bool(
        config.get("api_key") or config.get("project_api_key")
    )
    if not positions:
        if configured:
            messages.append(
                checks.Warning(
                    "PostHog is configured but PosthogContextMiddleware is not in MIDDLEWARE:"
                    " events carry no request ids or tags.",
                    hint=f"Add {OURS[0]!r} directly after SecurityMiddleware.",
                    id="posthog.W001",
                )
            )
        return messages
    if len(positions) > 1:
        messages.append(
            checks.Warning(
                "PosthogContextMiddleware is listed more than once in MIDDLEWARE.",
                hint="Keep one entry, directly after SecurityMiddleware.",
                id="posthog.W002",
            )
        )
    above = [m for m in middleware[: positions[0]] if m in _BELOW]
    if above:
        messages.append(
            checks.Info(
                f"PosthogContextMiddleware comes after {', '.join(above)}: events those"
                " middleware capture carry no request ids or tags.",
                hint="Place it directly after SecurityMiddleware; user identity still"
                " resolves after authentication.",
                id="posthog.I001",
            )
        )
    wants_user = _setting(MW_PREFIX + "IDENTITY_PRECEDENCE") == "user" or callable(
        _setting(MW_PREFIX + "USER_ID")
    )
    if wants_user and AUTH_MIDDLEWARE not in middleware:
        messages.append(
            checks.Warning(
                "PostHog user identity is configured but AuthenticationMiddleware is not in"
                " MIDDLEWARE, so no session user is ever known.",
                hint=f"Add {AUTH_MIDDLEWARE!r}, or rely on DRF authentication.",
                id="posthog.W004",
            )
        )
    return messages


# ---------------------------------------------------------------- django-cors-headers


def check_cors(installed: bool | None = None) -> list[CheckMessage]:
    """``W003``: django-cors-headers would make browsers drop the tracing headers."""
    if installed is None:
        installed = apps.is_installed("corsheaders")
    if not installed:
        return []
    allows = any(
        _setting(name) not in (_MISSING, None, False, (), [])
        for name in (
            "CORS_ALLOW_ALL_ORIGINS",
            "CORS_ORIGIN_ALLOW_ALL",
            "CORS_ALLOWED_ORIGINS",
            "CORS_ORIGIN_WHITELIST",
            "CORS_ALLOWED_ORIGIN_REGEXES",
            "CORS_ORIGIN_REGEX_WHITELIST",
        )
    )
    if not allows:
        return []
    allowed = _setting("CORS_ALLOW_HEADERS")
    if allowed is _MISSING or allowed is None:
        allowed = _CORS_DEFAULT_HEADERS
    try:
        have = {str(h).lower() for h in allowed}
    except TypeError:
        return []
    missing = [h for h in POSTHOG_TRACING_HEADERS if h not in have]
    if not missing:
        return []
    return [
        checks.Warning(
            f"CORS_ALLOW_HEADERS lacks {', '.join(missing)}: browsers drop API calls that"
            " posthog-js tags with them.",
            hint="from corsheaders.defaults import default_headers; from posthog_integrations"
            " import POSTHOG_TRACING_HEADERS; CORS_ALLOW_HEADERS = (*default_headers,"
            " *POSTHOG_TRACING_HEADERS)",
            id="posthog.W003",
        )
    ]
