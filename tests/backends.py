"""The store backends the tests run on: SQLite always, PostgreSQL when
``NBO_TEST_POSTGRES_URL`` names a server (``.ci/run`` and ``make test-postgres`` start a
throwaway one with ``.ci/with-postgres``); without it the PostgreSQL tests skip, saying
how to run them.

Every PostgreSQL store of a test lives in a schema of its own on that database (made
for the test, dropped after), so tests never see each other's rows; the store URL
carries the schema as the connection's search_path.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

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
    return on_postgres or "postgres_url" in getattr(item, "fixturenames", ())


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


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A URL for a store that does not exist yet, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'nbo.db'}"
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
