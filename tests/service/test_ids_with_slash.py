"""Ids holding '/' through the real app: an id the events route stores is addressable on
every customer and item route (sent as %2F, or raw), ordinary ids still reach the route
they name (an offers path is never read as the profile of "12347/offers"), and an id a
path could not tell from a route ("12347/consent") is refused everywhere."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support import assert_json_error, purchase_event

from nbo.core.ids import CUSTOMER_ROUTE_SUFFIXES, ROUTE_SUFFIXES

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


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/customers/12347/consent"),
        ("DELETE", "/v1/customers/12347/offers"),
        ("DELETE", "/v1/customers/12347/data"),
        ("PUT", "/v1/customers/12347/offers"),
        ("POST", "/v1/customers/12347/data"),
        ("DELETE", "/v1/customers/shop/123/consent"),
    ],
)
def test_a_wrong_method_on_a_suffixed_route_is_405_never_another_customer(
    client: TestClient, method: str, path: str
) -> None:
    """``DELETE /v1/customers/12347/consent`` (a client withdrawing consent) erased the
    customer "12347/consent"; the bare routes no longer match a path ending in a
    suffixed route's name, so it is that route's 405 and nobody is erased."""
    answer = client.request(method, path)
    body = assert_json_error(answer, 405)
    assert body["error"] != "validation_error"
    assert method not in answer.headers["allow"]  # the suffixed route's methods
    assert ok(client.get("/v1/customers/12347/data"))["erased"] is False


@pytest.mark.parametrize("suffix", ROUTE_SUFFIXES)
def test_an_id_ending_like_a_route_is_refused_naming_the_field(
    client: TestClient, suffix: str
) -> None:
    """No customer or item id may end with '/' and a route's name: refused on every route
    that can reach it (422 naming the field), on ingestion, and by the dashboard."""
    customer, item = f"a/{suffix}", f"i/{suffix}"
    encoded = customer.replace("/", "%2F")
    for method, path in [
        ("GET", f"/v1/customers/{encoded}/offers"),
        ("GET", f"/v1/customers/{encoded}/consent"),
        ("GET", f"/v1/customers/{encoded}/data"),
        ("PUT", f"/v1/customers/{encoded}/consent"),
    ]:
        consent = {"personalization": False} if method == "PUT" else None
        body = assert_json_error(client.request(method, path, json=consent), 422)
        assert [detail["field"] for detail in body["details"]] == ["customer_id"], path
        assert f"must not end with '/{suffix}'" in body["message"]
    body = assert_json_error(client.get(f"/v1/items/{item.replace('/', '%2F')}/similar"), 422)
    assert [detail["field"] for detail in body["details"]] == ["item_id"]

    answer = client.post("/v1/events", json={"events": [purchase_event("p9", customer, ["A01"])]})
    assert answer.status_code == 422
    (rejection,) = answer.json()["rejected"]
    assert rejection["reason"].startswith(f"customer_id: must not end with '/{suffix}'")
    batch = [purchase_event("p10", "c9", ["A01", item]), purchase_event("p11", "c9", ["A01"])]
    answer = ok(client.post("/v1/events", json={"events": batch}))
    assert answer["accepted"] == ["p11"]
    assert answer["rejected"][0]["reason"].startswith("items.1.item_id: must not end with")
    assert [event["event_id"] for event in ok(client.get("/v1/customers/c9/data"))["events"]] == [
        "p11"
    ]

    page = client.get("/dashboard/customer", params={"customer_id": customer})
    assert page.status_code == 422 and f"must not end with &#39;/{suffix}&#39;" in page.text


def test_a_route_name_alone_or_inside_an_id_is_an_ordinary_id(client: TestClient) -> None:
    """Only an id's last '/'-separated part is judged: "data" and "data/7" are ids."""
    for customer in ("data", "consent/7", "offers/x/1"):
        event = purchase_event(customer, customer, ["A01"])
        ok(client.post("/v1/events", json={"events": [event]}))
        assert ok(client.get(f"/v1/customers/{customer}"))["customer_id"] == customer
        assert ok(client.get(f"/v1/customers/{customer}/offers"))["customer_id"] == customer
        receipt = ok(client.delete(f"/v1/customers/{customer}"))
        assert receipt["customer_id"] == customer and receipt["deleted"]["purchase_lines"] == 1


def test_the_route_suffixes_are_those_of_the_apps_routes(client: TestClient) -> None:
    """Every suffix a customer or item route has after its id is one ids may not end
    with, and no other: a new suffixed route must be added to the rule."""
    suffixes: dict[str, set[str]] = {"customer_id": set(), "item_id": set()}
    for path in ok(client.get("/openapi.json"))["paths"]:
        for name, found in suffixes.items():
            if f"{{{name}}}/" in path:
                found.add(path.split(f"{{{name}}}/", 1)[1])
    assert suffixes["customer_id"] == set(CUSTOMER_ROUTE_SUFFIXES)
    assert suffixes["customer_id"] | suffixes["item_id"] == set(ROUTE_SUFFIXES)


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
