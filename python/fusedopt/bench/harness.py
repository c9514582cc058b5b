"""Timing: warm-up, interleaved timed repeats, p20/p50/p80.

Shared machines are noisy, so a speed claim is a ratio of times taken in one run, and the
contenders of a case take turns: each round times every contender once, and the order rotates
by one each round (round r starts with contender r), so a burst of load from another process
lands on all of them alike and no contender always runs right after the same neighbour.

A sample is ``inner`` back-to-back calls divided by ``inner``, with ``inner`` chosen after the
warm-up so that a sample lasts at least ``min_sample_s`` (tiny workloads would otherwise be
timer noise); on CUDA the sample is bracketed by events after a synchronize, outside the
contender's own code. Python's garbage collector is off while timing. A contender may have an
``after`` hook (a peer restoring the grads it rewrote): it runs after every call, warm-up
included, outside the timed region (each call is then timed on its own and the times summed).
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

#: At most this many calls in one sample.
MAX_INNER = 10_000


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("quantile of no samples")
    xs = sorted(samples)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Timing:
    """Seconds per call of one contender: every sample, and how many calls each one averaged."""

    samples: list[float]
    inner: int

    @property
    def median(self) -> float:
        return quantile(self.samples, 0.5)

    @property
    def p20(self) -> float:
        return quantile(self.samples, 0.2)

    @property
    def p80(self) -> float:
        return quantile(self.samples, 0.8)


class Clock:
    """Times ``inner`` calls of a function on one device (wall clock on CPU, events on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def per_call(self, fn: Callable[[], object], inner: int = 1,
                 after: Callable[[], object] | None = None) -> float:
        """Seconds per call, averaged over ``inner`` back-to-back calls; ``after`` (untimed)
        follows every call."""
        if after is not None:
            return self._per_call_with(fn, inner, after)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner

    def _per_call_with(self, fn: Callable[[], object], inner: int,
                       after: Callable[[], object]) -> float:
        """``per_call`` with an untimed ``after`` between the calls: each call timed alone."""
        total = 0.0
        if self.cuda:
            torch.cuda.synchronize(self.device)
            events = []
            for _ in range(inner):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                after()  # queued after ``end``: outside the measured interval
                events.append((start, end))
            torch.cuda.synchronize(self.device)
            return sum(s.elapsed_time(e) for s, e in events) / 1e3 / inner
        for _ in range(inner):
            t0 = time.perf_counter()
            fn()
            total += time.perf_counter() - t0
            after()
        return total / inner


#: progress callback: (phase "warmup" | "round", contender name, index, total)
Progress = Callable[[str, str, int, int], None]


def _failure(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:300]


def interleaved(fns: dict[str, Callable[[], object]], clock: Clock, *, warmup: int = 2,
                repeats: int = 5, min_sample_s: float = 0.01,
                progress: Progress | None = None,
                after: dict[str, Callable[[], object]] | None = None
                ) -> tuple[dict[str, Timing], dict[str, str]]:
    """Warm every function up, then time them round-robin for ``repeats`` rounds.

    ``after``: per name, an untimed hook run after each of that function's calls.

    Returns ``(timings, failures)``: a function that raises (in warm-up or later) is dropped
    from the remaining rounds and reported in ``failures`` as "Type: message".
    """
    if warmup < 1 or repeats < 1:
        raise ValueError("need warmup >= 1 and repeats >= 1")
    after = after or {}
    failures: dict[str, str] = {}
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        try:
            for i in range(warmup):
                if progress:
                    progress("warmup", name, i + 1, warmup)
                t = clock.per_call(fn, after=after.get(name))
        except Exception as exc:  # a contender that fails is reported, the others go on
            failures[name] = _failure(exc)
            continue
        inner[name] = min(MAX_INNER, max(1, math.ceil(min_sample_s / max(t, 1e-9))))
    names = [n for n in fns if n in inner]
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(names) if names else 0
            for name in names[k:] + names[:k]:
                if name in failures:
                    continue
                if progress:
                    progress("round", name, r + 1, repeats)
                try:
                    samples[name].append(clock.per_call(fns[name], inner[name], after.get(name)))
                except Exception as exc:
                    failures[name] = _failure(exc)
    finally:
        gc.enable()
    timings = {n: Timing(samples[n], inner[n]) for n in names if n not in failures}
    return timings, failures
