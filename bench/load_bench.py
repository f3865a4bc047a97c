"""Offers under load on loopback: what access control, metrics and access logs cost.

Two real servers (``python -m nbo.cli serve``: one uvicorn worker each) run side by side on
127.0.0.1 with the same model, clock and catalogue, each with its own store:

- **hardened**: API keys required (the calls carry a read key), ``/metrics`` collecting,
  one JSON access-log line per request;
- **bare**: no keys, metrics and access logs off.

Concurrent clients (httpx, one keep-alive connection each) call
``GET /v1/customers/{id}/offers`` for known customers. The servers take turns in rounds
(the same customers for both in a round, who goes first alternating), each round bounded
in calls. A server's throughput is its calls over the wall time of its rounds; the
ratio is the median over rounds of the two servers' rates in that round; latency
percentiles are over all of a server's calls.
Every answer must be a 200 naming a model version: a failure is counted and reported.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.generate import DEMO_CATALOG, SAMPLE
from bench.report import at_least, table
from bench.servers import Server
from bench.servers import running_server as serve
from nbo.core.apikeys import Role, create_key

REQUEST_SECONDS = 30
# At most 10% lower throughput with everything on.
TARGET_RATIO = 0.90


@dataclass
class Load:
    """One server's calls: wall time, latencies (s) and what went wrong."""

    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    round_rates: list[float] = field(default_factory=list)  # calls/s of each round

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else 0.0


@dataclass(frozen=True)
class LoadResult:
    hardened: Load
    bare: Load
    clients: int
    rounds: int

    @property
    def ratio(self) -> float:
        """Hardened over bare throughput (1.0 = no cost): the median over rounds of the
        two servers' rates in the same round, so a machine that slows down or speeds up
        between rounds moves both sides of each ratio alike."""
        pairs = zip(self.hardened.round_rates, self.bare.round_rates, strict=True)
        ratios = [on / off for on, off in pairs if off > 0]
        return float(np.median(ratios)) if ratios else 0.0


def _round(
    server: Server, headers: dict[str, str], customers: Sequence[str], clients: int, load: Load
) -> None:
    """``len(customers)`` offers calls from ``clients`` concurrent clients."""
    lock = threading.Lock()
    next_call = iter(range(len(customers)))

    def client() -> None:
        with httpx.Client(base_url=server.base, headers=headers, timeout=REQUEST_SECONDS) as http:
            while True:
                with lock:
                    n = next(next_call, None)
                if n is None:
                    return
                started = time.perf_counter()
                try:
                    answer = http.get(f"/v1/customers/{customers[n]}/offers", params={"k": 10})
                    problem = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
                    version = answer.json().get("model_version") if problem is None else None
                    if problem is None and not version:
                        problem = "answer names no model version"
                except httpx.HTTPError as exc:
                    problem, version = f"{type(exc).__name__}", None
                elapsed = time.perf_counter() - started
                with lock:
                    load.calls += 1
                    load.latencies.append(elapsed)
                    if problem is not None:
                        load.failures.append(f"{customers[n]}: {problem}")
                    elif version:
                        load.versions.add(version)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    load.seconds += elapsed
    load.round_rates.append(len(customers) / elapsed if elapsed else 0.0)


def run_load(
    models_dir: Path,
    work_dir: Path,
    customers: Sequence[str],
    settings: dict[str, str],
    rounds: int = 10,
    calls_per_round: int = 300,
    clients: int = 4,
    warmup: int = 100,
) -> LoadResult:
    """The load test: both servers, ``rounds`` turns each of ``calls_per_round`` calls.
    ``settings``: what both servers share (clock, catalogue...)."""
    read_key, read_entry = create_key(Role.read)
    # Info level on both: the access log writes at info.
    settings = {"NBO_LOG_LEVEL": "info", "NBO_WORKERS": "1", **settings}
    hardened_settings = {
        **settings,
        "NBO_API_KEYS": json.dumps([read_entry.model_dump()]),
        "NBO_METRICS": "true",
        "NBO_ACCESS_LOG": "true",
        "NBO_LOG_FORMAT": "json",
    }
    bare_settings = {
        **settings,
        "NBO_API_KEYS": "[]",
        "NBO_METRICS": "false",
        "NBO_ACCESS_LOG": "false",
    }
    hardened, bare = Load(), Load()
    rng = np.random.default_rng(0)
    key = {"Authorization": f"Bearer {read_key}"}
    with (
        serve(
            models_dir, work_dir / "hardened.db", work_dir / "hardened.log", hardened_settings
        ) as on,
        serve(models_dir, work_dir / "bare.db", work_dir / "bare.log", bare_settings) as off,
    ):
        for server, headers in ((on, key), (off, {})):
            _round(server, headers, list(rng.choice(customers, warmup)), clients, Load())
        hardened, bare = Load(), Load()
        for n in range(rounds):
            chosen = list(rng.choice(customers, calls_per_round))
            # Alternate who goes first, so neither always follows the other.
            turns = [(on, key, hardened), (off, {}, bare)]
            for server, headers, load in turns if n % 2 == 0 else turns[::-1]:
                _round(server, headers, chosen, clients, load)
    return LoadResult(hardened, bare, clients, rounds)


@dataclass(frozen=True)
class LoadBench:
    result: LoadResult
    model: str
    customers: int


def bench_load(work_dir: Path) -> LoadBench:
    """Train on the bundled sample, then the load test with the demo catalogue and a
    clock a week after the data ends (the same setting as the events section)."""
    from nbo.data.mapping import load_mapping
    from nbo.models.served import load_serving_model
    from training.config import TrainingConfig
    from training.pipeline import train

    sample = SAMPLE
    models_dir = work_dir / "models"
    train(sample, load_mapping("online-retail"), models_dir, TrainingConfig(), force=True)
    model = load_serving_model(models_dir)
    customers = [str(c) for c in model.customers.ids.tolist()]
    clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(model.trained_until_s + 7 * 86_400))
    del model
    settings = {"NBO_CLOCK": clock, "NBO_CATALOG": str(DEMO_CATALOG)}
    result = run_load(models_dir, work_dir, customers, settings)
    return LoadBench(result, f"trainer, default config, on {sample.name}", len(customers))


def print_load(bench: LoadBench) -> float:
    """The section's table; answers the throughput ratio."""
    result = bench.result
    print(
        f"  model: {bench.model} ({bench.customers:,} customers); "
        f"{result.clients} concurrent clients, {result.rounds} alternating rounds per server, "
        f"GET /v1/customers/{{id}}/offers?k=10"
    )
    rows: list[Sequence[object] | None] = []
    for name, load in (
        ("hardened: API key, /metrics, JSON access log", result.hardened),
        ("bare: no keys, metrics and access log off", result.bare),
    ):
        rows.append(
            [
                name,
                f"{load.calls:,}",
                f"{load.per_second:,.0f}",
                f"{load.percentile_ms(50):.2f}",
                f"{load.percentile_ms(99):.2f}",
                f"{len(load.failures)}",
            ]
        )
    rows.append(None)
    verdict = at_least(result.ratio, TARGET_RATIO)
    rows.append(
        [
            f"throughput hardened / bare, median of rounds (target >= {TARGET_RATIO:.0%})",
            "",
            f"{result.ratio:.1%}",
            "",
            "",
            verdict,
        ]
    )
    print(table(["server", "calls", "calls/s", "p50 ms", "p99 ms", "failed"], rows))
    return result.ratio
