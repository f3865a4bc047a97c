"""The service on a PostgreSQL server that is there but slow: a statement held by a lock
another session keeps (as a long migration, a VACUUM FULL or a stuck transaction would)
must not stop the worker answering, must end within the statement timeout with a 503
``store_unavailable``, and must leave the store working once the lock is let go. And
every connection finds a server that vanished without closing (TCP keepalives).
Skipped without a server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store.postgres import KEEPALIVES, PostgresStore

# Generous bounds: "answered at all", never a timing.
ANSWERED_SECONDS = 20.0


@contextmanager
def consent_locked(url: str) -> Iterator[None]:
    """Another session holds the consent table's strongest lock until the block ends:
    every read of it (offers and profiles read consent) waits on the server."""
    with psycopg.connect(url) as db:
        db.execute("LOCK TABLE consent IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            db.rollback()


def waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return row is not None and row[0] > 0


def in_thread(client: TestClient, path: str) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(client.get(path)), daemon=True)
    thread.start()
    return thread, answers


def wait_until_waiting(url: str) -> None:
    for _ in range(int(ANSWERED_SECONDS / 0.05)):
        if waiting_on_a_lock(url):
            return
        threading.Event().wait(0.05)
    raise AssertionError("the offers call never waited on the lock")


def test_a_held_server_never_stops_liveness_while_an_offers_call_waits(
    postgres_url: str, models_dir: Path
) -> None:
    """An offers call waits on the server (a lock held elsewhere, under a statement
    timeout longer than the test): meanwhile /health/live and /v1/model answer, and
    the offers call answers 200 once the lock is let go. Before, the offers chunk read
    the store on the event loop: every call of the worker, liveness included, waited
    for the lock (for ever without a statement timeout)."""
    settings = Settings(
        models_dir=models_dir,
        store_url=postgres_url,
        clock=CLOCK,
        store_statement_timeout_ms=600_000,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200  # the store opened
        with consent_locked(postgres_url):
            offers, offers_answers = in_thread(client, "/v1/customers/a00/offers")
            profile, profile_answers = in_thread(client, "/v1/customers/a01")
            wait_until_waiting(postgres_url)
            live, live_answers = in_thread(client, "/health/live")
            live.join(ANSWERED_SECONDS)
            assert live_answers and live_answers[0].status_code == 200
            assert live_answers[0].json()["status"] == "ok"
            model, model_answers = in_thread(client, "/v1/model")
            model.join(ANSWERED_SECONDS)
            assert model_answers and model_answers[0].status_code == 200
            assert offers.is_alive() and profile.is_alive()  # still waiting on the lock
        offers.join(ANSWERED_SECONDS)
        profile.join(ANSWERED_SECONDS)
        assert offers_answers and offers_answers[0].status_code == 200, offers_answers
        assert offers_answers[0].json()["offers"]
        assert profile_answers and profile_answers[0].status_code == 200, profile_answers


def test_a_statement_past_the_timeout_answers_503_and_the_store_works_after(
    postgres_url: str, models_dir: Path
) -> None:
    """Under NBO_STORE_STATEMENT_TIMEOUT_MS, an offers call and a profile whose reads
    wait on a held lock answer 503 store_unavailable (JSON, Retry-After), not a 500 and
    not never; the store is not counted away (readiness says available) and, the lock
    let go, the next calls answer 200 on the same pool. Before, no timeout was set: the
    calls waited as long as the lock was held."""
    settings = Settings(
        models_dir=models_dir,
        store_url=postgres_url,
        clock=CLOCK,
        store_statement_timeout_ms=300,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200  # the store opened
        with consent_locked(postgres_url):
            for path in ("/v1/customers/a00/offers", "/v1/customers/a01"):
                thread, answers = in_thread(client, path)
                thread.join(ANSWERED_SECONDS)
                assert answers, f"{path} never answered"
                answer = answers[0]
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"].startswith("application/json")
                assert answer.json()["error"] == "store_unavailable"
                assert "did not answer in time" in answer.json()["message"]
                assert answer.headers["retry-after"] == "1"
            assert client.get("/health/ready").json()["store"] == "available"
        for _ in range(3 * 8):  # more calls than the pool has connections
            assert client.get("/v1/customers/a00/offers").status_code == 200
        assert client.get("/v1/customers/a01").status_code == 200


def test_pool_connections_carry_the_timeout_and_keepalives_unless_the_url_sets_them(
    postgres_url: str,
) -> None:
    """Every pool connection has the statement timeout asked for and TCP keepalives
    (a server gone without closing is found within about 25 s); a URL's own libpq
    keepalive parameter wins. Before, only connect_timeout was set: no statement
    timeout, and the system's keepalive defaults (none, or two hours)."""
    store = PostgresStore(postgres_url, statement_timeout_ms=1234)
    try:
        with store._reading() as db:
            assert db.execute("SHOW statement_timeout").fetchone() == ("1234ms",)
            params = db.info.get_parameters()  # type: ignore[attr-defined]
        for name, value in KEEPALIVES.items():
            assert params.get(name) == value, name
    finally:
        store.close()
    store = PostgresStore(f"{postgres_url}&keepalives_idle=60")
    try:
        with store._reading() as db:
            assert db.execute("SHOW statement_timeout").fetchone() == ("0",)
            params = db.info.get_parameters()  # type: ignore[attr-defined]
        assert params.get("keepalives_idle") == "60"
        assert params.get("keepalives_interval") == KEEPALIVES["keepalives_interval"]
    finally:
        store.close()
