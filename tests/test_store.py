"""The SQLite event store: idempotent, durable across reopen, migrated once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nbo.errors import ConfigError
from nbo.events import Event, parse_events
from nbo.store import MIGRATIONS, SQLiteStore, open_store


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
