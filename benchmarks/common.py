"""Shared pieces of the benchmarks: result rows, timing, thread settings."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the results table: a measured figure against its target."""

    name: str
    measured: str
    """What was measured, in words and numbers."""
    target: str
    ratio: float | None
    """The figure the target is about (a speed-up, a memory ratio, a fraction, a relative error)."""
    ratio_text: str
    passed: bool
    info: list[str] = field(default_factory=list)
    """Extra lines printed under the table (method, caveats, where time goes)."""


@dataclass
class Outcome:
    """What one benchmark returns: its rows and the raw figures for results.json."""

    rows: list[Row]
    figures: dict[str, Any]


def single_thread() -> None:
    """One torch thread: the machine is shared, and ratios must not depend on how busy it is."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (interop threads can be set once per process)
        pass


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, list[float], Any]:
    """Median wall time of ``reps`` calls after ``warmup`` untimed ones; returns (median, all, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        dt, out = timed(fn)
        times.append(dt)
    return statistics.median(times), times, out


def fmt_s(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e9:.0f} ns"


def at_least(name: str, measured: str, ratio: float, target: float, what: str = "faster") -> Row:
    return Row(name, measured, f">= {target:g}x {what}", ratio, f"{ratio:.1f}x", bool(ratio >= target))
