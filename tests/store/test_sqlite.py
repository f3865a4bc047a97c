"""The SQLite store: events idempotent and durable across reopen, migrations run once,
bulk reads equal to single ones, posted purchases read back with their prices, erasure
that leaves no copy in the files, the pseudonym key made once, campaign files
registered."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from nbo.core.errors import ConfigError
from nbo.data.events import EVENT_TYPES, Event, parse_events
from nbo.store import (
    check_store_url,
    open_store,
    read_erased_list,
    read_pseudonym_key,
    store_location,
)
from nbo.store.base import BatchOutput, DeliveringRun
from nbo.store.sqlite import MIGRATIONS, SQLiteStore


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


def test_a_schema_1_store_migrates_and_keeps_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrated, and said: the version found, and each step with its time (a migration
    of a large store holds it while it runs; before, nothing was logged)."""
    caplog.set_level(logging.INFO, logger="nbo.store.migrations")
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INT)")
        db.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        db.execute(
            "INSERT INTO events (event_id, type, customer_id, occurred_at, received_at, payload) "
            "VALUES ('e1', 'purchase', 'c1', 0, 0, '{}')"
        )
    assert not read_erased_list(f"sqlite:///{path}")  # before erasure existed: none
    store = SQLiteStore(path)
    assert store.schema_version == len(MIGRATIONS) and store.event_count() == 1
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == f"schema of store {path}: version 1, migrating to {len(MIGRATIONS)}"
    assert [line.split(" applied in ")[0] for line in said[1:]] == [
        f"schema of store {path}: migration {v}" for v in range(2, len(MIGRATIONS) + 1)
    ]
    assert all(line.endswith(" ms") for line in said[1:])
    caplog.clear()
    SQLiteStore(path).close()
    assert [r.getMessage() for r in caplog.records] == [
        f"schema of store {path}: version {len(MIGRATIONS)}, up to date"
    ]
    receipt = store.erase("c1")
    assert receipt.events["purchase"] == 1 and receipt.total == 1
    store.close()
    assert read_erased_list(f"sqlite:///{path}").among(["c1", "c2"]) == {"c1"}


def test_a_run_on_record_before_heartbeats_was_last_heard_from_at_its_start(
    tmp_path: Path,
) -> None:
    """A store of version 6 holding a run being delivered (an nbo before heartbeats)."""
    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS[:6]:
            db.executescript(step)
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INT)")
        db.executemany("INSERT INTO schema_migrations VALUES (?, 0)", [(v,) for v in range(1, 7)])
        db.execute("INSERT INTO delivering_runs VALUES ('batch-1', 100, 'h/b/1/2', '/p')")
    store = SQLiteStore(path)
    assert store.schema_version == len(MIGRATIONS) >= 7
    assert store.delivering_runs() == [DeliveringRun("batch-1", 100, "h/b/1/2", "/p", 100)]
    store.close()


def test_reading_erased_ids_never_creates_a_store(tmp_path: Path) -> None:
    path = tmp_path / "nbo.db"
    assert not read_erased_list(f"sqlite:///{path}")  # no store yet: nothing erased
    assert not path.exists()
    # A folder that does not exist is a wrong path, not a store with nothing erased (the
    # trainer would train on every erased customer).
    missing = tmp_path / "missing" / "nbo.db"
    for read in (read_erased_list, read_pseudonym_key):
        with pytest.raises(ConfigError, match=f"no folder {missing.parent} for the store"):
            read(f"sqlite:///{missing}")
    assert not missing.parent.exists()


@pytest.mark.parametrize("setting", ["NBO_STORE_URL", "--store-url"])
def test_a_new_store_is_made_only_in_a_folder_that_exists(tmp_path: Path, setting: str) -> None:
    """A store URL naming a folder that does not exist is a typo or a service started
    elsewhere: a fresh store there would forget every consent and erasure unseen."""
    path = tmp_path / "nonexistent" / "dir" / "x.db"
    with pytest.raises(ConfigError) as refused:
        open_store(f"sqlite:///{path}", setting=setting)
    said = "setting NBO_STORE_URL" if setting == "NBO_STORE_URL" else "--store-url"
    assert str(refused.value) == (
        f"{said}: no folder {path.parent} for the store x.db: a new store is made only in "
        "a folder that exists (make it, or correct the path)"
    )
    assert not (tmp_path / "nonexistent").exists()
    # In a folder that exists, the store is made.
    path.parent.mkdir(parents=True)
    open_store(f"sqlite:///{path}").close()
    assert path.is_file()


def test_the_default_stores_folder_is_made_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert store_location("sqlite:///var/nbo.db") == (
        f"SQLite {tmp_path.resolve() / 'var' / 'nbo.db'} (new: no file was there, so it "
        "starts empty)"
    )
    open_store("sqlite:///var/nbo.db").close()
    assert (tmp_path / "var" / "nbo.db").is_file()
    assert store_location("sqlite:///var/nbo.db") == f"SQLite {tmp_path.resolve()}/var/nbo.db"
    # Only the default's folder: another relative one is not made.
    with pytest.raises(ConfigError, match="no folder"):
        open_store("sqlite:///data/nbo.db")


def test_a_postgresql_store_is_named_without_its_password() -> None:
    assert store_location("postgresql://nbo:s3cret@db1:5432/nbo") == (
        "PostgreSQL postgresql://nbo:***@db1:5432/nbo"
    )


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


def test_closing_leaves_the_log_empty_while_another_process_holds_the_store(
    tmp_path: Path,
) -> None:
    """Two workers stopping at once can each find the other still open, and then neither
    deletes the write-ahead log as the last connection would: a store that closes copies
    the log into the file and truncates it first, so nothing is left in it either way;
    the last to close still deletes it."""
    path = tmp_path / "s.db"
    wal = tmp_path / "s.db-wal"
    first, other = SQLiteStore(path), SQLiteStore(path)
    first.add_events([purchase("e1"), purchase("e2")])
    assert other.purchases_of("c1")  # the other holds a reader of its own
    assert wal.stat().st_size > 0

    first.close()

    assert wal.exists() and wal.stat().st_size == 0  # the other is open: truncated
    assert [p.item_id for p in other.purchases_of("c1")] == ["i1", "i1"]
    other.close()
    assert not wal.exists()
    reopened = SQLiteStore(path)
    assert len(reopened.purchases_of("c1")) == 2
    reopened.close()


def _refusal(url: str) -> str:
    """The one line ``open_store`` refuses ``url`` with."""
    with pytest.raises(ConfigError) as refused:
        open_store(url)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("setting NBO_STORE_URL: "), message
    return message


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "purchases.csv"
    path.write_text("customer_id,item_id\n" * 100, encoding="utf-8")
    message = _refusal(f"sqlite:///{path}")
    assert str(path) in message and "file is not a database" in message
    assert path.read_text(encoding="utf-8") == "customer_id,item_id\n" * 100  # untouched


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    """An SQLite file with tables but no nbo schema got nbo's tables added to it (and an
    erasure recorded there that no service reads), and its permissions changed; a file
    that is no database at all had its permissions changed before it was refused."""
    other, text = tmp_path / "other.db", tmp_path / "notes.txt"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    db.close()
    text.write_text("not a database\n", encoding="utf-8")
    for path in (other, text):
        os.chmod(path, 0o664)
    before = other.read_bytes()
    message = _refusal(f"sqlite:///{other}")
    assert message.endswith(
        f"{other} is not an nbo store: an SQLite database with other "
        "tables (accounts); point it at the store the service records to"
    )
    assert "file is not a database" in _refusal(f"sqlite:///{text}")
    for read in (read_erased_list, read_pseudonym_key):
        with pytest.raises(ConfigError, match="is not an nbo store"):
            read(f"sqlite:///{other}")
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other.db"]
    for path in (other, text):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    # An empty file is a store to be, as before; and a store opens again.
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    open_store(f"sqlite:///{empty}").close()
    open_store(f"sqlite:///{empty}").close()


@pytest.mark.parametrize("below", ["x.db", "sub/x.db"])
def test_a_file_where_the_stores_folder_goes_is_named(tmp_path: Path, below: str) -> None:
    (tmp_path / "afile").write_bytes(b"")
    message = _refusal(f"sqlite:///{tmp_path / 'afile' / below}")
    assert message.endswith(f"{tmp_path / 'afile'} is a file, not a folder")


def test_an_in_memory_store_is_refused_before_anything_is_opened() -> None:
    """Each connection would see a database of its own (the readers none of the tables)
    and everything would be lost at exit."""
    url = "sqlite:///:memory:"
    assert "keeps nothing" in _refusal(url)
    with pytest.raises(ConfigError, match="NBO_STORE_URL: sqlite:///:memory: keeps nothing"):
        check_store_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://db/nbo", "unsupported store"),
        ("sqlite:///", "needs a file path"),
        ("postgresql://u:secret@h/db?%zz", "is not valid"),
        # libpq reads a port only when it connects: a typo was a server "away" for good.
        ("postgresql://u:secret@h:185400/db", "port '185400' is not a number from 1 to 65535"),
        ("postgresql://u:secret@h/db?port=54x", "port '54x' is not a number"),
    ],
)
def test_a_url_naming_no_store_is_refused_without_opening_one(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"^setting NBO_STORE_URL: .*{problem}") as refused:
        check_store_url(url)
    assert "secret" not in str(refused.value)


def test_a_good_url_passes_the_check_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_store_url(f"sqlite:///{tmp_path / 'nbo.db'}")
    check_store_url("postgresql://nbo:secret@localhost:1/nbo")  # no connection made
    monkeypatch.chdir(tmp_path)
    check_store_url("sqlite:///var/nbo.db")  # the default's folder: made when opened
    assert list(tmp_path.iterdir()) == []
    # A folder that does not exist is known without opening anything.
    with pytest.raises(ConfigError, match="no folder"):
        check_store_url(f"sqlite:///{tmp_path / 'nowhere' / 'nbo.db'}")


def test_a_full_disk_is_a_store_unavailable_and_stores_nothing(tmp_path: Path) -> None:
    """SQLite out of room (the file system full; here its page limit) answered 500
    internal_error with the service's readiness saying the store was fine: now
    StoreUnavailable (503 with Retry-After) naming the file, and the call stores
    nothing; once there is room again, writes go through."""
    from nbo.store.base import StoreUnavailable

    store = SQLiteStore(tmp_path / "nbo.db")
    try:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages + 2}")
        big = [purchase(f"e{n}-{'x' * 120}", item=f"i{n}-{'y' * 120}") for n in range(200)]
        with pytest.raises(StoreUnavailable, match=r"disk is full \(.*nbo\.db\)"):
            store.add_events(big)
        assert store.event_count() == 0
        store._db.execute("PRAGMA max_page_count=1073741823")
        store.add_events(big[:1])
        assert store.event_count() == 1
    finally:
        store.close()


def test_a_store_another_process_holds_for_writing_is_busy_not_an_error(tmp_path: Path) -> None:
    """A campaign recording a large chunk holds SQLite's write lock past busy_timeout: a
    write of the service then answers StoreUnavailable (503, try again), not an
    internal error."""
    import sqlite3

    from nbo.store.base import StoreUnavailable
    from nbo.store.sqlite import SQLiteStore

    path = tmp_path / "nbo.db"
    store = SQLiteStore(path)
    try:
        store._db.execute("PRAGMA busy_timeout=50")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="busy"):
                store.set_consent("c1", False, {})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.set_consent("c1", False, {}).personalization is False
    finally:
        store.close()


def test_the_store_and_its_log_files_are_their_owners_alone(tmp_path: Path) -> None:
    """The store holds customers' events and consent and the pseudonym key: a new store
    file, its write-ahead log and shared memory are 0600 whatever the umask; a store made
    before keeps its group's permissions and loses those of others."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "nbo.db"
        store = SQLiteStore(path)
        store.set_consent("c1", False, {})
        store.pseudonym_key()
        sides = [path.with_name(path.name + side) for side in ("-wal", "-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [path, *sides]}
        store.close()
        assert modes == {"nbo.db": 0o600, "nbo.db-wal": 0o600, "nbo.db-shm": 0o600}

        os.chmod(path, 0o644)  # a store an earlier release made
        store = SQLiteStore(path)
        store.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)


def test_a_worker_meeting_a_newer_schema_starts_without_its_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade of processes sharing one SQLite file: a newer release migrated
    it. A worker gunicorn starts in place of a dead one (``refusal_waits``: its ``nbo
    serve`` opened the file at start) starts without its store, said as an error, its
    calls StoreUnavailable, and opens it once the refusal ends; before, its failed boot
    stopped the whole ``nbo serve``. A file never proven good still raises."""
    from nbo.service.prometheus import PrometheusMetrics
    from nbo.service.state import ModelHolder
    from nbo.store import waiting
    from nbo.store.base import StoreUnavailable

    url = f"sqlite:///{tmp_path / 'nbo.db'}"
    open_store(url).close()
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(tmp_path / "nbo.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (newer,))
    db.close()
    with pytest.raises(ConfigError, match="newer than this nbo"):
        open_store(url, background=True)
    with caplog.at_level("ERROR"):
        store = open_store(url, background=True, refusal_waits=True)
    # The routes' store is the metrics' proxy, which keeps each method it first wraps.
    timed = PrometheusMetrics(ModelHolder()).observe_store(store)
    ran: list[int] = []
    try:
        assert not store.available
        with pytest.raises(StoreUnavailable, match="newer than this nbo"):
            timed.erased_ids()
        store.when_available(lambda: ran.append(1))
        assert ran == []
        assert any(
            "refused this worker" in r.getMessage() and "newer than this nbo" in r.getMessage()
            for r in caplog.records
        )
        # The operator upgrades this release (or rolls the schema back): it opens.
        with sqlite3.connect(tmp_path / "nbo.db") as db:
            db.execute("DELETE FROM schema_migrations WHERE version = ?", (newer,))
        db.close()
        for _ in range(int(30 / waiting.RETRY_SECONDS)):
            if store.available:
                break
            threading.Event().wait(waiting.RETRY_SECONDS)
        assert store.available
        assert timed.erased_among(["anyone"]) == set()
        assert ran == [1]
    finally:
        store.close()
