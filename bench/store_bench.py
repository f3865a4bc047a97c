"""What the store costs an offers call: the reads every offers call makes for its one
customer, on each store backend: whether they are erased (``forget_erased``), then
``nbo.runtime.decide.read_states`` (consent, contacts since the longest rule's window,
the newest posted purchase lines).

    python -m bench.store_bench                       # SQLite
    python -m bench.store_bench --postgres URL        # and PostgreSQL (a database to fill)
    .ci/with-postgres sh -c 'python -m bench.store_bench --postgres "$NBO_TEST_POSTGRES_URL"'

Every store gets the same events first (``--customers`` customers, each with 10 posted
purchases of 3 lines over half a year, 6 offer impressions and a click in the last 30
days, and a consent record for every other one). Then the stores are read in
``--rounds`` rounds; in each round every store, in a shuffled order, reads the same
``--calls`` customers one call at a time, so the backends share the machine's moments.
p50 and p99 are over every call of every round; the first round is a warm-up and not
counted. PostgreSQL runs on loopback: its figures include a round trip per read.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from nbo.data.events import Event, parse_events
from nbo.runtime.decide import read_states
from nbo.store import open_store
from nbo.store.base import StateReader, Store

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)
CONTACT_DAYS = 30
MAX_POSTED_LINES = 1000
WRITE_BATCH = 500


def customer_events(customer: str, rng: random.Random) -> list[Event]:
    """One customer's purchases, impressions and a click, as the service would store them."""
    bodies: list[dict[str, object]] = []
    for n in range(10):
        at = NOW - timedelta(days=rng.uniform(1, 180))
        bodies.append(
            {
                "event_id": f"{customer}-p{n}",
                "type": "purchase",
                "customer_id": customer,
                "timestamp": at.isoformat(),
                "order_id": f"{customer}-o{n}",
                "items": [
                    {"item_id": f"i{rng.randrange(2000)}", "quantity": 1, "price": 2.5}
                    for _ in range(3)
                ],
            }
        )
    for n in range(7):
        at = NOW - timedelta(days=rng.uniform(0.5, CONTACT_DAYS - 1))
        bodies.append(
            {
                "event_id": f"{customer}-s{n}",
                "type": "offer_click" if n == 6 else "offer_impression",
                "customer_id": customer,
                "timestamp": at.isoformat(),
                "item_id": f"i{rng.randrange(2000)}",
                "channel": "email",
                "request_id": f"{customer}-r{n // 3}",
            }
        )
    valid, rejected = parse_events({"events": bodies})
    assert not rejected, rejected
    return [event for _, event in valid]


def fill(store: Store, customers: list[str], seed: int) -> None:
    rng = random.Random(seed)
    events = [e for c in customers for e in customer_events(c, rng)]
    for start in range(0, len(events), WRITE_BATCH):
        store.add_events(events[start : start + WRITE_BATCH])
    for customer in customers[::2]:
        store.set_consent(customer, personalization=True, channels={"app": False})
    for customer in customers[::50]:
        store.erase(f"gone-{customer}")


def measure(
    readers: Mapping[str, StateReader], sample: list[str], rounds: int, seed: int
) -> dict[str, np.ndarray]:
    """Seconds per offers call's reads of one customer, per reader, interleaved."""
    since = int((NOW - timedelta(days=CONTACT_DAYS)).timestamp())
    times: dict[str, list[float]] = {name: [] for name in readers}
    order = list(readers)
    rng = random.Random(seed)
    for round_number in range(rounds + 1):
        rng.shuffle(order)
        for name in order:
            reader = readers[name]
            taken = []
            for customer in sample:
                start = time.perf_counter()
                reader.erased_among([customer])
                read_states(reader, [customer], since, MAX_POSTED_LINES)
                taken.append(time.perf_counter() - start)
            if round_number:  # the first round warms caches and prepared statements
                times[name] += taken
    return {name: np.asarray(t) for name, t in times.items()}


def report(times: Mapping[str, np.ndarray], baseline: str) -> str:
    base = times[baseline]
    lines = [f"{'store':<40} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs ' + baseline:>24}"]
    for name, t in times.items():
        p50, p99 = np.percentile(t, 50) * 1e3, np.percentile(t, 99) * 1e3
        delta = p50 - np.percentile(base, 50) * 1e3
        lines.append(f"{name:<40} {p50:>8.3f} {p99:>8.3f} {delta:>+23.3f}ms")
    return "\n".join(lines)


@contextmanager
def filled_stores(
    urls: Mapping[str, str], customers: list[str], seed: int
) -> Iterator[dict[str, Store]]:
    stores = {name: open_store(url) for name, url in urls.items()}
    try:
        for store in stores.values():
            fill(store, customers, seed)
        yield stores
    finally:
        for store in stores.values():
            store.close()


def run(
    postgres: str | None,
    customers: int,
    calls: int,
    rounds: int,
    seed: int,
    more: Callable[[Mapping[str, str]], Mapping[str, StateReader]] | None = None,
) -> str:
    """The table; ``more`` adds readers of other implementations on the same databases
    (given the stores' URLs), for a comparison."""
    ids = [f"c{n:05d}" for n in range(customers)]
    sample = random.Random(seed).sample(ids, min(calls, len(ids)))
    with tempfile.TemporaryDirectory() as folder:
        urls = {"SQLite": f"sqlite:///{Path(folder) / 'store.db'}"}
        if postgres:
            urls["PostgreSQL"] = postgres
        with filled_stores(urls, ids, seed) as stores:
            readers: dict[str, StateReader] = dict(stores)
            if more is not None:
                readers.update(more(urls))
            times = measure(readers, sample, rounds, seed)
    return report(times, "SQLite")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_bench", description=__doc__)
    parser.add_argument("--postgres", help="a PostgreSQL URL to fill and read (its schema)")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=2000, help="customers read per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(run(args.postgres, args.customers, args.calls, args.rounds, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
