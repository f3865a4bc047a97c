"""Worker processes that do not outlive the process that started them.

A worker forked from ``nbo serve``'s master or from ``nbo batch`` holds every file the
parent had open, its pipes included: when the parent is killed, the pipe a worker waits
on never reports its end (the other workers hold it open too), and the worker would wait
for work forever, an orphan holding the model's memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
