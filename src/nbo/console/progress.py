"""Progress of a long command as plain lines, for where there is no terminal.

In a terminal the commands draw rich's live progress (spinners, bars), which rich turns
off when stderr is a pipe or a file: a CI log or a cron mail then shows nothing until the
end, and a slow step cannot be told from a hung one. ``PlainProgress`` writes instead one
line when each step ends, and while a step runs a line every ``every`` seconds saying how
far it is, from a background thread (a step that reports no progress of its own, such as
fitting a model, still shows that it runs).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

# Seconds between two lines about the same running step.
EVERY_SECONDS = 5.0


@dataclass
class _Step:
    name: str
    started: float
    total: int | None = None
    unit: str = ""
    completed: int = 0
    detail: str = ""


class PlainProgress:
    """Plain progress lines on ``stream``, each starting with ``command``; a context
    manager (the periodic lines run while it is open)."""

    def __init__(
        self,
        command: str,
        stream: TextIO | None = None,
        every: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._command = command
        self._stream = stream
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._step: _Step | None = None
        self._last_line = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PlainProgress:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="nbo-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def stop(self) -> None:
        """No more lines: the running step is dropped and the periodic lines end (a
        command that is stopping says so once; a count running on would say it is not)."""
        with self._lock:
            self._step = None
        self.__exit__(None, None, None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No periodic lines, and no thread writing them, within: a process forks its
        workers safely only while it runs no other thread (``nbo.campaigns.workers``)."""
        running = self._thread is not None
        if running:
            self.__exit__(None, None, None)
        try:
            yield
        finally:
            if running:
                self.__enter__()

    def start(self, name: str, total: int | None = None, unit: str = "") -> None:
        """Step ``name`` starts; ``total`` units of work when known."""
        with self._lock:
            now = self._clock()
            self._step = _Step(name, now, total, unit)
            self._last_line = now

    def update(self, completed: int, detail: str = "") -> None:
        """The running step has done ``completed`` units; ``detail`` adds to its line."""
        with self._lock:
            if self._step is not None:
                self._step.completed = completed
                self._step.detail = detail

    def finish(self, name: str, seconds: float | None = None, detail: str = "") -> None:
        """Step ``name`` ended: its line, with how long it took."""
        with self._lock:
            step = self._step if self._step is not None and self._step.name == name else None
            if seconds is None:
                seconds = self._clock() - step.started if step is not None else 0.0
            if step is not None:
                self._step = None
            extra = f", {detail}" if detail else ""
            self._write(f"{name}: done in {seconds:.1f} s{extra}")

    def heartbeat(self) -> None:
        """A line on the running step if none was written for ``every`` seconds."""
        with self._lock:
            now = self._clock()
            step = self._step
            if step is None or now - self._last_line < self._every:
                return
            done = ""
            if step.total:
                share = step.completed / step.total
                unit = f" {step.unit}" if step.unit else ""
                done = f" {step.completed:,}/{step.total:,}{unit} ({share:.0%}),"
            extra = f", {step.detail}" if step.detail else ""
            self._write(f"{step.name}:{done} running for {now - step.started:.0f} s{extra}")

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self._every)):
            self.heartbeat()

    def _write(self, text: str) -> None:
        """One line (the lock is held)."""
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"{self._command}: {text}\n")
        stream.flush()
        self._last_line = self._clock()
