"""Two ``nbo serve`` processes on one store, as replicas behind a load balancer: what one
is told, the other honours on its next call.

The replicas are real servers (``bench.servers``: two workers each) with the planted
model and a pinned clock, on one PostgreSQL schema (skipped without a server, see
``tests/backends.py``) or on one SQLite file (replicas on one machine). Every wait has a
deadline and every server is stopped on the way out.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import BACKENDS, postgres_schema

from bench.servers import Server, running_server
from nbo.store import open_store

CLOCK = "2026-06-30T12:00:00Z"
TODAY = "2026-06-30T11:00:00Z"
SECONDS = 30


@dataclass
class Replicas:
    a: Server
    b: Server
    store: str  # the store URL both use


@contextmanager
def shared_store(backend: str, folder: Path) -> Iterator[str]:
    if backend == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield f"sqlite:///{folder / 'shared.db'}"


@contextmanager
def two_replicas(models_dir: Path, backend: str, folder: Path) -> Iterator[Replicas]:
    with shared_store(backend, folder) as url, ExitStack() as stack:
        open_store(url).close()  # migrated once, before both start
        servers = [
            stack.enter_context(
                running_server(models_dir, url, folder / f"{name}.log", {"NBO_CLOCK": CLOCK})
            )
            for name in ("a", "b")
        ]
        yield Replicas(servers[0], servers[1], url)


@pytest.fixture(scope="module", params=BACKENDS)
def replicas(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    """One pair per backend for the tests below, each on its own customers."""
    folder = tmp_path_factory.mktemp(f"replicas-{request.param}")
    with two_replicas(models_dir, request.param, folder) as pair:
        yield pair


def call(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, f"{server.base}{path}", timeout=SECONDS, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def purchase(event_id: str, customer: str, items: list[str]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.0} for item in items],
    }


def items(answer: dict[str, Any]) -> list[str]:
    return [offer["item_id"] for offer in answer["offers"]]


def test_a_purchase_posted_to_one_replica_is_suppressed_by_the_other(
    replicas: Replicas,
) -> None:
    before = call(replicas.b, "GET", "/v1/customers/a00/offers")
    top = items(before)[0]
    posted = call(replicas.a, "POST", "/v1/events", json=purchase("p-a00", "a00", [top]))
    assert posted["accepted"] == ["p-a00"]
    after = call(replicas.b, "GET", "/v1/customers/a00/offers")
    assert top not in items(after)
    assert after["suppressed_items"] == before["suppressed_items"] + 1


def test_consent_and_erasure_on_one_replica_hold_on_the_other_at_once(
    replicas: Replicas,
) -> None:
    consent = {"personalization": True, "channels": {"email": False}}
    call(replicas.a, "PUT", "/v1/customers/a01/consent", json=consent)
    withheld = call(replicas.b, "GET", "/v1/customers/a01/offers", params={"channel": "email"})
    assert withheld["suppressed_reason"] == "no_channel_consent" and withheld["offers"] == []
    assert call(replicas.b, "GET", "/v1/customers/a01/consent")["channels"]["email"] is False

    known = call(replicas.a, "GET", "/v1/customers/a02/offers")
    assert known["personalized"] is True
    receipt = call(replicas.b, "DELETE", "/v1/customers/a02")
    assert receipt["model_row_removed"] is True
    # The other replica loaded its model before the erasure: it forgets them now.
    forgotten = call(replicas.a, "GET", "/v1/customers/a02/offers")
    assert forgotten["personalized"] is False
    assert forgotten["profile"] != known["profile"]
    export = call(replicas.a, "GET", "/v1/customers/a02/data")
    assert export["erased"] is True and export["events"] == []
    assert call(replicas.a, "GET", "/v1/customers/a02")["stage"] == "new"


def test_the_data_export_is_complete_from_either_replica(replicas: Replicas) -> None:
    for n in range(6):
        server = replicas.a if n % 2 else replicas.b
        call(server, "POST", "/v1/events", json=purchase(f"x-b03-{n}", "b03", [f"B0{n}"]))
    call(replicas.a, "PUT", "/v1/customers/b03/consent", json={"personalization": False})
    exports = [call(s, "GET", "/v1/customers/b03/data") for s in (replicas.a, replicas.b)]
    for export in exports:
        assert [e["event_id"] for e in export["events"]] == [f"x-b03-{n}" for n in range(6)]
        assert export["consent"]["personalization"] is False
    assert exports[0]["events"] == exports[1]["events"]


@pytest.mark.parametrize(("customer", "channel", "cap"), [("b04", "email", 1), ("b05", "app", 5)])
def test_a_frequency_cap_holds_across_replicas_under_concurrent_deliveries(
    replicas: Replicas, customer: str, channel: str, cap: int
) -> None:
    """Many clients ask both replicas to deliver to one customer at the same moment:
    never more deliveries than the channel's cap (email: 1 a week, app: 5 a day)."""
    clients = 24
    barrier = threading.Barrier(clients)
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def deliver(n: int) -> None:
        server = replicas.a if n % 2 else replicas.b
        try:
            barrier.wait(timeout=SECONDS)
            answer = httpx.get(
                f"{server.base}/v1/customers/{customer}/offers",
                params={"k": 3, "channel": channel, "record": "true"},
                headers={"X-Request-ID": f"delivery-{customer}-{n}"},
                timeout=SECONDS,
            )
            with lock:
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                else:
                    answers.append(answer.json())
        except Exception as exc:
            with lock:
                failures.append(repr(exc))

    threads = [threading.Thread(target=deliver, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * SECONDS)
    assert failures == [] and len(answers) == clients
    recorded = [a for a in answers if a["recorded"]]
    assert len(recorded) == cap
    assert all(len(a["offers"]) == 3 for a in recorded)
    assert {a["suppressed_reason"] for a in answers if not a["recorded"]} == {"frequency_cap"}
    stored = open_store(replicas.store)
    try:
        shown = stored.contacts_of(customer, 0).impressions
    finally:
        stored.close()
    assert Counter(c.delivery for c in shown) == {a["request_id"]: 3 for a in recorded}


def test_every_event_acknowledged_survives_sigkill_of_a_replica(
    models_dir: Path, tmp_path: Path, backend: str
) -> None:
    """Clients post to both replicas; one is killed (SIGKILL) mid-stream. Every event any
    client got a 2xx for is stored, once: the survivor answers it as a duplicate, and
    exports it once."""
    with two_replicas(models_dir, backend, tmp_path) as pair:
        streams = [
            [purchase(f"k{poster}-{n}", f"new-{n % 7}", [f"B0{n % 10}"]) for n in range(200)]
            for poster in range(4)
        ]
        posters = [
            Poster(pair.a if n % 2 == 0 else pair.b, events) for n, events in enumerate(streams)
        ]
        threads = [threading.Thread(target=p.run, daemon=True) for p in posters]
        for thread in threads:
            thread.start()
        assert all(p.answered_some.wait(timeout=60) for p in posters[::2])
        pair.a.process.kill()
        assert pair.a.process.wait(timeout=10) == -signal.SIGKILL
        for thread in threads:
            thread.join(timeout=2 * SECONDS)
            assert not thread.is_alive()

        answered = {e for p in posters for e in p.answered}
        attempted = {e for p in posters for e in p.attempted}
        assert all(p.failure is None for p in posters), [p.failure for p in posters]
        assert {e for p in posters[1::2] for e in p.answered} == {
            e["event_id"] for events in streams[1::2] for e in events
        }, "the surviving replica answered every event posted to it"
        everything = [e for events in streams for e in events]
        again = call(pair.b, "POST", "/v1/events", json={"events": everything})
        assert answered <= set(again["duplicates"]), "answered with 2xx but lost"
        assert set(again["duplicates"]) <= attempted, "stored without ever being posted"
        exported: Counter[str] = Counter()
        for customer in sorted({e["customer_id"] for e in everything}):
            export = call(pair.b, "GET", f"/v1/customers/{customer}/data")
            exported.update(event["event_id"] for event in export["events"])
        assert set(exported) == {e["event_id"] for e in everything}
        assert max(exported.values()) == 1, "an event stored twice"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Poster:
    """Posts events one by one until done or its server goes away."""

    server: Server
    events: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self.attempted: list[str] = []
        self.answered: list[str] = []
        self.failure: str | None = None
        self.answered_some = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.base, timeout=SECONDS) as client:
            for event in self.events:
                self.attempted.append(event["event_id"])
                try:
                    answer = client.post("/v1/events", json=event)
                except httpx.TransportError:
                    break  # the server is gone
                if answer.status_code != 200 or answer.json()["accepted"] != [event["event_id"]]:
                    self.failure = f"{event['event_id']}: {answer.status_code} {answer.text}"
                    break
                self.answered.append(event["event_id"])
                if len(self.answered) >= 40:
                    self.answered_some.set()
        self.answered_some.set()


def serving_everywhere(server: Server) -> set[str]:
    """The current version of every worker of a replica, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.base}/metrics", timeout=SECONDS).text
    return {
        sample.labels["version"]
        for family in text_string_to_metric_families(text)
        if family.name == "nbo_model_info"
        for sample in family.samples
        if sample.labels["role"] == "current" and sample.value == 1
    }


def wait_until_serving(server: Server, version: str) -> None:
    for _ in range(SECONDS * 10):
        if serving_everywhere(server) == {version}:
            return
        threading.Event().wait(0.1)
    raise AssertionError(f"{server.base} serves {serving_everywhere(server)}, not {version}")


def test_a_reload_asked_of_one_replica_reaches_the_other(
    backend: str, two_models: tuple[Path, str, str], tmp_path: Path
) -> None:
    """``POST /v1/admin/reload`` through a balancer reaches one replica: it records the
    version it now serves in the store, and every worker of the other replica loads it
    within seconds (before, the other replica served the old model until it was
    reloaded on its own). ``"replicas": false`` keeps a reload to the replica asked (a
    canary): the other serves on what it served."""
    models, first, second = two_models
    with two_replicas(models, backend, tmp_path) as pair:
        # CURRENT names the second: both start on it.
        wait_until_serving(pair.a, second)
        wait_until_serving(pair.b, second)
        answer = call(pair.a, "POST", "/v1/admin/reload", json={"version": first})
        assert answer["version"] == first and answer["replicas"] is True
        wait_until_serving(pair.b, first)
        canary = call(
            pair.b, "POST", "/v1/admin/reload", json={"version": second, "replicas": False}
        )
        assert canary["replicas"] is False
        wait_until_serving(pair.b, second)
        # Asked again (a number newer than the canary's) it reaches a, as one would.
        call(pair.b, "POST", "/v1/admin/reload", json={"version": second})
        wait_until_serving(pair.a, second)
        assert serving_everywhere(pair.b) == {second}
