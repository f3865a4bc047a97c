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
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
INSTALL = "apt-get install -y wrk (Debian's package; brew install wrk on macOS)"

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
class WorkersResult:
    cells: dict[tuple[int, str], Cell]
    model: str
    clock: str
    connections: dict[int, int]


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


def run_workers(
    models_dir: Path, work_dir: Path, customers: Sequence[str], settings: dict[str, str]
) -> dict[tuple[int, str], Cell]:
    """Every (workers, path) cell, ``ROUNDS`` runs each, servers and paths alternating."""
    paths = ", ".join(f'"/v1/customers/{c}/offers?k=10&channel=app"' for c in customers)
    scripts = {OFFERS: work_dir / "offers.lua", LIVE: work_dir / "live.lua"}
    scripts[OFFERS].write_text(SCRIPT % {"paths": paths}, encoding="utf-8")
    scripts[LIVE].write_text(SCRIPT % {"paths": f'"{LIVE}"'}, encoding="utf-8")
    cells = {(w, path): Cell(w, path) for w in WORKER_COUNTS for path in scripts}
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
            order = [(w, path) for w in WORKER_COUNTS for path in scripts]
            for workers, path in order if round_ % 2 == 0 else order[::-1]:
                run = _wrk(
                    servers[workers], scripts[path], CONNECTIONS_PER_WORKER * workers, RUN_SECONDS
                )
                cells[(workers, path)].runs.append(run)
        one.terminate()
        two.terminate()
    return cells


def bench_workers(work_dir: Path, data: Path) -> WorkersResult:
    """Train on ``data`` (Online Retail), then the runs."""
    from nbo.data.mapping import load_mapping
    from nbo.models.served import load_serving_model
    from training.config import TrainingConfig
    from training.pipeline import train

    repo = Path(__file__).resolve().parent.parent
    models_dir = work_dir / "models"
    train(data, load_mapping("online-retail"), models_dir, TrainingConfig(), force=True)
    model = load_serving_model(models_dir)
    known = model.customers.ids.tolist()
    rng = np.random.default_rng(0)
    customers = [str(c) for c in rng.choice(known, min(CUSTOMERS, len(known)), replace=False)]
    clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(model.trained_until_s + 7 * 86_400))
    del model
    settings = {"NBO_CLOCK": clock, "NBO_CATALOG": str(repo / "data" / "catalog.yaml")}
    cells = run_workers(models_dir, work_dir, customers, settings)
    return WorkersResult(
        cells,
        f"trainer, default config, on {data.name}",
        clock,
        {w: CONNECTIONS_PER_WORKER * w for w in WORKER_COUNTS},
    )


def print_workers(result: WorkersResult) -> dict[str, float]:
    """The section's table; answers the scaling figures for the summary."""
    cells = result.cells
    print(
        f"  model: {result.model}; demo catalogue, clock {result.clock}; servers: python -m "
        f"nbo.cli serve, NBO_WORKERS={' and '.join(str(w) for w in WORKER_COUNTS)}, "
        "log level warning, metrics on\n"
        f"  load: wrk, {WRK_THREADS} threads, {CONNECTIONS_PER_WORKER} connections per worker, "
        f"{RUN_SECONDS} s runs, {ROUNDS} rounds alternating servers and paths (the best "
        "shown, every round's rate listed); "
        f"offers: GET /v1/customers/{{id}}/offers?k=10&channel=app over {CUSTOMERS:,} known "
        f"customers; {os.cpu_count()} cores"
    )
    rows: list[list[object] | None] = []
    for workers in WORKER_COUNTS:
        for path in (LIVE, OFFERS):
            cell = cells[(workers, path)]
            rows.append(
                [
                    f"{workers} worker{'s' if workers > 1 else ''}, "
                    f"{result.connections[workers]} connections",
                    "GET /health/live" if path == LIVE else "GET offers",
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
    ]
    print(table(["scaling", "", "efficiency"], scaling))
    print(
        f"  efficiency: the rate with {high} workers over {high // low}x the rate with {low}. "
        f"wrk's cores are the load generator's share of the {os.cpu_count()} cores, not "
        "left to the workers"
    )
    return figures
