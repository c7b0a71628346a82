"""Contexts and exception capture on the caller's thread.

    .venv/bin/python benchmarks/bench_contexts.py

Prints µs per ``with new_context(): tag(...)`` and per ``capture_exception`` of an
exception raised 20 frames deep (the client does not send: ``send=False`` measures
only what the calling thread pays; rendering happens when the event is encoded).
"""

from __future__ import annotations

import statistics
import timeit

import posthog
from posthog import new_context, tag


def recurse(n: int) -> None:
    if n == 0:
        raise ValueError("deep failure")
    recurse(n - 1)


def raised_20_deep() -> ValueError:
    try:
        recurse(18)  # + this frame = 20 frames in the traceback
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def best_of(fn: object, number: int, repeat: int = 7) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat)  # type: ignore[arg-type]
    return min(runs) / number * 1e6


def main() -> None:
    def scope() -> None:
        with new_context():
            tag("route", "/checkout")

    per_scope = best_of(scope, 100_000)
    print(f"with new_context(): tag(...): {per_scope:.2f} µs")

    client = posthog.Client("phc_bench", send=False)
    exc = raised_20_deep()
    frames = 0
    tb = exc.__traceback__
    while tb is not None:
        frames, tb = frames + 1, tb.tb_next

    def capture() -> None:
        setattr(exc, "__posthog_exception_captured", False)
        client.capture_exception(exc)

    per_capture = best_of(capture, 2_000)
    samples = [best_of(capture, 200, 1) for _ in range(20)]
    print(f"capture_exception ({frames}-frame traceback), caller's thread: {per_capture:.1f} µs "
          f"(median of 20 runs {statistics.median(samples):.1f} µs)")

    from posthog.events import encode_event
    from posthog.exceptions import ExceptionList, build_entries

    def render() -> None:
        encode_event(ExceptionList(build_entries(exc, exc.__traceback__), None, None))

    print(f"building + rendering + encoding $exception_list (consumer side included): "
          f"{best_of(render, 1_000):.1f} µs")
    client.shutdown()


if __name__ == "__main__":
    main()
