"""POST /v1/events through the real app: single and batch, duplicates, rejections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore

CLOCK = "2026-06-30T12:00:00Z"


def purchase(event_id: str, customer: str = "a00", item: str = "A01", **extra: object) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T10:00:00Z",
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.5}],
        **extra,
    }


@pytest.fixture
def client(models_dir: Path, isolated_store: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        yield client


def test_one_event_is_accepted_and_stored(client: TestClient, isolated_store: Path) -> None:
    answer = client.post("/v1/events", json=purchase("e1"))
    assert answer.status_code == 200
    assert answer.json() == {"accepted": ["e1"], "duplicates": [], "rejected": []}
    assert [p.item_id for p in SQLiteStore(isolated_store).purchases_of("a00")] == ["A01"]


def test_posting_the_same_event_id_again_is_a_duplicate(client: TestClient) -> None:
    client.post("/v1/events", json=purchase("e1"))
    answer = client.post("/v1/events", json={"events": [purchase("e1"), purchase("e2")]})
    assert answer.json() == {"accepted": ["e2"], "duplicates": ["e1"], "rejected": []}


def test_a_batch_with_a_bad_event_stores_the_good_ones(
    client: TestClient, isolated_store: Path
) -> None:
    bad = purchase("e2")
    bad["items"][0]["quantity"] = -1
    events = [
        purchase("e1"),
        bad,
        {"event_id": "e3", "type": "teleport", "customer_id": "a00"},
        {
            "event_id": "e4",
            "type": "offer_conversion",
            "customer_id": "a00",
            "item_id": "A01",
            "timestamp": "2026-06-30T11:00:00Z",
            "revenue": 9.5,
        },
    ]
    body = client.post("/v1/events", json={"events": events}).json()
    assert body["accepted"] == ["e1", "e4"]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {1, 2}
    assert rejected[1]["event_id"] == "e2" and "items.0.quantity" in rejected[1]["reason"]
    assert rejected[2]["event_id"] == "e3" and "teleport" in rejected[2]["reason"]
    assert SQLiteStore(isolated_store).event_count() == 2


def test_only_bad_events_answer_422_with_the_reasons(client: TestClient) -> None:
    event = purchase("e1")
    del event["customer_id"]
    answer = client.post("/v1/events", json=event)
    assert answer.status_code == 422
    body = answer.json()
    assert body["accepted"] == [] and "customer_id" in body["rejected"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": "nope"}, "events"),
        ({"events": [purchase(f"e{i}") for i in range(1001)]}, "events"),
    ],
)
def test_unusable_bodies_are_refused_whole(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/v1/events", json=body)
    assert answer.status_code == 422
    assert answer.json()["details"][0]["field"] == field


def test_a_body_that_is_not_json_is_a_json_error(client: TestClient) -> None:
    answer = client.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/json")


def test_timestamps_without_a_zone_are_utc(client: TestClient, isolated_store: Path) -> None:
    event = purchase("e1")
    event["timestamp"] = "2026-06-30T10:00:00"
    client.post("/v1/events", json=event)
    [stored] = SQLiteStore(isolated_store).purchases_of("a00")
    assert stored.occurred_at == 1782813600  # 2026-06-30T10:00:00Z
