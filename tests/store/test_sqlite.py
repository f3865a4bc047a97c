"""The SQLite store: events idempotent and durable across reopen, migrations run once,
bulk reads equal to single ones, posted purchases read back with their prices, erasure
that leaves no copy in the files, the pseudonym key made once, campaign files
registered."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nbo.core.errors import ConfigError
from nbo.data.events import EVENT_TYPES, Event, parse_events
from nbo.store.base import BatchOutput, DeliveryCount, OfferActivity, ResponseCount
from nbo.store.sqlite import (
    MIGRATIONS,
    SQLiteStore,
    open_store,
    read_erased_ids,
    read_pseudonym_key,
)


def purchase(
    event_id: str, customer: str = "c1", item: str = "i1", ts: str = "2026-01-01T10:00:00Z"
) -> Event:
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": ts,
            "order_id": f"o-{event_id}",
            "items": [{"item_id": item, "quantity": 2, "price": 1.5}],
        }
    )
    assert not rejected
    return valid[0][1]


def test_same_event_id_is_stored_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    first = store.add_events([purchase("e1"), purchase("e2")])
    again = store.add_events([purchase("e1"), purchase("e3"), purchase("e3")])
    assert first.accepted == ["e1", "e2"] and first.duplicates == []
    assert again.accepted == ["e3"] and again.duplicates == ["e1", "e3"]
    assert store.event_count() == 3
    assert len(store.purchases_of("c1")) == 3


def test_events_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.db"
    store = open_store(f"sqlite:///{path}")
    store.add_events([purchase("e1", item="A"), purchase("e2", item="B", customer="c2")])
    store.close()
    reopened = open_store(f"sqlite:///{path}")
    assert [p.item_id for p in reopened.purchases_of("c1")] == ["A"]
    assert [p.item_id for p in reopened.purchases_of("c2")] == ["B"]
    assert reopened.event_count() == 2


def test_purchases_since_and_in_time_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.add_events(
        [
            purchase("late", item="L", ts="2026-03-01T00:00:00Z"),
            purchase("early", item="E", ts="2026-01-01T00:00:00Z"),
        ]
    )
    assert [p.item_id for p in store.purchases_of("c1")] == ["E", "L"]
    march = 1772323200  # 2026-03-01T00:00:00Z
    assert [p.item_id for p in store.purchases_of("c1", since=march)] == ["L"]
    assert store.purchases_of("nobody") == []


def test_migrations_run_once_and_record_the_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    store = SQLiteStore(path)  # a second start must not re-run the migrations
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert mode == "wal"


def test_a_store_from_a_newer_nbo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(ConfigError, match="newer than this nbo"):
        SQLiteStore(path)


@pytest.mark.parametrize("url", ["postgres://db/nbo", "sqlite:///", "file.db"])
def test_unsupported_store_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="NBO_STORE_URL"):
        open_store(url)


def impression(event_id: str, customer: str, item: str, ts: str) -> Event:
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": "offer_impression",
            "customer_id": customer,
            "timestamp": ts,
            "item_id": item,
            "channel": "email",
            "request_id": f"r-{event_id}",
        }
    )
    assert not rejected
    return valid[0][1]


def test_bulk_reads_answer_each_customer_as_the_single_reads_do(tmp_path: Path) -> None:
    """A campaign reads a chunk's customers at once: purchases, contacts and consent of
    each are what reading them one by one gives, and customers with none are absent."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    events = [
        purchase("p1", "c1", "i1", "2026-01-03T10:00:00Z"),
        purchase("p2", "c2", "i2", "2026-01-01T10:00:00Z"),
        purchase("p3", "c1", "i3", "2026-01-01T10:00:00Z"),
        purchase("p4", "c1", "i4", "2026-01-01T10:00:00Z"),  # same time as p3: stored order
        impression("s1", "c2", "i9", "2026-01-02T10:00:00Z"),
        impression("s2", "c3", "i8", "2025-06-01T10:00:00Z"),  # before ``since``
        impression("s3", "c3", "i7", "2026-01-05T10:00:00Z"),
    ]
    store.add_events(events)
    store.set_consent("c2", personalization=False, channels={"email": False})
    customers = ["c1", "c2", "c3", "nobody"]
    since = 1_760_000_000  # 2025-10-09
    purchases = store.purchases_of_many(customers)
    contacts = store.contacts_of_many(customers, since)
    consents = store.consents_of(customers)
    assert set(purchases) == {"c1", "c2"} and set(contacts) == {"c2", "c3"}
    assert set(consents) == {"c2"}
    for customer in customers:
        assert purchases.get(customer, []) == store.purchases_of(customer)
        assert consents.get(customer) == store.consent_of(customer)
        alone = store.contacts_of(customer, since)
        if customer in contacts:
            assert contacts[customer] == alone
        else:
            assert alone.impressions == [] and alone.responses == []
    assert [p.item_id for p in purchases["c1"]] == ["i3", "i4", "i1"]
    assert [c.item_id for c in contacts["c3"].impressions] == ["i7"]
    store.close()


def lines(event_id: str, customer: str, items: list[str], ts: str) -> Event:
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": ts,
            "items": [{"item_id": item} for item in items],
        }
    )
    assert not rejected
    return valid[0][1]


def test_reads_of_posted_purchases_stop_at_the_newest_lines(tmp_path: Path) -> None:
    """``limit``: each customer's newest lines only (ties in time by the order stored),
    oldest first, alone or in bulk; a customer with fewer lines gets them all."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
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


def test_the_store_returns_posted_prices(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    valid, rejected = parse_events(
        {
            "event_id": "e1",
            "type": "purchase",
            "customer_id": "c1",
            "timestamp": "2026-01-01T10:00:00Z",
            "items": [{"item_id": "A", "quantity": 2, "price": 1.5}, {"item_id": "B"}],
        }
    )
    assert not rejected
    store.add_events([event for _position, event in valid])

    purchases = store.purchases_of("c1")

    assert [(p.item_id, p.quantity, p.price) for p in purchases] == [
        ("A", 2.0, 1.5),
        ("B", 1.0, None),
    ]
    store.close()


def test_the_store_keeps_one_key_made_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    assert read_pseudonym_key(f"sqlite:///{path}") is None  # no store yet
    first, replica = SQLiteStore(path), SQLiteStore(path)
    try:
        key = first.pseudonym_key()
        assert len(key) == 32
        assert replica.pseudonym_key() == key  # a second process on the same store
    finally:
        first.close()
        replica.close()
    reopened = SQLiteStore(path)
    try:
        assert reopened.pseudonym_key() == key
    finally:
        reopened.close()
    assert read_pseudonym_key(f"sqlite:///{path}") == key
    other = SQLiteStore(tmp_path / "other.db")
    try:
        assert other.pseudonym_key() != key
    finally:
        other.close()


def _event(event_id: str, customer: str, item: str) -> Event:
    """A purchase of ``item`` and ``<item>-2``."""
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": "2026-06-30T11:00:00Z",
            "order_id": f"o-{event_id}",
            "items": [
                {"item_id": name, "quantity": 1, "price": 2.0} for name in (item, f"{item}-2")
            ],
        }
    )
    assert not rejected
    return valid[0][1]


def test_erasure_leaves_no_copy_in_the_database_files(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.add_events([_event("e1", "zed", "UNMISTAKABLE-ITEM"), _event("e2", "ann", "OTHER")])
    files = lambda: b"".join(p.read_bytes() for p in tmp_path.iterdir())  # noqa: E731
    assert b"UNMISTAKABLE-ITEM" in files()

    store.erase("zed")

    assert b"UNMISTAKABLE-ITEM" not in files()  # secure_delete and a truncated log
    assert [p.item_id for p in store.purchases_of("ann")] == ["OTHER", "OTHER-2"]
    store.close()


def test_a_schema_1_store_migrates_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INT)")
        db.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        db.execute(
            "INSERT INTO events (event_id, type, customer_id, occurred_at, received_at, payload) "
            "VALUES ('e1', 'purchase', 'c1', 0, 0, '{}')"
        )
    assert read_erased_ids(f"sqlite:///{path}") == []  # before erasure existed: none
    store = SQLiteStore(path)
    assert store.schema_version == len(MIGRATIONS) and store.event_count() == 1
    receipt = store.erase("c1")
    assert receipt.events["purchase"] == 1 and receipt.total == 1
    store.close()
    assert read_erased_ids(f"sqlite:///{path}") == ["c1"]


def test_reading_erased_ids_never_creates_a_store(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "nbo.db"
    assert read_erased_ids(f"sqlite:///{path}") == []
    assert not path.exists() and not path.parent.exists()


def test_the_store_registers_campaign_files(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.schema_version == len(MIGRATIONS) >= 4  # batch_outputs came in 4
    first = BatchOutput("/data/a.csv", 100, "run-1", 30, "csv")
    store.register_batch_output(first)
    store.register_batch_output(BatchOutput("/data/b.parquet", 101, "run-2", 5, "parquet"))
    # Written again at the same path: the record is replaced, not doubled.
    store.register_batch_output(BatchOutput("/data/a.csv", 200, "run-3", 12, "csv"))
    store.set_batch_output_rows("/data/b.parquet", 2)
    assert store.batch_outputs() == [
        BatchOutput("/data/a.csv", 200, "run-3", 12, "csv"),
        BatchOutput("/data/b.parquet", 101, "run-2", 2, "parquet"),
    ]
    store.unregister_batch_output("/data/a.csv")
    assert [o.path for o in store.batch_outputs()] == ["/data/b.parquet"]
    assert store.erased_at("c1") is None
    store.erase("c1")
    assert isinstance(store.erased_at("c1"), int)
    assert set(EVENT_TYPES) >= {e.type for e in store.stored_events_of("c1")}
    store.close()


def offer_event(
    event_id: str, type_: str, customer: str, item: str, ts: str, **fields: object
) -> Event:
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": type_,
            "customer_id": customer,
            "item_id": item,
            "timestamp": ts,
            **fields,
        }
    )
    assert not rejected, rejected
    return valid[0][1]


def test_offer_activity_counts_deliveries_and_their_answers_per_day(tmp_path: Path) -> None:
    """Impressions per day, channel, kind, source and stage; one counts as clicked or
    converted only on a later answer of the same customer to the same offer inside the
    period read; responses per day and channel with their revenue."""
    store = SQLiteStore(tmp_path / "s.db")
    shown = {"channel": "email", "kind": "product", "source": "cf", "stage": "active"}
    store.add_events(
        [
            offer_event("i1", "offer_impression", "c1", "A", "2026-06-01T10:00:00Z", **shown),
            offer_event("i2", "offer_impression", "c2", "A", "2026-06-01T11:00:00Z", **shown),
            offer_event("i3", "offer_impression", "c3", "A", "2026-06-01T12:00:00Z", **shown),
            offer_event(
                "i4",
                "offer_impression",
                "c1",
                "win",
                "2026-06-02T09:00:00Z",
                channel="app",
                kind="incentive",
                source="catalog",
                stage="lapsed",
            ),
            # Posted by a client without what the answer said.
            offer_event("i5", "offer_impression", "c4", "B", "2026-06-02T09:30:00Z"),
            # c1 answers A later the same day: clicked and converted.
            offer_event("k1", "offer_click", "c1", "A", "2026-06-01T10:05:00Z", channel="email"),
            offer_event(
                "v1",
                "offer_conversion",
                "c1",
                "A",
                "2026-06-01T10:10:00Z",
                channel="email",
                revenue=12.5,
            ),
            # c2 clicked before being shown A: not an answer to it.
            offer_event("k2", "offer_click", "c2", "A", "2026-06-01T10:59:00Z", channel="email"),
            # c3 converted on another offer: not an answer to A.
            offer_event(
                "v3",
                "offer_conversion",
                "c3",
                "B",
                "2026-06-01T13:00:00Z",
                channel="email",
                revenue=3.0,
            ),
            # c1 converts on the incentive after the period read: not counted.
            offer_event("v4", "offer_conversion", "c1", "win", "2026-06-05T00:00:00Z"),
            # Before the period: left out.
            offer_event("i0", "offer_impression", "c9", "A", "2026-05-30T10:00:00Z", **shown),
        ]
    )
    since = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
    until = int(datetime(2026, 6, 3, tzinfo=UTC).timestamp())
    activity = store.offer_activity(since, until)
    day = since // 86_400
    assert activity.deliveries == [
        DeliveryCount(day, "email", "product", "cf", "active", 3, 1, 1),
        DeliveryCount(day + 1, None, None, None, None, 1, 0, 0),
        DeliveryCount(day + 1, "app", "incentive", "catalog", "lapsed", 1, 0, 0),
    ]
    assert activity.responses == [
        ResponseCount(day, "offer_click", "email", 2, 0.0),
        ResponseCount(day, "offer_conversion", "email", 2, 15.5),
    ]
    assert store.offer_activity(until, until + 86_400) == OfferActivity([], [])


def test_an_impression_states_only_known_kinds_and_stages() -> None:
    for field, bad in (("kind", "coupon"), ("stage", "dormant")):
        valid, rejected = parse_events(
            {
                "event_id": "x",
                "type": "offer_impression",
                "customer_id": "c1",
                "item_id": "A",
                "timestamp": "2026-06-01T10:00:00Z",
                field: bad,
            }
        )
        assert not valid and rejected[0].reason.startswith(field), rejected
