"""Ids holding '/' through the real app: an id the events route stores is addressable on
every customer and item route (sent as %2F, or raw), and ordinary ids still reach the
route they name (an offers path is never read as the profile of "12347/offers")."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support import assert_json_error, purchase_event

SLASHED = "shop/123"


def ok(answer) -> dict:  # type: ignore[no-untyped-def]
    assert answer.status_code == 200, answer.text
    body: dict = answer.json()
    return body


@pytest.mark.parametrize("path", ["shop%2F123", "shop/123"])
def test_a_customer_id_with_a_slash_reaches_every_customer_route(
    client: TestClient, path: str
) -> None:
    """The GDPR case: a customer the events route stored can be read, exported and erased."""
    answer = client.post("/v1/events", json={"events": [purchase_event("p1", SLASHED, ["A01"])]})
    assert ok(answer)["rejected"] == []

    assert ok(client.get(f"/v1/customers/{path}"))["customer_id"] == SLASHED
    assert ok(client.get(f"/v1/customers/{path}/offers"))["customer_id"] == SLASHED
    consent = {"personalization": False, "channels": {"email": False}}
    put = ok(client.put(f"/v1/customers/{path}/consent", json=consent))
    assert put["customer_id"] == SLASHED and put["personalization"] is False
    got = ok(client.get(f"/v1/customers/{path}/consent"))
    assert got["customer_id"] == SLASHED and got["personalization"] is False
    export = ok(client.get(f"/v1/customers/{path}/data"))
    assert export["customer_id"] == SLASHED
    assert [event["event_id"] for event in export["events"]] == ["p1"]

    receipt = ok(client.delete(f"/v1/customers/{path}"))
    assert receipt["customer_id"] == SLASHED and receipt["already_erased"] is False
    assert receipt["deleted"]["events"]["purchase"] == 1
    assert receipt["deleted"]["consent_records"] == 1
    after = ok(client.get(f"/v1/customers/{path}/data"))
    assert after["erased"] is True and after["events"] == []


def test_an_id_ending_like_a_route_is_still_that_customer_on_suffixed_routes(
    client: TestClient,
) -> None:
    """The id is everything before the route's last segment: "a/data" exports as "a/data"."""
    ok(client.post("/v1/events", json={"events": [purchase_event("p2", "a/data", ["A01"])]}))
    export = ok(client.get("/v1/customers/a%2Fdata/data"))
    assert export["customer_id"] == "a/data" and len(export["events"]) == 1
    assert ok(client.delete("/v1/customers/a%2Fdata"))["customer_id"] == "a/data"


def test_ordinary_ids_reach_the_route_they_name(client: TestClient) -> None:
    """The bare routes (profile, erasure) match any path below /v1/customers/; the routes
    with a suffix are tried first, so "12347/offers" is never taken for a customer id."""
    offers = ok(client.get("/v1/customers/12347/offers"))
    assert offers["customer_id"] == "12347" and "offers" in offers
    consent = ok(client.get("/v1/customers/12347/consent"))
    assert consent["customer_id"] == "12347" and "personalization" in consent
    export = ok(client.get("/v1/customers/12347/data"))
    assert export["customer_id"] == "12347" and "events" in export
    profile = ok(client.get("/v1/customers/12347"))
    assert profile["customer_id"] == "12347" and "stage" in profile


def test_the_api_docs_name_the_ids_without_their_convertor(client: TestClient) -> None:
    """The spec, the metrics' route label and the logs keep ``{customer_id}``: ``:path`` is
    how the router matches, not part of the API."""
    paths = ok(client.get("/openapi.json"))["paths"]
    assert {
        "/v1/customers/{customer_id}",
        "/v1/customers/{customer_id}/offers",
        "/v1/customers/{customer_id}/consent",
        "/v1/customers/{customer_id}/data",
        "/v1/items/{item_id}/similar",
    } <= set(paths)
    assert not [path for path in paths if ":path" in path]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("path", ["shop%2F123", "shop/123"])
def test_an_unknown_item_id_with_a_slash_is_named_in_the_404(client: TestClient, path: str) -> None:
    body = assert_json_error(client.get(f"/v1/items/{path}/similar"), 404)
    assert body["error"] == "not_found"
    assert [detail["field"] for detail in body["details"]] == ["item_id"]
    assert SLASHED in body["message"]


def test_the_dashboards_customer_page_looks_up_an_id_with_a_slash(client: TestClient) -> None:
    """The page takes the id as a query parameter and calls the runtime, not the API's
    paths: the same customer the profile route answers for."""
    ok(client.post("/v1/events", json={"events": [purchase_event("p3", SLASHED, ["A01"])]}))
    page = client.get("/dashboard/customer", params={"customer_id": SLASHED})
    assert page.status_code == 200 and f"<code>{SLASHED}</code>" in page.text
    stage = re.search(r'id="stage"[^>]*>([^<]*)<', page.text)
    profile = ok(client.get("/v1/customers/shop%2F123"))
    assert stage and stage.group(1) == profile["stage"].replace("_", " ")
