"""``LocalResult``: the outcome of evaluating one flag locally."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from posthog.flags.errors import UnresolvedFlagReason


def payload_lookup(value: object) -> str | None:
    """The ``filters.payloads`` key for a flag value: ``"true"``/``"false"`` or the variant."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    return None


@dataclass(frozen=True, slots=True)
class LocalResult:
    """One flag evaluated locally.

    ``value`` is ``None`` when the flag is inconclusive (``inconclusive`` says why and
    the flag must go to the server) or when the key has no definition (``found``
    is false).  ``payload`` is the raw ``filters.payloads`` entry for the value.
    """

    key: str
    value: bool | str | None
    inconclusive: UnresolvedFlagReason | None
    found: bool
    condition_index: int | None
    reason: str
    payload: Any
    flag_id: int | None
    version: int | None
    has_experiment: bool | None
    payloads: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    #: True when the definition failed to compile or evaluating it raised: a defect,
    #: not a flag that merely needs data only the server has.
    error: bool = False

    @property
    def enabled(self) -> bool:
        """Truthiness of the value (a variant counts as enabled)."""
        return bool(self.value)

    def payload_for(self, value: object) -> Any:
        """The stored payload for ``value`` (``match_value``) instead of the evaluated one."""
        payloads = self.payloads
        lookup = payload_lookup(value)
        if payloads is None or lookup is None:
            return None
        return payloads.get(lookup)
