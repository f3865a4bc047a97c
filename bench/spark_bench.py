"""The Spark engine against the local engine on the same data, in customers per second,
and what one partition costs per customer: from it, what a cluster would reach on paper.

On a model the trainer publishes from synthetic data (every rule on, an empty SQLite
store, the default catalogue, k=10, chunks of 1,000):

- **local engine**: ``nbo.campaigns.batch.write_batch`` with the worker processes ``nbo
  batch`` starts by default (one per core, at most one per 15,000 customers).
- **spark, cold**: what ``nbo batch --engine spark`` takes: starting the local session
  (``local[2]``: two executor cores; the JVM), then a first ``write_spark_batch``, whose
  Python workers start and open the run (the models) when a task first needs it, decide,
  write the parts; the driver counts them and renames the folder into place.
- **spark, warm**: the same run again (best of ``repeats``) on that session, whose Python
  workers hold the run: as on a long-lived cluster session; Spark's per-task work, the
  Arrow hand-over, the Parquet writing and the driver's passes remain.
- **one partition, in-process**: ``decide_chunk`` over the chunks of the first of the
  partitions the engine makes, in this process, the run open: a partition's work without
  Spark (the cost per customer that a cluster divides among its cores).
- **opening a run in a fresh Python**: what each executor's Python worker pays once
  (imports of the libraries, then the models, catalogue and store), timed in a
  subprocess.

The rows of both engines are compared (apart from ``request_id``, which names the run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from bench.batch_bench import local_batch_in_a_fresh_python
from bench.report import table
from nbo.campaigns.batch import RunSpec, Selection, decide_chunk, open_run
from nbo.campaigns.spark import (
    LOCAL_MASTER,
    SparkOptions,
    default_partitions,
    spark_session,
    write_spark_batch,
)
from nbo.settings import Settings

CHUNK = 1000
K = 10
LOCAL_CORES = 2  # LOCAL_MASTER's
# Clusters priced on paper: executors of this many cores.
CLUSTER_CORES = 4
CLUSTER_EXECUTORS = (1, 4, 16, 64)
NATIONAL_RETAILER = 30_000_000  # customers (issue 17: 10-50 million)

_OPEN_IN_A_FRESH_PYTHON = """
import json, sys, time
started = time.perf_counter()
from nbo.campaigns.batch import RunSpec, open_run
from nbo.settings import Settings
from datetime import datetime
imported = time.perf_counter()
spec = RunSpec(Settings.model_validate_json(sys.argv[1]), "email", 10,
               datetime.fromisoformat(sys.argv[2]), False, "bench-open")
open_run(spec).store.close()
print(json.dumps({"imports": imported - started, "open": time.perf_counter() - imported}))
"""


@dataclass
class SparkBenchResult:
    customers: int
    rows: int
    same_rows: bool
    local_workers: int
    local_s: float
    session_s: float  # starting the local session (the JVM)
    first_s: float  # the first run on it: Python workers start and load the models
    warm_s: list[float]  # the next runs, the workers holding the models
    partitions: int
    partition_customers: int
    partition_s: list[float]
    worker_imports_s: float
    worker_open_s: float

    def per_second(self, seconds: float) -> float:
        return self.customers / seconds

    @property
    def warm_best_s(self) -> float:
        return min(self.warm_s)

    @property
    def cold_s(self) -> float:
        """What ``nbo batch --engine spark`` takes: the session's start and a first run."""
        return self.session_s + self.first_s

    @property
    def partition_per_s(self) -> float:
        """One core's customers per second inside a partition, without Spark."""
        return self.partition_customers / min(self.partition_s)

    @property
    def efficiency(self) -> float:
        """The warm Spark run against its cores each deciding at the partition's rate."""
        return self.per_second(self.warm_best_s) / (LOCAL_CORES * self.partition_per_s)

    @property
    def fixed_s(self) -> float:
        """What a cold run pays beyond a warm one: the session's start, and the Python
        workers' start and the models' load (the first run less a warm one)."""
        return self.session_s + max(self.first_s - self.warm_best_s, 0.0)


def bench_spark(models_dir: Path, now_s: int, repeats: int = 2) -> SparkBenchResult:
    now = datetime.fromtimestamp(now_s, UTC)
    with tempfile.TemporaryDirectory(prefix="nbo-bench-spark-") as tmp:
        folder = Path(tmp)
        settings = Settings(models_dir=models_dir, store_url=f"sqlite:///{folder / 'store.db'}")
        spec = RunSpec(settings, "email", K, now, False, "bench-local")
        run = open_run(spec)
        ids = [str(c) for c in run.context.models.current.customers.ids]
        selection = Selection(ids)
        local_out = folder / "local.parquet"
        local_s, workers, _, _ = local_batch_in_a_fresh_python(spec, local_out)

        spark_out = folder / "spark.parquet"
        spark_spec = RunSpec(settings, "email", K, now, False, "bench-spark")
        started = time.perf_counter()
        with spark_session(SparkOptions()):
            session_s = time.perf_counter() - started
            runs = []
            for _ in range(1 + repeats):
                started = time.perf_counter()
                summary = write_spark_batch(run, spark_spec, selection, spark_out, CHUNK)
                runs.append(time.perf_counter() - started)

        expected = pq.read_table(local_out).drop(["request_id"])
        same_rows = pq.read_table(spark_out).drop(["request_id"]).equals(expected)
        chunks = [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]
        partitions = min(default_partitions(LOCAL_CORES, len(ids)), len(chunks))
        # parallelize's first slice: the chunks before len * 1 / partitions.
        first = chunks[: len(chunks) // partitions]
        partition_s = []
        for _ in range(repeats):
            started = time.perf_counter()
            for customer_ids in first:
                decide_chunk(run, customer_ids, None)
            partition_s.append(time.perf_counter() - started)
        run.store.close()
        worker = _open_in_a_fresh_python(settings, now)
    return SparkBenchResult(
        customers=len(ids),
        rows=summary.rows,
        same_rows=same_rows,
        local_workers=workers,
        local_s=local_s,
        session_s=session_s,
        first_s=runs[0],
        warm_s=runs[1:],
        partitions=partitions,
        partition_customers=sum(len(c) for c in first),
        partition_s=partition_s,
        worker_imports_s=worker["imports"],
        worker_open_s=worker["open"],
    )


def _open_in_a_fresh_python(settings: Settings, now: datetime) -> dict[str, float]:
    answer = subprocess.run(
        [
            sys.executable,
            "-c",
            _OPEN_IN_A_FRESH_PYTHON,
            settings.model_dump_json(),
            now.isoformat(),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    timings: dict[str, float] = json.loads(answer.stdout.strip().splitlines()[-1])
    return timings


def print_spark(result: SparkBenchResult) -> None:
    n = result.customers
    print(
        f"\n  Campaign engines: all {n:,} customers, k={K}, chunks of {CHUNK:,}, every rule "
        f"on, empty SQLite store; {result.rows:,} rows; Spark {LOCAL_MASTER} "
        f"({LOCAL_CORES} executor cores), {result.partitions} partitions"
    )
    warm = ", ".join(f"{s:,.1f}" for s in result.warm_s)
    rows: list[Sequence[object] | None] = [
        [
            f"local engine, {result.local_workers} worker processes (the default)",
            f"{result.local_s:,.1f}",
            f"{result.per_second(result.local_s):,.0f}",
        ],
        [
            "spark, cold: session start + first run (nbo batch --engine spark)",
            f"{result.session_s:,.1f} + {result.first_s:,.1f}",
            f"{result.per_second(result.cold_s):,.0f}",
        ],
        [
            f"spark, warm: workers holding the models (best of {warm})",
            f"{result.warm_best_s:,.1f}",
            f"{result.per_second(result.warm_best_s):,.0f}",
        ],
        None,
        [
            f"one partition in-process: decide_chunk over {result.partition_customers:,} "
            "customers, one core",
            f"{min(result.partition_s):,.1f}",
            f"{result.partition_per_s:,.0f}",
        ],
    ]
    print(table(["path", "seconds", "customers/s"], rows))
    cost_us = 1e6 / result.partition_per_s
    warm_vs_local = result.local_s / result.warm_best_s
    print(
        f"\n  Same rows as the local engine (request_id aside): "
        f"{'yes' if result.same_rows else 'NO'}\n"
        f"  Spark warm / local engine, same cores: {warm_vs_local:.0%}\n"
        f"  Cost per customer inside a partition: {cost_us:,.0f} us on one core\n"
        f"  Spark's efficiency, warm: {result.efficiency:.0%} of {LOCAL_CORES} cores each "
        f"deciding at that rate (the rest: Spark's tasks, Arrow hand-over, Parquet, "
        f"the driver's count and rename)\n"
        f"  Fixed cost of a cold run: {result.fixed_s:,.1f} s (session start, Python workers "
        f"start and load the models; a fresh Python imports nbo's libraries in "
        f"{result.worker_imports_s:,.1f} s and opens the run in {result.worker_open_s:,.1f} s)"
    )
    print(
        f"\n  On paper, for {NATIONAL_RETAILER:,} customers on executors of {CLUSTER_CORES} "
        "cores: each core at the partition's rate, times Spark's efficiency as measured\n"
        "  here (a floor: on a shared machine the cores are not all ours) or at 100% (a "
        "ceiling), plus the cold run's fixed cost;\n  store reads over a network, skew and "
        "the driver's passes not included"
    )
    projected: list[Sequence[object] | None] = []
    for executors in CLUSTER_EXECUTORS:
        row: list[object] = [f"{executors} x {CLUSTER_CORES} cores"]
        for efficiency in (result.efficiency, 1.0):
            rate = executors * CLUSTER_CORES * result.partition_per_s * efficiency
            hours = (result.fixed_s + NATIONAL_RETAILER / rate) / 3600
            row += [f"{rate:,.0f}", f"{hours:,.2f}"]
        projected.append(row)
    measured = f"{result.efficiency:.0%}"
    print(
        table(
            [
                "cluster",
                f"customers/s at {measured}",
                "hours",
                "customers/s at 100%",
                "hours",
            ],
            projected,
        )
    )
