"""What differs between the backends, and what must not: the schema both migrate to,
SQLite's own file settings, PostgreSQL's connection errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from backends import needs_postgres, run_sql
from fastapi.testclient import TestClient

from nbo.core.errors import ConfigError
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store import open_store
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
    assert len({table for table, _ in in_sqlite}) == 8  # seven tables and schema_migrations
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


def test_a_lost_postgres_connection_answers_503_then_recovers(
    postgres_url: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the replica's connections (a restart, a failover): the call that
    meets the dead connection answers 503 with a JSON body and Retry-After, the calls
    within that time too (at once), and a call after it connects again."""
    import time

    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.3)
    settings = Settings(models_dir=models_dir, store_url=postgres_url, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        lost = client.get("/v1/customers/a00/offers")
        assert lost.status_code == 503 and lost.json()["error"] == "store_unavailable"
        assert lost.headers["retry-after"] == "1"
        assert client.get("/v1/customers/a00/offers").status_code == 503
        time.sleep(0.4)
        assert client.get("/v1/customers/a00/offers").status_code == 200


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
    import time

    from nbo.store import postgres
    from nbo.store.base import StoreUnavailable

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.5)
    url = f"{postgres_url}&application_name=nbo-outage-test"
    store = open_store(url)
    try:
        assert store.erased_ids() == []
        run_sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'nbo-outage-test'",
        )
        with pytest.raises(StoreUnavailable):
            store.erased_ids()
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(StoreUnavailable):
                store.erased_ids()
        assert time.monotonic() - started < 0.2  # no wait on the pool
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.6)
            try:
                assert store.erased_ids() == []
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store never came back"
    finally:
        store.close()


def test_a_starting_worker_waits_for_a_server_it_cannot_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker gunicorn starts during an outage waits for the server (``wait_seconds``)
    instead of failing to boot, which stops the whole service; a command (no wait)
    answers at once."""
    import time

    from nbo.store import postgres

    monkeypatch.setattr(postgres, "STARTUP_RETRY_SECONDS", 0.2)
    url = "postgresql://nbo@127.0.0.1:9/nbo"  # nothing listens
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot connect"):
        open_store(url, wait_seconds=1.0)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 5.0
    started = time.monotonic()
    with pytest.raises(ConfigError):
        open_store(url)
    assert time.monotonic() - started < 1.0


def test_a_server_that_answers_and_refuses_is_not_waited_for(postgres_url: str) -> None:
    """A database that does not exist is the URL's mistake: no wait for it."""
    import time

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    wrong = make_conninfo(**{**conninfo_to_dict(postgres_url), "dbname": "no_such_database"})
    started = time.monotonic()
    with pytest.raises(ConfigError, match="no_such_database"):
        open_store(f"postgresql:///?{wrong.replace(' ', '&')}", wait_seconds=30.0)
    assert time.monotonic() - started < 5.0
