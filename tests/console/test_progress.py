"""Plain progress lines where there is no terminal: one when a step ends, and one every
few seconds while a step runs."""

from __future__ import annotations

import io
import threading
import time

from support import PROGRESS_LINE

from nbo.console.progress import PlainProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_step_ends_with_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress("nbo train", out, every=5, clock=clock)
    progress.start("read purchases")
    clock.now += 0.25
    progress.finish("read purchases")
    progress.finish("build full history", 1.04)  # never started: still its line
    assert out.getvalue().splitlines() == [
        "nbo train: read purchases: done in 0.2 s",
        "nbo train: build full history: done in 1.0 s",
    ]


def test_a_long_step_says_how_far_it_is_every_few_seconds_and_no_more() -> None:
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress("nbo batch", out, every=5, clock=clock)
    progress.start("offers", 4000, "customers screened")
    clock.now += 4.9
    progress.heartbeat()
    assert out.getvalue() == ""  # not yet 5 s
    progress.update(1000, "130 written")
    clock.now += 0.1
    progress.heartbeat()
    progress.heartbeat()  # at once again: nothing new
    clock.now += 5
    progress.update(2000, "260 written")
    progress.heartbeat()
    progress.finish("offers", detail="4,000 screened, 520 written")
    progress.heartbeat()  # nothing runs
    assert out.getvalue().splitlines() == [
        "nbo batch: offers: 1,000/4,000 customers screened (25%), running for 5 s, 130 written",
        "nbo batch: offers: 2,000/4,000 customers screened (50%), running for 10 s, 260 written",
        "nbo batch: offers: done in 10.0 s, 4,000 screened, 520 written",
    ]
    assert all(PROGRESS_LINE.match(line) for line in out.getvalue().splitlines())


def test_a_step_without_a_count_still_says_it_runs() -> None:
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress("nbo train", out, every=5, clock=clock)
    progress.start("churn model")
    clock.now += 7
    progress.heartbeat()
    assert out.getvalue() == "nbo train: churn model: running for 7 s\n"


def test_the_lines_come_from_a_thread_while_the_step_blocks() -> None:
    """The step below reports nothing itself; the background thread writes its line."""
    out = io.StringIO()
    with PlainProgress("nbo train", out, every=0.01) as progress:
        progress.start("fit ALS (before cutoff)", 15, "iterations")
        deadline = time.monotonic() + 30
        while "running for" not in out.getvalue() and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        progress.finish("fit ALS (before cutoff)")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("nbo train: fit ALS (before cutoff): 0/15 iterations (0%), ")
    assert lines[-1].startswith("nbo train: fit ALS (before cutoff): done in ")


def test_paused_lines_run_no_thread_and_resume_after() -> None:
    """A process about to fork pauses them: no thread of theirs may run then."""
    out = io.StringIO()

    def beating() -> bool:
        return any(t.name == "nbo-progress" for t in threading.enumerate())

    with PlainProgress("nbo batch", out, every=0.01) as progress:
        progress.start("offers", 10, "customers")
        with progress.paused():
            assert not beating()
            written = out.getvalue()
            threading.Event().wait(0.05)
            assert out.getvalue() == written  # no periodic line while paused
        assert beating()
        deadline = time.monotonic() + 30
        while out.getvalue() == written and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert out.getvalue() != written
    assert not beating()


def test_stopped_lines_say_nothing_more() -> None:
    """A command that is stopping (Ctrl-C) says so once: a count running on would say
    the work goes on while the command only cleans up."""
    out, clock = io.StringIO(), Clock()

    def beating() -> bool:
        return any(t.name == "nbo-progress" for t in threading.enumerate())

    with PlainProgress("nbo batch", out, every=5, clock=clock) as progress:
        progress.start("offers", 4000, "customers")
        progress.update(1000)
        progress.stop()
        assert not beating()
        clock.now += 60
        progress.update(2000)
        progress.heartbeat()
    assert out.getvalue() == ""
