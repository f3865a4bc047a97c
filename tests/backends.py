"""The store backends the tests run on: SQLite always, PostgreSQL when
``NBO_TEST_POSTGRES_URL`` names a server (``.ci/run`` and ``make test-postgres`` start a
throwaway one with ``.ci/with-postgres``); without it the PostgreSQL tests skip, saying
how to run them.

Every PostgreSQL store of a test lives in a schema of its own on that database (made
for the test, dropped after), so tests never see each other's rows; the store URL
carries the schema as the connection's search_path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

POSTGRES_ENV = "NBO_TEST_POSTGRES_URL"
WITHOUT_POSTGRES = (
    f"no PostgreSQL server for the store tests: set {POSTGRES_ENV}=postgresql://... (a "
    "database the tests may create schemas in) or run `make test-postgres`"
)
BACKENDS = ["sqlite", "postgres"]


def needs_postgres(item: pytest.Item) -> bool:
    """Whether a collected test runs on PostgreSQL (its fixtures or a backend parameter)."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    # Compared as strings only: other tests' parameters include numpy arrays.
    on_postgres = any(isinstance(value, str) and value == "postgres" for value in params)
    fixtures = getattr(item, "fixturenames", ())
    return on_postgres or any(
        name in fixtures for name in ("postgres_url", "postgres_database", "relay")
    )


def skip_without_postgres(items: list[pytest.Item]) -> None:
    """Without a server, mark the PostgreSQL tests skipped up front: the summary then
    gives the reason once per file, not once per test."""
    if os.environ.get(POSTGRES_ENV):
        return
    skip = pytest.mark.skip(reason=WITHOUT_POSTGRES)
    for item in items:
        if needs_postgres(item):
            item.add_marker(skip)


def in_schema(url: str, schema: str) -> str:
    """The URL with ``schema`` as the connection's search_path."""
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{url}{'&' if '?' in url else '?'}options={options}"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL on an empty schema of the test server, dropped on the way out; the
    test skips when there is no server."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(WITHOUT_POSTGRES)
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        yield in_schema(server, schema)
    finally:
        with psycopg.connect(server, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL on an empty schema of the test server, dropped after the test."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A store URL on a database of its own on the test server, dropped after the test:
    for a test that changes what a whole database does (``ALTER DATABASE ... SET``)."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(WITHOUT_POSTGRES)
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as db:
            db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def set_read_only(database_url: str, on: bool) -> None:
    """The database of ``database_url`` (a ``postgres_database``) read-only, as a standby
    the URL names after a failover, or writable again: set from another database (a
    session on a read-only one cannot undo it), and its sessions ended so that every new
    one has the setting."""
    name = urlsplit(database_url).path[1:]
    with psycopg.connect(os.environ[POSTGRES_ENV], autocommit=True) as db:
        db.execute(
            f"ALTER DATABASE {name} SET default_transaction_read_only = {'on' if on else 'off'}"
        )
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """A URL for a store that does not exist yet, on each backend in turn (SQLite: in a
    folder that exists, as a new store's must)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'nbo.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def run_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on the store a URL names, outside nbo (committed); its rows."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return db.execute(sql.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url, autocommit=True) as pg:
        cursor = pg.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class Relay:
    """A TCP relay in front of the test server that a test switches off and on, as an
    outage of the database server: off, nothing listens on its port (a connection is
    refused) and every relayed connection is cut, as a stopped server does; on, it
    relays again on the same port. The test server itself keeps running for the other
    tests. ``url(store_url)`` is the store URL through the relay."""

    def __init__(self, server_url: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(server_url)
        self._target = (str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
        self._server_port = self._target[1]
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def url(self, store_url: str) -> str:
        return store_url.replace(f":{self._server_port}/", f":{self.port}/", 1)

    def on(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def hold(self) -> None:
        """A server that hangs (SIGSTOP): connections are accepted and kept, and nothing
        passes either way until ``release``."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def off(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            cut, self._open = self._open, set()
        for one in cut:
            with contextlib.suppress(OSError):
                one.shutdown(socket.SHUT_RDWR)
            one.close()
        self._flowing.set()  # the held pipes end on the cut sockets

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # switched off
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # switched off meanwhile
                    client.close()
                    server.close()
                    return
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        for one in (source, sink):
            with contextlib.suppress(OSError):
                one.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A relay to the test server, switched off (the server away) until the test says."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(WITHOUT_POSTGRES)
    relay = Relay(server)
    try:
        yield relay
    finally:
        relay.off()
