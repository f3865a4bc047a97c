"""Events over HTTP: how fast the service takes events in, and what the event store adds
to an offers call.

A real server (``python -m nbo.cli serve``: one uvicorn worker) runs on 127.0.0.1 with a
model the trainer publishes from the bundled sample, a pinned clock a week after the
data ends and its own SQLite store in a temporary folder. The client is httpx in this
process, one keep-alive connection per client, sequential requests unless said otherwise.

- **Ingestion**: single-event posts and batches of 100, sequential, then single posts
  from 8 concurrent clients; events/s is events / wall time of the whole run, and every
  answer comes after the durable commit (WAL, synchronous=FULL).
- **Offers with the store in the path**: two servers run side by side on the same model
  and clock; one has the events posted above (every latency customer has 20 posted
  purchases, read on every offers call), the other a fresh store (nothing posted). Calls
  go to both, interleaved customer by customer, so both see the same conditions. Two
  groups of customers: purchases posted since training (read, and the taste vector is
  refolded: implicit's ``recalculate_user``) and purchases dated before the training
  data ended (read and suppressed only; already in the model).
- **In-process**: ``SQLiteStore.purchases_of`` (and ``contacts_of``, the other read in
  the offers path) alone, on the file the server wrote.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.generate import REPO, SAMPLE
from bench.servers import Server
from bench.servers import running_server as serve
from nbo.data.mapping import load_mapping
from nbo.models.served import load_serving_model
from nbo.store.sqlite import SQLiteStore
from training.config import TrainingConfig
from training.pipeline import train

DAY = 86_400
CLOCK_DAYS_AFTER = 7  # the service clock: a week after the training data ends
K = 10

SINGLE_POSTS = 2_000  # = LATENCY_CUSTOMERS x PURCHASES_EACH: the "since training" group
BATCHES = 200
BATCH_SIZE = 100
CONCURRENT_CLIENTS = 8
CONCURRENT_POSTS = 2_000
LATENCY_CUSTOMERS = 100  # per group
PURCHASES_EACH = 20
OFFERS_CALLS = 2_000  # timed, per group and store
OFFERS_WARMUP = 200
STORE_CALLS = 5_000
STORE_WARMUP = 500
# The latency groups: which posted purchases each customer has in the store.
SINCE_TRAINING = f"{PURCHASES_EACH} purchases posted since training (read + refold)"
BEFORE_TRAINING = f"{PURCHASES_EACH} purchases dated before training ended (read)"
CONTROL = "control: nothing posted for them (same two servers)"
REQUEST_SECONDS = 10

Event = dict[str, Any]


# -- the server process ---------------------------------------------------------------------


@contextmanager
def running_server(models_dir: Path, store: Path, clock: str, log: Path) -> Iterator[Server]:
    """``nbo serve`` (``bench.servers``) with the section's clock, no access log."""
    settings = {"NBO_CLOCK": clock, "NBO_ACCESS_LOG": "false", "NBO_WORKERS": "1"}
    with serve(models_dir, store, log, settings) as server:
        yield server


# -- results --------------------------------------------------------------------------------


@dataclass
class Ingestion:
    name: str
    events: int
    requests: int
    seconds: float
    request_ns: np.ndarray

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


@dataclass
class OffersLatency:
    group: str
    with_store_ns: np.ndarray
    empty_store_ns: np.ndarray
    profiles_with_store: Counter[str]
    profiles_empty_store: Counter[str]
    floor_ns: np.ndarray | None = None  # GET /health/live, interleaved with the others


@dataclass
class EventsResult:
    model: str
    train_seconds: float
    clock: str
    customers: int
    items: int
    stored_events: int = 0
    ingestion: list[Ingestion] = field(default_factory=list)
    offers: list[OffersLatency] = field(default_factory=list)
    store_calls: dict[str, np.ndarray] = field(default_factory=dict)


# -- events ---------------------------------------------------------------------------------


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _purchase(event_id: str, customer: str, item: str, when: int) -> Event:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": _iso(when),
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.5}],
    }


def _background(
    event_id: str, rng: random.Random, customers: list[str], items: list[str], start: int, end: int
) -> Event:
    """Traffic of other customers: purchases of 1-4 lines, impressions, clicks, conversions."""
    customer = rng.choice(customers)
    when = rng.randrange(start, end)
    kind = rng.choices(
        ("purchase", "offer_impression", "offer_click", "offer_conversion"), (4, 4, 1, 1)
    )[0]
    if kind == "purchase":
        lines = rng.sample(items, rng.randint(1, 4))
        return {
            "event_id": event_id,
            "type": kind,
            "customer_id": customer,
            "timestamp": _iso(when),
            "order_id": f"o-{event_id}",
            "items": [{"item_id": i, "quantity": rng.randint(1, 6), "price": 1.25} for i in lines],
        }
    event: Event = {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": _iso(when),
        "item_id": rng.choice(items),
        "channel": rng.choice(("email", "app")),
    }
    if kind == "offer_conversion":
        event["revenue"] = 12.5
    return event


def _post(client: httpx.Client, body: Event, expected: int) -> int:
    """POST, check every event was accepted; the request's nanoseconds."""
    start = time.perf_counter_ns()
    answer = client.post("/v1/events", json=body)
    elapsed = time.perf_counter_ns() - start
    if answer.status_code != 200 or len(answer.json()["accepted"]) != expected:
        raise RuntimeError(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")
    return elapsed


def _sequential(name: str, base: str, bodies: list[Event], sizes: list[int]) -> Ingestion:
    samples = np.zeros(len(bodies), dtype=np.int64)
    with httpx.Client(base_url=base, timeout=REQUEST_SECONDS) as client:
        start = time.perf_counter()
        for j, (body, size) in enumerate(zip(bodies, sizes, strict=True)):
            samples[j] = _post(client, body, size)
        seconds = time.perf_counter() - start
    return Ingestion(name, sum(sizes), len(bodies), seconds, samples)


def _concurrent(name: str, base: str, events: list[Event], clients: int) -> Ingestion:
    samples = np.zeros(len(events), dtype=np.int64)
    failures: list[str] = []
    ready = threading.Barrier(clients + 1, timeout=30)

    def worker(offset: int) -> None:
        try:
            with httpx.Client(base_url=base, timeout=REQUEST_SECONDS) as client:
                client.get("/health/live")  # open the connection before the clock starts
                ready.wait()
                for j in range(offset, len(events), clients):
                    samples[j] = _post(client, events[j], 1)
        except Exception as exc:
            failures.append(repr(exc))
            ready.abort()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=300)
    seconds = time.perf_counter() - start
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"concurrent posts failed: {failures[:3] or 'timed out'}")
    return Ingestion(name, len(events), len(events), seconds, samples)


# -- the bench ------------------------------------------------------------------------------


def bench_events(work_dir: Path, seed: int) -> EventsResult:
    """Train on the bundled sample, then measure over HTTP against real server processes."""
    models_dir = work_dir / "models"
    started = time.perf_counter()
    trained = train(SAMPLE, load_mapping("online-retail"), models_dir, TrainingConfig(), force=True)
    train_seconds = time.perf_counter() - started
    model = load_serving_model(models_dir)
    trained_until = model.trained_until_s
    now_s = trained_until + CLOCK_DAYS_AFTER * DAY
    clock = _iso(now_s)
    customers = [str(c) for c in model.customers.ids.tolist()]
    items = list(model.item_ids)
    result = EventsResult(
        model=f"{SAMPLE.relative_to(REPO)} ({trained.cleaning.customers:,} customers x "
        f"{trained.cleaning.items:,} items, last purchase {trained.cleaning.last_purchase})",
        train_seconds=train_seconds,
        clock=clock,
        customers=len(customers),
        items=len(items),
    )
    del model

    rng = random.Random(seed)
    picked = rng.sample(customers, 3 * LATENCY_CUSTOMERS)
    since_training, before_training, control = (
        picked[g * LATENCY_CUSTOMERS : (g + 1) * LATENCY_CUSTOMERS] for g in range(3)
    )
    taken = set(picked)
    others = [c for c in customers if c not in taken]
    others += [f"bench-new-{n}" for n in range(len(others) // 2)]  # unknown to the model

    # Single posts: 20 purchases for each "since training" customer, after the data ends.
    singles = [
        _purchase(
            f"s{c}-{n}", customer, rng.choice(items), rng.randrange(trained_until + 60, now_s)
        )
        for c, customer in enumerate(since_training)
        for n in range(PURCHASES_EACH)
    ]
    rng.shuffle(singles)
    # Batches: 20 purchases for each "before training" customer, dated in the window before
    # the data ended (suppressed, already in the model), among background traffic.
    batched = [
        _purchase(
            f"l{c}-{n}",
            customer,
            rng.choice(items),
            rng.randrange(trained_until - 20 * DAY, trained_until - 3600),
        )
        for c, customer in enumerate(before_training)
        for n in range(PURCHASES_EACH)
    ]
    batched += [
        _background(f"b{n}", rng, others, items, trained_until + 60, now_s)
        for n in range(BATCHES * BATCH_SIZE - len(batched))
    ]
    rng.shuffle(batched)
    concurrent = [
        _background(f"c{n}", rng, others, items, trained_until + 60, now_s)
        for n in range(CONCURRENT_POSTS)
    ]

    store_path = work_dir / "store" / "events.db"
    empty_path = work_dir / "empty" / "events.db"
    for path in (store_path, empty_path):
        path.parent.mkdir(parents=True)
    with (
        running_server(models_dir, store_path, clock, work_dir / "server.log") as server,
        running_server(models_dir, empty_path, clock, work_dir / "empty.log") as empty,
    ):
        # Ingestion goes to one server; the other stays idle (and empty).
        result.ingestion.append(
            _sequential("single posts, sequential", server.base, singles, [1] * len(singles))
        )
        bodies = [
            {"events": batched[start : start + BATCH_SIZE]}
            for start in range(0, len(batched), BATCH_SIZE)
        ]
        result.ingestion.append(
            _sequential(
                f"batches of {BATCH_SIZE}, sequential",
                server.base,
                bodies,
                [len(b["events"]) for b in bodies],
            )
        )
        result.ingestion.append(
            _concurrent(
                f"single posts, {CONCURRENT_CLIENTS} concurrent clients",
                server.base,
                concurrent,
                CONCURRENT_CLIENTS,
            )
        )
        for group, sample in (
            (SINCE_TRAINING, since_training),
            (BEFORE_TRAINING, before_training),
            (CONTROL, control),
        ):
            result.offers.append(
                _offers(group, server.base, empty.base, sample, seed, floor=group == CONTROL)
            )

    store = SQLiteStore(store_path)
    try:
        result.stored_events = store.event_count()
        result.store_calls = _store_calls(store, since_training, now_s, seed)
    finally:
        store.close()
    return result


def _offers(
    group: str, with_store: str, empty_store: str, sample: list[str], seed: int, floor: bool
) -> OffersLatency:
    """Sequential offers calls to both servers, interleaved customer by customer; with
    ``floor``, also GET /health/live on the first server (HTTP without the handler)."""
    rng = np.random.default_rng(seed)
    order = np.resize(rng.permutation(len(sample)), OFFERS_CALLS).tolist()
    warm = np.resize(rng.permutation(len(sample)), OFFERS_WARMUP).tolist()
    timings = {
        with_store: np.zeros(OFFERS_CALLS, np.int64),
        empty_store: np.zeros(OFFERS_CALLS, np.int64),
    }
    profiles: dict[str, Counter[str]] = {with_store: Counter(), empty_store: Counter()}
    clients = {
        base: httpx.Client(base_url=base, timeout=REQUEST_SECONDS)
        for base in (with_store, empty_store)
    }
    params: dict[str, str | int] = {"k": K, "channel": "email"}
    floor_ns = np.zeros(OFFERS_CALLS, np.int64)
    clock = time.perf_counter_ns
    try:

        def call(base: str, customer: str) -> int:
            start = clock()
            answer = clients[base].get(f"/v1/customers/{customer}/offers", params=params)
            elapsed = clock() - start
            if answer.status_code != 200:
                raise RuntimeError(f"offers answered {answer.status_code}: {answer.text[:300]}")
            profiles[base][answer.json()["profile"]] += 1
            return elapsed

        for customer in warm:
            for base in clients:
                call(base, sample[customer])
        for counter in profiles.values():
            counter.clear()
        gc.collect()
        for j, customer in enumerate(order):
            bases = (with_store, empty_store) if j % 2 == 0 else (empty_store, with_store)
            for base in bases:
                timings[base][j] = call(base, sample[customer])
            if floor:
                start = clock()
                clients[with_store].get("/health/live").raise_for_status()
                floor_ns[j] = clock() - start
    finally:
        for client in clients.values():
            client.close()
    return OffersLatency(
        group,
        timings[with_store],
        timings[empty_store],
        profiles[with_store],
        profiles[empty_store],
        floor_ns if floor else None,
    )


def _store_calls(
    store: SQLiteStore, sample: list[str], now_s: int, seed: int
) -> dict[str, np.ndarray]:
    """In-process reads, each call timed alone, calls rotated so none always runs first."""
    rng = np.random.default_rng(seed)
    order = np.resize(rng.permutation(len(sample)), STORE_CALLS).tolist()
    since = now_s - 30 * DAY
    calls = {
        f"purchases_of, {PURCHASES_EACH} posted purchases": lambda c: store.purchases_of(c),
        "purchases_of, none posted": lambda c: store.purchases_of(f"nobody-{c}"),
        "contacts_of (30 days), none posted": lambda c: store.contacts_of(c, since),
    }
    found = len(store.purchases_of(sample[0]))
    if found != PURCHASES_EACH:
        raise RuntimeError(f"expected {PURCHASES_EACH} posted purchases, the store has {found}")
    timings = {name: np.zeros(STORE_CALLS, np.int64) for name in calls}
    names = list(calls)
    clock = time.perf_counter_ns
    for j in range(STORE_WARMUP):
        for name in names:
            calls[name](sample[j % len(sample)])
    gc.collect()
    for j, customer in enumerate(order):
        shift = j % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            calls[name](sample[customer])
            timings[name][j] = clock() - start
    return timings
