"""PostHog for Python: module-level settings and functions backed by a default client.

Configure ``posthog.project_api_key`` (and ``posthog.host``), then call
``posthog.capture(...)``. Without a key the default client is disabled and every
call is a cheap no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from posthog._log import install_prefix_filter
from posthog.client import Client, Posthog
from posthog.contexts import (
    get_tags,
    identify_context,
    new_context,
    scoped,
    set_capture_exception_code_variables_context,
    set_code_variables_detect_secrets_context,
    set_code_variables_ignore_patterns_context,
    set_code_variables_mask_patterns_context,
    set_code_variables_mask_url_credentials_context,
    set_context_device_id,
    set_context_session,
    tag,
)
from posthog.transport.http import (
    SocketOptions,
    disable_connection_reuse,
    enable_keep_alive,
    set_socket_options,
)
from posthog.transport.lane import OnError
from posthog.types import (
    BeforeSendCallback,
    CaptureCompression,
    CaptureMode,
)
from posthog.version import VERSION, __version__

if TYPE_CHECKING:
    from posthog.async_client import AsyncClient, AsyncPosthog
    from posthog.flag_types import (
        FeatureFlag,
        FeatureFlagEvaluationRuntime,
        FeatureFlagResult,
        FlagDefinitionCacheData,
        FlagDefinitionCacheProvider,
        FlagsAndPayloads,
        FlagValue,
    )
    from posthog.flags.errors import (
        InconclusiveMatchError,
        RequiresServerEvaluation,
        UnresolvedFlagReason,
    )
    from posthog.flags.snapshot import FeatureFlagEvaluations

# Flag types load on first use: ``import posthog`` should not pay for dataclasses.
_LAZY = {
    "AsyncClient": "posthog.async_client",
    "AsyncPosthog": "posthog.async_client",
    "FeatureFlag": "posthog.flag_types",
    "FeatureFlagResult": "posthog.flag_types",
    "FeatureFlagEvaluationRuntime": "posthog.flag_types",
    "FlagDefinitionCacheData": "posthog.flag_types",
    "FlagDefinitionCacheProvider": "posthog.flag_types",
    "FlagsAndPayloads": "posthog.flag_types",
    "FlagValue": "posthog.flag_types",
    "FeatureFlagEvaluations": "posthog.flags.snapshot",
    "InconclusiveMatchError": "posthog.flags.errors",
    "RequiresServerEvaluation": "posthog.flags.errors",
    "UnresolvedFlagReason": "posthog.flags.errors",
}

install_prefix_filter()

__all__ = [
    "ID_TYPES",
    "VERSION",
    "AsyncClient",
    "AsyncPosthog",
    "BeforeSendCallback",
    "CaptureCompression",
    "CaptureMode",
    "Client",
    "FeatureFlag",
    "FeatureFlagEvaluationRuntime",
    "FeatureFlagEvaluations",
    "FeatureFlagResult",
    "FlagDefinitionCacheData",
    "FlagDefinitionCacheProvider",
    "FlagValue",
    "FlagsAndPayloads",
    "InconclusiveMatchError",
    "Posthog",
    "RequiresServerEvaluation",
    "SocketOptions",
    "UnresolvedFlagReason",
    "__version__",
    "alias",
    "capture",
    "capture_exception",
    "default_client",
    "disable_connection_reuse",
    "enable_keep_alive",
    "evaluate_flags",
    "feature_enabled",
    "feature_flag_definitions",
    "flush",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_feature_flag",
    "get_feature_flag_evaluation_runtime",
    "get_feature_flag_keys_by_evaluation_runtime",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "get_remote_config_payload",
    "get_tags",
    "group_identify",
    "identify_context",
    "join",
    "load_feature_flags",
    "new_context",
    "scoped",
    "set",
    "set_capture_exception_code_variables_context",
    "set_code_variables_detect_secrets_context",
    "set_code_variables_ignore_patterns_context",
    "set_code_variables_mask_patterns_context",
    "set_code_variables_mask_url_credentials_context",
    "set_context_device_id",
    "set_context_session",
    "set_once",
    "set_socket_options",
    "setup",
    "shutdown",
    "tag",
]

# ---------------------------------------------------------------- settings (spec core §1.2)

project_api_key: str | None = None
api_key: str | None = None
host: str | None = None
on_error: OnError | None = None
debug: bool = False
send: bool = True
sync_mode: bool = False
disabled: bool = False
secret_key: str | None = None
personal_api_key: str | None = None
poll_interval: int = 30
disable_geoip: bool = True
is_server: bool = True
feature_flags_request_timeout_seconds: float = 3
feature_flags_request_max_retries: int = 1
super_properties: dict[str, Any] | None = None
enable_exception_autocapture: bool = False
log_captured_exceptions: bool = False
project_root: str | None = None
privacy_mode: bool = False
before_send: BeforeSendCallback | None = None
enable_local_evaluation: bool = True
flag_definition_cache_provider: Any = None
capture_exception_code_variables: bool = False
code_variables_mask_patterns: list[str] | None = None
code_variables_ignore_patterns: list[str] = ["^__.*"]
code_variables_mask_url_credentials: bool = True
code_variables_detect_secrets: bool = True
in_app_modules: list[str] | None = None
capture_trace_context: bool = False
enable_exception_autocapture_rate_limiting: bool = False
exception_autocapture_bucket_size: int = 50
exception_autocapture_refill_rate: int = 10
exception_autocapture_refill_interval_seconds: int = 10
capture_mode: CaptureMode | str | None = None
metrics: Any = None
traces: Any = None
enable_full_ai_capture: bool = False

default_client: Client | None = None


def __getattr__(name: str) -> Any:
    # ``ID_TYPES`` names ``uuid.UUID``; built on first use so ``import posthog`` stays light.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "ID_TYPES":
        import numbers
        from typing import Union
        from uuid import UUID

        value = Union[numbers.Number, str, UUID, int]  # noqa: UP007 - a runtime alias
        globals()[name] = value
        return value
    raise AttributeError(f"module 'posthog' has no attribute {name!r}")


def setup() -> Client:
    """Create the default client from the settings (once), then re-apply the live settings."""
    global default_client
    if not default_client:
        key = (project_api_key or "").strip() or (api_key or "").strip()
        default_client = Client(
            key,
            host=host,
            debug=debug,
            on_error=on_error,
            send=send,
            sync_mode=sync_mode,
            personal_api_key=personal_api_key,
            secret_key=secret_key,
            poll_interval=poll_interval,
            disabled=disabled or not key,
            disable_geoip=disable_geoip,
            is_server=is_server,
            feature_flags_request_timeout_seconds=feature_flags_request_timeout_seconds,
            feature_flags_request_max_retries=feature_flags_request_max_retries,
            super_properties=super_properties,
            enable_exception_autocapture=enable_exception_autocapture,
            log_captured_exceptions=log_captured_exceptions,
            project_root=project_root,
            privacy_mode=privacy_mode,
            enable_local_evaluation=enable_local_evaluation,
            flag_definition_cache_provider=flag_definition_cache_provider,
            capture_exception_code_variables=capture_exception_code_variables,
            code_variables_mask_patterns=code_variables_mask_patterns,
            code_variables_ignore_patterns=code_variables_ignore_patterns,
            code_variables_mask_url_credentials=code_variables_mask_url_credentials,
            code_variables_detect_secrets=code_variables_detect_secrets,
            in_app_modules=in_app_modules,
            capture_trace_context=capture_trace_context,
            enable_exception_autocapture_rate_limiting=enable_exception_autocapture_rate_limiting,
            exception_autocapture_bucket_size=exception_autocapture_bucket_size,
            exception_autocapture_refill_rate=exception_autocapture_refill_rate,
            exception_autocapture_refill_interval_seconds=exception_autocapture_refill_interval_seconds,
            capture_mode=capture_mode,
            metrics=metrics,
            traces=traces,
            enable_full_ai_capture=enable_full_ai_capture,
        )
    client = default_client
    client.disabled = disabled or not client.api_key
    client.debug = debug
    client.privacy_mode = privacy_mode
    client.before_send = before_send
    return client


# ---------------------------------------------------------------- functions (spec core §1.4)


def capture(
    event: str,
    *,
    distinct_id: Any = None,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    uuid: Any = None,
    groups: dict[str, Any] | None = None,
    flags: Any = None,
    send_feature_flags: Any = False,
    disable_geoip: bool | None = None,
) -> str | None:
    """Capture an event with the default client; returns its uuid or ``None``."""
    return setup().capture(
        event,
        distinct_id=distinct_id,
        properties=properties,
        timestamp=timestamp,
        uuid=uuid,
        groups=groups,
        flags=flags,
        send_feature_flags=send_feature_flags,
        disable_geoip=disable_geoip,
    )


def set(
    *,
    distinct_id: Any = None,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Set person properties (``$set``) with the default client."""
    return setup().set(
        distinct_id=distinct_id,
        properties=properties,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
    )


def set_once(
    *,
    distinct_id: Any = None,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Set person properties once (``$set_once``) with the default client."""
    return setup().set_once(
        distinct_id=distinct_id,
        properties=properties,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
    )


def group_identify(
    group_type: str,
    group_key: str,
    properties: dict[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
    distinct_id: Any = None,
) -> str | None:
    """Set group properties (``$groupidentify``) with the default client."""
    return setup().group_identify(
        group_type,
        group_key,
        properties,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
        distinct_id=distinct_id,
    )


def alias(
    previous_id: Any,
    distinct_id: Any = None,
    timestamp: datetime | str | None = None,
    uuid: Any = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Link two distinct ids (``$create_alias``) with the default client."""
    return setup().alias(
        previous_id, distinct_id, timestamp=timestamp, uuid=uuid, disable_geoip=disable_geoip
    )


def capture_exception(exception: BaseException | Any = None, **kwargs: Any) -> str | None:
    """Capture an exception (default: the one being handled) as ``$exception``."""
    return setup().capture_exception(exception, **kwargs)


def flush(timeout_seconds: float | None = 10) -> None:
    """Send queued events now and wait for them (bounded)."""
    if default_client is not None:
        default_client.flush(timeout_seconds)


def join() -> None:
    """Deliver queued events and stop the default client's consumers."""
    if default_client is not None:
        default_client.join()


def shutdown() -> None:
    """Flush and shut the default client down; it is not recreated afterwards."""
    if default_client is not None:
        default_client.shutdown()


# ---------------------------------------------------------------- feature flags (spec core §5-7)


def _flag_args(
    groups: dict[str, Any] | None,
    person_properties: dict[str, Any] | None,
    group_properties: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "groups": groups or {},
        "person_properties": person_properties or {},
        "group_properties": group_properties or {},
    }


def feature_enabled(
    key: str,
    distinct_id: Any,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
) -> bool | None:
    """Whether a flag is on for ``distinct_id`` with the default client."""
    return setup().feature_enabled(
        key,
        distinct_id,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        disable_geoip=disable_geoip,
        device_id=device_id,
    )


def get_feature_flag(
    key: str,
    distinct_id: Any,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
) -> bool | str | None:
    """A flag's value (variant, ``True``/``False`` or ``None``) with the default client."""
    return setup().get_feature_flag(
        key,
        distinct_id,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        disable_geoip=disable_geoip,
        device_id=device_id,
    )


def get_feature_flag_result(
    key: str,
    distinct_id: Any,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
) -> FeatureFlagResult | None:
    """A flag's value, payload and reason with the default client."""
    return setup().get_feature_flag_result(
        key,
        distinct_id,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        disable_geoip=disable_geoip,
        device_id=device_id,
    )


def get_feature_flag_payload(
    key: str,
    distinct_id: Any,
    match_value: Any = None,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
) -> Any:
    """A flag's decoded payload with the default client (sends the flag event by default)."""
    return setup().get_feature_flag_payload(
        key,
        distinct_id,
        match_value=match_value,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        disable_geoip=disable_geoip,
        device_id=device_id,
    )


def get_all_flags(
    distinct_id: Any,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
    flag_keys_to_evaluate: list[str] | None = None,
) -> dict[str, Any] | None:
    """Every flag's value for ``distinct_id`` with the default client."""
    return setup().get_all_flags(
        distinct_id,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        disable_geoip=disable_geoip,
        device_id=device_id,
        flag_keys_to_evaluate=flag_keys_to_evaluate,
    )


def get_all_flags_and_payloads(
    distinct_id: Any,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    disable_geoip: bool | None = None,
    device_id: str | None = None,
    flag_keys_to_evaluate: list[str] | None = None,
) -> FlagsAndPayloads:
    """Every flag's value and serialised payload with the default client."""
    return setup().get_all_flags_and_payloads(
        distinct_id,
        **_flag_args(groups, person_properties, group_properties),
        only_evaluate_locally=only_evaluate_locally,
        disable_geoip=disable_geoip,
        device_id=device_id,
        flag_keys_to_evaluate=flag_keys_to_evaluate,
    )


def evaluate_flags(
    distinct_id: Any = None,
    groups: dict[str, Any] | None = None,
    person_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    only_evaluate_locally: bool = False,
    disable_geoip: bool | None = None,
    flag_keys: list[str] | None = None,
    device_id: str | None = None,
) -> FeatureFlagEvaluations:
    """A snapshot of flags for one person with the default client."""
    return setup().evaluate_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        disable_geoip=disable_geoip,
        flag_keys=flag_keys,
        device_id=device_id,
    )


def get_remote_config_payload(key: str) -> Any:
    """A remote config flag's payload (needs ``secret_key``)."""
    return setup().get_remote_config_payload(key)


def feature_flag_definitions() -> list[dict[str, Any]] | None:
    """The loaded flag definitions, or ``None`` before the first load."""
    return setup().feature_flag_definitions()


def get_feature_flag_evaluation_runtime(key: str) -> FeatureFlagEvaluationRuntime | None:
    return setup().get_feature_flag_evaluation_runtime(key)


def get_feature_flag_keys_by_evaluation_runtime(runtime: Any) -> list[str]:
    return setup().get_feature_flag_keys_by_evaluation_runtime(runtime)


def load_feature_flags() -> None:
    """Load flag definitions now and start polling (needs ``secret_key``)."""
    setup().load_feature_flags()
