"""The service through an outage of its PostgreSQL server: a worker that starts while the
server is away boots without its store and serves what needs no store; what needs it
answers 503 ``store_unavailable`` until the server is back, and then everything works,
with no restart. The outage is a relay in front of the test server switched off and on
(``backends.Relay``); skipped without a server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import Relay, run_sql, set_read_only
from fastapi.testclient import TestClient
from support import CLOCK, purchase_event

from bench.servers import running_server
from nbo.core.pseudonyms import Pseudonyms
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store import open_store


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def offered(answer: dict[str, Any]) -> list[str]:
    return [offer["item_id"] for offer in answer["offers"] if offer["item_id"]]


@pytest.fixture
def quick_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbo.store import postgres

    monkeypatch.setattr(postgres, "DOWN_SECONDS", 0.1)


@pytest.mark.usefixtures("quick_recovery")
def test_a_service_started_while_its_server_is_away_serves_once_it_is_back(
    postgres_url: str, relay: Relay, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The app starts (before: its lifespan failed, the store could not be opened, and
    gunicorn stopped the whole service when a worker it started did so); it is live and
    ready (a model is loaded) and says the store is unavailable; offers and posted
    events answer 503 store_unavailable and nothing is stored. Once the server is back,
    a purchase posted is stored and suppressed by the next offers call, the store's
    erased list reaches the model loaded without it, and log pseudonyms use the store's
    key. The outage is logged as a warning, the recovery (good news) as info."""
    caplog.set_level(logging.INFO, logger="nbo.store")
    setup = open_store(postgres_url)  # a store with an erasure and a key, from before
    setup.erase("a01")
    key = setup.pseudonym_key()
    setup.close()
    settings = Settings(models_dir=models_dir, store_url=relay.url(postgres_url), clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready" and ready.json()["store"] == "unavailable"
        assert client.get("/v1/model").status_code == 200  # needs no store
        for answer in (
            client.get("/v1/customers/a00/offers"),
            client.post("/v1/events", json=purchase_event("p-early", "a00", ["i00"])),
            client.get("/v1/customers/a01"),
            client.delete("/v1/customers/a00"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "store_unavailable"
            assert answer.headers["retry-after"] == "1"
            assert "127.0.0.1" not in answer.text  # the server's address: the log's only

        state = client.app.state  # type: ignore[attr-defined]
        assert state.models.model.customers.get("a01") is not None  # loaded without the list
        relay.on()
        wait_until(
            lambda: client.get("/health/ready").json()["store"] == "available",
            "the store never opened",
        )
        before = client.get("/v1/customers/a00/offers")
        assert before.status_code == 200, before.text
        top = offered(before.json())[0]
        posted = client.post("/v1/events", json=purchase_event("p-a00", "a00", [top]))
        assert posted.status_code == 200 and posted.json()["accepted"] == ["p-a00"]
        after = client.get("/v1/customers/a00/offers").json()
        assert top not in offered(after)
        assert after["suppressed_items"] == before.json()["suppressed_items"] + 1
        wait_until(lambda: state.models.model.customers.get("a01") is None, "a01 served")
        assert state.pseudonyms.of("a00") == Pseudonyms(key).of("a00")
    events = run_sql(postgres_url, "SELECT event_id FROM events ORDER BY event_id")
    assert events == [("p-a00",)]  # nothing of the outage's calls
    store = [r for r in caplog.records if r.name == "nbo.store.postgres"]
    assert [r.levelname for r in store if "not reachable" in r.getMessage()] == ["WARNING"]
    assert [r.levelname for r in store if "available again" in r.getMessage()] == ["INFO"]


def test_nbo_serve_starts_while_its_server_is_away_and_serves_once_it_is_back(
    postgres_url: str, relay: Relay, models_dir: Path, tmp_path: Path
) -> None:
    """``nbo serve`` (gunicorn, two workers) started during an outage: the command
    refused to start (the store's check before forking) and, past that, each worker
    failed to boot; now it serves, and its workers open the store once the server is
    back: a purchase posted is suppressed by the next offers call."""
    url = relay.url(postgres_url)
    with running_server(models_dir, url, tmp_path / "serve.log", {"NBO_CLOCK": CLOCK}) as server:
        base = server.base
        ready = httpx.get(f"{base}/health/ready", timeout=30).json()
        assert ready["status"] == "ready" and ready["store"] == "unavailable"
        answer = httpx.get(f"{base}/v1/customers/a00/offers", timeout=30)
        assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
        relay.on()

        def both_workers_reach_it() -> bool:
            # Each call reaches one of the two workers: ten in a row that succeed.
            return all(
                httpx.get(f"{base}/v1/customers/a00/offers", timeout=30).status_code == 200
                for _ in range(10)
            )

        wait_until(both_workers_reach_it, "the workers never opened the store", 60)
        before = httpx.get(f"{base}/v1/customers/a00/offers", timeout=30).json()
        top = offered(before)[0]
        posted = httpx.post(
            f"{base}/v1/events", json=purchase_event("p-a00", "a00", [top]), timeout=30
        )
        assert posted.status_code == 200 and posted.json()["accepted"] == ["p-a00"]
        for _ in range(4):  # whichever worker answers
            after = httpx.get(f"{base}/v1/customers/a00/offers", timeout=30).json()
            assert top not in offered(after)


@pytest.mark.usefixtures("quick_recovery")
def test_a_read_only_server_answers_503_and_readiness_says_so(
    postgres_database: str, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's server back as a read-only standby (a failover): every write answered
    500 internal_error, with a traceback logged twice, and readiness said the store was
    available. Writes answer 503 store_unavailable with Retry-After, without a traceback,
    and readiness says "unavailable" until the server takes writes again."""
    settings = Settings(models_dir=models_dir, store_url=postgres_database, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200
        set_read_only(postgres_database, True)
        consent = {"personalization": False, "channels": {"email": False}}
        for _ in range(2):  # the second after the recovery thread tried it a few times
            for answer in (
                client.post("/v1/events", json=purchase_event("p-ro", "a00", ["i00"])),
                client.put("/v1/customers/a00/consent", json=consent),
                client.delete("/v1/customers/a00"),
                client.get("/v1/customers/a00/offers?record=true"),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "store_unavailable"
                assert answer.headers["retry-after"] == "1"
            assert client.get("/health/ready").json()["store"] == "unavailable"
            time.sleep(0.5)
        assert not [r for r in caplog.records if r.exc_info]
        set_read_only(postgres_database, False)
        wait_until(
            lambda: client.get("/health/ready").json()["store"] == "available",
            "the store never found the server writable",
        )
        posted = client.post("/v1/events", json=purchase_event("p-rw", "a00", ["i00"]))
        assert posted.status_code == 200, posted.text
