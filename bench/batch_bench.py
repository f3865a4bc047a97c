"""Batch generation against implicit's own batch ``recommend``, in customers per second.

Floor: ``model.als.recommend(userids, user_items, N=k, filter_already_liked_items=True)``
over every customer of the model, in chunks of the batch's size (the rows built before
timing), one BLAS thread, implicit's own threads as it likes (all cores). Batch:
``nbo.campaigns.batch.write_batch`` for the same customers to a Parquet file, every rule on
(suppression, eligibility under the catalogue, consent, the contact policy; an empty
event store), the ranker when the model has one: with the worker processes
``nbo batch`` starts by default (``nbo.campaigns.workers``; their start included), in a
fresh Python set up as ``nbo batch`` sets itself up (one OpenMP thread, so its workers
fork: this process's OpenMP ran the floor's threads; the heap frozen while the
campaign runs, as the command freezes it), and in one process. Then the
first 10,000 customers once more under cProfile, to say where the time goes (the
profiler slows Python-heavy parts more than numpy and LightGBM, so the shares are
indicative).
"""

from __future__ import annotations

import contextlib
import cProfile
import multiprocessing
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from nbo.campaigns.batch import RunSpec, Selection, open_run, write_batch
from nbo.campaigns.workers import BatchWorkers, worker_count
from nbo.core import openmp
from nbo.core.processes import frozen_heap
from nbo.models.served import ServingModel
from nbo.settings import Settings

CHUNK = 1000
# (label, function name as cProfile reports it, file suffix) of the parts worth naming.
PARTS = (
    ("store reads (consent, contacts, posted purchases)", "read_states", "decide.py"),
    ("profiles (features, churn model, stage, send time)", "profiles_of", "decision.py"),
    ("histories, suppression, fatigue", "_prepare_many", "ranking.py"),
    ("candidate sources (all customers of a chunk)", "candidates", "models/candidates.py"),
    ("ranker scores (its compiled trees, or LightGBM)", "predict", "ranker.py"),
    ("arbitration under the catalogue", "arbitrate", "arbitration.py"),
    ("explanations and reason texts", "explain", "explanations.py"),
    ("output rows (Arrow columns; less the explanations)", "chunk_table", "batch.py"),
    ("writing Parquet", "write_table", "parquet/core.py"),
)


@dataclass
class BatchResult:
    customers: int
    workers: int
    forked: bool  # the workers forked (else spawned)
    floor_per_s: float
    batch_per_s: float  # with ``workers`` processes (the command's default)
    single_per_s: float  # one process
    rows: int
    parts: list[tuple[str, float]]  # label, share of the profiled batch's time
    profiled_customers: int
    profiled_s: float


# Customers in the profiled run (the profiler slows the batch several times over).
PROFILED = 10_000


def bench_batch(
    models_dir: Path, model: ServingModel, now_s: int, k: int, catalog_path: Path | None
) -> BatchResult:
    ids = [str(c) for c in model.customers.ids]
    floor_per_s = _floor(model, k)
    with tempfile.TemporaryDirectory(prefix="nbo-bench-batch-") as tmp:
        settings = Settings(
            models_dir=models_dir,
            store_url=f"sqlite:///{Path(tmp) / 'store.db'}",
            catalog=catalog_path,
        )
        spec = RunSpec(settings, "email", k, datetime.fromtimestamp(now_s, UTC), False, "bench")
        out = Path(tmp) / "campaign.parquet"
        parallel, workers, forked, rows = local_batch_in_a_fresh_python(spec, out)
        run = open_run(spec)
        start = time.perf_counter()
        with frozen_heap():  # as ``nbo batch`` runs a campaign
            write_batch(run, Selection(ids), out, CHUNK)
        single = time.perf_counter() - start
        profiled_ids = ids[:PROFILED]
        profiler = cProfile.Profile()
        profiled_start = time.perf_counter()
        with frozen_heap():
            profiler.enable()
            write_batch(run, Selection(profiled_ids), out, CHUNK)
            profiler.disable()
        profiled = time.perf_counter() - profiled_start
        run.store.close()
    return BatchResult(
        customers=len(ids),
        workers=workers,
        forked=forked,
        floor_per_s=floor_per_s,
        batch_per_s=len(ids) / parallel,
        single_per_s=len(ids) / single,
        rows=rows,
        parts=_parts(profiler, profiled),
        profiled_customers=len(profiled_ids),
        profiled_s=profiled,
    )


def local_batch_in_a_fresh_python(
    spec: RunSpec, out: Path, target: Callable[[RunSpec, Path, Connection], None] | None = None
) -> tuple[float, int, bool, int]:
    """``nbo batch``'s local run of every customer in a new process set up as the command
    sets itself up: seconds from its workers' start to the file in place, the workers,
    whether they forked, and the rows written. A child that dies before it answers
    (killed, out of memory, a crash in a native library) is a RuntimeError with its exit
    code, not a wait for ever on an answer that never comes. ``target``: what the child
    runs (``_timed_batch``), for a test."""
    before = os.environ.get(openmp.VARIABLE)
    # Read by the new process's libgomp when it loads (here, OpenMP is loaded already).
    os.environ[openmp.VARIABLE] = "1"
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    # Not a pool's: a pool's processes are daemons, which may not start workers.
    process = context.Process(target=target or _timed_batch, args=(spec, out, writer))
    try:
        process.start()
    finally:
        writer.close()  # the child's copy is its own
        if before is None:
            os.environ.pop(openmp.VARIABLE, None)
        else:
            os.environ[openmp.VARIABLE] = before
    # The answer, or the child's end (its sentinel; the batch's own forked workers may
    # hold the pipe open after it died, so its end of writing says nothing).
    wait([reader, process.sentinel])
    result: tuple[float, int, bool, int] | str | None = None
    if reader.poll():
        with contextlib.suppress(EOFError):
            result = reader.recv()
    reader.close()
    process.join()
    if result is None:
        raise RuntimeError(
            f"the batch in a fresh Python ended without an answer (exit code "
            f"{process.exitcode}: killed, out of memory, or a crash in a native library?)"
        )
    if isinstance(result, str):
        raise RuntimeError(f"the batch in a fresh Python failed: {result}")
    return result


def _timed_batch(spec: RunSpec, out: Path, answer: Connection) -> None:
    try:
        answer.send(_timed(spec, out))
    except Exception as exc:
        answer.send(f"{type(exc).__name__}: {exc}")
        raise


def _timed(spec: RunSpec, out: Path) -> tuple[float, int, bool, int]:
    run = open_run(spec)
    ids = [str(c) for c in run.context.models.current.customers.ids]
    start = time.perf_counter()
    count = worker_count(len(ids), CHUNK)
    with frozen_heap(), BatchWorkers(run, spec, count) as workers:
        summary = write_batch(run, Selection(ids), out, CHUNK, workers=workers)
    seconds = time.perf_counter() - start
    run.store.close()
    return seconds, count, workers.forked, summary.rows


def _floor(model: ServingModel, k: int) -> float:
    """Customers per second of implicit's batch recommend with the liked-items filter."""
    n_customers, n_items = len(model.customers), len(model.items)
    indptr = np.asarray(model.indptr)
    history = sp.csr_matrix(
        (
            np.asarray(model.history_confidence, dtype=np.float32),
            np.asarray(model.history_items),
            indptr,
        ),
        shape=(n_customers, n_items),
    )
    chunks = [
        (np.arange(start, min(start + CHUNK, n_customers)), history[start : start + CHUNK])
        for start in range(0, n_customers, CHUNK)
    ]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for userids, rows in chunks:
            model.als.recommend(userids, rows, N=k, filter_already_liked_items=True)
        best = min(best, time.perf_counter() - start)
    return n_customers / best


def _parts(profiler: cProfile.Profile, total: float) -> list[tuple[str, float]]:
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    shares = []
    for label, function, suffix in PARTS:
        cumulative = sum(
            entry[3]
            for (filename, _line, name), entry in stats.items()
            if name == function and filename.endswith(suffix)
        )
        shares.append((label, cumulative / total if total else 0.0))
    # The explanations are worked out when the output rows first read them: the rows'
    # share is their own time, so the shares add up to at most the whole.
    functions = [function for _, function, _ in PARTS]
    rows, why = functions.index("chunk_table"), functions.index("explain")
    shares[rows] = (shares[rows][0], max(0.0, shares[rows][1] - shares[why][1]))
    return shares
