"""GET /v1/items/{id}/similar through the real app: the planted group's items, never the
item itself, and a JSON 404 for an unknown item."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support import ALL_ITEMS, app_for, assert_json_error

from training.pipeline import TrainResult


def test_similar_items_are_from_the_same_group(client: TestClient, current: str) -> None:
    for item in ALL_ITEMS:
        response = client.get(f"/v1/items/{item}/similar", params={"k": 5})
        assert response.status_code == 200
        body = response.json()
        assert body["item_id"] == item
        assert body["model_version"] == current
        similar = [s["item_id"] for s in body["similar"]]
        assert len(similar) == 5
        assert item not in similar
        assert all(s[0] == item[0] for s in similar), (item, similar)
        assert [s["rank"] for s in body["similar"]] == [1, 2, 3, 4, 5]
        scores = [s["score"] for s in body["similar"]]
        assert scores == sorted(scores, reverse=True)


def test_similar_items_never_include_the_item_itself(client: TestClient) -> None:
    for item in ("A00", "B07"):
        body = client.get(f"/v1/items/{item}/similar", params={"k": 100}).json()
        similar = [s["item_id"] for s in body["similar"]]
        assert sorted(similar) == sorted(set(ALL_ITEMS) - {item})


def test_similar_items_of_an_unknown_item(client: TestClient) -> None:
    body = assert_json_error(client.get("/v1/items/NOPE/similar"), 404)
    assert body["error"] == "not_found"
    assert [detail["field"] for detail in body["details"]] == ["item_id"]
    assert "NOPE" in body["message"]


@pytest.fixture
def rare_client(with_cycles: TrainResult) -> Iterator[TestClient]:
    """The planted model with RARE, which four customers of group a bought
    (``make_refill_purchases``)."""
    assert with_cycles.path is not None
    with app_for(with_cycles.path.parent) as client:
        yield client


def similar_to(client: TestClient, **params: object) -> list[tuple[str, int]]:
    answer = client.get("/v1/items/A00/similar", params={"k": 100, **params})
    assert answer.status_code == 200, answer.text
    return [(s["item_id"], s["buyers"]) for s in answer.json()["similar"]]


def test_an_item_too_few_customers_bought_is_never_called_similar(rare_client: TestClient) -> None:
    """An item's ALS factors are its few buyers' tastes: three of the five items "most
    similar" to the README's example item had one buyer in the sample. RARE (four
    buyers) is listed only when min_buyers allows it; every item listed says its buyers."""
    listed = dict(similar_to(rare_client))
    assert "RARE" not in listed and set(listed) >= set(ALL_ITEMS) - {"A00"}
    assert min(listed.values()) >= 5
    body = rare_client.get("/v1/items/A00/similar").json()
    assert body["min_buyers"] == 5
    assert dict(similar_to(rare_client, min_buyers=4))["RARE"] == 4
    assert "RARE" not in dict(similar_to(rare_client, min_buyers=5))
    # None has this many buyers: an empty list, not an error.
    assert similar_to(rare_client, min_buyers=10_000) == []
    body = assert_json_error(rare_client.get("/v1/items/A00/similar?min_buyers=0"), 422)
    assert [detail["field"] for detail in body["details"]] == ["min_buyers"]


def test_the_least_support_is_a_setting(with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    with app_for(with_cycles.path.parent, similar_min_buyers=1) as client:
        assert dict(similar_to(client))["RARE"] == 4
