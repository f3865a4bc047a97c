"""The erased list keeps keyed hashes, not ids (migration 9, ``nbo.core.erased``): an
erased id is nowhere in the store, a store of version 8 has its list hashed, and every
reader (store, trainer) still tests ids against it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from backends import run_sql

from nbo.core import columns as col
from nbo.core.erased import ERASED_KEY, ErasedList, id_hash
from nbo.core.errors import ConfigError
from nbo.data.events import Event, parse_events
from nbo.data.purchases import CleaningReport
from nbo.store import migrations as store_migrations
from nbo.store import open_store, read_training_exclusions
from nbo.store.migrations import MIGRATIONS
from nbo.store.sql import PSEUDONYM_KEY
from training.load import DROP_ERASED, drop_customers, ids_digest

# Long and unlike anything else in a store file, so finding it in the bytes means the id.
GONE = "erased-customer-4711-zq"


def _dialect(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


def _event(body: dict[str, object]) -> Event:
    valid, rejected = parse_events(body)
    assert not rejected, rejected
    return valid[0][1]


def _purchase(event_id: str, customer: str) -> Event:
    return _event(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": "2026-01-01T10:00:00Z",
            "order_id": f"o-{event_id}",
            "items": [{"item_id": "i1", "quantity": 1, "price": 2.0}],
        }
    )


def _store_of_version(store_url: str, version: int) -> None:
    """The schema of an nbo that knew ``version`` migrations, made outside nbo."""
    dialect = _dialect(store_url)
    for migration in MIGRATIONS[:version]:
        for statement in getattr(migration, dialect).split(";"):
            if statement.strip():
                run_sql(store_url, statement)
    kind = "INTEGER" if dialect == "sqlite" else "BIGINT"
    run_sql(
        store_url,
        f"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at {kind})",
    )
    for number in range(1, version + 1):
        run_sql(store_url, "INSERT INTO schema_migrations VALUES (%s, 0)", (number,))


def _every_value(store_url: str) -> str:
    """Every row of every table, as text: what whoever holds the store can read."""
    if _dialect(store_url) == "sqlite":
        tables = [
            r[0] for r in run_sql(store_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    else:
        tables = [
            r[0]
            for r in run_sql(
                store_url,
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()",
            )
        ]
    return "\n".join(f"{t}: {run_sql(store_url, f'SELECT * FROM {t}')!r}" for t in tables)


def _store_bytes(store_url: str) -> bytes:
    """The SQLite store's file and its write-ahead log, as on disk."""
    path = Path(store_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def test_an_erased_id_is_nowhere_in_the_store(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.add_events([_purchase("e1", GONE), _purchase("e2", "kept")])
        store.set_consent(GONE, False, {"email": False})
        assert GONE in _every_value(store_url)
        receipt = store.erase(GONE)
        assert receipt.total == 4 and not receipt.already_erased
        assert store.is_erased(GONE) and store.erased_at(GONE) == receipt.erased_at
        assert store.erase(GONE).already_erased
        assert store.erased_among(["kept", GONE]) == {GONE} and not store.is_erased("kept")
        erased = store.erased_list()
        assert len(erased) == 1 and erased.among([GONE, "kept", GONE]) == {GONE}
        # The list's key is not the log pseudonyms': the list is not the erased
        # customers' pseudonyms either.
        assert erased.key != store.pseudonym_key()
    finally:
        store.close()
    everything = _every_value(store_url)
    assert GONE not in everything and "kept" in everything
    if _dialect(store_url) == "sqlite":
        data = _store_bytes(store_url)
        assert GONE.encode() not in data and b"kept" in data


def test_a_store_of_version_8_has_its_erased_list_hashed(store_url: str) -> None:
    """An nbo before migration 9 kept the ids in clear: the trainer reads that list as it
    is (no migration), the first store opened hashes it, and none is left in clear."""
    _store_of_version(store_url, 8)
    rows = [(GONE, 1_500), ("left", 2_500)]
    for row in rows:
        run_sql(store_url, "INSERT INTO erased VALUES (%s, %s)", row)
    run_sql(
        store_url,
        "INSERT INTO deployment_keys VALUES (%s, %s, 0)",
        (PSEUDONYM_KEY, b"k" * 32),
    )
    old = read_training_exclusions(store_url).erased
    assert old.among([GONE, "left", "kept"]) == {GONE, "left"}
    store = open_store(store_url)
    try:
        assert store.schema_version == len(MIGRATIONS) >= 9
        assert store.erased_at(GONE) == 1_500 and store.erased_at("left") == 2_500
        assert store.erased_among([GONE, "kept"]) == {GONE} and store.erased_at("kept") is None
        key = store.erased_list().key
        assert store.pseudonym_key() == b"k" * 32 != key  # the log key kept, not reused
    finally:
        store.close()
    stored = run_sql(store_url, "SELECT id_hash, erased_at FROM erased")
    assert sorted((bytes(h), t) for h, t in stored) == sorted((id_hash(key, c), t) for c, t in rows)
    keys = run_sql(store_url, "SELECT name FROM deployment_keys ORDER BY name")
    assert keys == [(ERASED_KEY,), (PSEUDONYM_KEY,)]
    assert GONE not in _every_value(store_url) and "erased_clear" not in _every_value(store_url)
    if _dialect(store_url) == "sqlite":
        assert GONE.encode() not in _store_bytes(store_url)
    new = read_training_exclusions(store_url).erased
    assert new.key == key and new.among([GONE, "left", "kept"]) == {GONE, "left"}


def test_an_nbo_before_the_hashed_list_refuses_the_store(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(store_url).close()
    monkeypatch.setattr(store_migrations, "MIGRATIONS", MIGRATIONS[:8])
    with pytest.raises(ConfigError, match="schema version 10 is newer than this nbo understands"):
        open_store(store_url)


def test_the_trainer_drops_an_erased_customer_with_the_same_digest(store_url: str) -> None:
    """The rows of an erased customer go, whether the list is in clear (a store of
    version 8, read as it is) or hashed (after the migration); the manifest's
    ``erased_digest`` (of the ids dropped) is the same either way, so the first retrain
    after the upgrade is still "unchanged" when nothing else is."""
    _store_of_version(store_url, 8)
    run_sql(store_url, "INSERT INTO erased VALUES (%s, %s)", (GONE, 1_500))
    purchases = pd.DataFrame(
        {
            col.CUSTOMER_ID: pd.Categorical([GONE, "kept", GONE, "other"]),
            col.ITEM_ID: ["i1", "i2", "i3", "i1"],
            col.QUANTITY: [1.0, 2.0, 3.0, 1.0],
            col.TIMESTAMP: pd.to_datetime(["2026-01-01 10:00"] * 4),
        }
    )

    def dropped() -> tuple[list[str], list[str], int]:
        report = CleaningReport(path="f.csv", rows_read=len(purchases))
        kept, ids = drop_customers(
            purchases.copy(), report, read_training_exclusions(store_url).erased, DROP_ERASED
        )
        return ids, sorted(kept[col.CUSTOMER_ID].astype(str)), report.dropped[DROP_ERASED]

    before = dropped()
    open_store(store_url).close()  # migrated
    after = dropped()
    assert before == after == ([GONE], ["kept", "other"], 2)
    assert ids_digest(after[0]) == ids_digest([GONE])
    assert isinstance(read_training_exclusions(store_url).erased, ErasedList)


def test_a_store_whose_erased_list_lost_its_key_is_refused(store_url: str) -> None:
    """Without its key the list recognises nobody: the trainer and the store refuse in
    one line, rather than train on or serve the erased."""
    store = open_store(store_url)
    store.erase(GONE)
    store.close()
    run_sql(store_url, "DELETE FROM deployment_keys WHERE name = %s", (ERASED_KEY,))
    with pytest.raises(ConfigError, match=r"erased list has no key .* restore the store"):
        read_training_exclusions(store_url)
    store = open_store(store_url)
    try:
        with pytest.raises(ConfigError, match="erased list has no key"):
            store.is_erased(GONE)
    finally:
        store.close()
