"""Worker processes: they do not outlive the process that started them, and the garbage
collector leaves alone what they share with it.

A worker forked from ``nbo serve``'s master or from ``nbo batch`` holds every file the
parent had open, its pipes included: when the parent is killed, the pipe a worker waits
on never reports its end (the other workers hold it open too), and the worker would wait
for work forever, an orphan holding the model's memory.

The imported libraries and a loaded model are some 160,000 Python objects that live as
long as the process. The cyclic garbage collector's full passes walk every one of them:
77 ms a pass in a 100k x 20k campaign, which made a dozen passes per 30,000 customers,
about a tenth of its time (and in a forked worker each pass writes to pages it shares
with its parent, which then copies them). Frozen (``gc.freeze``), they are out of the
collector's reach: a pass took 19 ms there, and the collector's share of the campaign
fell from 11% to 4%.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """Ask Linux to SIGKILL this process when ``parent`` (its parent) dies; elsewhere
    nothing. Exits at once if the parent died before the request was made."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def give_back_freed_heap() -> None:
    """Return the heap's freed pages to the system (glibc's ``malloc_trim``; elsewhere,
    musl or macOS, nothing to ask). glibc keeps what a process frees for its next
    allocations: after a model load that is the load's own working memory, LLVM's
    compilation of the ranker included (about 35 MB on a 90-tree ranker), which the
    process then holds until it loads the next model. 1-2 ms."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic collector's reach, for good (a
    process that serves until it ends): collected first, so no garbage is frozen."""
    gc.collect()
    gc.freeze()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """``freeze_heap`` while the block runs (a campaign: forked workers inherit the frozen
    heap), then the objects are the collector's again."""
    freeze_heap()
    try:
        yield
    finally:
        gc.unfreeze()


def process_token(pid: int | None = None) -> str:
    """Who a process is, for as long as it lives: its machine, and on Linux the machine's
    boot and the process's start time beside its id, so that a later process given the
    same id (ids are reused) is not taken for it. ``pid``: this process by default."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_time(pid)}"


def process_gone(token: str) -> bool | None:
    """Whether the process of ``token`` (``process_token``) has ended: True or False on
    its own machine, None on another (nothing here can tell)."""
    host, boot, pid, started = token.rsplit("/", 3)
    if host != socket.gethostname():
        return None
    if boot != _boot_id():
        return True  # the machine has restarted since
    return not pid_alive(int(pid)) or _start_time(int(pid)) != started


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (it may be another than the one
    that had the id before: ``process_gone`` tells them apart)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "-" elsewhere or when
    it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    # The command name (2nd field) may hold spaces and parentheses: count after its end.
    return stat[stat.rindex(")") + 2 :].split()[19]


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored while the block runs: the clean-up after a first one (a
    campaign taking its impressions back, stopping its workers), which a second would
    stop half-way, leaving the process waiting on its workers and the impressions
    counted. In the main thread only (the only one that may set handlers); the handlers
    before are back after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    before = {stop: signal.signal(stop, signal.SIG_IGN) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in before.items():
            signal.signal(stop, handler)


def leave_interrupts_to_the_parent() -> None:
    """In a worker process: Ctrl-C ignored, SIGTERM ends it at once. A terminal's Ctrl-C
    (a scheduler's SIGTERM to the group) reaches every process of the group; the parent
    stops its workers and cleans up itself, while a worker's own KeyboardInterrupt (or the
    parent's SIGTERM handler it inherited) only printed tracebacks over the parent's one
    line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
