"""Purchases posted as events count at once: suppressed in the next offers call, and
folded into the customer's taste vector without retraining."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import GROUP_ITEMS

from nbo.service.app import create_app
from nbo.settings import Settings

CLOCK = "2026-06-30T12:00:00Z"
TODAY = "2026-06-30T11:00:00Z"  # after the planted data ends: news to the model


def purchase(event_id: str, customer: str, items: list[str], when: str = TODAY) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": when,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.0} for item in items],
    }


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK))) as client:
        yield client


def offers(client: TestClient, customer: str, k: int = 10) -> dict:
    answer = client.get(f"/v1/customers/{customer}/offers", params={"k": k})
    assert answer.status_code == 200
    return answer.json()


def test_a_posted_purchase_is_suppressed_in_the_next_call(client: TestClient) -> None:
    before = offers(client, "a00")
    top = before["offers"][0]["item_id"]
    assert before["profile"] == "trained"

    client.post("/v1/events", json=purchase("e1", "a00", [top]))
    after = offers(client, "a00")

    assert top not in [o["item_id"] for o in after["offers"]]
    assert after["suppressed_items"] == before["suppressed_items"] + 1
    assert after["profile"] == "updated"  # bought after training: the taste vector moved


def test_a_new_customer_with_two_purchases_is_personalized_at_once(client: TestClient) -> None:
    assert offers(client, "newbie")["profile"] == "none"

    client.post("/v1/events", json=purchase("e1", "newbie", ["B01"]))
    client.post("/v1/events", json=purchase("e2", "newbie", ["B02"]))
    body = offers(client, "newbie", k=3)

    assert body["personalized"] is True and body["profile"] == "live"
    offered = [o["item_id"] for o in body["offers"]]
    assert set(offered) <= set(GROUP_ITEMS["b"]) - {"B01", "B02"}
    # Proposed by the model or as neighbours of the two purchases, explained by them.
    assert all(o["reason"]["source"] in ("cf", "also_bought") for o in body["offers"])
    assert all(set(o["reason"]["because"]) <= {"B01", "B02"} for o in body["offers"])


def test_a_purchase_from_before_training_suppresses_without_refolding(
    client: TestClient,
) -> None:
    top = offers(client, "b00")["offers"][0]["item_id"]
    client.post("/v1/events", json=purchase("e1", "b00", [top], when="2026-06-20T10:00:00Z"))
    body = offers(client, "b00")
    assert top not in [o["item_id"] for o in body["offers"]]
    assert body["profile"] == "trained"


def test_a_new_customer_is_personalized_by_purchases_dated_before_training_ended(
    client: TestClient,
) -> None:
    """A late-arriving order (a till, an import) of a customer the model never saw is
    not "already in the model": offers and profile count it like a fresh one."""
    early = "2026-06-20T10:00:00Z"  # the planted training data ends on 2026-06-29
    client.post("/v1/events", json=purchase("e1", "late", ["B01"], when=early))
    client.post("/v1/events", json=purchase("e2", "late", ["B02"], when=early))

    body = offers(client, "late", k=3)
    assert body["personalized"] is True and body["profile"] == "live"
    assert {o["item_id"] for o in body["offers"]} <= set(GROUP_ITEMS["b"]) - {"B01", "B02"}
    profile = client.get("/v1/customers/late").json()
    assert profile["known"] is True and profile["frequency"] == 2
    assert profile["last_purchase"] == "2026-06-20T10:00:00+00:00"


def test_unknown_items_in_a_purchase_are_ignored(client: TestClient) -> None:
    client.post("/v1/events", json=purchase("e1", "newbie", ["NOT-IN-CATALOGUE"]))
    body = offers(client, "newbie")
    assert body["profile"] == "none" and body["personalized"] is False


def test_posted_purchases_survive_a_restart_of_the_app(models_dir: Path) -> None:
    settings = Settings(models_dir=models_dir, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        top = offers(client, "a01")["offers"][0]["item_id"]
        client.post("/v1/events", json=purchase("e1", "a01", [top]))
    with TestClient(create_app(settings)) as client:
        assert top not in [o["item_id"] for o in offers(client, "a01")["offers"]]


def test_a_customers_posted_history_counts_up_to_its_newest_lines(models_dir: Path) -> None:
    """NBO_MAX_POSTED_LINES bounds what one customer's posted history costs a request:
    offers and the profile read the newest lines only; the export still holds all."""
    older = purchase("e1", "heavy", ["B01"], when="2026-06-20T10:00:00Z")
    newer = purchase("e2", "heavy", ["B02", "B03", "B04"], when="2026-06-25T10:00:00Z")
    for cap, orders, suppressed in ((3, 1, 3), (1000, 2, 4)):
        settings = Settings(models_dir=models_dir, clock=CLOCK, max_posted_lines=cap)
        with TestClient(create_app(settings)) as client:
            client.post("/v1/events", json={"events": [older, newer]})
            body = offers(client, "heavy", k=20)
            assert body["suppressed_items"] == suppressed
            assert ("B01" in {o["item_id"] for o in body["offers"]}) is (cap == 3)
            profile = client.get("/v1/customers/heavy").json()
            assert profile["frequency"] == orders
            assert profile["last_purchase"] == "2026-06-25T10:00:00+00:00"
            export = client.get("/v1/customers/heavy/data").json()
            assert [e["event_id"] for e in export["events"]] == ["e1", "e2"]
            assert export["profile"] == profile | {"as_of": export["profile"]["as_of"]}
