"""POST /v1/events: single events and batches, duplicates and rejections through the real
app; what a posted purchase changes at once (suppressed in the next offers call, folded
into the customer's taste vector without retraining); and against a real server
process, every answered event durable across SIGTERM and SIGKILL and stored exactly once
under concurrent posts."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support import CLOCK, GROUP_ITEMS, REQUEST_SECONDS, running_server

from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore

TODAY = "2026-06-30T11:00:00Z"  # after the planted data ends: news to the model
STOP_SECONDS = 10

Event = dict[str, Any]


# --- POST /v1/events through the app -------------------------------------------------


def one_purchase(event_id: str, customer: str = "a00", item: str = "A01", **extra: object) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T10:00:00Z",
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.5}],
        **extra,
    }


def test_one_event_is_accepted_and_stored(client: TestClient, isolated_store: Path) -> None:
    answer = client.post("/v1/events", json=one_purchase("e1"))
    assert answer.status_code == 200
    assert answer.json() == {"accepted": ["e1"], "duplicates": [], "rejected": []}
    assert [p.item_id for p in SQLiteStore(isolated_store).purchases_of("a00")] == ["A01"]


def test_posting_the_same_event_id_again_is_a_duplicate(client: TestClient) -> None:
    client.post("/v1/events", json=one_purchase("e1"))
    answer = client.post("/v1/events", json={"events": [one_purchase("e1"), one_purchase("e2")]})
    assert answer.json() == {"accepted": ["e2"], "duplicates": ["e1"], "rejected": []}


def test_an_event_id_reused_for_another_event_is_rejected_naming_it(
    client: TestClient,
) -> None:
    """The same id for another customer or another payload was a "duplicate": the event
    was lost and the client told it was already stored."""
    client.post("/v1/events", json=one_purchase("e1"))
    batch = [one_purchase("e1", customer="a01"), one_purchase("e1", item="A02"), one_purchase("e2")]
    answer = client.post("/v1/events", json={"events": batch})
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == ["e2"] and body["duplicates"] == []
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(0, "e1"), (1, "e1")]
    reason = body["rejected"][0]["reason"]
    assert reason.startswith("event_id: ") and "unique across customers and types" in reason
    alone = client.post("/v1/events", json=one_purchase("e1", customer="a02"))
    assert alone.status_code == 422 and alone.json()["rejected"][0]["event_id"] == "e1"
    # A true retry is still a duplicate.
    again = client.post("/v1/events", json=one_purchase("e1"))
    assert again.json() == {"accepted": [], "duplicates": ["e1"], "rejected": []}


def test_a_batch_with_a_bad_event_stores_the_good_ones(
    client: TestClient, isolated_store: Path
) -> None:
    bad = one_purchase("e2")
    bad["items"][0]["quantity"] = -1
    events = [
        one_purchase("e1"),
        bad,
        {"event_id": "e3", "type": "teleport", "customer_id": "a00"},
        {
            "event_id": "e4",
            "type": "offer_conversion",
            "customer_id": "a00",
            "item_id": "A01",
            "timestamp": "2026-06-30T11:00:00Z",
            "revenue": 9.5,
        },
    ]
    body = client.post("/v1/events", json={"events": events}).json()
    assert body["accepted"] == ["e1", "e4"]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {1, 2}
    assert rejected[1]["event_id"] == "e2" and "items.0.quantity" in rejected[1]["reason"]
    assert rejected[2]["event_id"] == "e3" and "teleport" in rejected[2]["reason"]
    assert SQLiteStore(isolated_store).event_count() == 2


def test_only_bad_events_answer_422_with_the_reasons(client: TestClient) -> None:
    event = one_purchase("e1")
    del event["customer_id"]
    answer = client.post("/v1/events", json=event)
    assert answer.status_code == 422
    body = answer.json()
    assert body["accepted"] == [] and "customer_id" in body["rejected"][0]["reason"]


def test_an_impression_states_only_known_kinds_sources_and_stages(client: TestClient) -> None:
    """What an impression says the answer said (kind, source, stage: what the dashboard
    counts offers going out by) and its channel (what the caps count it in) are checked
    like any other field."""
    shown = {
        "event_id": "i1",
        "type": "offer_impression",
        "customer_id": "a00",
        "item_id": "A01",
        "timestamp": TODAY,
        "kind": "product",
        "source": "cf",
        "stage": "at_risk",
    }
    assert client.post("/v1/events", json=shown).json()["accepted"] == ["i1"]
    assert client.post("/v1/events", json={**shown, "event_id": "i3", "channel": "app"}).json()[
        "accepted"
    ] == ["i3"]
    for name, bad in (
        ("kind", "coupon"),
        ("stage", "dormant"),
        ("source", "x" * 65),
        # A channel the caps do not count would be stored and never counted.
        ("channel", "Email"),
        ("channel", "sms"),
    ):
        answer = client.post("/v1/events", json={**shown, "event_id": "i2", name: bad})
        assert answer.status_code == 422
        assert answer.json()["rejected"][0]["reason"].startswith(name), answer.json()


def test_an_impression_may_name_the_model_version_that_decided_it(
    client: TestClient,
) -> None:
    """A client posting the impressions of its own sends (a campaign file made without
    --record) may copy the model_version of the row or answer; it is stored (the
    experiment report and the export read it), and one that is no model version is
    refused naming the field, and nothing stored."""
    shown = {
        "event_id": "i1",
        "type": "offer_impression",
        "customer_id": "a00",
        "item_id": "A01",
        "timestamp": TODAY,
        "model_version": "20260630T120000Z-0123abcd",
    }
    assert client.post("/v1/events", json=shown).json()["accepted"] == ["i1"]
    (stored,) = client.get("/v1/customers/a00/data").json()["events"]
    assert stored["payload"]["model_version"] == "20260630T120000Z-0123abcd"
    for bad in ("../models", ".hidden", "a b", "", "v" * 257, 7):
        answer = client.post("/v1/events", json={**shown, "event_id": "i2", "model_version": bad})
        assert answer.status_code == 422, bad
        reason = answer.json()["rejected"][0]["reason"]
        assert reason.startswith("model_version: "), reason
    assert [e["event_id"] for e in client.get("/v1/customers/a00/data").json()["events"]] == ["i1"]
    # Only an impression is decided by a model: a click naming one is refused.
    click = {**shown, "event_id": "k1", "type": "offer_click"}
    answer = client.post("/v1/events", json=click)
    assert answer.status_code == 422
    assert answer.json()["rejected"][0]["reason"].startswith("model_version: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": "nope"}, "events"),
        ({"events": [one_purchase(f"e{i}") for i in range(1001)]}, "events"),
    ],
)
def test_unusable_bodies_are_refused_whole(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/v1/events", json=body)
    assert answer.status_code == 422
    assert answer.json()["details"][0]["field"] == field


def test_an_empty_batch_is_refused_naming_events(client: TestClient) -> None:
    """``{"events": []}`` answered 200 with nothing accepted: a client whose filter
    dropped every event was told all went well. It is a 422 naming ``events``, and the
    document says a batch holds at least one."""
    answer = client.post("/v1/events", json={"events": []})
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "validation_error"
    assert body["details"] == [{"field": "events", "problem": "at least one event"}]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["EventBatch"]["properties"]["events"]["minItems"] == 1


def test_a_body_that_is_no_object_says_what_the_route_takes(client: TestClient) -> None:
    """An array of events (a common first try) or a bare value was told "Input should be
    a valid dictionary"; the answer names the two shapes the route takes, and a JSON body
    sent as another content type is told to send it as JSON."""
    takes = 'must be one event object or {"events": [...]}'
    for body in [b"[]", b"[{}]", b"3", b"null", b'"x"']:
        answer = client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422
        assert answer.json()["details"] == [{"field": "body", "problem": takes}], body
    as_text = client.post(
        "/v1/events", content=b'{"events": []}', headers={"content-type": "text/plain"}
    )
    assert as_text.json()["details"] == [
        {
            "field": "body",
            "problem": f"{takes} (the body was sent as text/plain: send JSON with "
            "content-type: application/json)",
        }
    ]


def test_a_body_that_is_not_json_is_a_json_error(client: TestClient) -> None:
    answer = client.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/json")
    # The body is at fault, and where the parser stopped is said as such (not as a
    # field named "1").
    (detail,) = answer.json()["details"]
    assert detail["field"] == "body"
    assert detail["problem"].startswith("not valid JSON at character 1")


@pytest.mark.parametrize(
    ("content", "content_type", "status", "says"),
    [
        # JSON, but not sent as JSON: the content type is named.
        (b'{"event_id": "e1"}', "text/plain", 422, "sent as text/plain"),
        (b'{"event_id": "e1"}', None, 422, "sent without a content type"),
        # Not read as JSON though its name holds "json": named too.
        (b'{"event_id": "e1"}', "application/x-ndjson", 422, "sent as application/x-ndjson"),
        (b'{"event_id": "e1"}', "text/json", 422, "sent as text/json"),
        # Bytes the JSON parser cannot read at all.
        (b"\xff\xfe{", "application/json", 400, "not readable as JSON (not UTF-8 text)"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "(nested too deeply)"),
        # Python's limit on an integer's digits: it was said to be bad UTF-8 or nesting.
        (
            b'{"event_id": "e1", "n": ' + b"1" * 4_301 + b"}",
            "application/json",
            400,
            "not readable as JSON (a number has more than 4,300 digits)",
        ),
    ],
)
def test_a_body_that_cannot_be_read_names_the_body(
    client: TestClient, content: bytes, content_type: str | None, status: int, says: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    answer = client.post("/v1/events", content=content, headers=headers)
    assert answer.status_code == status
    (detail,) = answer.json()["details"]
    assert detail["field"] == "body" and says in detail["problem"], detail


def test_an_event_without_a_known_type_names_the_type(client: TestClient) -> None:
    missing = client.post("/v1/events", json={"event_id": "e1"}).json()["rejected"][0]
    assert missing["reason"].startswith("type: missing: must be one of purchase,")
    unknown = client.post("/v1/events", json={"event_id": "e2", "type": "refund"})
    assert unknown.json()["rejected"][0]["reason"].startswith("type: 'refund' is not a type")


def test_timestamps_without_a_zone_are_utc(client: TestClient, isolated_store: Path) -> None:
    event = one_purchase("e1")
    event["timestamp"] = "2026-06-30T10:00:00"
    client.post("/v1/events", json=event)
    [stored] = SQLiteStore(isolated_store).purchases_of("a00")
    assert stored.occurred_at == 1782813600  # 2026-06-30T10:00:00Z


# --- what a posted purchase changes -------------------------------------------------


def purchase(event_id: str, customer: str, items: list[str], when: str = TODAY) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": when,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.0} for item in items],
    }


def offers(client: TestClient, customer: str, k: int = 10) -> dict:
    answer = client.get(f"/v1/customers/{customer}/offers", params={"k": k})
    assert answer.status_code == 200
    return answer.json()


def test_a_posted_purchase_is_suppressed_in_the_next_call(client: TestClient) -> None:
    before = offers(client, "a00")
    top = before["offers"][0]["item_id"]
    assert before["profile"] == "trained"

    client.post("/v1/events", json=purchase("e1", "a00", [top]))
    after = offers(client, "a00")

    assert top not in [o["item_id"] for o in after["offers"]]
    assert after["suppressed_items"] == before["suppressed_items"] + 1
    assert after["profile"] == "updated"  # bought after training: the taste vector moved


def test_a_new_customer_with_two_purchases_is_personalized_at_once(client: TestClient) -> None:
    assert offers(client, "newbie")["profile"] == "none"

    client.post("/v1/events", json=purchase("e1", "newbie", ["B01"]))
    client.post("/v1/events", json=purchase("e2", "newbie", ["B02"]))
    body = offers(client, "newbie", k=3)

    assert body["personalized"] is True and body["profile"] == "live"
    offered = [o["item_id"] for o in body["offers"]]
    assert set(offered) <= set(GROUP_ITEMS["b"]) - {"B01", "B02"}
    # Proposed by the model or as neighbours of the two purchases, explained by them.
    assert all(o["reason"]["source"] in ("cf", "also_bought") for o in body["offers"])
    assert all(set(o["reason"]["because"]) <= {"B01", "B02"} for o in body["offers"])


def test_a_purchase_from_before_training_suppresses_without_refolding(
    client: TestClient,
) -> None:
    top = offers(client, "b00")["offers"][0]["item_id"]
    client.post("/v1/events", json=purchase("e1", "b00", [top], when="2026-06-20T10:00:00Z"))
    body = offers(client, "b00")
    assert top not in [o["item_id"] for o in body["offers"]]
    assert body["profile"] == "trained"


def test_a_new_customer_is_personalized_by_purchases_dated_before_training_ended(
    client: TestClient,
) -> None:
    """A late-arriving order (a till, an import) of a customer the model never saw is
    not "already in the model": offers and profile count it like a fresh one."""
    early = "2026-06-20T10:00:00Z"  # the planted training data ends on 2026-06-29
    client.post("/v1/events", json=purchase("e1", "late", ["B01"], when=early))
    client.post("/v1/events", json=purchase("e2", "late", ["B02"], when=early))

    body = offers(client, "late", k=3)
    assert body["personalized"] is True and body["profile"] == "live"
    assert {o["item_id"] for o in body["offers"]} <= set(GROUP_ITEMS["b"]) - {"B01", "B02"}
    profile = client.get("/v1/customers/late").json()
    assert profile["known"] is True and profile["frequency"] == 2
    assert profile["last_purchase"] == "2026-06-20T10:00:00+00:00"


def test_unknown_items_in_a_purchase_are_ignored(client: TestClient) -> None:
    client.post("/v1/events", json=purchase("e1", "newbie", ["NOT-IN-CATALOGUE"]))
    body = offers(client, "newbie")
    assert body["profile"] == "none" and body["personalized"] is False


def test_posted_purchases_survive_a_restart_of_the_app(models_dir: Path) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        top = offers(client, "a01")["offers"][0]["item_id"]
        client.post("/v1/events", json=purchase("e1", "a01", [top]))
    with TestClient(create_app(settings)) as client:
        assert top not in [o["item_id"] for o in offers(client, "a01")["offers"]]


def test_a_customers_posted_history_counts_up_to_its_newest_lines(models_dir: Path) -> None:
    """NBO_MAX_POSTED_LINES bounds what one customer's posted history costs a request:
    offers and the profile read the newest lines only; the export still holds all."""
    older = purchase("e1", "heavy", ["B01"], when="2026-06-20T10:00:00Z")
    newer = purchase("e2", "heavy", ["B02", "B03", "B04"], when="2026-06-25T10:00:00Z")
    for cap, orders, suppressed in ((3, 1, 3), (1000, 2, 4)):
        settings = Settings(models_dir=models_dir, clock=CLOCK, max_posted_lines=cap)
        with TestClient(create_app(settings)) as client:
            client.post("/v1/events", json={"events": [older, newer]})
            body = offers(client, "heavy", k=20)
            assert body["suppressed_items"] == suppressed
            assert ("B01" in {o["item_id"] for o in body["offers"]}) is (cap == 3)
            profile = client.get("/v1/customers/heavy").json()
            assert profile["frequency"] == orders
            assert profile["last_purchase"] == "2026-06-25T10:00:00+00:00"
            export = client.get("/v1/customers/heavy/data").json()
            assert [e["event_id"] for e in export["events"]] == ["e1", "e2"]
            assert export["profile"] == profile | {"as_of": export["profile"]["as_of"]}


# --- against a real server process -------------------------------------------------
#
# Each test runs ``python -m nbo.cli serve`` (two workers, or as many as the test sets)
# on 127.0.0.1 and a free port, with the planted model, a pinned clock and its own SQLite
# store file; what the server stored is checked through the API (re-posting an event must
# answer it as a duplicate) and, once the server is stopped, by opening the file with
# ``SQLiteStore``.
# Every wait has a deadline and the server is always stopped in ``finally``.


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


def http_offers(client: httpx.Client, customer: str) -> dict[str, Any]:
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


# --- a. SIGTERM -----------------------------------------------------------------------


def test_every_answered_event_survives_a_restart(models_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    log = tmp_path / "server.log"
    singles: list[Event] = []
    batches: list[list[Event]] = []

    with running_server(models_dir, store, log) as server, httpx.Client(base_url=server.base) as c:
        before = http_offers(c, "a00")
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
        assert top not in [o["item_id"] for o in http_offers(c, "a00")["offers"]]
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

        after = http_offers(c, "a00")
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


# --- b. SIGKILL -----------------------------------------------------------------------


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


# --- c. concurrency -------------------------------------------------------------------


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


# --- d. SIGKILL under concurrent posts, checked through the data export ---------------


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
