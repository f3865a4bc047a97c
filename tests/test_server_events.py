"""Events against a real server process: durable across SIGTERM and SIGKILL, and exactly
once under concurrent posts.

Each test runs ``python -m nbo.cli serve`` (the default workers, or as many as the test
sets) on 127.0.0.1 and a free port, with the planted model, a pinned clock and its own
SQLite store file; what the server stored is checked through the API (re-posting an
event must answer it as a duplicate) and, once the server is stopped, by opening the
file with ``SQLiteStore``.
Every wait has a deadline and the server is always stopped in ``finally``.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_live_purchases import purchase

from bench.servers import Server
from bench.servers import running_server as serve
from nbo.store.sqlite import SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"
TODAY = "2026-06-30T11:00:00Z"  # after the planted data ends, inside the window
STOP_SECONDS = 10
REQUEST_SECONDS = 10

Event = dict[str, Any]


# -- the server process ---------------------------------------------------------------------


@contextmanager
def running_server(
    models_dir: Path, store: Path, log: Path, settings: dict[str, str] | None = None
) -> Iterator[Server]:
    """``nbo serve`` on a free loopback port with the test clock, ready (``bench.servers``:
    stopped on the way out; ``Server.terminate`` stops it and checks the stop was
    graceful). ``settings``: more ``NBO_*`` variables for the server."""
    with serve(models_dir, store, log, {"NBO_CLOCK": CLOCK, **(settings or {})}) as server:
        yield server


# -- events ---------------------------------------------------------------------------------


def offer_event(event_id: str, kind: str, customer: str, item: str) -> Event:
    event: Event = {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "timestamp": TODAY,
        "item_id": item,
        "channel": "email",
    }
    if kind == "offer_conversion":
        event["revenue"] = 4.0
    return event


def mixed_event(event_id: str, n: int) -> Event:
    """One of four event types, spread over b-group and unknown customers (never a00)."""
    customer = f"b{n % 30:02d}" if n % 3 else f"new-{n % 50}"
    item = f"B{n % 10:02d}"
    kind = n % 4
    if kind == 0:
        return purchase(event_id, customer, [item, f"B{(n + 3) % 10:02d}"])
    return offer_event(
        event_id, ("offer_impression", "offer_click", "offer_conversion")[kind - 1], customer, item
    )


def post(client: httpx.Client, body: Event) -> httpx.Response:
    return client.post("/v1/events", json=body, timeout=REQUEST_SECONDS)


def repost_all(client: httpx.Client, events: list[Event]) -> dict[str, list[str]]:
    """Post every event again, in batches; the answers' accepted and duplicate ids."""
    seen: dict[str, list[str]] = {"accepted": [], "duplicates": [], "rejected": []}
    for start in range(0, len(events), 1000):
        answer = post(client, {"events": events[start : start + 1000]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen["accepted"] += body["accepted"]
        seen["duplicates"] += body["duplicates"]
        seen["rejected"] += [r["event_id"] for r in body["rejected"]]
    return seen


def offers(client: httpx.Client, customer: str) -> dict[str, Any]:
    answer = client.get(f"/v1/customers/{customer}/offers", timeout=REQUEST_SECONDS)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def stored_count(store: Path) -> int:
    db = SQLiteStore(store)
    try:
        return db.event_count()
    finally:
        db.close()


def integrity(store: Path) -> str:
    db = sqlite3.connect(store)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


# -- a. SIGTERM -----------------------------------------------------------------------------


def test_every_answered_event_survives_a_restart(models_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    log = tmp_path / "server.log"
    singles: list[Event] = []
    batches: list[list[Event]] = []

    with running_server(models_dir, store, log) as server, httpx.Client(base_url=server.base) as c:
        before = offers(c, "a00")
        top = before["offers"][0]["item_id"]
        singles = [purchase("p-a00", "a00", [top])]
        singles += [mixed_event(f"s{n}", n) for n in range(19)]
        batches = [[mixed_event(f"b{b}-{n}", n + b) for n in range(10)] for b in range(4)]
        batches[1][3] = purchase("p-a01", "a01", ["A02"])

        answered: list[str] = []
        for event in singles:
            answer = post(c, event)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "accepted": [event["event_id"]],
                "duplicates": [],
                "rejected": [],
            }
            answered.append(event["event_id"])
        for batch in batches:
            answer = post(c, {"events": batch})
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == [e["event_id"] for e in batch]
            answered += answer.json()["accepted"]
        assert top not in [o["item_id"] for o in offers(c, "a00")["offers"]]
        server.terminate()

    everything = singles + [event for batch in batches for event in batch]
    assert len(set(answered)) == len(everything) == 60
    with running_server(models_dir, store, log) as server, httpx.Client(base_url=server.base) as c:
        # Posted again in the same shape: one by one, then the same batches.
        for event in singles:
            body = post(c, event).json()
            assert body == {"accepted": [], "duplicates": [event["event_id"]], "rejected": []}
        for batch in batches:
            body = post(c, {"events": batch}).json()
            assert body["accepted"] == [] and body["duplicates"] == [e["event_id"] for e in batch]

        after = offers(c, "a00")
        assert top not in [o["item_id"] for o in after["offers"]]
        assert after["suppressed_items"] == before["suppressed_items"] + 1
        assert after["profile"] == "updated"
        server.terminate()

    assert stored_count(store) == len(everything)
    db = SQLiteStore(store)
    try:
        assert [p.item_id for p in db.purchases_of("a00")] == [top]
    finally:
        db.close()


# -- b. SIGKILL -----------------------------------------------------------------------------


@dataclass
class Poster:
    """Posts events one by one on its own thread until done or the server goes away."""

    base: str
    events: list[Event]
    answered_before_kill: int
    attempted: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    failure: str | None = None
    enough: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base) as client:
            for event in self.events:
                self.attempted.append(event["event_id"])
                try:
                    answer = post(client, event)
                except httpx.TransportError:
                    break  # the server is gone
                if answer.is_success:
                    self.answered.append(event["event_id"])
                    if answer.json()["accepted"] != [event["event_id"]]:
                        self.failure = f"{event['event_id']}: {answer.text}"
                else:
                    self.failure = f"{event['event_id']}: {answer.status_code} {answer.text}"
                if len(self.answered) >= self.answered_before_kill:
                    self.enough.set()
        self.enough.set()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_answered_event_survives_sigkill(
    models_dir: Path, tmp_path: Path, workers: int
) -> None:
    """SIGKILL to ``nbo serve`` (with workers, the master: they die with it)."""
    store = tmp_path / "events.db"
    log = tmp_path / "server.log"
    events = [mixed_event(f"k{n}", n) for n in range(600)]

    with running_server(models_dir, store, log, {"NBO_WORKERS": str(workers)}) as server:
        poster = Poster(server.base, events, answered_before_kill=150)
        thread = threading.Thread(target=poster.run, daemon=True)
        thread.start()
        assert poster.enough.wait(timeout=60), "150 answers took more than 60 s"
        server.process.kill()  # SIGKILL while the poster is mid-stream
        assert server.process.wait(timeout=STOP_SECONDS) == -signal.SIGKILL
        thread.join(timeout=REQUEST_SECONDS + 5)
        assert not thread.is_alive(), "the poster did not notice the server was gone"

    assert poster.failure is None, poster.failure
    assert len(poster.answered) >= 150
    assert len(poster.attempted) < len(events), "killed after the stream ended"
    assert integrity(store) == "ok"
    # The request in flight at the kill may or may not have been committed.
    in_flight = set(poster.attempted) - set(poster.answered)
    assert len(in_flight) <= 1
    assert len(poster.answered) <= stored_count(store) <= len(poster.attempted)

    with running_server(models_dir, store, log) as server, httpx.Client(base_url=server.base) as c:
        seen = repost_all(c, events)
        server.terminate()

    duplicates, accepted = set(seen["duplicates"]), set(seen["accepted"])
    assert seen["rejected"] == []
    assert set(poster.answered) <= duplicates, "answered with 2xx but lost on SIGKILL"
    assert duplicates <= set(poster.attempted), "stored without ever being posted"
    assert {e["event_id"] for e in events} - set(poster.attempted) <= accepted
    assert stored_count(store) == len(events)


# -- c. concurrency -------------------------------------------------------------------------

THREADS = 8
DISTINCT = 1000
SHARED = 50  # ids posted by two threads at the same moment


@dataclass
class Plan:
    """Per thread, a list of bodies to post, and the barrier before each shared post."""

    bodies: list[list[Event]]
    barriers: list[list[threading.Barrier | None]]
    events: list[Event]
    ids: list[str]
    shared: list[str]


def concurrent_plan() -> Plan:
    events = [mixed_event(f"c{n}", n) for n in range(DISTINCT)]
    ids = [e["event_id"] for e in events]
    shared_events, own = events[:SHARED], events[SHARED:]
    bodies: list[list[Event]] = [[] for _ in range(THREADS)]
    barriers: list[list[threading.Barrier | None]] = [[] for _ in range(THREADS)]
    # Own ids: thread t posts every 8th one, alternately alone and in batches of 9.
    for t in range(THREADS):
        mine = own[t::THREADS]
        position = 0
        while position < len(mine):
            if len(bodies[t]) % 2 == 0:
                bodies[t].append(mine[position])
                position += 1
            else:
                bodies[t].append({"events": mine[position : position + 9]})
                position += 9
            barriers[t].append(None)
    # Shared ids: each posted once by two different threads, released together by a
    # barrier; every thread meets its shared ids in increasing order, so no deadlock.
    pairs: dict[int, list[tuple[int, Event, threading.Barrier]]] = {t: [] for t in range(THREADS)}
    for j, event in enumerate(shared_events):
        first = j % THREADS
        second = (first + 1 + (j // THREADS) % (THREADS - 1)) % THREADS
        barrier = threading.Barrier(2)
        for t in (first, second):
            pairs[t].append((j, event, barrier))
    for t, mine_shared in pairs.items():
        step = max(1, len(bodies[t]) // (len(mine_shared) + 1))
        for n, (_, event, barrier) in enumerate(mine_shared):
            at = min(len(bodies[t]), (n + 1) * step + n)
            bodies[t].insert(at, event)
            barriers[t].insert(at, barrier)
    return Plan(bodies, barriers, events, ids, [e["event_id"] for e in shared_events])


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_posts_store_every_event_exactly_once(
    models_dir: Path, tmp_path: Path, workers: int
) -> None:
    """With two workers, two processes write the store at once."""
    store = tmp_path / "events.db"
    log = tmp_path / "server.log"
    plan = concurrent_plan()
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker(base: str, t: int) -> None:
        try:
            with httpx.Client(base_url=base) as client:
                for body, barrier in zip(plan.bodies[t], plan.barriers[t], strict=True):
                    if barrier is not None:
                        barrier.wait(timeout=30)
                    answer = post(client, body)
                    if answer.status_code != 200:
                        raise AssertionError(f"{answer.status_code} {answer.text}")
                    with lock:
                        answers.append(answer.json())
        except Exception as exc:  # reported by the main thread
            with lock:
                failures.append(f"thread {t}: {exc!r}")
            for barrier in plan.barriers[t]:
                if barrier is not None:
                    barrier.abort()  # release the partner at once

    with running_server(models_dir, store, log, {"NBO_WORKERS": str(workers)}) as server:
        threads = [
            threading.Thread(target=worker, args=(server.base, t), daemon=True)
            for t in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads), "posting took over 120 s"
        assert failures == [], failures

        accepted = Counter(i for body in answers for i in body["accepted"])
        duplicates = Counter(i for body in answers for i in body["duplicates"])
        assert all(body["rejected"] == [] for body in answers)
        assert accepted == Counter(plan.ids), "each id accepted exactly once"
        assert duplicates == Counter(plan.shared), "each doubly posted id: once a duplicate"

        with httpx.Client(base_url=server.base) as client:
            again = repost_all(client, plan.events)
        assert again["accepted"] == [] and again["rejected"] == []
        assert Counter(again["duplicates"]) == Counter(plan.ids)
        server.terminate()

    assert stored_count(store) == DISTINCT
    assert integrity(store) == "ok"


# -- d. SIGKILL under concurrent posts, checked through the data export ----------------------

POSTERS = 4


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_posts_through_sigkill_are_all_in_the_export_once(
    models_dir: Path, tmp_path: Path, workers: int
) -> None:
    """Four clients post events at once; the server is killed (SIGKILL) mid-stream and
    started again on the same store. Every event any client got a 2xx for is in its
    customer's data export (``GET /v1/customers/{id}/data``), and no event is there twice."""
    store = tmp_path / "events.db"
    log = tmp_path / "server.log"
    streams = [
        [mixed_event(f"p{poster}-{n}", n + 1000 * poster) for n in range(300)]
        for poster in range(POSTERS)
    ]

    with running_server(models_dir, store, log, {"NBO_WORKERS": str(workers)}) as server:
        posters = [Poster(server.base, events, answered_before_kill=40) for events in streams]
        threads = [threading.Thread(target=p.run, daemon=True) for p in posters]
        for thread in threads:
            thread.start()
        for poster in posters:
            assert poster.enough.wait(timeout=60), "40 answers each took more than 60 s"
        server.process.kill()
        assert server.process.wait(timeout=STOP_SECONDS) == -signal.SIGKILL
        for thread in threads:
            thread.join(timeout=REQUEST_SECONDS + 5)
            assert not thread.is_alive(), "a poster did not notice the server was gone"

    answered = {event_id for p in posters for event_id in p.answered}
    attempted = {event_id for p in posters for event_id in p.attempted}
    assert all(p.failure is None for p in posters), [p.failure for p in posters]
    assert len(answered) >= POSTERS * 40
    assert attempted < {e["event_id"] for events in streams for e in events}, "killed too late"
    assert integrity(store) == "ok"

    customers = {e["customer_id"] for events in streams for e in events}
    exported: Counter[str] = Counter()
    with running_server(models_dir, store, log) as server, httpx.Client(base_url=server.base) as c:
        for customer in sorted(customers):
            answer = c.get(f"/v1/customers/{customer}/data", timeout=REQUEST_SECONDS)
            assert answer.status_code == 200, answer.text
            exported.update(event["event_id"] for event in answer.json()["events"])
        server.terminate()

    assert answered <= set(exported), f"lost on SIGKILL: {sorted(answered - set(exported))[:5]}"
    assert set(exported) <= attempted, "exported an event never posted"
    assert [e for e, n in exported.items() if n > 1] == [], "an event stored twice"
