"""The store contract, on every backend (``store_url``: SQLite, and PostgreSQL when a
server is configured, see ``tests/backends.py``): the same calls give the same answers.

Stores are opened through ``open_store`` as the service opens them; "a replica" is a
second store opened on the same URL (another process's view of the same data).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from backends import run_sql
from support import at

from nbo.core.errors import ConfigError
from nbo.data.events import Event, parse_events
from nbo.offers.state import DEFAULT_CONSENT, ContactHistory
from nbo.store import (
    open_store,
    read_erased_list,
    read_pseudonym_key,
    read_training_exclusions,
    sql,
)
from nbo.store.base import (
    CONSENT_FROM_API,
    CONSENT_FROM_CLI,
    CONSENT_MIGRATED,
    PURGE_CLICKS,
    PURGE_CONSENT_HISTORY,
    PURGE_DELIVERING_RUNS,
    PURGE_IMPRESSIONS,
    PURGE_PURCHASES,
    BatchOutput,
    DeliveringRun,
    Delivery,
    DeliveryCount,
    OfferActivity,
    Purged,
    ResponseCount,
    Store,
)
from nbo.store.migrations import MIGRATIONS

SINCE = 1_760_000_000  # 2025-10-09


@pytest.fixture
def opened(store_url: str) -> Iterator[Callable[[], Store]]:
    """Opens stores on ``store_url`` (as many as a test wants), closed after the test."""
    stores: list[Store] = []

    def open_one() -> Store:
        stores.append(open_store(store_url))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(opened: Callable[[], Store]) -> Store:
    return opened()


def parsed(body: dict[str, object]) -> Event:
    valid, rejected = parse_events(body)
    assert not rejected, rejected
    return valid[0][1]


def purchase(
    event_id: str, customer: str = "c1", item: str = "i1", ts: str = "2026-01-01T10:00:00Z"
) -> Event:
    return parsed(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": ts,
            "order_id": f"o-{event_id}",
            "items": [{"item_id": item, "quantity": 2, "price": 1.5}],
        }
    )


def lines(event_id: str, customer: str, items: list[str], ts: str) -> Event:
    return parsed(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": ts,
            "items": [{"item_id": item} for item in items],
        }
    )


def offer_event(
    event_id: str,
    customer: str,
    item: str,
    ts: str,
    kind: str = "offer_impression",
    request: str | None = None,
    **more: object,
) -> Event:
    return parsed(
        {
            "event_id": event_id,
            "type": kind,
            "customer_id": customer,
            "timestamp": ts,
            "item_id": item,
            "channel": "email",
            "request_id": request or f"r-{event_id}",
            **more,
        }
    )


# -- events and purchases --------------------------------------------------------------------


def test_same_event_id_is_stored_once(store: Store) -> None:
    first = store.add_events([purchase("e1"), purchase("e2")])
    again = store.add_events([purchase("e1"), purchase("e3"), purchase("e3")])
    assert first.accepted == ["e1", "e2"] and first.duplicates == []
    assert again.accepted == ["e3"] and again.duplicates == ["e1", "e3"]
    assert store.event_count() == 3
    assert len(store.purchases_of("c1")) == 3


def test_an_event_id_reused_for_another_event_is_a_conflict(store: Store) -> None:
    """Event ids are one namespace: an id stored for one event and posted again for
    another (another customer, type or payload) was counted a duplicate, and the second
    event lost without a word. A true retry (the same event) stays a duplicate."""
    store.add_events([purchase("e1")])
    result = store.add_events(
        [
            purchase("e1"),  # the same event: a retry
            purchase("e1", customer="c2"),  # another customer
            purchase("e1", item="i2"),  # another payload
            offer_event("e1", "c1", "i1", "2026-01-01T10:00:00Z"),  # another type
            purchase("e4"),
            purchase("e4", customer="c3"),  # reused within the batch
        ]
    )
    assert result.accepted == ["e4"] and result.duplicates == ["e1"]
    assert result.conflicts == [1, 2, 3, 5]
    assert store.event_count() == 2
    assert store.purchases_of("c2") == [] and store.purchases_of("c3") == []


def test_a_retried_purchase_with_its_lines_in_another_order_is_a_duplicate(
    store: Store,
) -> None:
    """An order system that reads an order's lines again for a retry may send them in
    another order: the same purchase, a duplicate, where it was refused as another event
    (the conflict a reused id gets). Other lines are still another event."""
    body = {
        "event_id": "o1",
        "type": "purchase",
        "customer_id": "c1",
        "timestamp": "2026-01-01T10:00:00Z",
        "items": [
            {"item_id": "A", "quantity": 2, "price": 1.5},
            {"item_id": "B", "quantity": 1, "price": 4.0},
        ],
    }
    assert store.add_events([parsed(body)]).accepted == ["o1"]
    reordered = parsed({**body, "items": list(reversed(body["items"]))})
    retried = store.add_events([reordered])
    assert retried.duplicates == ["o1"] and retried.conflicts == []
    other = parsed({**body, "items": [body["items"][0], {**body["items"][1], "quantity": 3}]})
    assert store.add_events([other]).conflicts == [0]
    assert store.event_count() == 1 and len(store.purchases_of("c1")) == 2


def test_events_survive_closing_and_reopening(store_url: str) -> None:
    store = open_store(store_url)
    store.add_events([purchase("e1", item="A"), purchase("e2", item="B", customer="c2")])
    store.close()
    reopened = open_store(store_url)
    try:
        assert [p.item_id for p in reopened.purchases_of("c1")] == ["A"]
        assert [p.item_id for p in reopened.purchases_of("c2")] == ["B"]
        assert reopened.event_count() == 2
    finally:
        reopened.close()


def test_purchases_since_and_in_time_order(store: Store) -> None:
    store.add_events(
        [
            purchase("late", item="L", ts="2026-03-01T00:00:00Z"),
            purchase("early", item="E", ts="2026-01-01T00:00:00Z"),
        ]
    )
    [early, late] = store.purchases_of("c1")
    assert (early.item_id, late.item_id) == ("E", "L")
    assert (early.quantity, early.price, early.order_id, early.event_id) == (
        2.0,
        1.5,
        "o-early",
        "early",
    )
    march = 1772323200  # 2026-03-01T00:00:00Z
    assert [p.item_id for p in store.purchases_of("c1", since=march)] == ["L"]
    assert store.purchases_of("nobody") == []


def test_bulk_reads_answer_each_customer_as_the_single_reads_do(store: Store) -> None:
    """A campaign reads a chunk's customers at once: purchases, contacts and consent of
    each are what reading them one by one gives, and customers with none are absent."""
    store.add_events(
        [
            purchase("p1", "c1", "i1", "2026-01-03T10:00:00Z"),
            purchase("p2", "c2", "i2", "2026-01-01T10:00:00Z"),
            purchase("p3", "c1", "i3", "2026-01-01T10:00:00Z"),
            purchase("p4", "c1", "i4", "2026-01-01T10:00:00Z"),  # same time as p3: stored order
            offer_event("s1", "c2", "i9", "2026-01-02T10:00:00Z"),
            offer_event("s2", "c3", "i8", "2025-06-01T10:00:00Z"),  # before ``since``
            offer_event("s3", "c3", "i7", "2026-01-05T10:00:00Z"),
            offer_event("s4", "c3", "i6", "2026-01-04T10:00:00Z", kind="offer_click"),
        ]
    )
    store.set_consent("c2", personalization=False, channels={"email": False})
    customers = ["c1", "c2", "c3", "nobody", "c1"]
    purchases = store.purchases_of_many(customers)
    contacts = store.contacts_of_many(customers, SINCE)
    consents = store.consents_of(customers)
    assert set(purchases) == {"c1", "c2"} and set(contacts) == {"c2", "c3"}
    assert set(consents) == {"c2"}
    for customer in customers:
        assert purchases.get(customer, []) == store.purchases_of(customer)
        assert consents.get(customer) == store.consent_of(customer)
        alone = store.contacts_of(customer, SINCE)
        assert contacts.get(customer, ContactHistory()) == alone
    assert [p.item_id for p in purchases["c1"]] == ["i3", "i4", "i1"]
    # Stored order, not time order: what the contact policies were written against.
    c3 = contacts["c3"]
    assert [(c.item_id, c.channel, c.delivery) for c in c3.impressions] == [("i7", "email", "r-s3")]
    assert [c.item_id for c in c3.responses] == ["i6"]
    assert store.purchases_of_many([]) == {} and store.consents_of([]) == {}
    assert store.contacts_of_many([], SINCE) == {}


def test_bulk_reads_of_many_customers_answer_each_of_them(store: Store) -> None:
    """More customers than SQLite binds in one query (500): all answered."""
    customers = [f"c{n:04d}" for n in range(1200)]
    store.add_events([purchase(f"p{c}", c, f"i{c}") for c in customers])
    found = store.purchases_of_many(customers, limit=5)
    assert len(found) == 1200 and all(found[c][0].item_id == f"i{c}" for c in customers)


def test_reads_of_posted_purchases_stop_at_the_newest_lines(store: Store) -> None:
    """``limit``: each customer's newest lines only (ties in time by the order stored),
    oldest first, alone or in bulk; a customer with fewer lines gets them all."""
    store.add_events(
        [
            lines("p1", "heavy", ["a", "b", "c"], "2026-01-01T10:00:00Z"),
            lines("p3", "heavy", ["g", "h"], "2026-01-03T10:00:00Z"),
            lines("p2", "heavy", ["d", "e", "f"], "2026-01-02T10:00:00Z"),
            lines("q1", "light", ["x"], "2026-01-01T10:00:00Z"),
        ]
    )
    newest = [p.item_id for p in store.purchases_of("heavy", limit=4)]
    assert newest == ["e", "f", "g", "h"]
    assert [p.item_id for p in store.purchases_of("heavy")] == list("abcdefgh")
    assert [p.item_id for p in store.purchases_of("heavy", limit=100)] == list("abcdefgh")
    assert [p.item_id for p in store.purchases_of("heavy", limit=1)] == ["h"]
    for limit in (1, 3, 4, 8, 9, None):
        bulk = store.purchases_of_many(["heavy", "light", "nobody"], limit=limit)
        assert set(bulk) == {"heavy", "light"}
        for customer in ("heavy", "light"):
            assert bulk[customer] == store.purchases_of(customer, limit=limit)


def test_ids_sort_byte_by_byte_on_every_backend(store: Store) -> None:
    """Sorted lists (customers, erased ids, exported events, campaign files) come back in
    Python's order, whatever the database's locale."""
    ids = ["b", "B", "a-1", "a_1", "a1", "Z", "é", "z", "10", "9"]
    store.add_events([purchase(f"e-{n}", c) for n, c in enumerate(ids)])
    for customer in ids:
        store.erase(customer)
    store.add_events([purchase(f"again-{n}", c) for n, c in enumerate(ids)])
    assert store.customers_with_purchases() == sorted(ids)
    assert store.erased_list().among(ids) == set(ids) and len(store.erased_list()) == len(ids)
    store.add_events([purchase(i, "same", ts="2026-02-01T00:00:00Z") for i in ids])
    assert [e.event_id for e in store.stored_events_of("same")] == sorted(ids)


def test_the_export_reads_every_event_as_posted(store: Store) -> None:
    store.add_events(
        [
            purchase("p1", "c1", "i1", "2026-01-02T10:00:00Z"),
            offer_event("v1", "c1", "i2", "2026-01-01T10:00:00Z", experiment="x", variant="b"),
            purchase("other", "c2"),
        ]
    )
    stored = store.stored_events_of("c1")
    assert [(e.event_id, e.type, e.occurred_at) for e in stored] == [
        ("v1", "offer_impression", 1767261600),
        ("p1", "purchase", 1767348000),
    ]
    assert all(e.received_at >= 1767348000 for e in stored)
    assert [e.payload for e in stored] == store.events_of("c1")
    assert stored[0].payload["experiment"] == "x" and stored[1].payload["items"] == [
        {"item_id": "i1", "quantity": 2.0, "price": 1.5}
    ]
    assert store.events_of("nobody") == [] and store.stored_events_of("nobody") == []


def test_the_experiment_log_has_first_tagged_events_and_conversions(store: Store) -> None:
    tagged = {"experiment": "exp", "variant": "b"}
    store.add_events(
        [
            offer_event("i1", "c1", "x", "2026-01-02T00:00:00Z", **tagged),
            offer_event("i2", "c1", "y", "2026-01-01T00:00:00Z", **tagged),
            offer_event("k1", "c1", "x", "2026-01-03T00:00:00Z", kind="offer_click", **tagged),
            offer_event(
                "v1", "c1", "x", "2026-01-04T00:00:00Z", kind="offer_conversion", revenue=7.5
            ),
            offer_event("v2", "c2", "x", "2026-01-04T00:00:00Z", kind="offer_conversion"),
            offer_event("i3", "c3", "x", "2026-01-01T00:00:00Z", experiment="other", variant="a"),
            # Outside the run (2026-01-01 to before 2026-01-05): not the experiment's.
            offer_event("i4", "c1", "x", "2025-12-31T23:59:59Z", **tagged),
            offer_event("i5", "c4", "x", "2025-12-20T00:00:00Z", **tagged),
            offer_event(
                "v3", "c4", "x", "2025-12-21T00:00:00Z", kind="offer_conversion", revenue=9.0
            ),
            offer_event("i6", "c5", "x", "2026-01-05T00:00:00Z", **tagged),
            offer_event(
                "v4", "c1", "x", "2026-01-05T00:00:00Z", kind="offer_conversion", revenue=1.0
            ),
        ]
    )
    run = (1767225600, 1767571200)  # 2026-01-01 up to 2026-01-05
    log = store.experiment_log("exp", *run)
    assert sorted((t.customer_id, t.variant, t.type, t.first_at) for t in log.tagged) == [
        ("c1", "b", "offer_click", 1767398400),
        ("c1", "b", "offer_impression", 1767225600),
    ]
    assert log.conversions == [("c1", 1767484800, 7.5)]
    assert store.experiment_log("none", *run).tagged == []


def test_the_experiment_log_has_impressions_per_model_version(store_url: str, store: Store) -> None:
    """Each impression's model version (its payload's) is in the log per customer and
    variant: with the first and last time and how many; one stored by a release that
    did not keep it (no field in its payload, as the row below is written) has None."""
    tagged = {"experiment": "exp", "variant": "b"}
    store.add_events(
        [
            offer_event("i1", "c1", "x", "2026-01-02T00:00:00Z", model_version="v1", **tagged),
            offer_event("i2", "c1", "y", "2026-01-03T00:00:00Z", model_version="v1", **tagged),
            offer_event("i3", "c1", "z", "2026-01-04T00:00:00Z", model_version="v2", **tagged),
            offer_event("i4", "c2", "x", "2026-01-02T00:00:00Z", model_version="v2", **tagged),
            # Clicks name no model; another experiment's impressions are not this one's.
            offer_event("k1", "c2", "x", "2026-01-03T00:00:00Z", kind="offer_click", **tagged),
            offer_event("i5", "c3", "x", "2026-01-02T00:00:00Z", model_version="v1"),
        ]
    )
    payload = (
        '{"event_id": "i0", "customer_id": "c3", "timestamp": "2026-01-01T12:00:00Z", '
        '"item_id": "x", "channel": "email", "request_id": "r-i0", "experiment": "exp", '
        '"variant": "b", "type": "offer_impression", "kind": "product", "source": "cf", '
        '"stage": null}'
    )
    row = ("i0", "offer_impression", "c3", at("2026-01-01T12:00:00Z"), 0, "x", "email", "r-i0")
    run_sql(
        store_url,
        "INSERT INTO events (event_id, type, customer_id, occurred_at, received_at, item_id, "
        "channel, request_id, payload, experiment, variant) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (*row, payload, "exp", "b"),
    )
    log = store.experiment_log("exp", at("2026-01-01T00:00:00Z"), at("2026-01-05T00:00:00Z"))
    shown = sorted(
        (s.customer_id, s.variant, s.model_version, s.first_at, s.last_at, s.impressions)
        for s in log.shown
    )
    day = at("2026-01-02T00:00:00Z")
    assert shown == [
        ("c1", "b", "v1", day, day + 86400, 2),
        ("c1", "b", "v2", day + 2 * 86400, day + 2 * 86400, 1),
        ("c2", "b", "v2", day, day, 1),
        ("c3", "b", None, day - 43200, day - 43200, 1),
    ]
    # The payload keeps the version for the export; the old one has none.
    payloads = {e.event_id: e.payload for e in store.stored_events_of("c1")}
    assert payloads["i3"]["model_version"] == "v2"
    assert "model_version" not in store.stored_events_of("c3")[0].payload


def test_offer_activity_counts_deliveries_and_their_answers_per_day(store: Store) -> None:
    """Impressions per day, channel, kind, source and stage (NULL first, then byte
    order); one counts as clicked or converted only on a later answer of the same
    customer to the same offer inside the period read; responses per day and channel
    with their revenue."""
    shown = {"kind": "product", "source": "cf", "stage": "active"}

    def event(what: str, event_id: str, customer: str, item: str, ts: str, **more: object) -> Event:
        body = {"event_id": event_id, "type": f"offer_{what}", "customer_id": customer}
        return parsed({**body, "item_id": item, "timestamp": ts, "channel": "email", **more})

    def shown_to(event_id: str, customer: str, item: str, ts: str, **more: object) -> Event:
        return event("impression", event_id, customer, item, ts, **{**shown, **more})

    store.add_events(
        [
            shown_to("i1", "c1", "A", "2026-06-01T10:00:00Z"),
            shown_to("i2", "c2", "A", "2026-06-01T11:00:00Z"),
            shown_to("i3", "c3", "A", "2026-06-01T12:00:00Z"),
            shown_to("i6", "c5", "A", "2026-06-01T12:30:00Z", stage="at_risk"),
            # Posted by clients without what the answer said (one without a channel).
            event("impression", "i4", "c1", "win", "2026-06-02T09:00:00Z", channel="app"),
            event("impression", "i5", "c4", "B", "2026-06-02T09:30:00Z", channel=None),
            # c1 answers A later the same day: clicked and converted.
            event("click", "k1", "c1", "A", "2026-06-01T10:05:00Z"),
            event("conversion", "v1", "c1", "A", "2026-06-01T10:10:00Z", revenue=12.5),
            # c2 clicked before being shown A: not an answer to it.
            event("click", "k2", "c2", "A", "2026-06-01T10:59:00Z"),
            # c3 converted on another offer: not an answer to A.
            event("conversion", "v3", "c3", "B", "2026-06-01T13:00:00Z", revenue=3.0),
            # c1 converts on the app's offer after the period read: not counted.
            event("conversion", "v4", "c1", "win", "2026-06-05T00:00:00Z", channel="app"),
            # Before the period: left out.
            shown_to("i0", "c9", "A", "2026-05-30T10:00:00Z"),
        ]
    )
    since, until = 1_780_272_000, 1_780_444_800  # 2026-06-01 and 2026-06-03, 00:00 UTC
    activity = store.offer_activity(since, until)
    day = since // 86_400
    assert activity.deliveries == [
        DeliveryCount(day, "email", "product", "cf", "active", 3, 1, 1),
        DeliveryCount(day, "email", "product", "cf", "at_risk", 1, 0, 0),
        DeliveryCount(day + 1, None, None, None, None, 1, 0, 0),
        DeliveryCount(day + 1, "app", None, None, None, 1, 0, 0),
    ]
    assert activity.responses == [
        ResponseCount(day, "offer_click", "email", 2, 0.0),
        ResponseCount(day, "offer_conversion", "email", 2, 15.5),
    ]
    assert store.offer_activity(until, until + 86_400) == OfferActivity([], [])
    # The conversion after the period counts once the period reaches it.
    later = store.offer_activity(since, until + 3 * 86_400)
    assert later.deliveries[-1] == DeliveryCount(day + 1, "app", None, None, None, 1, 0, 1)


def test_an_answer_is_credited_to_the_last_delivery_before_it_only(store: Store) -> None:
    """An email and two app deliveries of one item, then one conversion: three take-ups
    of one conversion were counted. The conversion is credited to the last delivery
    before it, on any channel (two at the same second: the one stored last); a
    delivery after it is not credited; a second conversion after a later delivery is
    that one's."""

    def event(what: str, event_id: str, ts: str, channel: str, **more: object) -> Event:
        body = {"event_id": event_id, "type": f"offer_{what}", "customer_id": "c1"}
        return parsed({**body, "item_id": "A", "timestamp": ts, "channel": channel, **more})

    store.add_events(
        [
            event("impression", "i1", "2026-06-01T10:00:00Z", "email"),
            event("impression", "i2", "2026-06-01T11:00:00Z", "app"),
            event("impression", "i3", "2026-06-01T11:00:00Z", "app"),
            event("click", "k1", "2026-06-01T11:30:00Z", "app"),
            event("conversion", "v1", "2026-06-01T12:00:00Z", "email", revenue=5.0),
            event("impression", "i4", "2026-06-01T13:00:00Z", "email"),
            event("impression", "i5", "2026-06-01T14:00:00Z", "email"),
            event("conversion", "v2", "2026-06-01T15:00:00Z", "email", revenue=5.0),
        ]
    )
    since = 1_780_272_000  # 2026-06-01 00:00 UTC
    activity = store.offer_activity(since, since + 86_400)
    day = since // 86_400
    assert activity.deliveries == [
        DeliveryCount(day, "app", None, None, None, 2, 1, 1),
        DeliveryCount(day, "email", None, None, None, 3, 0, 1),
    ]
    taken_up = sum(d.converted for d in activity.deliveries)
    conversions = sum(r.events for r in activity.responses if r.type == "offer_conversion")
    assert taken_up == conversions == 2


# -- consent and erasure ---------------------------------------------------------------------


def test_consent_is_stored_merged_and_read_back(store: Store) -> None:
    assert store.consent_of("c1") is None
    first = store.set_consent("c1", personalization=False, channels={"email": False})
    second = store.set_consent("c1", personalization=True, channels={"app": False})
    assert first.channels == {"email": False}
    assert second.channels == {"app": False, "email": False} and second.personalization
    stored = store.consent_of("c1")
    assert stored == second and stored is not None and not stored.allows("email")
    assert store.consents_of(["c1", "c2"]) == {"c1": second}
    assert DEFAULT_CONSENT.allows("email")


def test_erasure_deletes_everything_and_keeps_the_id(store: Store) -> None:
    store.add_events(
        [
            lines("p1", "zed", ["a", "b"], "2026-01-01T10:00:00Z"),
            offer_event("s1", "zed", "a", "2026-01-02T10:00:00Z"),
            purchase("keep", "ann"),
        ]
    )
    store.set_consent("zed", personalization=False, channels={})
    assert store.erased_at("zed") is None and not store.is_erased("zed")

    receipt = store.erase("zed")

    assert receipt.events == {
        "purchase": 1,
        "offer_impression": 1,
        "offer_click": 0,
        "offer_conversion": 0,
    }
    assert (receipt.purchase_lines, receipt.consent_records, receipt.consent_changes) == (2, 1, 1)
    assert receipt.total == 6
    assert not receipt.already_erased
    assert store.events_of("zed") == [] and store.purchases_of("zed") == []
    assert store.consent_of("zed") is None and store.contacts_of_many(["zed"], 0) == {}
    assert store.consent_history_of("zed") == []
    assert store.is_erased("zed") and store.erased_at("zed") == receipt.erased_at
    erased = store.erased_list()
    assert len(erased) == 1 and "zed" in erased and "ann" not in erased
    assert store.event_count() == 1
    assert store.erased_among(["ann", "zed", "zed", "nobody"]) == {"zed"}
    assert store.erased_among([]) == set()
    # Events after an erasure are stored; erasing again deletes them.
    store.add_events([purchase("back", "zed")])
    assert [p.event_id for p in store.purchases_of("zed")] == ["back"]
    again = store.erase("zed")
    assert again.already_erased and again.events["purchase"] == 1 and again.purchase_lines == 1
    assert store.customers_with_purchases() == ["ann"]


def test_every_consent_change_is_kept_with_its_time_and_source(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDPR Art. 7(1): when consent was given and withdrawn, not only the record in force."""
    clock = [1_000]
    monkeypatch.setattr(sql.time, "time", lambda: clock[0])
    store.set_consent("c1", personalization=True, channels={"email": True})
    clock[0] = 2_000
    store.set_consent("c1", personalization=False, channels={"app": False}, source=CONSENT_FROM_CLI)
    clock[0] = 3_000
    store.set_consent("c2", personalization=True, channels={})

    history = store.consent_history_of("c1")

    assert [(c.personalization, c.channels, c.changed_at, c.source) for c in history] == [
        (True, {"email": True}, 1_000, CONSENT_FROM_API),
        (False, {"app": False, "email": True}, 2_000, CONSENT_FROM_CLI),
    ]
    consent = store.consent_of("c1")
    assert consent is not None and consent.updated_at == history[-1].changed_at
    assert [c.changed_at for c in store.consent_history_of("c2")] == [3_000]
    assert store.consent_history_of("nobody") == []
    # Who changed it since a time (what a campaign run checks at its end), each once.
    assert store.consent_changed_since(1_000) == ["c1", "c2"]
    assert store.consent_changed_since(2_001) == ["c2"]
    assert store.consent_changed_since(3_001) == []
    receipt = store.erase("c1")
    assert (receipt.consent_records, receipt.consent_changes) == (1, 2)
    assert store.consent_history_of("c1") == [] and len(store.consent_history_of("c2")) == 1


def test_a_store_before_consent_history_starts_it_with_the_records_in_force(
    store_url: str,
) -> None:
    """A store of version 7 (an nbo before the history) holding a consent record: the
    history starts with it, as "migrated", at the record's time."""
    dialect = "sqlite" if store_url.startswith("sqlite") else "postgres"
    kind = "INTEGER" if dialect == "sqlite" else "BIGINT"
    for migration in MIGRATIONS[:7]:
        for statement in getattr(migration, dialect).split(";"):
            if statement.strip():
                run_sql(store_url, statement)
    run_sql(
        store_url,
        f"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at {kind})",
    )
    for version in range(1, 8):
        run_sql(store_url, "INSERT INTO schema_migrations VALUES (%s, 0)", (version,))
    run_sql(
        store_url,
        "INSERT INTO consent VALUES (%s, %s, %s, %s)",
        ("c1", False, '{"email": false}', 1_500),
    )
    store = open_store(store_url)
    try:
        assert store.schema_version == len(MIGRATIONS) >= 8
        [change] = store.consent_history_of("c1")
        assert (change.personalization, change.channels) == (False, {"email": False})
        assert (change.changed_at, change.source) == (1_500, CONSENT_MIGRATED)
    finally:
        store.close()


def test_erased_ids_and_the_key_are_read_without_creating_a_store(store_url: str) -> None:
    """What the trainer and ``nbo keys pseudonym`` read: nothing before the store exists
    (SQLite: no file; PostgreSQL: no tables), then what the service wrote."""
    assert not read_erased_list(store_url) and read_pseudonym_key(store_url) is None
    store = open_store(store_url)
    try:
        assert not read_erased_list(store_url) and read_pseudonym_key(store_url) is None
        store.erase("gone")
        key = store.pseudonym_key()
    finally:
        store.close()
    erased = read_erased_list(store_url)
    assert len(erased) == 1 and erased.among(["gone", "kept"]) == {"gone"}
    assert read_pseudonym_key(store_url) == key


def test_the_trainer_reads_erasures_and_withdrawn_personalization(store_url: str) -> None:
    """What ``nbo train`` leaves out: the erased ids and the customers whose consent
    withdraws personalization (a withdrawn channel alone does not)."""
    before = read_training_exclusions(store_url)
    assert (len(before.erased), before.withdrawn) == (0, [])
    store = open_store(store_url)
    try:
        store.set_consent("ann", False, {})
        store.set_consent("bob", True, {"email": False})
        store.set_consent("cy", False, {"app": False})
        store.set_consent("cy", True, {})  # consents again
        store.set_consent("dee", False, {})
        store.erase("dee")  # erasure drops the consent record: erased, not withdrawn
    finally:
        store.close()
    read = read_training_exclusions(store_url)
    assert read.found and read.withdrawn == ["ann"]
    assert len(read.erased) == 1 and read.erased.among(["ann", "bob", "cy", "dee"]) == {"dee"}


def test_replicas_share_one_pseudonym_key(opened: Callable[[], Store]) -> None:
    first, replica = opened(), opened()
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda s=s: keys.append(s.pseudonym_key()))
        for s in (first, replica) * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32


def test_concurrent_consent_changes_on_replicas_all_hold(opened: Callable[[], Store]) -> None:
    """Each replica withdraws a different channel of the same customer at once: neither
    change is lost (a merge reads and writes under the customer's lock)."""
    replicas = [opened(), opened()]
    channels = [f"ch{n}" for n in range(8)]
    barrier = threading.Barrier(len(channels))

    def withdraw(n: int) -> None:
        barrier.wait(timeout=30)
        replicas[n % 2].set_consent("c1", personalization=True, channels={channels[n]: False})

    threads = [threading.Thread(target=withdraw, args=(n,)) for n in range(len(channels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    consent = replicas[0].consent_of("c1")
    assert consent is not None and consent.channels == dict.fromkeys(channels, False)


# -- deliveries ------------------------------------------------------------------------------


def test_a_delivery_records_with_its_transaction_or_not_at_all(store: Store) -> None:
    impression = offer_event("d1", "c1", "i1", "2026-01-02T10:00:00Z")

    def record(delivery: Delivery) -> int:
        assert delivery.contacts_of_many(["c1"], SINCE) == {}
        added = delivery.add_events([impression])
        # The transaction reads its own writes.
        assert [c.item_id for c in delivery.contacts_of_many(["c1"], SINCE)["c1"].impressions] == [
            "i1"
        ]
        assert delivery.consents_of(["c1"]) == {} and delivery.purchases_of_many(["c1"]) == {}
        assert delivery.erased_among(["c1"]) == set()
        return len(added.accepted)

    assert store.deliver(["c1"], record) == 1
    assert len(store.contacts_of("c1", SINCE).impressions) == 1

    def fail(delivery: Delivery) -> None:
        delivery.add_events([offer_event("d2", "c1", "i2", "2026-01-02T10:00:00Z")])
        raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        store.deliver(["c1"], fail)
    assert [c.item_id for c in store.contacts_of("c1", SINCE).impressions] == ["i1"]


def test_deliveries_to_one_customer_from_replicas_never_interleave(
    opened: Callable[[], Store],
) -> None:
    """Sixteen threads on two replicas each deliver to the same customers when they have
    had fewer than one impression: exactly one delivery each, as a cap of one asks.
    Overlapping customer lists in different orders do not deadlock."""
    replicas = [opened(), opened()]
    customers = ["c1", "c2", "c3"]
    threads_count = 16
    barrier = threading.Barrier(threads_count)
    delivered: list[str] = []
    errors: list[BaseException] = []

    def deliver(n: int) -> None:
        mine = customers[n % 3 :] + customers[: n % 3]  # each thread its own order

        def record(delivery: Delivery) -> None:
            seen = delivery.contacts_of_many(mine, SINCE)
            fresh = [c for c in mine if not seen.get(c, ContactHistory()).impressions]
            events = [
                offer_event(f"t{n}-{c}", c, "i1", "2026-01-02T10:00:00Z", request=f"t{n}")
                for c in fresh
            ]
            delivery.add_events(events)
            delivered.extend(fresh)

        try:
            barrier.wait(timeout=30)
            replicas[n % 2].deliver(mine, record)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(delivered) == customers
    contacts = replicas[1].contacts_of_many(customers, SINCE)
    assert all(len(contacts[c].impressions) == 1 for c in customers)


def test_impressions_of_deliveries_that_did_not_happen_are_removed(store: Store) -> None:
    store.add_events(
        [
            offer_event("a1", "c1", "i1", "2026-01-02T10:00:00Z", request="run-c1"),
            offer_event("a2", "c1", "i2", "2026-01-02T10:00:00Z", request="run-c1"),
            offer_event("b1", "c2", "i1", "2026-01-02T10:00:00Z", request="run-c2"),
            offer_event("o1", "c1", "i3", "2026-01-02T10:00:00Z", request="other"),
            offer_event("k1", "c1", "i1", "2026-01-03T10:00:00Z", "offer_click", "run-c1"),
        ]
    )
    assert store.remove_impressions([("c1", "run-c1"), ("c2", "run-c1")]) == 2
    assert [e["event_id"] for e in store.events_of("c1")] == ["o1", "k1"]
    assert [e["event_id"] for e in store.events_of("c2")] == ["b1"]


def test_a_runs_impressions_are_counted_and_removed_whatever_the_customer(
    store: Store,
) -> None:
    """A run whose process died: its customers are not known; its impressions' event and
    request ids start with the run's id (``{run_id}-{customer}-{rank}``)."""
    day = "2026-01-02T10:00:00Z"
    store.add_events(
        [
            offer_event("batch-1-x-c1-1", "c1", "i1", day, request="batch-1-x-c1"),
            offer_event("batch-1-x-c1-2", "c1", "i2", day, request="batch-1-x-c1"),
            offer_event("batch-1-x-c2-1", "c2", "i2", day, request="batch-1-x-c2"),
            # Another run whose id starts with this one's, one whose id sorts right after
            # the prefix, an API call, and a click on the run's offer.
            offer_event("batch-1-xy-c1-1", "c1", "i1", day, request="batch-1-xy-c1"),
            offer_event("batch-1-x.c1-1", "c1", "i1", day, request="batch-1-x.c1"),
            offer_event("o1", "c1", "i3", day, request="other"),
            offer_event("batch-1-x-c1-k", "c1", "i1", day, "offer_click", "batch-1-x-c1"),
        ]
    )
    assert store.count_run_impressions("batch-1-x") == 3
    assert store.count_run_impressions("batch-1-xy") == 1
    assert store.remove_run_impressions("batch-1-x") == 3
    assert store.count_run_impressions("batch-1-x") == 0
    assert {e["event_id"] for e in store.events_of("c1")} == {
        "batch-1-xy-c1-1",
        "batch-1-x.c1-1",
        "o1",
        "batch-1-x-c1-k",
    }
    assert store.events_of("c2") == []
    assert store.remove_run_impressions("batch-1-x") == 0


def test_runs_being_delivered_are_seen_by_a_replica_until_they_end(
    opened: Callable[[], Store],
) -> None:
    store, replica = opened(), opened()
    late = DeliveringRun("batch-2", 200, "host/boot/12/34", "/srv/.b.csv.12.partial", 200)
    early = DeliveringRun("batch-1", 100, "host/boot/11/33", "/srv/.a.csv.11.partial", 100)
    store.begin_delivering(late)
    store.begin_delivering(early)
    assert replica.delivering_runs() == [early, late]
    assert replica.end_delivering("batch-1")
    assert not replica.end_delivering("batch-1")  # twice: nothing more, and it says so
    assert store.delivering_runs() == [late]


def test_a_run_being_delivered_is_heard_from_until_it_ends(opened: Callable[[], Store]) -> None:
    """The heartbeat of ``nbo.campaigns.recovery``: renewed where a replica sees it, and
    refused once the run is off the record (ended, or taken for dead by another)."""
    store, replica = opened(), opened()
    store.begin_delivering(DeliveringRun("batch-1", 100, "host/boot/11/33", "/p", 100))
    store.begin_delivering(DeliveringRun("batch-2", 100, "host/boot/12/34", "/q", 100))
    assert store.hear_from_delivering("batch-1", 160)
    assert [run.heard_at for run in replica.delivering_runs()] == [160, 100]
    assert replica.end_delivering("batch-1")
    assert not store.hear_from_delivering("batch-1", 190)
    assert [(run.run_id, run.heard_at) for run in replica.delivering_runs()] == [("batch-2", 100)]


def test_a_paused_store_runs_no_thread_and_serves_as_before_after(store: Store) -> None:
    """What ``nbo batch`` forks its workers in: no thread of the store alive (PostgreSQL's
    pool closed), and the store whole again after."""
    store.add_events([purchase("p1")])

    def own_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("nbo-store")]

    # (SQLite's store has no thread to stop; PostgreSQL's pool runs several.)
    assert bool(own_threads()) == (type(store).__name__ == "PostgresStore")
    with store.paused():
        assert own_threads() == []
    store.add_events([purchase("p2", item="i2")])
    assert [p.item_id for p in store.purchases_of("c1")] == ["i1", "i2"]


# -- campaign files --------------------------------------------------------------------------


def test_campaign_files_are_registered_updated_and_forgotten(store: Store) -> None:
    first = BatchOutput("/srv/b.parquet", 100, "run-1", 10, "parquet")
    store.register_batch_output(first)
    store.register_batch_output(BatchOutput("/srv/a.csv", 50, "run-0", 3, "csv"))
    rewritten = BatchOutput("/srv/b.parquet", 200, "run-2", 12, "parquet", "email", True, 0, 4)
    store.register_batch_output(rewritten)
    assert [o.path for o in store.batch_outputs()] == ["/srv/a.csv", "/srv/b.parquet"]
    # What the run was is kept, a flag on either backend (SQLite's 0/1 too): a
    # delivered run that recorded nothing (all 4 capped) is no preview.
    assert store.batch_outputs()[1] == rewritten
    assert store.batch_outputs()[1].delivered is True
    assert store.batch_outputs()[0].delivered is None  # registered without: not known
    store.set_batch_output_rows("/srv/b.parquet", 11)
    assert store.batch_outputs()[1].rows == 11
    store.unregister_batch_output("/srv/a.csv")
    assert [o.path for o in store.batch_outputs()] == ["/srv/b.parquet"]


# -- retention -------------------------------------------------------------------------------

JAN = "2026-01-{day:02d}T10:00:00Z"


def test_a_purge_deletes_one_kind_older_than_the_cutoff(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In batches (here of two rows), each kind on its own; a dry run only counts."""
    monkeypatch.setattr(sql, "PURGE_BATCH", 2)
    store.add_events(
        [
            *(offer_event(f"s{d}", "c1", "i1", JAN.format(day=d)) for d in range(1, 6)),
            offer_event("k1", "c1", "i1", JAN.format(day=1), kind="offer_click"),
            lines("p1", "c1", ["a", "b"], JAN.format(day=1)),
            lines("p2", "c2", ["c"], JAN.format(day=2)),
            lines("p9", "c2", ["d"], JAN.format(day=9)),
        ]
    )
    cutoff = at_day(5)  # the fifth's events are not older

    assert store.purge(PURGE_IMPRESSIONS, cutoff, dry_run=True) == Purged(PURGE_IMPRESSIONS, 4)
    assert store.event_count() == 9
    assert store.purge(PURGE_IMPRESSIONS, cutoff) == Purged(PURGE_IMPRESSIONS, 4)
    assert [e["event_id"] for e in store.events_of("c1") if e["type"] == "offer_impression"] == [
        "s5"
    ]
    assert store.purge(PURGE_IMPRESSIONS, cutoff) == Purged(PURGE_IMPRESSIONS, 0)
    assert store.purge(PURGE_PURCHASES, cutoff, dry_run=True) == Purged(PURGE_PURCHASES, 2, 3)
    assert store.purge(PURGE_PURCHASES, cutoff) == Purged(PURGE_PURCHASES, 2, 3)
    assert store.purchases_of("c1") == []
    assert [p.event_id for p in store.purchases_of("c2")] == ["p9"]
    assert store.customers_with_purchases() == ["c2"]
    # The click was not asked for.
    assert [e["event_id"] for e in store.events_of("c1")] == ["k1", "s5"]
    assert store.purge(PURGE_CLICKS, cutoff) == Purged(PURGE_CLICKS, 1)


def test_a_purge_of_consent_history_keeps_each_customers_latest_change(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "PURGE_BATCH", 2)
    clock = [0]
    monkeypatch.setattr(sql.time, "time", lambda: clock[0])

    def change(customer: str, when: int, personalization: bool) -> None:
        clock[0] = when
        store.set_consent(customer, personalization=personalization, channels={})

    for when, personalization in ((100, True), (200, False), (300, True), (400, False)):
        change("c1", when, personalization)
    change("c2", 150, False)  # long ago, and still in force
    change("c3", 900, True)

    assert store.purge(PURGE_CONSENT_HISTORY, 350, dry_run=True) == Purged(PURGE_CONSENT_HISTORY, 3)
    assert store.purge(PURGE_CONSENT_HISTORY, 350) == Purged(PURGE_CONSENT_HISTORY, 3)

    assert [c.changed_at for c in store.consent_history_of("c1")] == [400]
    assert [c.changed_at for c in store.consent_history_of("c2")] == [150]
    assert [c.changed_at for c in store.consent_history_of("c3")] == [900]
    # Never the latest, whatever the cutoff; the records in force untouched.
    assert store.purge(PURGE_CONSENT_HISTORY, 10_000) == Purged(PURGE_CONSENT_HISTORY, 0)
    c2 = store.consent_of("c2")
    assert c2 is not None and not c2.personalization


def test_a_purge_of_runs_being_delivered_goes_by_their_last_heartbeat(store: Store) -> None:
    store.begin_delivering(DeliveringRun("batch-1", 100, "h/b/1/2", "/p", 100))
    store.begin_delivering(DeliveringRun("batch-2", 100, "h/b/1/3", "/q", 100))
    assert store.hear_from_delivering("batch-2", 500)
    assert store.purge(PURGE_DELIVERING_RUNS, 400) == Purged(PURGE_DELIVERING_RUNS, 1)
    assert [run.run_id for run in store.delivering_runs()] == ["batch-2"]


def at_day(day: int) -> int:
    return at(JAN.format(day=day))


# -- schema ----------------------------------------------------------------------------------


def test_migrations_run_once_and_record_the_version(opened: Callable[[], Store]) -> None:
    first = opened()
    assert first.schema_version == len(MIGRATIONS)
    first.add_events([purchase("e1")])
    replica = opened()  # a second start must not re-run the migrations
    assert replica.schema_version == len(MIGRATIONS) and replica.event_count() == 1


def test_migrations_are_recorded_one_row_a_version(store_url: str, store: Store) -> None:
    rows = run_sql(store_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_a_store_from_a_newer_nbo_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    run_sql(store_url, "INSERT INTO schema_migrations VALUES (%s, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(ConfigError, match="newer than this nbo"):
        open_store(store_url)


@pytest.mark.parametrize("url", ["mysql://db/nbo", "sqlite:///", "file.db"])
def test_unsupported_store_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="NBO_STORE_URL"):
        open_store(url)


def test_shared_settings_are_swapped_and_leave_the_pseudonym_key_alone(store_url: str) -> None:
    """The last service's shared settings (``nbo.service.shared``): None the first time,
    then the ones recorded before; the pseudonym key beside them is untouched."""
    store = open_store(store_url)
    try:
        key = store.pseudonym_key()
        assert store.swap_shared_settings({"NBO_API_KEYS": "a1"}) is None
        before = store.swap_shared_settings({"NBO_API_KEYS": "b2"})
        assert before is not None and before[0] == {"NBO_API_KEYS": "a1"} and before[1] > 0
        assert store.swap_shared_settings({})[0] == {"NBO_API_KEYS": "b2"}  # type: ignore[index]
        assert store.pseudonym_key() == key
    finally:
        store.close()


def test_reloads_for_the_replicas_are_numbered_and_read_back(store_url: str) -> None:
    """Each reload recorded for the replicas gets the next number, from any process on
    the store (two opened stores here, as two replicas), and the latest is read back."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        assert first.reload_request() is None
        assert first.request_reload("v1", False, "replica-a") == 1
        assert second.request_reload("v2", True, "replica-b") == 2
        latest = first.reload_request()
        assert latest is not None
        assert (latest.number, latest.version, latest.force, latest.origin) == (
            2,
            "v2",
            True,
            "replica-b",
        )
        assert latest.at > 0
    finally:
        first.close()
        second.close()
