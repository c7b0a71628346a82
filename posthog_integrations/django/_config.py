"""Django settings for PostHog: the cached ``POSTHOG_MW_*`` options and the ``POSTHOG`` dict.

``POSTHOG_MW_*`` settings are read once into a :class:`DjangoConfig` and read again only after
Django's ``setting_changed`` signal names a ``POSTHOG*`` setting (``override_settings``), so a
request pays one global lookup. ``POSTHOG`` (a dict) configures the module-level client when
the app ``posthog_integrations.django`` is installed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

import posthog
from posthog._log import logger
from posthog_integrations._request import Options

MW_PREFIX = "POSTHOG_MW_"
_MISSING: Any = object()

# POSTHOG_MW_<suffix> -> canonical option name (spec §1.7); read as they are.
MW_OPTIONS: dict[str, str] = {
    "CAPTURE_TRACING_HEADERS": "capture_tracing_headers",
    "IDENTITY_PRECEDENCE": "identity_precedence",
    "USER_ID": "user_id",
    "READ_POSTHOG_COOKIE": "read_posthog_cookie",
    "CAPTURE_IP": "capture_ip",
    "IP_SOURCE": "ip_source",
    "CAPTURE_QUERY_STRING": "capture_query_string",
    "CAPTURE_ROUTE": "capture_route",
    "REQUEST_FILTER": "request_filter",
    "EXCLUDE_PATHS": "exclude_paths",
    "CAPTURE_STATUS_CODES": "capture_status_codes",
    "IGNORED_EXCEPTIONS": "ignored_exceptions",
}
# Settings with Django-specific handling (defaults, aliases, the client rule).
MW_SPECIAL = frozenset(
    {
        "CLIENT",
        "CLIENT_RESOLVER",
        "CAPTURE_EXCEPTIONS",
        "CAPTURE_USER_EMAIL",
        "EXTRA_PROPERTIES",
        "EXTRA_TAGS",
        "PROPERTIES_MAP",
        "TAG_MAP",
        "TRUST_TRACING_HEADERS",
    }
)
MW_SETTINGS = frozenset(MW_PREFIX + s for s in (*MW_OPTIONS, *MW_SPECIAL))


class DjangoConfig:
    """The ``POSTHOG_MW_*`` / ``POSTHOG_DRF_CLIENT`` settings as the integration uses them."""

    __slots__ = ("capture_exceptions", "drf_client", "mw_client", "options")

    def __init__(self) -> None:
        def get(name: str) -> Any:
            return getattr(settings, MW_PREFIX + name, _MISSING)

        values: dict[str, Any] = {}
        for suffix, option in MW_OPTIONS.items():
            value = get(suffix)
            if value is not _MISSING:
                values[option] = value
        legacy_trust = get("TRUST_TRACING_HEADERS")
        if legacy_trust is not _MISSING:
            values["trust_tracing_headers"] = legacy_trust
        for new, old, option in (
            ("EXTRA_PROPERTIES", "EXTRA_TAGS", "extra_properties"),
            ("PROPERTIES_MAP", "TAG_MAP", "properties_map"),
        ):
            value = get(new)  # the new name wins, even when set to None
            if value is _MISSING:
                value = get(old)
            if value is not _MISSING:
                values[option] = value
        email = get("CAPTURE_USER_EMAIL")
        values["capture_user_email"] = True if email is _MISSING else email

        # absent -> True (legacy default); None -> inherit the client; other non-bools -> True
        capture = get("CAPTURE_EXCEPTIONS")
        self.capture_exceptions: Any = capture
        if capture is _MISSING or (capture is not None and not isinstance(capture, bool)):
            capture = True
        values["capture_exceptions"] = capture

        client = get("CLIENT")
        if client is not _MISSING and client is not None and not isinstance(client, posthog.Client):
            logger.warning("POSTHOG_MW_CLIENT must be a posthog.Client; ignored")
            client = None
        self.mw_client: Any = None if client is _MISSING else client
        resolver = get("CLIENT_RESOLVER")
        if resolver is _MISSING or resolver is None:
            values["client"] = self.mw_client
        elif not callable(resolver):
            logger.warning("POSTHOG_MW_CLIENT_RESOLVER must be callable; ignored")
            values["client"] = self.mw_client
        else:
            values["client"] = _with_fallback(resolver, self.mw_client)
        drf = getattr(settings, "POSTHOG_DRF_CLIENT", None)
        self.drf_client: Any = drf if isinstance(drf, posthog.Client) else None
        self.options = Options.from_settings(values)

    def capture_setting(self) -> tuple[bool, Any]:
        """``(present, value)`` of ``POSTHOG_MW_CAPTURE_EXCEPTIONS`` as written."""
        value = self.capture_exceptions
        return (value is not _MISSING), (None if value is _MISSING else value)


def _with_fallback(resolver: Callable[[Any], Any], fallback: Any) -> Callable[[Any], Any]:
    if fallback is None:
        return resolver

    def resolve(request: Any) -> Any:
        found = resolver(request)
        return fallback if found is None else found

    return resolve


_config: DjangoConfig | None = None


def current() -> DjangoConfig:
    """The settings in force (read once, again after a ``POSTHOG*`` ``setting_changed``)."""
    config = _config
    if config is None:
        config = _load()
    return config


def _load() -> DjangoConfig:
    global _config
    config = _config = DjangoConfig()
    return config


def _on_setting_changed(*, setting: str, value: Any = None, **kwargs: Any) -> None:
    global _config
    if not setting.startswith("POSTHOG"):
        return
    _config = None
    if setting == "POSTHOG" and app_ready:
        apply_posthog_setting(value)


setting_changed.connect(
    _on_setting_changed, weak=False, dispatch_uid="posthog_integrations.django.settings"
)

# ---------------------------------------------------------------- POSTHOG = {...} (spec §2.8)

# Value kinds for type checks: name -> kind.
_STR = "str"
_BOOL = "bool"
_OPT_BOOL = "bool|None"
_INT = "int"
_NUMBER = "number"
_CALLABLE = "callable"
_MAPPING = "mapping"
_STR_LIST = "list[str]"
_ANY = "any"

CLIENT_KEYS: dict[str, str] = {
    "api_key": _STR,
    "project_api_key": _STR,
    "host": _STR,
    "secret_key": _STR,
    "personal_api_key": _STR,
    "project_root": _STR,
    "flag_fallback_cache_url": _STR,
    "app_host": _STR,
    "capture_mode": _STR,
    "on_error": _CALLABLE,
    "before_send": _CALLABLE,
    "super_properties": _MAPPING,
    "code_variables_mask_patterns": _STR_LIST,
    "code_variables_ignore_patterns": _STR_LIST,
    "in_app_modules": _STR_LIST,
    "code_variables_mask_url_credentials": _OPT_BOOL,
    "code_variables_detect_secrets": _OPT_BOOL,
    "flag_definition_cache_provider": _ANY,
    "metrics": _ANY,
    "traces": _ANY,
    "capture_compression": _ANY,
    "feature_flags_request_timeout_seconds": _NUMBER,
    "flush_interval": _NUMBER,
    "timeout": _NUMBER,
    "email_request_timeout_seconds": _NUMBER,
    **dict.fromkeys(
        (
            "poll_interval",
            "feature_flags_request_max_retries",
            "exception_autocapture_bucket_size",
            "exception_autocapture_refill_rate",
            "exception_autocapture_refill_interval_seconds",
            "max_queue_size",
            "flush_at",
            "max_retries",
            "thread",
            "email_request_max_retries",
        ),
        _INT,
    ),
    **dict.fromkeys(
        (
            "debug",
            "send",
            "sync_mode",
            "disabled",
            "disable_geoip",
            "is_server",
            "enable_exception_autocapture",
            "log_captured_exceptions",
            "privacy_mode",
            "enable_local_evaluation",
            "capture_exception_code_variables",
            "capture_trace_context",
            "enable_exception_autocapture_rate_limiting",
            "enable_full_ai_capture",
            "gzip",
            "historical_migration",
        ),
        _BOOL,
    ),
}


def type_problem(key: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``POSTHOG[key]``, or ``None`` when it does."""
    kind = CLIENT_KEYS[key]
    if kind == _ANY:
        return None
    if value is None and kind not in (_BOOL, _INT, _NUMBER):
        return None
    ok: bool
    if kind == _STR:
        ok = isinstance(value, str)
    elif kind in (_BOOL, _OPT_BOOL):
        ok = isinstance(value, bool)
    elif kind == _INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == _NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == _CALLABLE:
        ok = callable(value)
    elif kind == _MAPPING:
        ok = isinstance(value, Mapping)
    else:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if ok:
        return None
    return f"expected {kind}, got {type(value).__name__}"


app_ready = False  # set by the app config: only an installed app applies ``POSTHOG``
_baseline: dict[str, Any] | None = None  # module settings before ``POSTHOG`` was applied
_ours: Any = None  # the default client this module created


def apply_posthog_setting(config: Any) -> bool:
    """Configure the module-level client from ``config`` (the ``POSTHOG`` dict).

    Invalid keys are logged and skipped (``manage.py check`` reports them). ``None`` (the
    setting removed) restores the module settings found before the first application.
    Returns whether a client was configured.
    """
    global _baseline
    module_names = [k for k in CLIENT_KEYS if hasattr(posthog, k)]
    if _baseline is None:
        _baseline = {k: getattr(posthog, k) for k in module_names}
    else:
        for key, value in _baseline.items():
            setattr(posthog, key, value)
    values: dict[str, Any] = {}
    if config is not None:
        if not isinstance(config, Mapping):
            logger.error("settings.POSTHOG must be a dict; PostHog was not configured")
            config = {}
        for key, value in config.items():
            if key not in CLIENT_KEYS:
                logger.error("settings.POSTHOG: unknown key %r ignored", key)
            elif (problem := type_problem(key, value)) is not None:
                logger.error("settings.POSTHOG[%r]: %s; ignored", key, problem)
            else:
                values[key] = value
    api_key = values.pop("api_key", None) or values.pop("project_api_key", None)
    values.pop("project_api_key", None)
    if not api_key:
        if config:
            logger.warning("settings.POSTHOG has no api_key; PostHog was not configured")
        _replace_default(None)
        return False
    posthog.project_api_key = posthog.api_key = api_key
    extra: dict[str, Any] = {}
    for key, value in values.items():
        if key in module_names:
            setattr(posthog, key, value)
        else:
            extra[key] = value
    _replace_default(_build_client(api_key, extra))
    return True


def _replace_default(new: posthog.Client | None) -> None:
    """Install ``new`` as the default client; shut down the one this module made before."""
    global _ours
    old = posthog.default_client
    if new is not None or old is _ours:
        posthog.default_client = new
    previous, _ours = _ours, new
    if previous is not None and previous is not new:
        try:
            previous.shutdown()
        except Exception:
            logger.exception("could not shut the previous PostHog client down")


def _build_client(api_key: str, extra: dict[str, Any]) -> posthog.Client:
    """A ``Client`` from the module settings (as ``posthog.setup()`` would) plus ``extra``."""
    params = inspect.signature(posthog.Client.__init__).parameters
    kwargs: dict[str, Any] = {
        name: getattr(posthog, name)
        for name in params
        if name != "project_api_key" and name in CLIENT_KEYS and hasattr(posthog, name)
    }
    kwargs.update(extra)
    kwargs["disabled"] = bool(kwargs.get("disabled")) or not api_key
    return posthog.Client(api_key, **kwargs)
