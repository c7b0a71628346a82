"""Settings properties shared by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

import logging

from posthog._log import logger
from posthog.types import BeforeSendCallback


class SettingsMixin:
    """``secret_key`` (alias ``personal_api_key``), ``debug`` and ``before_send``."""

    _secret_key: str | None
    _debug: bool
    _before_send: BeforeSendCallback | None

    @property
    def secret_key(self) -> str | None:
        return self._secret_key

    @secret_key.setter
    def secret_key(self, value: str | None) -> None:
        self._secret_key = (value or "").strip() or None

    personal_api_key = secret_key

    @property
    def debug(self) -> bool:
        return self._debug

    @debug.setter
    def debug(self, value: bool) -> None:
        # setup() re-applies this on every module-level call: only touch logging on a change
        # (setLevel clears the logging module's caches).
        if getattr(self, "_debug", None) is bool(value):
            return
        self._debug = bool(value)
        if self._debug:
            logging.basicConfig()
            logger.setLevel(logging.DEBUG)
        else:
            logger.setLevel(logging.WARNING)

    @property
    def before_send(self) -> BeforeSendCallback | None:
        return self._before_send

    @before_send.setter
    def before_send(self, value: BeforeSendCallback | None) -> None:
        if value is not None and not callable(value):
            logger.warning("before_send is not callable (%r); ignored", type(value).__name__)
            value = None
        self._before_send = value
