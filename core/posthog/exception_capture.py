"""``capture_exception`` and exception autocapture, mixed into :class:`posthog.Client`."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from posthog import contexts
from posthog._log import logger

if TYPE_CHECKING:
    from posthog.autocapture import ExceptionHooks, RateLimiter
    from posthog.exceptions import RawFrame

CAPTURED = "__posthog_exception_captured"
CAPTURED_UUID = "__posthog_exception_uuid"


def trace_properties() -> dict[str, str]:
    """``$trace_id``/``$span_id`` of the active OpenTelemetry span, if OpenTelemetry is loaded."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    try:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return {}
        return {"$trace_id": format(ctx.trace_id, "032x"), "$span_id": format(ctx.span_id, "016x")}
    except Exception:
        return {}


class ExceptionCaptureMixin:
    """The exception half of the client; relies on ``capture`` and the client's settings."""

    disabled: bool
    project_root: str
    in_app_modules: list[str] | None
    log_captured_exceptions: bool
    capture_exception_code_variables: bool
    code_variables_mask_patterns: list[str] | None
    code_variables_ignore_patterns: list[str] | None
    code_variables_mask_url_credentials: bool | None
    code_variables_detect_secrets: bool | None
    _hooks: ExceptionHooks | None
    _rate_limiter: RateLimiter | None

    capture: Callable[..., str | None]  # provided by Client
    # The asyncio client sends no automatic ``$trace_id``/``$span_id`` and no override warning.
    _exception_trace_properties: bool = True
    _warn_reserved_exception_properties: bool = True

    def capture_exception(self, exception: Any, **kwargs: Any) -> str | None:
        """Capture ``exception`` (``None``: the one being handled) as ``$exception``.

        Returns the event uuid, or ``None`` if nothing was captured. Never raises.
        """
        return self._capture_exception(exception, kwargs)

    def _capture_exception(
        self,
        exception: Any,
        kwargs: dict[str, Any],
        *,
        level: str | None = "error",
        source: str | None = None,
        handled: bool = True,
        mechanism: str = "generic",
    ) -> str | None:
        """The capture channel the integrations use (level, source, mechanism). Never raises."""
        try:
            return self._build_and_capture(exception, kwargs, level, source, handled, mechanism)
        except Exception:
            logger.exception("capture_exception failed")
            return None

    def _build_and_capture(
        self,
        exception: Any,
        kwargs: dict[str, Any],
        level: str | None,
        source: str | None,
        handled: bool,
        mechanism: str,
    ) -> str | None:
        if self.disabled:
            return None
        from posthog import exceptions

        resolved = exceptions.resolve(exception)
        if resolved is None:
            logger.warning("capture_exception called with no exception to capture")
            return None
        exc, tb = resolved
        if getattr(exc, CAPTURED, False):
            return None
        hook = self._code_variables_hook() if self._code_variables_enabled() else None
        entries = exceptions.build_entries(
            exc, tb, handled=handled, mechanism_type=mechanism, hook=hook
        )
        props: dict[str, Any] = {
            "$exception_list": exceptions.ExceptionList(
                entries, self.project_root, self.in_app_modules
            ),
        }
        if level is not None:
            props["$exception_level"] = level
        if source is not None:
            props["$exception_source"] = source
        if self._exception_trace_properties:
            props.update(trace_properties())
        given = kwargs.pop("properties", None)
        if given:
            reserved = [k for k in given if isinstance(k, str) and k.startswith("$exception_")]
            if reserved and self._warn_reserved_exception_properties:
                warnings.warn(
                    f"overriding {', '.join(sorted(reserved))} in capture_exception is deprecated",
                    DeprecationWarning,
                    stacklevel=4,
                )
            props.update(given)
        uuid = self.capture("$exception", properties=props, **kwargs)
        if uuid is not None and exception is not None:
            try:
                setattr(exc, CAPTURED, True)
                setattr(exc, CAPTURED_UUID, uuid)
            except Exception:
                pass  # an exception type that refuses attributes is captured again next time
        if uuid is not None and self.log_captured_exceptions:
            logger.error("captured exception", exc_info=(type(exc), exc, tb))
        return uuid

    # ------------------------------------------------------------ code variables

    def _code_variable_setting(self, name: str, default: Any) -> Any:
        scope = contexts.current_scope()
        if scope is not None:
            found = scope.code_variable_setting(name)
            if found is not None:
                return found
        return default

    def _code_variables_enabled(self) -> bool:
        return bool(self._code_variable_setting("capture", self.capture_exception_code_variables))

    def _code_variables_hook(self) -> Callable[[RawFrame, FrameType | None], None] | None:
        """A frame hook that records the locals of in-app frames, within one event budget."""
        from posthog import code_variables
        from posthog.exceptions import in_app

        try:
            cfg = code_variables.settings(
                self._code_variable_setting("mask_patterns", self.code_variables_mask_patterns),
                self._code_variable_setting(
                    "ignore_patterns", self.code_variables_ignore_patterns
                ),
                self._code_variable_setting(
                    "mask_url_credentials", self.code_variables_mask_url_credentials
                ),
                self._code_variable_setting("detect_secrets", self.code_variables_detect_secrets),
            )
        except Exception:
            logger.exception("code variable settings are invalid; exceptions are sent without")
            return None
        budget = [code_variables.BUDGET]
        root = os.path.abspath(self.project_root) if self.project_root else None
        modules = self.in_app_modules

        def hook(raw: RawFrame, frame: FrameType | None) -> None:
            try:
                raw.in_app = in_app(raw, root, modules)
                if raw.in_app and frame is not None and budget[0] > 0:
                    raw.variables = code_variables.frame_variables(frame, cfg, budget)
            except Exception:
                logger.exception("could not collect code variables of one frame")

        return hook

    # ------------------------------------------------------------ autocapture

    def _install_autocapture(self, rate_limited: bool, size: int, refill: int, every: int) -> None:
        from posthog.autocapture import ExceptionHooks, RateLimiter

        self._rate_limiter = RateLimiter(size, refill, every) if rate_limited else None
        self._hooks = ExceptionHooks(self._autocapture)
        self._hooks.install()

    def _autocapture(
        self, exc: BaseException, tb: TracebackType | None, level: str, source: str
    ) -> None:
        limiter = self._rate_limiter
        if limiter is not None and not limiter.allow(type(exc).__qualname__):
            logger.debug("autocapture rate limit reached for %s", type(exc).__qualname__)
            return
        self._capture_exception(
            (type(exc), exc, tb),
            {},
            level=level,
            source=source,
            handled=False,
            mechanism="onuncaughtexception",
        )

    def _uninstall_autocapture(self) -> None:
        if self._hooks is not None:
            self._hooks.uninstall()
            self._hooks = None
