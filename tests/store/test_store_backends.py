"""What differs between the backends, and what must not: the schema both migrate to,
SQLite's own file settings, PostgreSQL's connection errors."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from backends import (
    POSTGRES_ENV,
    WITHOUT_POSTGRES,
    Relay,
    needs_postgres,
    run_sql,
    set_read_only,
)
from fastapi.testclient import TestClient

from nbo.core.errors import ConfigError
from nbo.data.events import Event, parse_events
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store import open_store
from nbo.store.base import PURGE_IMPRESSIONS, StoreUnavailable, StoreUnreachable
from nbo.store.migrations import MIGRATIONS
from nbo.store.postgres import redacted

CLOCK = "2026-06-30T12:00:00Z"

# The column each PostgreSQL table adds for the order rows were stored in (SQLite's rowid).
STORED_ORDER = {("events", "seq"), ("purchase_lines", "line")}


def test_both_backends_migrate_to_the_same_tables_and_columns(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 's.db'}"
    for url in (sqlite_url, postgres_url):
        open_store(url).close()
    tables = [
        row[0] for row in run_sql(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    in_sqlite = {
        (table, row[1])
        for table in tables
        for row in run_sql(sqlite_url, f"PRAGMA table_info({table})")
    }
    in_postgres = set(
        run_sql(
            postgres_url,
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()",
        )
    )
    assert in_postgres - STORED_ORDER == in_sqlite
    assert len({table for table, _ in in_sqlite}) == 9  # eight tables and schema_migrations
    indexes = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    sqlite_indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    assert {r[0] for r in run_sql(sqlite_url, sqlite_indexes)} <= {
        r[0] for r in run_sql(postgres_url, indexes)
    }


def test_sqlite_keeps_a_write_ahead_log(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unreachable_postgres_refuses_the_start_without_showing_the_password() -> None:
    url = "postgresql://nbo:s3cret-word@127.0.0.1:9/nbo"  # port 9 (discard): nothing listens
    with pytest.raises(ConfigError) as refused:
        open_store(url)
    message = str(refused.value)
    assert message.startswith("setting NBO_STORE_URL: cannot connect to postgresql://nbo:***@")
    assert "s3cret" not in message


def test_passwords_are_redacted_in_urls() -> None:
    assert redacted("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert redacted("postgresql://h/d?user=u&password=p&x=1") == (
        "postgresql://h/d?user=u&password=***&x=1"
    )
    assert redacted("postgresql://u@h/d") == "postgresql://u@h/d"
    # A raw '/' or '@' in the password: everything up to the last '@' is hidden.
    assert redacted("postgresql://u:p/w@h:5/d") == "postgresql://u:***@h:5/d"
    assert redacted("postgresql://u:p@w@h:5/d") == "postgresql://u:***@h:5/d"
    assert redacted("postgresql://u/x:p@h:5/d") == "postgresql://***@h:5/d"


def test_a_raw_at_in_the_query_hides_only_the_password() -> None:
    """``?application_name=me@work`` moved the mask's end to the query's '@': the host,
    the port and the database were hidden with the password (``u:***@work``), and a URL
    without a password lost its host (``postgresql://***@work``). A query of libpq's
    parameters keeps its '@'s; in doubt (a password with a raw '?' or '/' and '@'),
    everything up to the last '@' is still hidden."""
    assert redacted("postgresql://u:p@h:5/d?application_name=me@work") == (
        "postgresql://u:***@h:5/d?application_name=me@work"
    )
    assert redacted("postgresql://h:5/d?application_name=me@work") == (
        "postgresql://h:5/d?application_name=me@work"
    )
    assert redacted("postgresql://h1:5,h2:6/d?application_name=a@b&password=x@y") == (
        "postgresql://h1:5,h2:6/d?application_name=a@b&password=***"
    )
    for doubtful in (
        "postgresql://u:p@q?r@h:5/d",  # "r@h:5/d" is no parameter: the password's
        "postgresql://u:p/q?r@h:5/d",
        "postgresql://u:p/q?application_name=x@h:5/d",  # no host:port before the '/'
        "postgresql://u:S3c@r3t?x@h:5/d",
    ):
        assert redacted(doubtful) == "postgresql://u:***@h:5/d", doubtful


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nbo:S3cr3t/pw@127.0.0.1:9/nbo",  # libpq: host nbo, port S3cr3t
        "postgresql://nbo:S3cr3t%zz@127.0.0.1:9/nbo",  # libpq quotes the bad token
        "postgresql://nbo:S3c@r3t@127.0.0.1:9/nbo",  # libpq: host r3t@127.0.0.1
        "postgresql://nbo:S3cr3t/9@127.0.0.1:9/nbo",  # libpq: port 9 of host nbo
        "postgresql://nbo:S3c:r3t@127.0.0.1:9/nbo?password=S3cr3t%zz",
        # A raw '?' before them hid two '@' from the check (libpq: host r3t@127.0.0.1),
        # while the masking read to the last '@': one reading now serves both.
        "postgresql://nbo:S3c?pw@r3t@127.0.0.1:9/nbo",
    ],
)
def test_a_password_libpq_cannot_read_is_not_shown(url: str) -> None:
    """Neither the URL as shown nor libpq's reason (which quotes the pieces of a URL it
    cannot read) gives the password or a piece of it away, checked or opened."""
    from nbo.store import check_store_url

    for attempt in (check_store_url, open_store):
        with pytest.raises(ConfigError) as refused:
            attempt(url)
        message = str(refused.value)
        assert message.startswith("setting NBO_STORE_URL: postgresql://nbo:***@127.0.0.1:9/nbo")
        assert "S3c" not in message and "r3t" not in message and "pw" not in message


def test_a_url_libpq_reads_one_way_is_accepted() -> None:
    """A raw '?' in a password (libpq reads it as the password's) and a raw '@' in the
    query are no misreading: the check lets them through, the masking hides the password."""
    from nbo.store import check_store_url

    for url in (
        "postgresql://nbo:S3c?r3t@127.0.0.1:9/nbo",
        "postgresql://nbo@127.0.0.1:9/nbo?application_name=me@work",
        "postgresql://127.0.0.1:9/nbo?application_name=me@work",
    ):
        check_store_url(url)
    assert redacted("postgresql://nbo:S3c?r3t@127.0.0.1:9/nbo") == (
        "postgresql://nbo:***@127.0.0.1:9/nbo"
    )


def test_a_lost_postgres_connection_answers_503_then_recovers(
    postgres_url: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the replica's connections (a restart, a failover): the call that
    meets the dead connection answers 503 with a JSON body and Retry-After, the calls
    within that time too (at once), and a call after it connects again. The
    ``nbo_store_available`` gauge, what an alert reads, follows: 1, 0, 1."""

    from nbo.store import postgres

    def gauge(client: TestClient) -> str:
        lines = client.get("/metrics").text.splitlines()
        return next(line for line in lines if line.startswith("nbo_store_available "))

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.3)
    settings = Settings(models_dir=models_dir, store_url=postgres_url, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200
        assert gauge(client) == "nbo_store_available 1.0"
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        lost = client.get("/v1/customers/a00/offers")
        assert lost.status_code == 503 and lost.json()["error"] == "store_unavailable"
        assert lost.headers["retry-after"] == "1"
        assert client.get("/v1/customers/a00/offers").status_code == 503
        assert gauge(client) == "nbo_store_available 0.0"
        deadline = time.monotonic() + 30
        while client.get("/v1/customers/a00/offers").status_code != 200:
            assert time.monotonic() < deadline, "the store never came back"
            time.sleep(0.1)
        assert gauge(client) == "nbo_store_available 1.0"


def test_only_tests_on_postgres_are_skipped_without_a_server() -> None:
    """The skip marks are chosen from the tests' parameters, some of which are arrays."""
    on = SimpleNamespace(callspec=SimpleNamespace(params={"store_url": "postgres"}))
    arrays = SimpleNamespace(callspec=SimpleNamespace(params={"x": np.arange(3)}))
    fixture = SimpleNamespace(fixturenames=("tmp_path", "postgres_url"))
    assert needs_postgres(on) and needs_postgres(fixture)  # type: ignore[arg-type]
    assert not needs_postgres(arrays)  # type: ignore[arg-type]


def test_a_lost_postgres_server_answers_at_once_and_is_found_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops every connection of the store (a restart, a failover): the call
    that meets a dropped connection answers StoreUnavailable, the calls right after it
    answer so at once rather than each waiting on the pool (on a worker's event loop
    that wait stalled every call, health checks included, until gunicorn killed the
    worker), and once ``DOWN_SECONDS`` have passed the store works again without a
    restart: the dropped connections were checked out of the pool."""

    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.5)
    url = f"{postgres_url}&application_name=nbo-outage-test"
    store = open_store(url)
    try:
        assert not store.erased_list()
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'nbo-outage-test'",
        )
        with pytest.raises(StoreUnavailable):
            store.erased_list()
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(StoreUnavailable):
                store.erased_list()
        assert time.monotonic() - started < 0.2  # no wait on the pool
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.6)
            try:
                assert not store.erased_list()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store never came back"
    finally:
        store.close()


def test_a_server_that_answers_and_refuses_is_not_waited_for(postgres_url: str) -> None:
    """A database that does not exist is the URL's mistake: a worker's start (in the
    background) is refused too, with the server's reason, not left to wait for it."""
    from urllib.parse import urlencode

    from psycopg.conninfo import conninfo_to_dict

    wrong = {**conninfo_to_dict(postgres_url), "dbname": "no_such_database"}
    with pytest.raises(ConfigError, match=r"database .no_such_database. does not exist") as refused:
        open_store(f"postgresql:///?{urlencode(wrong)}", background=True)
    assert not isinstance(refused.value, StoreUnreachable)


def test_a_pool_busy_with_slow_calls_is_not_an_outage(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pool connection out with a call the server answers slowly (a lock held):
    a call that waits for one in vain answers StoreUnavailable ("busy"), its own only.
    Before, it counted the server away: every call of the worker answered 503 at once
    and readiness said "unavailable", for a server that answered."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "POOL_WAIT_SECONDS", 0.2)
    store = postgres.PostgresStore(postgres_url, pool_size=1)
    try:
        assert store._pool is not None
        with store._pool.connection():  # the slow call holding the only connection
            with pytest.raises(StoreUnavailable, match="busy"):
                store.erased_list()
            assert store.available
        assert not store.erased_list()
    finally:
        store.close()


def test_a_worker_meeting_a_newer_schema_starts_without_its_store(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: a newer release migrated the shared store while this one's
    replicas run. A worker gunicorn starts in place of a dead one (``refusal_waits``: its
    ``nbo serve`` opened the store at start) starts without its store, saying so as an
    error, and opens it once the refusal ends; before, its failed boot stopped the whole
    replica, the healthy workers with it. A URL never proven good still raises."""
    open_store(postgres_url).close()
    newer = len(MIGRATIONS) + 1
    run_sql(postgres_url, "INSERT INTO schema_migrations VALUES (%s, 0)", (newer,))
    with pytest.raises(ConfigError, match="newer than this nbo"):
        open_store(postgres_url, background=True)
    with caplog.at_level("ERROR", logger="nbo.store.postgres"):
        store = open_store(postgres_url, background=True, refusal_waits=True)
    try:
        assert not store.available
        with pytest.raises(StoreUnavailable):
            store.erased_list()
        assert any("newer than this nbo" in r.getMessage() for r in caplog.records)
        # The operator rolls the schema's owner back (or upgrades this release): it opens.
        run_sql(postgres_url, "DELETE FROM schema_migrations WHERE version = %s", (newer,))
        wait_until(lambda: store.available, "the store never opened once the refusal ended")
        assert not store.erased_list()
    finally:
        store.close()


# libpq's words for a failed connection, as psycopg raises them (its ``sqlstate`` is None
# for every one: a failed connection has no result to read it from).
AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
NOBODY_ANSWERED = [
    AT + "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    "connections?",
    AT + "timeout expired",
    'connection failed: could not translate host name "db" to address: Name or service not known',
    AT + "FATAL:  the database system is starting up",
    AT + "FATAL:  the database system is shutting down",
    AT + "FATAL:  sorry, too many clients already",
]
REFUSED = [
    AT + 'FATAL:  database "shop" does not exist',
    AT + 'FATAL:  password authentication failed for user "nbo"',
    AT + 'FATAL:  role "nbo" does not exist',
    # Two addresses of one host name, the second answering: the server refused.
    'connection failed: connection to server at "::1", port 5432 failed: Connection '
    "refused\n\tIs the server running?\n" + AT + 'FATAL:  database "shop" does not exist',
]


@pytest.mark.parametrize(
    ("message", "away"),
    [(m, True) for m in NOBODY_ANSWERED] + [(m, False) for m in REFUSED],
)
def test_a_server_that_refused_is_told_from_one_that_is_away(
    message: str, away: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server answered, or it said "not now": the worker starts without its store.
    It answered and refused: the start is refused, with its reason. (psycopg names no
    SQLSTATE for either, so a real server's refusal was taken for an outage: a mistyped
    database started a service answering 503 for ever.)"""
    import psycopg

    def failing(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError(message)

    monkeypatch.setattr(psycopg, "connect", failing)
    url = "postgresql://nbo:secret@127.0.0.1:5432/shop"
    if away:
        store = open_store(url, background=True)
        try:
            assert not store.available
        finally:
            store.close()
        with pytest.raises(StoreUnreachable):
            open_store(url)
    else:
        with pytest.raises(ConfigError, match="FATAL") as refused:
            open_store(url, background=True)
        assert not isinstance(refused.value, StoreUnreachable)
        assert "secret" not in str(refused.value)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def a_purchase(event_id: str, customer: str = "c1", item: str = "i1") -> Event:
    valid, rejected = parse_events(
        {
            "event_id": event_id,
            "type": "purchase",
            "customer_id": customer,
            "timestamp": "2026-01-01T10:00:00Z",
            "items": [{"item_id": item, "quantity": 1, "price": 2.0}],
        }
    )
    assert not rejected
    return valid[0][1]


def test_a_store_started_without_its_server_opens_and_migrates_once_it_answers(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service worker starting while the server cannot be reached (gunicorn starting
    one in place of a dead one during an outage; it stopped the whole service when the
    worker failed to boot) starts without its store: calls answer StoreUnavailable and
    nothing is written; once the server answers, the schema is migrated before the first
    call goes through, the ``when_available`` callbacks run once, and calls work. A
    command (no background) is still refused at once."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    url = relay.url(postgres_url)
    with pytest.raises(StoreUnreachable, match="cannot connect"):
        open_store(url)
    store = open_store(url, background=True)
    try:
        ran: list[list[str]] = []

        def failing() -> None:
            raise RuntimeError("cannot execute INSERT in a read-only transaction")

        # One that fails for another reason than the server does not stop the others.
        store.when_available(failing)
        store.when_available(lambda: ran.append([h.hex() for h in store.erased_list().hashes]))
        assert not store.available and store.schema_version == 0 and ran == []
        with pytest.raises(StoreUnavailable):
            store.add_events([a_purchase("e1")])
        with pytest.raises(StoreUnavailable):
            store.purchases_of("c1")
        assert run_sql(postgres_url, "SELECT to_regclass('schema_migrations')") == [(None,)]
        relay.on()
        wait_until(lambda: ran == [[]], "the store never opened")
        assert store.available and store.schema_version == len(MIGRATIONS)
        assert store.add_events([a_purchase("e1")]).accepted == ["e1"]
        assert [p.item_id for p in store.purchases_of("c1")] == ["i1"]
        store.when_available(lambda: ran.append([]))  # available: at once, in this thread
        assert ran == [[], []]
    finally:
        store.close()


def test_two_replicas_started_without_the_server_migrate_once_when_it_answers(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas' workers waiting for the server both open the store when it comes
    back, at the same moment: the schema is migrated once (under the advisory lock), and
    both write to it."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    stores = [open_store(relay.url(postgres_url), background=True) for _ in range(2)]
    try:
        relay.on()
        wait_until(lambda: all(s.available for s in stores), "a store never opened")
        for n, store in enumerate(stores):
            assert store.add_events([a_purchase(f"e{n}", item=f"i{n}")]).accepted == [f"e{n}"]
        versions = run_sql(postgres_url, "SELECT version FROM schema_migrations ORDER BY 1")
        assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
        assert [p.item_id for p in stores[1].purchases_of("c1")] == ["i0", "i1"]
    finally:
        for store in stores:
            store.close()


def test_a_server_back_but_refusing_is_said_as_an_error_and_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started during an outage, and the server comes back refusing it (a
    password changed meanwhile): an operator's to fix, logged as an error, and again
    while it lasts, not once among an outage's warnings."""
    import logging

    import psycopg

    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.01)
    monkeypatch.setattr(postgres, "REPEAT_SECONDS", 0.0)
    answer = [AT + "Connection refused"]

    def connect(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError(answer[0])

    monkeypatch.setattr(psycopg, "connect", connect)
    store = open_store("postgresql://nbo:secret@127.0.0.1:5432/shop", background=True)
    try:
        with caplog.at_level(logging.WARNING, logger="nbo.store.postgres"):
            answer[0] = AT + 'FATAL:  password authentication failed for user "nbo"'
            wait_until(
                lambda: sum(r.levelno == logging.ERROR for r in caplog.records) >= 3,
                "the refusal was not said as an error, again",
            )
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "password authentication failed" in errors[0] and "secret" not in errors[0]
        assert not store.available
    finally:
        store.close()


def test_a_server_gone_during_a_pause_is_waited_for_after_it(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``paused`` (a campaign forks its workers there) opens a new pool after its block;
    a server gone meanwhile made that a PoolTimeout traceback and left the closed pool in
    place. Now the store is away after the block, and open again once the server answers."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    monkeypatch.setattr(postgres, "CONNECT_SECONDS", 1)
    relay.on()
    store = open_store(relay.url(postgres_url))
    try:
        with store.paused():
            relay.off()
        assert not store.available
        with pytest.raises(StoreUnavailable):
            store.erased_list()
        relay.on()
        wait_until(lambda: store.available, "the store never opened again")
        assert not store.erased_list()
    finally:
        store.close()


def test_no_call_waits_on_the_pool_while_the_server_is_away(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a call found the server gone, the calls after it never take a connection
    from the pool (where each waited up to POOL_WAIT_SECONDS: on a worker's event loop,
    every call of the worker, health checks included, waited with it, once per period
    the server stayed away); the store's own thread tries the server, and once it
    answers, calls go through again."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    relay.on()
    store = open_store(relay.url(postgres_url))
    try:
        assert not store.erased_list()
        pool = store._pool  # type: ignore[attr-defined]
        taken: list[str] = []
        take = pool.connection

        def spied(*args: Any, **kwargs: Any) -> Any:
            taken.append(threading.current_thread().name)
            return take(*args, **kwargs)

        monkeypatch.setattr(pool, "connection", spied)
        relay.off()
        with pytest.raises(StoreUnavailable):
            store.erased_list()  # the call that finds the server gone
        assert taken == ["MainThread"]
        tries: list[float] = []
        real_connect = postgres._connect

        def counted(url: str, *bound: Any) -> Any:
            tries.append(time.monotonic())
            return real_connect(url, *bound)

        monkeypatch.setattr(postgres, "_connect", counted)
        calls = 0
        while len(tries) < 5:  # the server tried again several times meanwhile
            with pytest.raises(StoreUnavailable):
                store.erased_list()
            calls += 1
            time.sleep(0.01)
        assert calls > 5 and taken == ["MainThread"]
        relay.on()
        wait_until(lambda: store.available, "the store never came back")
        assert not store.erased_list()
        assert "nbo-store-recovery" in taken
    finally:
        store.close()


def test_a_connection_the_server_closed_while_unused_is_replaced_before_a_call(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restarted while a worker was idle closed its pool's connections; the
    next calls answered 503 for a server that was back (about a second per worker, one
    call per dead connection). A connection unused for a while is checked first now."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "IDLE_CHECK_SECONDS", 0.0)
    relay.on()
    store = open_store(relay.url(postgres_url))
    try:
        assert not store.erased_list()
        relay.off()  # the server stopped, its connections closed ...
        relay.on()  # ... and started again before the next call
        for _ in range(3):
            assert not store.erased_list()
        assert store.available
    finally:
        store.close()


def test_an_idle_store_finds_its_server_gone_and_back(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no call to find it, an idle replica's readiness said "store": "available"
    through a whole outage. The store asks the server itself when no call did."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "PROBE_SECONDS", 0.05)
    monkeypatch.setattr(postgres, "POOL_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    relay.on()
    store = open_store(relay.url(postgres_url))
    try:
        assert store.available
        relay.off()
        wait_until(lambda: not store.available, "the idle store never found the server gone")
        relay.on()
        wait_until(lambda: store.available, "the store never found the server back")
        assert not store.erased_list()
    finally:
        store.close()


def test_no_probe_outlives_a_closed_store(postgres_url: str) -> None:
    """``nbo serve`` closes the store it checked and then forks its workers: no thread of
    the store's may run then, nor start later (a recovery try that opens a pool while the
    store closes)."""
    store = open_store(postgres_url)
    probe = store._probe  # type: ignore[attr-defined]
    assert probe is not None and probe.is_alive()
    store.close()
    assert not probe.is_alive()
    store._start_probe()  # type: ignore[attr-defined]
    assert store._probe is probe  # type: ignore[attr-defined]


def test_a_postgresql_database_in_sql_ascii_reads_ids_as_text() -> None:
    """A database made by a bare ``initdb`` (locale C) is in SQL_ASCII, where psycopg
    reads text as bytes unless the connection says UTF8: ids read back as bytes were
    sent again as bytea, and ``nbo store purge`` failed on every such store
    (``operator does not exist: text = bytea``)."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(WITHOUT_POSTGRES)
    name = f"ascii_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0")
    try:
        store = open_store(urlunsplit(urlsplit(server)._replace(path=f"/{name}")))
        try:
            events, _ = parse_events(
                {
                    "events": [
                        {
                            "type": "offer_impression",
                            "event_id": "old-1",
                            "customer_id": "c1",
                            "item_id": "i1",
                            "channel": "email",
                            "timestamp": "2026-01-01T10:00:00Z",
                        },
                        {
                            "type": "purchase",
                            "event_id": "p-1",
                            "customer_id": "c2",
                            "timestamp": "2026-01-01T10:00:00Z",
                            "items": [{"item_id": "i1"}],
                        },
                    ]
                }
            )
            store.add_events([event for _, event in events])
            assert store.customers_with_purchases() == ["c2"]
            cutoff = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
            assert store.purge(PURGE_IMPRESSIONS, cutoff).rows == 1
            assert store.events_of("c1") == []
        finally:
            store.close()
    finally:
        with psycopg.connect(server, autocommit=True) as db:
            db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_read_only_server_is_away_until_it_takes_writes_again(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that answers but takes no writes (a standby the service's URL names after
    a failover): a write raised InternalError, a 500 with a traceback, and the store
    counted as available throughout. It is StoreUnavailable, the store counts as away
    (readiness says so) while the server stays read-only, and is back once it writes."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    store = open_store(postgres_database)
    try:
        assert store.add_events([a_purchase("e1")]).accepted == ["e1"]
        set_read_only(postgres_database, True)
        with pytest.raises(StoreUnavailable):
            for _ in range(3):  # the first may meet a connection the server ended
                store.add_events([a_purchase("e2")])
        assert not store.available
        time.sleep(0.5)  # the recovery thread tried it a few times: still away
        assert not store.available
        set_read_only(postgres_database, False)
        wait_until(lambda: store.available, "the store never found the server writable")
        assert store.add_events([a_purchase("e2")]).accepted == ["e2"]
    finally:
        store.close()


def test_an_idle_store_finds_its_server_read_only(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of an idle store asks whether the server writes, not only whether it
    answers: readiness says "unavailable" before a call fails on it."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "PROBE_SECONDS", 0.05)
    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    store = open_store(postgres_database)
    try:
        assert store.available
        set_read_only(postgres_database, True)
        wait_until(lambda: not store.available, "the idle store never found it read-only")
    finally:
        store.close()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """``call`` run in a thread of its own; the list gets what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_a_server_that_hangs_answers_503_and_counts_as_away(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts and never answers (a stopped postmaster and backends): a
    call waited until it resumed, its statement timeout being the server's to apply, and
    the probe's SELECT 1 waited as long, readiness saying "available". The client's own
    deadlines cut the call (StoreUnavailable) and the probe (the store counts as away),
    and the store works again once the server answers."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DEADLINE_MARGIN_SECONDS", 0.2)
    monkeypatch.setattr(postgres, "ROUND_TRIP_SECONDS", 0.3)
    monkeypatch.setattr(postgres, "WATCH_SECONDS", 0.05)
    monkeypatch.setattr(postgres, "PROBE_SECONDS", 0.1)
    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    relay.on()
    store = open_store(relay.url(postgres_url), statement_timeout_ms=200)
    try:
        assert not store.erased_list()
        relay.hold()
        call, raised = in_thread(store.erased_list)
        call.join(20)  # before: until the server answered again (released below)
        assert not call.is_alive(), "the call waited on a server that hangs"
        assert len(raised) == 1 and isinstance(raised[0], StoreUnavailable)
        assert "no answer from the server" in str(raised[0])
        wait_until(lambda: not store.available, "the probe never found the server hung")
        relay.release()
        wait_until(lambda: store.available, "the store never found the server back")
        assert not store.erased_list()
    finally:
        relay.release()
        store.close()


def test_a_hung_server_is_tried_again_within_the_probes_round_trip(
    postgres_url: str, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the server hung (accepting connections, never answering their startup), the
    recovery thread's connect waited the full connect timeout (10 s) before each retry:
    a server back elsewhere at the same address (a standby taking the frozen host's) was
    found up to 10 s late. The connect is bounded by the probe's round trip (libpq's
    floor: 2 s)."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "ROUND_TRIP_SECONDS", 0.3)
    monkeypatch.setattr(postgres, "WATCH_SECONDS", 0.05)
    monkeypatch.setattr(postgres, "PROBE_SECONDS", 0.1)
    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)
    tries: list[tuple[str | None, float]] = []
    connect = psycopg.connect

    def timed_connect(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name != "nbo-store-recovery":
            return connect(*args, **kwargs)
        started = time.monotonic()
        try:
            return connect(*args, **kwargs)
        finally:
            tries.append((kwargs.get("connect_timeout"), time.monotonic() - started))

    monkeypatch.setattr(postgres.psycopg, "connect", timed_connect)
    relay.on()
    store = open_store(relay.url(postgres_url))
    try:
        relay.hold()
        wait_until(lambda: not store.available, "the probe never found the server hung")
        wait_until(lambda: len(tries) >= 1, "the recovery thread never gave a connect up")
        timeout, took = tries[0]
        assert timeout == "2"  # before: the URL's default, CONNECT_SECONDS (10)
        assert took < postgres.CONNECT_SECONDS
        relay.release()
        wait_until(lambda: store.available, "the store never found the server back")
        assert not store.erased_list()
    finally:
        relay.release()
        store.close()


def test_every_idle_connection_dropped_is_replaced_before_the_next_call(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart (or pg_terminate_backend) dropped every idle connection of a pool that
    had grown: the pool's check found them dead one by one, backing off between them,
    and the call answered 503 after 3 s (PoolTimeout) though new connections were
    made meanwhile. The first dead one found has the others checked at once."""
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "IDLE_CHECK_SECONDS", 0.0)
    url = f"{postgres_url}&application_name=nbo-idle-test"
    store = open_store(url)
    try:
        pool = store._pool  # type: ignore[attr-defined]
        held = [pool.getconn() for _ in range(postgres.POOL_SIZE)]  # the pool grown
        for db in held:
            pool.putconn(db)
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'nbo-idle-test'",
        )
        for _ in range(3):
            assert not store.erased_list()  # before: StoreUnavailable (PoolTimeout)
        assert store.available
    finally:
        store.close()


def test_an_unexpected_failure_of_a_recovery_try_is_said_once_and_tried_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A try to find the server again that fails other than the server's way (a bug, a
    library's RuntimeError) ended the recovery thread in silence, and the store stayed
    away for good: now it is said once, in one line naming its type and message, and the
    next try on schedule finds the store."""
    import logging

    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.05)
    real_connect = postgres._connect
    faults = [RuntimeError("injected fault"), RuntimeError("injected fault")]

    def connect(url: str, timeout_s: float | None = None) -> psycopg.Connection[Any]:
        if faults:
            raise faults.pop()
        return real_connect(url, timeout_s)

    url = f"{postgres_url}&application_name=nbo-fault-test"
    store = open_store(url)
    try:
        assert not store.erased_list()  # its connection just used: not checked again
        monkeypatch.setattr(postgres, "_connect", connect)
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'nbo-fault-test'",
        )
        with caplog.at_level(logging.ERROR, logger=postgres.log.name):
            with pytest.raises(StoreUnavailable):
                store.erased_list()
            wait_until(lambda: store.available, "the store never came back")
        assert faults == [] and not store.erased_list()
        said = [r.getMessage() for r in caplog.records if "unexpectedly" in r.getMessage()]
        assert len(said) == 1 and "\n" not in said[0]
        assert "(RuntimeError: injected fault)" in said[0]
    finally:
        store.close()
