"""Why a flag could not be decided locally, and the exceptions that carry it (spec §1.7, §6.10)."""

from __future__ import annotations

from enum import Enum


class UnresolvedFlagReason(str, Enum):
    """Why a flag must be evaluated by the server instead of locally."""

    EXPERIENCE_CONTINUITY = "experience_continuity"
    UNSUPPORTED_DEFINITION = "unsupported_definition"
    UNRESOLVED_DEPENDENCY = "unresolved_dependency"
    MISSING_CONTEXT = "missing_context"


# Reason precedence when several apply (spec §6.10): a higher rank wins.
REASON_RANK: dict[UnresolvedFlagReason, int] = {
    UnresolvedFlagReason.EXPERIENCE_CONTINUITY: 4,
    UnresolvedFlagReason.UNSUPPORTED_DEFINITION: 3,
    UnresolvedFlagReason.UNRESOLVED_DEPENDENCY: 2,
    UnresolvedFlagReason.MISSING_CONTEXT: 1,
}


class InconclusiveMatchError(Exception):
    """A filter or condition cannot be decided locally; other conditions are still tried."""

    reason: UnresolvedFlagReason = UnresolvedFlagReason.UNSUPPORTED_DEFINITION

    def __init__(self, *args: object, reason: UnresolvedFlagReason | None = None) -> None:
        super().__init__(*args)
        if reason is not None:
            self.reason = reason


class RequiresServerEvaluation(Exception):
    """The definition needs server-side data; local evaluation of the flag stops at once."""

    reason: UnresolvedFlagReason = UnresolvedFlagReason.UNSUPPORTED_DEFINITION

    def __init__(self, *args: object, reason: UnresolvedFlagReason | None = None) -> None:
        super().__init__(*args)
        if reason is not None:
            self.reason = reason
