"""OpenMP's threads in processes that fork workers.

libgomp (the OpenMP of LightGBM, implicit and scikit-learn's wheels) keeps a pool of
threads that does not survive a fork: a child entering a parallel region after its
parent ran one with threads waits for threads it does not have. ``nbo serve`` (gunicorn)
and ``nbo batch`` fork their workers, so they set OpenMP to one thread before any of
those libraries loads libgomp; each worker decides on one core anyway.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_info

VARIABLE = "OMP_NUM_THREADS"


def one_thread() -> None:
    """Set OpenMP to one thread for this process and its children, when no OpenMP is
    loaded yet (it reads the variable once, when it loads: later, setting it would
    change nothing here, only what children inherit)."""
    if not _loaded():
        os.environ[VARIABLE] = "1"


def runs_one_thread() -> bool:
    """Whether every OpenMP loaded in this process runs one thread by default (True
    when none is loaded)."""
    return all(info["num_threads"] == 1 for info in _loaded())


def _loaded() -> list[dict[str, object]]:
    return [info for info in threadpool_info() if info.get("user_api") == "openmp"]
