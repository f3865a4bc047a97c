"""A campaign's worker processes: each decides whole chunks with a run of its own.

Forked from the process that opened the run, workers start on its models as loaded:
the memory maps, the ranker's compiled trees and every module already imported, in a
few milliseconds. Spawned, each starts a new interpreter that imports pandas,
scikit-learn and LightGBM, then loads and compiles the models again: about 3.3 s at
100k customers x 20k items, an eighth of a 100,000-customer campaign on two cores.

A fork is taken only where it is safe (``fork_refused``), else the workers are spawned:
- the platform forks (Linux);
- no other thread runs in this process: a lock another thread held at the fork (a
  progress bar's, the PostgreSQL pool's) would stay held in the child forever (``nbo
  batch`` pauses both for the fork: ``Store.paused``);
- OpenMP was set to one thread before its library loaded (``nbo.core.openmp``, as
  ``nbo batch`` and ``nbo serve`` set it).

A forked worker opens a store connection of its own: SQLite and psycopg connections
must not be used across a fork. It never touches the one it inherited, and ends without
closing it (multiprocessing ends a forked child with ``os._exit``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing.synchronize import Event
from types import TracebackType

from threadpoolctl import threadpool_limits

from nbo.campaigns.batch import (
    BatchError,
    BatchRun,
    ChunkResult,
    RunSpec,
    decide_chunk,
    open_run,
    run_of,
)
from nbo.core import openmp, processes
from nbo.runtime.decide import Context
from nbo.store import open_store

log = logging.getLogger(__name__)

# Customers a worker must have to repay its start: a spawned one imports the libraries
# and loads the models (about 3.3 s here, some 7,000 customers' decisions); a forked
# one starts at once, and one chunk each is enough.
SPAWNED_CUSTOMERS_PER_WORKER = 15_000
FORKED_CUSTOMERS_PER_WORKER = 1_000


def fork_refused() -> str | None:
    """Why this process may not fork its workers now (None: it may)."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} does not fork safely"
    if threading.active_count() > 1:
        return "other threads are running"
    if not openmp.runs_one_thread():
        return f"OpenMP runs threads (it loaded without {openmp.VARIABLE}=1)"
    return None


def default_workers(customers: int) -> int:
    """Worker processes for a batch of ``customers``: one per CPU, but only as many as
    repay their start (fewer run faster in this process)."""
    each = FORKED_CUSTOMERS_PER_WORKER if fork_refused() is None else SPAWNED_CUSTOMERS_PER_WORKER
    return max(1, min(os.cpu_count() or 1, customers // each))


def worker_count(customers: int, chunk: int, asked: int | None = None) -> int:
    """The workers a batch of ``customers`` in chunks of ``chunk`` starts: ``asked``
    (``--workers``), else ``default_workers``, never more than there are chunks."""
    return min(asked or default_workers(customers), -(-customers // chunk))


class BatchWorkers:
    """``count`` worker processes deciding chunks for ``run`` (opened from ``spec``),
    forked now when that is safe, else spawned. Create them before starting anything
    that runs a thread (a progress bar): the fork happens here."""

    def __init__(self, run: BatchRun, spec: RunSpec, count: int) -> None:
        refused = fork_refused()
        self.forked = refused is None
        self.count = count
        context = multiprocessing.get_context("fork" if self.forked else "spawn")
        # Set by ``close``: the workers call off the chunks they are deciding and those
        # queued for them (a stopping campaign does not wait for them, nor takes back
        # what they would record).
        self._stopping = context.Event()
        if self.forked:
            self._pool = ProcessPoolExecutor(
                count,
                mp_context=context,
                initializer=_adopt,
                initargs=(spec, run.context, os.getpid(), self._stopping),
            )
            # A forking pool forks every worker at its first task: now, while this
            # process runs no other thread (the pool's own starts after the forks).
            try:
                self._pool.submit(os.getpid).result()
            except BrokenProcessPool as exc:
                self.close(wait=False)
                raise BatchError(f"the worker processes did not start: {exc}") from exc
        else:
            log.debug("batch workers spawned: %s", refused)
            self._pool = ProcessPoolExecutor(
                count,
                mp_context=context,
                initializer=_open,
                initargs=(spec, self._stopping),
            )

    @property
    def start(self) -> str:
        """How the workers started: "forked" or "spawned"."""
        return "forked" if self.forked else "spawned"

    def decide(self, chunks: Sequence[Sequence[str]], stage: str | None) -> Iterator[ChunkResult]:
        """Each chunk's result, in the chunks' order; a ``BatchError`` when a worker
        stops before its chunk is done (killed, or out of memory)."""
        try:
            yield from self._pool.map(_worker_chunk, chunks, [stage] * len(chunks))
        except BrokenProcessPool as exc:
            raise BatchError(
                "a worker process stopped before its chunk was done (killed, or out of "
                "memory?); no campaign file was written"
            ) from exc

    def close(self, wait: bool = True) -> None:
        """Stop the workers: the chunks not started are cancelled, and those queued for
        a worker or being decided are called off (``decide_chunk``'s ``stopping``: a
        delivery rolls back, nothing of it recorded); ``wait``: until the workers are
        done with them. After the last result, nothing is left to call off."""
        self.call_off()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def call_off(self) -> None:
        """From now on, the workers call off every chunk they are given or deciding."""
        self._stopping.set()

    def __enter__(self) -> BatchWorkers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # After a failure, what the workers are deciding is of no use: no waiting for it.
        self.close(wait=error is None)


# A worker process's run, opened once by ``_open`` or ``_adopt``.
_WORKER: dict[str, object] = {}


def _open(spec: RunSpec, stopping: Event) -> None:
    processes.leave_interrupts_to_the_parent()
    _WORKER["stopping"] = stopping
    # One BLAS thread per worker: the workers are the parallelism.
    _WORKER["limits"] = threadpool_limits(limits=1, user_api="blas")
    _WORKER["run"] = open_run(spec)
    processes.freeze_heap()


def _adopt(spec: RunSpec, context: Context, parent: int, stopping: Event) -> None:
    # Killed with the parent: a forked worker holds the pipes the parent fed it, so it
    # would never see their end and wait for work forever.
    processes.die_with(parent)
    processes.leave_interrupts_to_the_parent()
    _WORKER["stopping"] = stopping
    _WORKER["limits"] = threadpool_limits(limits=1, user_api="blas")
    store = open_store(spec.settings.store_url)
    _WORKER["run"] = run_of(spec, replace(context, store=store))


def _worker_chunk(customer_ids: Sequence[str], stage: str | None) -> ChunkResult:
    run, stopping = _WORKER["run"], _WORKER["stopping"]
    assert isinstance(run, BatchRun) and isinstance(stopping, Event)
    return decide_chunk(run, customer_ids, stage, stopping.is_set)
