"""HEAD through the real app: every GET route answers it as GET (status and headers, no
body), with none of a GET's side effects, counted and logged as HEAD."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from support import ENTRIES, KEYS, access_lines, app_for, assert_json_error, bearer, scrape, value

from nbo.core.apikeys import Role

OFFERS = "/v1/customers/{customer_id}/offers"
# Headers a GET and a HEAD answer differ in by nature.
OWN_HEADERS = {"x-request-id", "date"}


def headers_of(answer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {name: text for name, text in answer.headers.items() if name not in OWN_HEADERS}


@pytest.mark.parametrize(
    "path",
    [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v1/model",
        "/v1/models",
        "/v1/catalog",
        "/v1/experiments",
        "/v1/customers/12347",
        "/v1/customers/12347/offers?k=3",
        "/v1/customers/12347/consent",
        "/v1/customers/12347/data",
        "/v1/items/A01/similar",
        "/v1/items/nope/similar",
        "/v1/customers/12347/offers?k=0",
        "/openapi.json",
        "/docs",
        "/dashboard",
        "/no/such/route",
    ],
)
def test_head_answers_as_get_without_a_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code, head.text
    assert head.content == b""
    if path != "/metrics":  # the scrape's body (and length) grows with the requests counted
        assert headers_of(head) == headers_of(got)
    assert head.headers["x-request-id"]


def test_head_on_a_route_without_get_is_405_as_get_is(client: TestClient) -> None:
    for path in ("/v1/events", "/v1/admin/reload"):
        assert client.get(path).status_code == 405
        head = client.head(path)
        assert head.status_code == 405 and head.content == b""


def test_a_head_never_records_a_delivery(client: TestClient) -> None:
    """record=true on HEAD is refused, naming the field: a HEAD shows no offers, so nothing
    is delivered; the same GET then records as if no HEAD had come."""
    answer = client.head("/v1/customers/12347/offers?record=true&channel=email")
    assert answer.status_code == 422 and answer.content == b""
    export = client.get("/v1/customers/12347/data").json()
    assert [e for e in export["events"] if e["type"] == "offer_impression"] == []
    recorded = client.get("/v1/customers/12347/offers?record=true&channel=email").json()
    assert recorded["recorded"] is True


def test_the_refusal_names_record(models_dir) -> None:  # type: ignore[no-untyped-def]
    """What the 422 of a HEAD with record=true says, read through the app below the HEAD
    layer's body drop (the answer a GET of the same refusal would carry)."""
    from nbo.service.head import HEAD_STATE

    app = app_for(models_dir).app

    async def as_head_but_with_body(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            scope.setdefault("state", {})[HEAD_STATE] = True
        await app(scope, receive, send)

    with TestClient(as_head_but_with_body) as raw:
        body = assert_json_error(raw.get("/v1/customers/12347/offers?record=true"), 422)
    assert [detail["field"] for detail in body["details"]] == ["record"]
    assert "HEAD" in body["details"][0]["problem"]


def test_head_needs_the_key_get_needs(models_dir) -> None:  # type: ignore[no-untyped-def]
    """A probe gets no more than a GET would: the same role, the same 401."""
    entries = [KEYS[Role.read][1]]
    with app_for(models_dir, api_keys=entries) as client:
        assert client.head("/v1/customers/12347").status_code == 401
        assert client.head("/v1/customers/12347", headers=bearer(KEYS[Role.read][0])).is_success
        assert client.head("/health/live").status_code == 200


def test_a_head_with_record_is_refused_as_a_head_whatever_the_key_s_role(
    models_dir,  # type: ignore[no-untyped-def]
) -> None:
    """A read key's HEAD with record=true answered 403 (the write role record=true
    needs), though a HEAD never records: the answer is the 422 that says so, for every
    key the route admits. A GET with record=true still needs the write role."""
    path = "/v1/customers/12347/offers?record=true&channel=email"
    with app_for(models_dir, api_keys=ENTRIES) as client:
        for role in (Role.read, Role.write):
            answer = client.head(path, headers=bearer(KEYS[role][0]))
            assert answer.status_code == 422 and answer.content == b"", role
        assert client.head(path).status_code == 401
        assert client.get(path, headers=bearer(KEYS[Role.read][0])).status_code == 403
        export = client.get("/v1/customers/12347/data", headers=bearer(KEYS[Role.admin][0]))
        assert [e for e in export.json()["events"] if e["type"] == "offer_impression"] == []


def test_a_head_is_counted_and_logged_as_head(client: TestClient, logs: io.StringIO) -> None:
    client.head("/health/live")
    client.head("/v1/customers/12347/offers")
    samples = scrape(client)
    requests = "nbo_http_requests_total"
    assert value(samples, requests, route="/health/live", method="HEAD", status="200") == 1
    assert value(samples, requests, route=OFFERS, method="HEAD", status="200") == 1
    assert value(samples, requests, route="/health/live", method="GET") == 0
    heads = [line for line in access_lines(logs) if line["method"] == "HEAD"]
    assert [(line["route"], line["status"]) for line in heads] == [
        ("/health/live", 200),
        (OFFERS, 200),
    ]
    assert "customer" in heads[1]
