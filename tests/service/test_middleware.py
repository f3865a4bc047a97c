"""The request middleware, through the real app: request ids (echoed when sane, made when
missing, on errors too, on recorded impressions) and one JSON access line per request,
labelled by route and holding no body, query, headers or customer id."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK, access_lines, app_for, log_lines, scrape, value

from nbo.core.apikeys import Role, create_key
from nbo.service.app import create_app
from nbo.service.deps import get_deciding
from nbo.settings import Settings
from nbo.store.sqlite import SQLiteStore

TODAY = "2026-06-30T11:00:00Z"
OFFERS = "/v1/customers/{customer_id}/offers"


def offers(client: TestClient, customer: str, **params: object) -> dict:
    answer = client.get(f"/v1/customers/{customer}/offers", params={"k": 5, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()


def purchase(event_id: str, customer: str, item: str, order: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": TODAY,
        "order_id": order,
        "items": [{"item_id": item, "quantity": 1, "price": 2.0}],
    }


HEX_ID = re.compile(r"[0-9a-f]{32}")


def test_request_id_is_echoed_when_sane(client: TestClient) -> None:
    sent = "Abc.DEF_123-xyz"
    answer = client.get("/v1/customers/a00/offers", headers={"X-Request-ID": sent})
    assert answer.headers["x-request-id"] == sent
    assert answer.json()["request_id"] == sent
    longest = "r" * 128
    assert client.get("/health/live", headers={"X-Request-ID": longest}).headers[
        "x-request-id"
    ] == (longest)


@pytest.mark.parametrize(
    "sent",
    ["", "has space", "r" * 129, "semi;colon", "new\\nline", 'quote"d', "ünïcode", "a/b"],
)
def test_an_insane_request_id_is_replaced(client: TestClient, sent: str) -> None:
    answer = client.get("/health/live", headers={"X-Request-ID": sent.encode()})
    assert HEX_ID.fullmatch(answer.headers["x-request-id"])


def test_request_id_is_generated_when_missing(client: TestClient) -> None:
    first = client.get("/v1/customers/a00/offers")
    second = client.get("/v1/customers/a00/offers")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert [first.json()["request_id"], second.json()["request_id"]] == ids


def test_error_responses_carry_the_request_id(client: TestClient, tmp_path: Path) -> None:
    for path, status in [
        ("/v1/nothing", 404),
        ("/v1/customers/a00/offers?k=0", 422),
        ("/v1/items/NOT-AN-ITEM/similar", 404),
    ]:
        answer = client.get(path, headers={"X-Request-ID": f"err-{status}"})
        assert answer.status_code == status
        assert answer.headers["x-request-id"] == f"err-{status}"
    with app_for(tmp_path / "none", require_model=False) as unready:
        answer = unready.get("/v1/customers/a00/offers", headers={"X-Request-ID": "err-503"})
        assert answer.status_code == 503 and answer.headers["x-request-id"] == "err-503"


def test_an_unexpected_error_answers_json_with_the_request_id(
    models_dir: Path, logs: io.StringIO
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app = create_app(Settings(models_dir=models_dir, clock=CLOCK))
    app.dependency_overrides[get_deciding] = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/customers/a00/offers", headers={"X-Request-ID": "boom-1"})
        assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
        assert answer.headers["x-request-id"] == "boom-1"
        samples = scrape(client)
    assert value(samples, "nbo_http_requests_total", route=OFFERS, status="500") == 1
    lines = [line for line in log_lines(logs) if line.get("request_id") == "boom-1"]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert "RuntimeError: a bug" in error["exception"]  # the traceback, in one JSON field
    assert [line["status"] for line in lines if line["logger"] == "nbo.access"] == [500]


def test_recorded_impressions_carry_the_clients_request_id(
    client: TestClient, isolated_store: Path
) -> None:
    # One request id for two customers: both deliveries are recorded in full.
    for customer in ("a00", "b00"):
        answer = client.get(
            f"/v1/customers/{customer}/offers",
            params={"k": 3, "record": True},
            headers={"X-Request-ID": "campaign-42"},
        )
        assert answer.json()["recorded"] is True and answer.json()["request_id"] == "campaign-42"
    store = SQLiteStore(isolated_store)
    try:
        for customer in ("a00", "b00"):
            shown = [e for e in store.events_of(customer) if e["type"] == "offer_impression"]
            assert len(shown) == 3
            assert {e["request_id"] for e in shown} == {"campaign-42"}
    finally:
        store.close()


def test_one_json_access_line_per_request(client: TestClient, logs: io.StringIO) -> None:
    client.get("/v1/customers/a00/offers", params={"k": 2}, headers={"X-Request-ID": "log-1"})
    client.get("/v1/customers/a00/offers", params={"k": 0}, headers={"X-Request-ID": "log-2"})
    client.get("/v1/items/A01/similar", headers={"X-Request-ID": "log-3"})
    client.get("/no/such/route", headers={"X-Request-ID": "log-4"})
    lines = access_lines(logs)
    assert [line["request_id"] for line in lines] == ["log-1", "log-2", "log-3", "log-4"]
    first = lines[0]
    assert first["level"] == "INFO" and first["time"].endswith("+00:00")
    assert {k: first[k] for k in ("method", "route", "status", "customer")} == {
        "method": "GET",
        "route": OFFERS,
        "status": 200,
        "customer": client.app.state.pseudonyms.of("a00"),  # never the id itself
    }
    assert "a00" not in logs.getvalue()
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert lines[1]["status"] == 422
    assert "customer" not in lines[2] and lines[2]["route"] == "/v1/items/{item_id}/similar"
    assert lines[3]["route"] == "unmatched" and "/no/such/route" not in json.dumps(lines[3])


def test_the_api_documentation_is_labelled_by_its_path(
    client: TestClient, logs: io.StringIO
) -> None:
    """/docs, /redoc and /openapi.json leave no route in the scope (FastAPI serves them
    outside its API routes): labelled by their fixed path, not as unmatched."""
    paths = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]
    for path in paths:
        assert client.get(path).status_code == 200
    assert [line["route"] for line in access_lines(logs)] == paths
    samples = scrape(client)
    for path in paths:
        assert value(samples, "nbo_http_requests_total", route=path, method="GET", status="200")
    assert not value(
        samples, "nbo_http_requests_total", route="unmatched", method="GET", status="200"
    )


def test_log_lines_hold_no_body_query_or_headers(client: TestClient, logs: io.StringIO) -> None:
    secret_item, secret_order = "ZZ-UNMISTAKABLE-ITEM-77", "ORDER-SECRET-991"
    headers = {"X-Request-ID": "quiet-1", "Authorization": "Bearer KEY-SECRET-123"}
    posted = client.post(
        "/v1/events",
        json=purchase("obs-secret-e1", "log-customer-5", secret_item, secret_order),
        headers=headers,
    )
    assert posted.status_code == 200
    bad = client.post("/v1/events", json={"type": "purchase", "items": [secret_item]})
    assert bad.status_code == 422
    client.get(
        "/v1/customers/log-customer-5/offers",
        params={"k": 3, "channel": "app", "record": True},
        headers=headers,
    )
    consent = {"personalization": False, "channels": {"email": False}}
    client.put("/v1/customers/log-customer-5/consent", json=consent, headers=headers)
    text = logs.getvalue()
    assert text.count('"logger": "nbo.access"') == 4  # logs were captured
    for secret in (secret_item, secret_order, "KEY-SECRET-123", "Bearer", "record=", "k=3"):
        assert secret not in text
    # A line a (thread-pool) route logs itself carries the request id too.
    consent_lines = [line for line in log_lines(logs) if "consent of customer" in line["message"]]
    assert [line["request_id"] for line in consent_lines] == ["quiet-1"]


def test_access_log_off(models_dir: Path, logs: io.StringIO) -> None:
    with app_for(models_dir, access_log=False) as client:
        offers(client, "a00")
        samples = scrape(client)
    assert access_lines(logs) == []
    assert value(samples, "nbo_http_requests_total", route=OFFERS) == 1  # metrics still on


def test_a_huge_customer_id_never_makes_a_huge_log_line(
    models_dir: Path, logs: io.StringIO
) -> None:
    """The probe: an unauthenticated GET /v1/customers/<100 kB id>/offers wrote a 100 kB
    access line. The line names the customer by a pseudonym of fixed length. (60 kB here:
    the test client refuses URLs over 64 kB.)"""
    key, entry = create_key(Role.read)
    huge = "x" * 60_000
    with app_for(models_dir, api_keys=[entry]) as client:
        assert client.get(f"/v1/customers/{huge}/offers").status_code == 401
        too_long = client.get(f"/v1/customers/{huge}/offers", headers={"X-API-Key": key})
        assert too_long.status_code == 422
        pseudonym = client.app.state.pseudonyms.of(huge)
    lines = logs.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) < 1_000
    assert huge[:300] not in logs.getvalue()
    assert [line["customer"] for line in access_lines(logs)] == [pseudonym, pseudonym]


def test_api_answers_carry_their_static_headers(client: TestClient) -> None:
    """Only the data export said ``Cache-Control: no-store``: a customer's profile,
    offers and consent could be kept by a browser or a proxy; and no JSON answer said
    ``X-Content-Type-Options: nosniff``. Each header is sent once."""
    customer = [
        client.get("/v1/customers/a00"),
        client.get("/v1/customers/a00/offers"),
        client.get("/v1/customers/a00/consent"),
        client.put("/v1/customers/a00/consent", json={"personalization": True}),
        client.get("/v1/customers/a00/data"),
        client.get("/v1/customers/a00/offers?k=0"),  # an error answer too
    ]
    for answer in customer:
        assert answer.headers.get_list("cache-control") == ["no-store"], answer.request.url
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"]
    other = client.get("/v1/catalog")
    assert other.status_code == 200 and other.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in other.headers
    live = client.get("/health/live")
    assert "x-content-type-options" not in live.headers and "cache-control" not in live.headers
