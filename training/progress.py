"""The trainer's steps as they run: each one reported to a progress display and timed.

The CLI draws the display (``training.cli``); tests and benchmarks pass none. The
timings end up in ``TrainResult.timings`` (the benchmark's per-step table) and in the
evaluation report, never in a published manifest (they differ from run to run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nbo.core.errors import during


class Progress:
    """What the trainer reports while it works; the CLI draws it, tests ignore it."""

    def step(self, name: str) -> None:  # pragma: no cover - display only
        """A new step starts."""

    def iterations(self, name: str, total: int) -> Callable[[int], None]:
        """A step with a known number of iterations; returns the per-iteration callback."""
        self.step(name)
        return lambda _iteration: None

    def done(self, name: str, seconds: float) -> None:  # pragma: no cover - display only
        """A step finished."""


class Steps:
    """Runs the trainer's named steps: announced to ``progress``, timed into ``timings``."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or Progress()
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, iterations: int | None = None) -> Iterator[Callable[[int], None]]:
        """A step of the trainer; with ``iterations``, it yields the callback that
        advances the display by one (ALS calls it after each of its iterations)."""
        if iterations is None:
            self.progress.step(name)
            tick: Callable[[int], None] = _ignore
        else:
            tick = self.progress.iterations(name, iterations)
        start = time.perf_counter()
        # The step is what the out-of-memory line names (nbo.cli).
        with during(name):
            yield tick
        self.timings[name] = time.perf_counter() - start
        self.progress.done(name, self.timings[name])


def _ignore(_iteration: int) -> None:
    """The iteration callback of a step that counts none."""
