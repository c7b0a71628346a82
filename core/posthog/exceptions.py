"""Exceptions → ``$exception_list`` (spec core §8.2 to §8.4).

The capturing thread only walks the chain and the tracebacks into small records
(type, message, file, line, function, module); reading source lines and deciding
``in_app`` happen when the event is encoded, usually on the consumer thread.
"""

from __future__ import annotations

import builtins
import linecache
import os
import sys
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from posthog.events import Deferred

MAX_ENTRIES = 50
MAX_GROUP_INSPECTIONS = 1000
MAX_FRAMES_HEAD = 50
MAX_FRAMES_TAIL = 250
CONTEXT_LINES = 5
MAX_LINE_BYTES = 1024
_CO_OPTIMIZED = 0x1

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
FrameHook = Callable[["RawFrame", "FrameType | None"], None]

_group_types: tuple[type, ...] = tuple(
    t for t in (getattr(builtins, "BaseExceptionGroup", None),) if t is not None
)


class RawFrame:
    """What is kept of a frame until the event is rendered."""

    __slots__ = (
        "abs_path", "frame", "function", "globals", "in_app", "lineno", "module", "variables"
    )

    def __init__(self, frame: FrameType, lineno: int | None) -> None:
        self.frame: FrameType | None = frame  # dropped once the entry is built
        code = frame.f_code
        self.globals = frame.f_globals
        self.module: str | None = self.globals.get("__name__")
        self.function = code.co_name or "<unknown>"
        filename = code.co_filename or ""
        self.abs_path = None if filename.startswith("<") or not filename else filename
        self.lineno = lineno if lineno is not None else frame.f_lineno
        self.in_app: bool | None = None
        self.variables: dict[str, Any] | None = None


def _hidden(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__")
    if isinstance(module, str) and module.startswith("sentry_sdk."):
        return True
    code = frame.f_code
    names = code.co_varnames
    if code.co_flags & _CO_OPTIMIZED and not (
        "__traceback_hide__" in names or "__tracebackhide__" in names
    ):
        return False
    try:
        local_vars = frame.f_locals
        return bool(local_vars.get("__traceback_hide__") or local_vars.get("__tracebackhide__"))
    except Exception:
        return False


def traceback_frames(tb: TracebackType | None, hook: FrameHook | None = None) -> list[RawFrame]:
    """Frames of a traceback, outermost first, long ones cut to their two ends.

    ``hook`` sees each kept frame while it is still live (for code variables).
    """
    frames: list[RawFrame] = []
    total = 0
    tail: list[RawFrame] = []
    while tb is not None:
        frame = tb.tb_frame
        if not _hidden(frame):
            raw = RawFrame(frame, tb.tb_lineno)
            if total < MAX_FRAMES_HEAD:
                frames.append(raw)
            else:
                tail.append(raw)
                if len(tail) > MAX_FRAMES_TAIL * 2:
                    del tail[: len(tail) - MAX_FRAMES_TAIL]
            total += 1
        tb = tb.tb_next
    kept = frames + tail[-MAX_FRAMES_TAIL:]
    if hook is not None:
        for raw in reversed(kept):  # innermost first: the raising frame gets the budget first
            hook(raw, raw.frame)
    for raw in kept:
        raw.frame = None
    return kept


def current_stack_frames(hook: FrameHook | None = None) -> list[RawFrame]:
    """The caller's stack without the SDK's own frames, outermost first."""
    frames: list[RawFrame] = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and len(frames) < MAX_FRAMES_HEAD + MAX_FRAMES_TAIL:
        module = frame.f_globals.get("__name__")
        sdk = isinstance(module, str) and (module == "posthog" or module.startswith("posthog."))
        if not sdk and not _hidden(frame):
            frames.append(RawFrame(frame, frame.f_lineno))
        frame = frame.f_back
    for raw in frames:  # still innermost first here
        if hook is not None:
            hook(raw, raw.frame)
        raw.frame = None
    frames.reverse()
    return frames


def safe_str(value: object) -> str:
    """``str(value)`` that survives a broken or recursive ``__str__``."""
    try:
        return str(value)
    except Exception:
        try:
            return f"<unprintable {type(value).__name__} object>"
        except Exception:
            return "<unprintable object>"


def exception_value(exc: BaseException) -> str:
    for attr in ("message", "detail"):
        try:
            found = getattr(exc, attr, None)
        except Exception:
            found = None
        if found is not None:
            return safe_str(found)
    return safe_str(exc)


def _chain(root: BaseException) -> Iterator[tuple[BaseException, int | None, str | None]]:
    """Depth-first: the exception, its group members, then its cause or context."""
    seen: set[int] = set()
    stack: list[tuple[BaseException, int | None, str | None]] = [(root, None, None)]
    inspections = 0
    count = 0
    while stack and count < MAX_ENTRIES:
        exc, parent, source = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        this = count
        count += 1
        yield exc, parent, source
        follow: list[tuple[BaseException, int | None, str | None]] = []
        if _group_types and isinstance(exc, _group_types):
            for member in getattr(exc, "exceptions", ()):
                inspections += 1
                if inspections > MAX_GROUP_INSPECTIONS:
                    break
                if isinstance(member, BaseException):
                    follow.append((member, this, "member"))
        cause = exc.__cause__
        if cause is not None:
            follow.append((cause, this, "cause"))
        elif not exc.__suppress_context__ and exc.__context__ is not None:
            follow.append((exc.__context__, this, "context"))
        stack.extend(reversed(follow))


class RawEntry:
    __slots__ = ("frames", "mechanism", "module", "type", "value")

    def __init__(self, exc: BaseException, mechanism: dict[str, Any], frames: list[RawFrame]):
        cls = type(exc)
        self.type = getattr(cls, "__qualname__", None) or cls.__name__
        module = getattr(cls, "__module__", None)
        self.module = None if module == "builtins" else module
        self.value = exception_value(exc)
        self.mechanism = mechanism
        self.frames = frames


def build_entries(
    exc: BaseException,
    tb: TracebackType | None,
    *,
    handled: bool = True,
    mechanism_type: str = "generic",
    hook: FrameHook | None = None,
) -> list[RawEntry]:
    """The entries of ``$exception_list`` for ``exc``, outermost first (still unrendered)."""
    entries: list[RawEntry] = []
    for item, parent, source in _chain(exc):
        index = len(entries)
        if parent is None:
            frames = traceback_frames(tb, hook) if tb is not None else current_stack_frames(hook)
            synthetic = tb is None
            mechanism: dict[str, Any] = {
                "type": mechanism_type,
                "handled": handled,
                "exception_id": 0,
                "synthetic": synthetic,
            }
        else:
            frames = traceback_frames(item.__traceback__, hook)
            mechanism = {
                "type": "chained",
                "exception_id": index,
                "parent_id": parent,
                "source": source,
                "synthetic": False,
            }
        if _group_types and isinstance(item, _group_types):
            mechanism["is_exception_group"] = True
        errno = getattr(item, "errno", None)
        if isinstance(errno, int):
            mechanism["meta"] = {"errno": {"number": errno}}
        entries.append(RawEntry(item, mechanism, frames))
    return entries


def in_app(
    frame: RawFrame, project_root: str | None, in_app_modules: list[str] | None
) -> bool | None:
    """Spec §8.4: ``True``/``False``, or ``None`` when it cannot be told."""
    module = frame.module or ""
    for prefix in in_app_modules or ():
        if module == prefix or module.startswith(prefix + "."):
            return True
    path = frame.abs_path
    if not path:
        return None
    if "/site-packages/" in path or "/dist-packages/" in path:
        return False
    if "\\site-packages\\" in path or "\\dist-packages\\" in path:
        return False
    if project_root and os.path.abspath(path).startswith(project_root):
        return True
    return None


def _relative_filename(frame: RawFrame) -> str:
    path = frame.abs_path or frame.globals.get("__file__") or "<unknown>"
    module = frame.module or ""
    if not frame.abs_path or not module or module == "__main__" or "." not in module:
        base = os.path.basename(path)
        return base if frame.abs_path else path
    depth = module.count(".") + 1
    if os.path.basename(path).startswith("__init__."):
        depth += 1
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-depth:])


def _line(text: str) -> str | None:
    text = text.rstrip("\r\n")
    return None if len(text.encode("utf-8", "replace")) > MAX_LINE_BYTES else text


def render_frame(
    frame: RawFrame, project_root: str | None, modules: list[str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "platform": "python",
        "filename": _relative_filename(frame),
        "function": frame.function,
        "module": frame.module,
        "lineno": frame.lineno,
    }
    if frame.abs_path:
        out["abs_path"] = os.path.abspath(frame.abs_path)
        try:
            lines = linecache.getlines(frame.abs_path, frame.globals)
        except Exception:
            lines = []
        index = frame.lineno - 1
        if lines and 0 <= index < len(lines):
            out["pre_context"] = [_line(t) for t in lines[max(0, index - CONTEXT_LINES):index]]
            out["context_line"] = _line(lines[index])
            out["post_context"] = [_line(t) for t in lines[index + 1:index + 1 + CONTEXT_LINES]]
    flag = frame.in_app if frame.in_app is not None else in_app(frame, project_root, modules)
    if flag is not None:
        out["in_app"] = flag
    if frame.variables is not None:
        out["code_variables"] = frame.variables
    return out


class ExceptionList(Deferred):
    """``$exception_list``, rendered (source lines, in-app flags) only when encoded."""

    __slots__ = ("_rendered", "entries", "in_app_modules", "project_root")

    def __init__(
        self, entries: list[RawEntry], project_root: str | None, in_app_modules: list[str] | None
    ) -> None:
        self.entries = entries
        self.project_root = os.path.abspath(project_root) if project_root else None
        self.in_app_modules = in_app_modules
        self._rendered: list[dict[str, Any]] | None = None

    def render(self) -> list[dict[str, Any]]:
        if self._rendered is None:
            rendered = []
            for entry in self.entries:
                item: dict[str, Any] = {
                    "type": entry.type,
                    "value": entry.value,
                    "module": entry.module,
                    "mechanism": entry.mechanism,
                }
                if entry.frames:
                    item["stacktrace"] = {
                        "type": "raw",
                        "frames": [
                            render_frame(f, self.project_root, self.in_app_modules)
                            for f in entry.frames
                        ],
                    }
                rendered.append(item)
            self._rendered = rendered
            self.entries = []
        return self._rendered


def resolve(exception: Any) -> tuple[BaseException, TracebackType | None] | None:
    """``capture_exception``'s argument as (exception, traceback); ``None`` if there is none."""
    if exception is None:
        _, value, tb = sys.exc_info()
        return (value, tb) if value is not None else None
    if isinstance(exception, BaseException):
        return exception, exception.__traceback__
    if isinstance(exception, tuple) and len(exception) == 3:
        value, tb = exception[1], exception[2]
        if isinstance(value, BaseException):
            return value, tb if isinstance(tb, TracebackType) else value.__traceback__
    return None
