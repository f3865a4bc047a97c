"""GET /v1/items/{id}/similar through the real app: the planted group's items, never the
item itself, and a JSON 404 for an unknown item."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support import ALL_ITEMS, assert_json_error


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
