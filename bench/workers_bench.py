"""Offers over HTTP with one worker and with two, driven by wrk, against /health/live.

Two real servers (``python -m nbo.cli serve``, ``NBO_WORKERS=1`` and ``=2``) run side by
side on 127.0.0.1 with the model trained on the shared Online Retail file, the demo
catalogue and a clock a week after the data ends (``bench.load_bench``'s setting); the
log level is warning (no access lines), metrics on. The load comes from wrk (C, not
Python, so the client costs little next to the server): ``WRK_THREADS`` threads and
``CONNECTIONS_PER_WORKER`` keep-alive connections per worker, calling
``GET /v1/customers/{id}/offers?k=10&channel=app`` over 1,000 known customers in turn,
and ``GET /health/live`` (the floor: the HTTP stack, the middleware and the metrics,
no decision) on the same server. Rounds alternate servers and paths, so a machine that
slows down mid-run slows every cell alike; each cell shows its best round (on a shared
machine other work only ever lowers a rate, as the trainer's best run counts) and lists
them all.

The machine's cores are shared by the servers and wrk: each run reports the cores the
server's processes used (their CPU time from /proc over the run's wall time) and wrk's
own (its CPU time as a reaped child), so a scaling short of 2x can be read against
what was left for the workers. Needs wrk (``apt-get install -y wrk``); without it the
section says so and is skipped.

``bench_workers_synthetic`` runs the same on the synthetic data (issue 16's offers p99 at
100k x 20k with 8 connections per worker): the model the trainer publishes from it, or
one kept from an earlier run, the default catalogue.

After the runs, each process's memory is read from Linux's ``/proc/PID/smaps_rollup``:
what it holds alone (USS: its private pages) against what it shares with the others (the
libraries imported before the fork, the model's memory maps) and its share of that
(PSS). ``python -m bench.workers_bench`` reports the same without wrk, for 1, 2 and 4
workers, after offers calls from Python.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.generate import DEMO_CATALOG, ONLINE_RETAIL
from bench.report import table
from bench.servers import Server, running_server

WORKER_COUNTS = (1, 2)
CONNECTIONS_PER_WORKER = 8
WRK_THREADS = 2
RUN_SECONDS = 10
WARMUP_SECONDS = 3
ROUNDS = 5
CUSTOMERS = 1_000
LIVE = "/health/live"
OFFERS = "offers"
# The same calls with ?reasons=false (no explanations worked out), with one worker: what a
# caller who shows no reasons gets.
OFFERS_NO_REASONS = "offers, reasons=false"
INSTALL = "apt-get install -y wrk (Debian's package; brew install wrk on macOS)"
# Issue 16: each worker beyond the first holds at most this much memory of its own (MB).
OWN_MEMORY_TARGET_MB = 100
# python -m bench.workers_bench: the worker counts, and the offers calls (fresh
# connections, so the kernel spreads them over the workers) each server answers before
# its memory is read.
MEMORY_WORKER_COUNTS = (1, 2, 4)
MEMORY_CALLS = 2_000

# wrk's script: the offers paths in turn (each thread from its own offset), and one JSON
# line of what wrk measured (latency in microseconds) when the run ends.
SCRIPT = """
local paths = {%(paths)s}
local threads = 0
function setup(thread)
  thread:set("position", threads * 97)
  threads = threads + 1
end
function request()
  position = position %% #paths + 1
  return wrk.format("GET", paths[position])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'NBO {"requests": %%d, "micros": %%d, "p50": %%d, "p99": %%d, "non_2xx": %%d, ' ..
    '"socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Run:
    """One wrk run against one server and path."""

    per_second: float
    p50_ms: float
    p99_ms: float
    failures: int
    server_cores: float
    wrk_cores: float


@dataclass
class Cell:
    workers: int
    path: str
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> Run:
        """The round with the highest rate: the one other work disturbed least."""
        return max(self.runs, key=lambda run: run.per_second)

    @property
    def failures(self) -> int:
        return sum(run.failures for run in self.runs)


@dataclass(frozen=True)
class Memory:
    """One process's memory from ``/proc/PID/smaps_rollup``, in MB. ``unique`` (USS) is
    Private_Clean + Private_Dirty: the pages only this process maps, what it adds to the
    machine; ``shared`` is Shared_Clean + Shared_Dirty: pages others map too (libraries
    imported before the fork, the model's memory maps, the page cache of shared files);
    ``pss`` charges each shared page to its processes in equal parts."""

    pid: int
    role: str  # "master" or "worker"
    rss: float
    pss: float
    unique: float
    shared: float


@dataclass(frozen=True)
class WorkersResult:
    cells: dict[tuple[int, str], Cell]
    model: str
    catalogue: str
    clock: str
    connections: dict[int, int]
    memory: dict[int, list[Memory]]
    # Per server (workers): the offers calls decided per chunk, on average over its runs.
    chunks: dict[int, float] = field(default_factory=dict)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` so far (a process gone counts nothing)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _memory(pid: int, role: str) -> Memory | None:
    """The process's memory, or None when it is gone (or the platform has no smaps)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    kb = {}
    for line in lines[1:]:  # the first line names the address range
        name, value, *_ = line.split()
        kb[name.rstrip(":")] = int(value)

    def mb(*names: str) -> float:
        return sum(kb.get(name, 0) for name in names) / 1024

    return Memory(
        pid,
        role,
        rss=mb("Rss"),
        pss=mb("Pss"),
        unique=mb("Private_Clean", "Private_Dirty"),
        shared=mb("Shared_Clean", "Shared_Dirty"),
    )


def memory_of(server: Server) -> list[Memory]:
    """The master's memory and each worker's, the master first."""
    master, *workers = _processes(server)
    found = [_memory(master, "master"), *(_memory(pid, "worker") for pid in workers)]
    return [memory for memory in found if memory is not None]


def _processes(server: Server) -> list[int]:
    """The server's master and workers."""
    master = server.process.pid
    try:
        with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as handle:
            return [master, *(int(pid) for pid in handle.read().split())]
    except OSError:
        return [master]


def _wrk(server: Server, script: Path, connections: int, seconds: int) -> Run:
    pids = _processes(server)
    server_before = _cpu_seconds(pids)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            server.base,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cores = (_cpu_seconds(pids) - server_before) / wall
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    line = next(line for line in done.stdout.splitlines() if line.startswith("NBO "))
    measured = json.loads(line.removeprefix("NBO "))
    return Run(
        per_second=measured["requests"] / (measured["micros"] / 1e6),
        p50_ms=measured["p50"] / 1000,
        p99_ms=measured["p99"] / 1000,
        failures=measured["non_2xx"] + measured["socket_errors"],
        server_cores=server_cores,
        wrk_cores=wrk_cpu / wall,
    )


def _mean_chunk(server: Server) -> float:
    """The offers calls the server decided per chunk so far (``nbo_offers_chunk_size``,
    summed over its workers), NaN before any."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "nbo_offers_chunk_size"
        for sample in family.samples
        if sample.name.endswith(("_sum", "_count"))
    }
    count = values.get("nbo_offers_chunk_size_count", 0.0)
    return values.get("nbo_offers_chunk_size_sum", 0.0) / count if count else math.nan


def run_workers(
    models_dir: Path, work_dir: Path, customers: Sequence[str], settings: dict[str, str]
) -> tuple[dict[tuple[int, str], Cell], dict[int, list[Memory]], dict[int, float]]:
    """Every (workers, path) cell, ``ROUNDS`` runs each, servers and paths alternating;
    then each server's memory per process and offers calls per chunk."""
    paths = [f"/v1/customers/{c}/offers?k=10&channel=app" for c in customers]
    scripts = {
        OFFERS: work_dir / "offers.lua",
        OFFERS_NO_REASONS: work_dir / "offers_no_reasons.lua",
        LIVE: work_dir / "live.lua",
    }
    for path, urls in (
        (OFFERS, paths),
        (OFFERS_NO_REASONS, [f"{url}&reasons=false" for url in paths]),
        (LIVE, [LIVE]),
    ):
        quoted = ", ".join(f'"{url}"' for url in urls)
        scripts[path].write_text(SCRIPT % {"paths": quoted}, encoding="utf-8")
    # Without reasons: one worker only.
    order = [
        (w, path)
        for w in WORKER_COUNTS
        for path in scripts
        if path != OFFERS_NO_REASONS or w == WORKER_COUNTS[0]
    ]
    cells = {key: Cell(*key) for key in order}
    with (
        running_server(
            models_dir, work_dir / "one.db", work_dir / "one.log", {**settings, "NBO_WORKERS": "1"}
        ) as one,
        running_server(
            models_dir, work_dir / "two.db", work_dir / "two.log", {**settings, "NBO_WORKERS": "2"}
        ) as two,
    ):
        servers = {1: one, 2: two}
        for workers, server in servers.items():  # warm the model's pages and caches
            _wrk(server, scripts[OFFERS], CONNECTIONS_PER_WORKER * workers, WARMUP_SECONDS)
        for round_ in range(ROUNDS):
            for workers, path in order if round_ % 2 == 0 else order[::-1]:
                run = _wrk(
                    servers[workers], scripts[path], CONNECTIONS_PER_WORKER * workers, RUN_SECONDS
                )
                cells[(workers, path)].runs.append(run)
        memory = {workers: memory_of(server) for workers, server in servers.items()}
        chunks = {workers: _mean_chunk(server) for workers, server in servers.items()}
        one.terminate()
        two.terminate()
    return cells, memory, chunks


def _published(
    work_dir: Path,
    data: Path,
    mapping: str = "online-retail",
    catalog: Path | None = None,
    models_dir: Path | None = None,
) -> tuple[Path, list[str], dict[str, str]]:
    """The model trained on ``data`` with ``mapping`` (or the one already in
    ``models_dir``), ``CUSTOMERS`` of its customers and the servers' settings (the clock a
    week after the data ends; ``catalog`` when given, else the default catalogue)."""
    from nbo.data.mapping import load_mapping
    from nbo.models.served import load_serving_model
    from training.config import TrainingConfig
    from training.pipeline import train

    if models_dir is None:
        models_dir = work_dir / "models"
        train(data, load_mapping(mapping), models_dir, TrainingConfig(), force=True)
    model = load_serving_model(models_dir)
    known = model.customers.ids.tolist()
    rng = np.random.default_rng(0)
    customers = [str(c) for c in rng.choice(known, min(CUSTOMERS, len(known)), replace=False)]
    clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(model.trained_until_s + 7 * 86_400))
    del model
    settings = {"NBO_CLOCK": clock}
    if catalog is not None:
        settings["NBO_CATALOG"] = str(catalog)
    return models_dir, customers, settings


def bench_workers(work_dir: Path, data: Path) -> WorkersResult:
    """Train on ``data`` (Online Retail), then the runs."""
    models_dir, customers, settings = _published(work_dir, data, catalog=DEMO_CATALOG)
    cells, memory, chunks = run_workers(models_dir, work_dir, customers, settings)
    return WorkersResult(
        cells,
        f"trainer, default config, on {data.name}",
        "demo catalogue",
        settings["NBO_CLOCK"],
        {w: CONNECTIONS_PER_WORKER * w for w in WORKER_COUNTS},
        memory,
        chunks,
    )


def bench_workers_synthetic(
    work_dir: Path, data: Path, models_dir: Path | None = None
) -> WorkersResult:
    """The same runs on the synthetic data (issue 16's offers p99 at 100k x 20k): the
    model trained on ``data`` with the canonical mapping, or the one in ``models_dir``
    (a model kept from an earlier run of the same data, to skip the training)."""
    trained = models_dir is None
    models_dir, customers, settings = _published(
        work_dir, data, mapping="canonical", models_dir=models_dir
    )
    cells, memory, chunks = run_workers(models_dir, work_dir, customers, settings)
    how = f"on {data.name}" if trained else f"kept in {models_dir}"
    return WorkersResult(
        cells,
        f"trainer, default config, {how}",
        "default catalogue",
        settings["NBO_CLOCK"],
        {w: CONNECTIONS_PER_WORKER * w for w in WORKER_COUNTS},
        memory,
        chunks,
    )


def print_memory(memory: dict[int, list[Memory]]) -> float:
    """The memory table, one row per process, and the figures read from it; answers the
    largest memory of its own any worker holds (MB)."""
    rows: list[Sequence[object] | None] = []
    for workers, processes in memory.items():
        for process in processes:
            rows.append(
                [
                    f"{workers} worker{'s' if workers > 1 else ''}",
                    f"{process.role} {process.pid}",
                    f"{process.unique:.1f}",
                    f"{process.shared:.1f}",
                    f"{process.pss:.1f}",
                    f"{process.rss:.1f}",
                ]
            )
        total = sum(process.pss for process in processes)
        rows.append(["", "all processes (PSS)", "", "", f"{total:.1f}", ""])
        rows.append(None)
    print(
        table(
            ["server", "process", "own MB (USS)", "shared MB", "PSS MB", "RSS MB"],
            rows[:-1],
        )
    )
    own = [p.unique for processes in memory.values() for p in processes if p.role == "worker"]
    largest = max(own, default=float("nan"))
    totals = {w: sum(p.pss for p in processes) for w, processes in memory.items()}
    counts = sorted(totals)
    steps = ", ".join(
        f"{a} -> {b} workers +{(totals[b] - totals[a]) / (b - a):.1f} MB per worker"
        for a, b in itertools.pairwise(counts)
    )
    verdict = "ok" if largest <= OWN_MEMORY_TARGET_MB else "OVER"
    # (One count of workers has no step between counts to show.)
    growth = f"; the PSS of all: {steps}" if steps else ""
    print(
        f"  a worker's own memory (USS): at most {largest:.1f} MB (issue 16: <= "
        f"{OWN_MEMORY_TARGET_MB} MB per extra worker: {verdict}){growth}. "
        "The master shares with this process the library files both imported, so its own "
        "memory reads lower than from a shell"
    )
    return largest


def _by_round(numerator: Cell, denominator: Cell) -> list[float]:
    """Each round's rate of one cell over the other's (the two runs back to back)."""
    return [
        top.per_second / bottom.per_second
        for top, bottom in zip(numerator.runs, denominator.runs, strict=True)
    ]


def print_workers(result: WorkersResult) -> dict[str, float]:
    """The section's table; answers the scaling figures for the summary."""
    cells = result.cells
    print(
        f"  model: {result.model}; {result.catalogue}, clock {result.clock}; servers: python -m "
        f"nbo.cli serve, NBO_WORKERS={' and '.join(str(w) for w in WORKER_COUNTS)}, "
        "log level warning, metrics on\n"
        f"  load: wrk, {WRK_THREADS} threads, {CONNECTIONS_PER_WORKER} connections per worker, "
        f"{RUN_SECONDS} s runs, {ROUNDS} rounds alternating servers and paths (the best "
        "shown, every round's rate listed); "
        f"offers: GET /v1/customers/{{id}}/offers?k=10&channel=app over {CUSTOMERS:,} known "
        f"customers (with one worker also with &reasons=false); {os.cpu_count()} cores"
    )
    rows: list[Sequence[object] | None] = []
    names = {
        LIVE: "GET /health/live",
        OFFERS: "GET offers",
        OFFERS_NO_REASONS: "GET offers, no reasons",
    }
    for workers in WORKER_COUNTS:
        for path in (LIVE, OFFERS, OFFERS_NO_REASONS):
            if (workers, path) not in cells:
                continue
            cell = cells[(workers, path)]
            rows.append(
                [
                    f"{workers} worker{'s' if workers > 1 else ''}, "
                    f"{result.connections[workers]} connections",
                    names[path],
                    f"{cell.best.per_second:,.0f}",
                    ", ".join(f"{run.per_second:,.0f}" for run in cell.runs),
                    f"{cell.best.p50_ms:.2f}",
                    f"{cell.best.p99_ms:.2f}",
                    f"{cell.failures}",
                    f"{cell.best.server_cores:.2f}",
                    f"{cell.best.wrk_cores:.2f}",
                ]
            )
    print(
        table(
            [
                "server",
                "path",
                "req/s",
                "rounds",
                "p50 ms",
                "p99 ms",
                "failed",
                "server cores",
                "wrk cores",
            ],
            rows,
        )
    )
    rate = {key: cell.best.per_second for key, cell in cells.items()}
    cores = {key: cell.best.server_cores for key, cell in cells.items()}
    low, high = WORKER_COUNTS[0], WORKER_COUNTS[-1]
    figures = {
        "offers_scaling": rate[(high, OFFERS)] / rate[(low, OFFERS)],
        "live_scaling": rate[(high, LIVE)] / rate[(low, LIVE)],
        "offers_of_live": rate[(low, OFFERS)] / rate[(low, LIVE)],
    }
    for workers in WORKER_COUNTS:  # the best round's latency, and the worst round's p99
        for path, name in ((OFFERS, "offers"), (LIVE, "live")):
            cell = cells[(workers, path)]
            figures[f"{name}_p50_ms_{workers}"] = cell.best.p50_ms
            figures[f"{name}_p99_ms_{workers}"] = cell.best.p99_ms
            figures[f"{name}_p99_worst_ms_{workers}"] = max(run.p99_ms for run in cell.runs)
    # The best rounds of the two paths may come from minutes of different machine speed;
    # each round runs both back to back, so its own ratio is the steadier figure.
    paired = _by_round(cells[(low, OFFERS)], cells[(low, LIVE)])
    # What not working out the reasons buys, round by round as well.
    without = _by_round(cells[(low, OFFERS_NO_REASONS)], cells[(low, OFFERS)])
    per_core = {w: rate[(w, OFFERS)] / cores[(w, OFFERS)] for w in WORKER_COUNTS}
    scaling = [
        [
            f"offers, {low} -> {high} workers",
            f"{figures['offers_scaling']:.2f}x",
            f"{figures['offers_scaling'] / (high / low):.0%}",
        ],
        [
            f"/health/live, {low} -> {high} workers",
            f"{figures['live_scaling']:.2f}x",
            f"{figures['live_scaling'] / (high / low):.0%}",
        ],
        [
            "offers per core the servers used",
            " -> ".join(f"{per_core[w]:,.0f}" for w in WORKER_COUNTS),
            f"{per_core[high] / per_core[low]:.0%}",
        ],
        [
            f"offers / /health/live, {low} worker (issue 16: >= 40%)",
            f"{figures['offers_of_live']:.1%}",
            "",
        ],
        [
            "the same, round by round: median (range)",
            f"{statistics.median(paired):.1%} ({min(paired):.1%}-{max(paired):.1%})",
            "",
        ],
        [
            f"offers without reasons / offers, {low} worker, round by round: median (range)",
            f"{statistics.median(without):.2f}x ({min(without):.2f}-{max(without):.2f}x)",
            "",
        ],
    ]
    print(table(["scaling", "", "efficiency"], scaling))
    print(
        f"  efficiency: the rate with {high} workers over {high // low}x the rate with {low}. "
        f"wrk's cores are the load generator's share of the {os.cpu_count()} cores, not "
        "left to the workers"
    )
    if result.chunks:
        print(
            "  offers calls decided per chunk, on average over the runs (calls in flight at "
            "once are decided together: nbo_offers_chunk_size): "
            + ", ".join(
                f"{result.chunks[w]:.1f} with {w} worker{'s' if w > 1 else ''}"
                for w in WORKER_COUNTS
                if w in result.chunks
            )
        )
    print("  memory per process after the runs (/proc/PID/smaps_rollup):")
    figures["worker_own_mb"] = print_memory(result.memory)
    return figures


def measure_memory(
    work_dir: Path, data: Path, counts: Sequence[int], calls: int
) -> dict[int, list[Memory]]:
    """Memory alone: one server at a time with each count of workers, ``calls`` offers
    calls on fresh connections (four at a time), then each process's memory."""
    models_dir, customers, settings = _published(work_dir, data, catalog=DEMO_CATALOG)
    memory = {}
    for workers in counts:
        store = work_dir / f"memory-{workers}.db"
        log = work_dir / f"memory-{workers}.log"
        with running_server(
            models_dir, store, log, {**settings, "NBO_WORKERS": str(workers)}
        ) as server:

            def call(n: int, base: str = server.base) -> None:
                path = f"/v1/customers/{customers[n % len(customers)]}/offers"
                answer = httpx.get(f"{base}{path}", params={"k": 10, "channel": "app"}, timeout=60)
                answer.raise_for_status()

            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(call, range(calls)))
            memory[workers] = memory_of(server)
            server.terminate()
    return memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers_bench",
        description="Memory per process of nbo serve with workers, without wrk (the "
        "throughput runs are python -m bench --only workers).",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=list(MEMORY_WORKER_COUNTS))
    parser.add_argument("--calls", type=int, default=MEMORY_CALLS)
    parser.add_argument("--online-retail", type=Path, default=ONLINE_RETAIL)
    args = parser.parse_args(argv)
    if not args.online_retail.is_file():
        parser.error(f"{args.online_retail} not found (--online-retail names it)")
    with tempfile.TemporaryDirectory(prefix="nbo-bench-memory-") as tmp:
        memory = measure_memory(Path(tmp), args.online_retail, args.workers, args.calls)
    print(
        f"memory per process of nbo serve on the Online Retail model, after {args.calls:,} "
        f"offers calls (/proc/PID/smaps_rollup; {os.cpu_count()} cores)"
    )
    print_memory(memory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
