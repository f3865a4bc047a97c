"""Plain-text tables and small number helpers for the bench output."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence

import numpy as np

TARGET_RATIO = 1.5


def table(headers: Sequence[str], rows: Sequence[Sequence[object] | None], indent: int = 2) -> str:
    """A left-aligned first column and right-aligned others; ``None`` rows are rules."""
    cells = [[str(c) for c in headers]] + [
        [("" if c is None else str(c)) for c in row] for row in rows if row is not None
    ]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(row))
        ]
        return " " * indent + "  ".join(parts).rstrip()

    rule = " " * indent + "  ".join("-" * w for w in widths)
    out = [line(cells[0]), rule]
    body = iter(cells[1:])
    for row in rows:
        out.append(rule if row is None else line(next(body)))
    return "\n".join(out)


def verdict(ratio: float, target: float = TARGET_RATIO) -> str:
    """A figure against the most it may be."""
    return "ok" if ratio <= target else "OVER"


def at_least(value: float, target: float) -> str:
    """A figure against the least it may be (``verdict``'s twin)."""
    return "ok" if value >= target else "UNDER"


def micros(ns: np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean of nanosecond samples, in microseconds."""
    us = np.asarray(ns, dtype=np.float64) / 1_000.0
    return {
        "p50": float(np.percentile(us, 50)),
        "p99": float(np.percentile(us, 99)),
        "mean": float(us.mean()),
    }


def us(value: float) -> str:
    return f"{value:,.1f}"


def seconds(value: float) -> str:
    return f"{value:,.2f}"


class OtherLoad:
    """CPU time other processes used while a block ran, in cores (Linux /proc/stat).

    The bench shares the machine; this says how much: 0.0 means it had the cores to
    itself, 1.0 means another process kept one core busy on average.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...
        busy = sum(fields[:3]) + sum(fields[5:8])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
        return busy / os.sysconf("SC_CLK_TCK"), own, time.monotonic()

    def cores(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        wall = end[2] - self._start[2]
        other = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return max(0.0, other / wall) if wall > 0 else None
