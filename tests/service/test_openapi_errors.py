"""The answers of every status a route gives, checked against what ``/openapi.json``
declares for it (JSON Schema, with jsonschema-rs): a client generated from the document,
or one that checks answers against it, meets no answer it does not describe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
from fastapi.testclient import TestClient
from httpx import Response
from support import app_for, purchase_event

from nbo.service.deps import get_store
from nbo.service.schemas import ErrorCode
from nbo.store.base import StoreUnavailable


def template_of(document: dict[str, Any], path: str) -> str:
    for template in document["paths"]:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"no path of the document matches {path}")


def assert_documented(client: TestClient, answer: Response, status: int) -> None:
    """``answer`` has ``status`` and a JSON body valid under the schema the document
    declares for its operation and status, which also declares X-Request-ID."""
    assert answer.status_code == status, answer.text
    document = client.get("/openapi.json").json()
    request = answer.request
    operation = document["paths"][template_of(document, request.url.path)]
    declared = operation[request.method.lower()]["responses"].get(str(status))
    assert declared is not None, (request.method, request.url.path, status)
    schema = declared["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    errors = [error.message for error in validator.iter_errors(answer.json())]
    assert not errors, (request.method, request.url.path, status, errors, answer.json())
    assert "X-Request-ID" in declared["headers"] and answer.headers["x-request-id"]


def test_errors_are_declared_as_the_service_sends_them(client: TestClient) -> None:
    """Every 422 was declared as FastAPI's ``{"detail": [...]}``; 404 on similar items and
    experiment reports, 400 and 413 on bodies and 503 were not declared at all."""
    offers = "/v1/customers/a00/offers"
    assert_documented(client, client.get(f"{offers}?k=3"), 200)
    assert_documented(client, client.get(f"{offers}?k=0"), 422)
    assert_documented(client, client.get("/v1/model?nocache=1"), 422)
    assert_documented(client, client.get("/v1/items/nope/similar"), 404)
    assert_documented(client, client.get("/v1/experiments/nope/report"), 404)
    fixed = {"X-Request-ID": "documented-1"}
    client.get(f"{offers}?record=true", headers=fixed)
    assert_documented(client, client.get(f"{offers}?record=true", headers=fixed), 409)
    consent = "/v1/customers/a00/consent"
    assert_documented(client, client.put(consent, json={"personalization": "yes"}), 422)
    sent_as_latin1 = {"content-type": "application/json"}
    assert_documented(
        client, client.put(consent, content=b'{"a": "\xff"}', headers=sent_as_latin1), 400
    )
    gzipped = {"content-type": "application/json", "content-encoding": "gzip"}
    assert_documented(client, client.put(consent, content=b"x", headers=gzipped), 415)
    # The events route's two 422s: every event rejected, and a body refused whole.
    assert_documented(client, client.post("/v1/events", json={"type": "refund"}), 422)
    assert_documented(client, client.post("/v1/events", json={"events": 3}), 422)
    posted = client.post("/v1/events", json=purchase_event("doc-1", "a00", ["A01"]))
    assert_documented(client, posted, 200)


def test_413_and_503_are_declared(models_dir: Path, tmp_path: Path) -> None:
    with app_for(models_dir, max_body_bytes=1024) as client:
        big = {"personalization": True, "channels": {"email": True}, "pad": "x" * 2000}
        assert_documented(client, client.put("/v1/customers/a00/consent", json=big), 413)

        def away() -> None:
            raise StoreUnavailable("the store is unavailable (test)")

        client.app.dependency_overrides[get_store] = away  # type: ignore[attr-defined]
        assert_documented(client, client.get("/v1/customers/a00/consent"), 503)
    empty = tmp_path / "models"
    empty.mkdir()
    with app_for(empty, require_model=False) as client:
        assert_documented(client, client.get("/v1/customers/a00/offers"), 503)
        assert_documented(client, client.get("/v1/items/A00/similar"), 503)


def test_every_refused_file_is_described_alike(client: TestClient) -> None:
    """The catalogue's and the experiments' refusals (GET /v1/catalog, the reload's
    answer) carry the same three fields, described the same, from one model."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = ("last_error", "last_error_problems", "last_error_at")
    holders = ("CatalogResponse", "CatalogStatusOut", "ExperimentsStatusOut")
    described = [{f: schemas[name]["properties"][f] for f in fields} for name in holders]
    assert described[0] == described[1] == described[2]
    said = described[0]["last_error"]["description"]
    assert "what was loaded from it before still serves" in said
    assert described[0]["last_error_problems"]["anyOf"][0] == {
        "items": {"type": "string"},
        "type": "array",
    }


def test_operation_ids_are_the_handlers_names(client: TestClient) -> None:
    """Client generators name each call after its operationId: FastAPI's default
    (``get_offers_v1_customers__customer_id__offers_get``) carried the path and the
    method into every generated function and module name."""
    document = client.get("/openapi.json").json()
    ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    assert len(ids) == len(set(ids))
    by_path = {
        (method, path): operation["operationId"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert by_path["get", "/v1/customers/{customer_id}/offers"] == "get_offers"
    assert by_path["post", "/v1/events"] == "post_events"
    assert by_path["delete", "/v1/customers/{customer_id}"] == "erase_customer"
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][a-z_]*", operation_id) and "v1" not in operation_id


def test_every_field_an_answer_always_sends_is_required(client: TestClient) -> None:
    """pydantic left a field with a default out of ``required`` in answers too, where it
    is always sent: a generated client typed ``recorded`` or ``removed`` of an offers
    answer as maybe absent. What only answers use requires every field (and the real
    answers still validate); a request's schemas keep their optional fields."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("OffersResponse", "OfferOut", "CustomerProfileOut", "ErasureReceiptOut"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    assert "recorded" in schemas["OffersResponse"]["required"]
    assert "channels" not in schemas["ConsentIn"].get("required", [])
    assert "order_id" not in schemas["PurchaseEvent"].get("required", [])
    offers = "/v1/customers/a00/offers"
    assert_documented(client, client.get(f"{offers}?k=3"), 200)
    assert_documented(client, client.get(f"{offers}?record=true&channel=email"), 200)
    assert_documented(client, client.get(f"{offers}?record=true&channel=email"), 200)  # capped
    assert_documented(client, client.get("/v1/customers/nobody/offers"), 200)
    assert_documented(client, client.get("/v1/customers/a00"), 200)
    assert_documented(client, client.get("/v1/customers/nobody"), 200)
    assert_documented(client, client.get("/v1/customers/a00/data"), 200)
    assert_documented(client, client.get("/v1/customers/a00/consent"), 200)
    assert_documented(client, client.get("/v1/model"), 200)
    assert_documented(client, client.get("/v1/models"), 200)
    assert_documented(client, client.get("/v1/catalog"), 200)
    assert_documented(client, client.get("/v1/experiments"), 200)
    assert_documented(client, client.get("/v1/items/A01/similar?min_buyers=1"), 200)
    assert_documented(client, client.get("/health/ready"), 200)
    assert_documented(client, client.post("/v1/admin/reload"), 200)
    assert_documented(client, client.delete("/v1/customers/a01"), 200)


def test_the_error_codes_table_the_enum_and_the_document_agree(client: TestClient) -> None:
    """A client handles every code it may meet: docs/service.md's table, the enum in
    ``/openapi.json`` and ``ErrorCode`` list the same codes; a 400 and a 405 are told
    apart by their code (both said ``http_error``), and a 405's ``Allow`` and details
    name the methods the path takes."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text("utf-8")
    section = page.split("### Error codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", section, flags=re.MULTILINE)
    tabled = {code: int(status) for code, status in rows}
    assert list(tabled) == [code.value for code in ErrorCode]
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["ErrorResponse"]["properties"]["error"]["$ref"].endswith("/ErrorCode")
    assert schemas["ErrorCode"]["enum"] == list(tabled)
    consent = "/v1/customers/a00/consent"
    sent_as_latin1 = {"content-type": "application/json"}
    unreadable = client.put(consent, content=b'{"a": "\xff"}', headers=sent_as_latin1)
    wrong_method = client.delete(consent)
    for answer, code in [
        (unreadable, "bad_request"),
        (wrong_method, "method_not_allowed"),
        (client.get("/v1/nothing"), "not_found"),
        (client.get("/v1/customers/a00/offers?k=0"), "validation_error"),
    ]:
        assert answer.json()["error"] == code
        assert answer.status_code == tabled[code]
    assert wrong_method.headers["allow"] == "GET, HEAD, PUT"
    assert wrong_method.json()["details"] == [
        {"field": "method", "problem": "DELETE is not one of GET, HEAD, PUT"}
    ]


def test_the_request_id_header_is_declared_as_nbo_takes_it(client: TestClient) -> None:
    """``X-Request-ID`` was declared a plain string, though nbo replaces an id it cannot
    take (and refuses one with record=true): the document's schema now says what it
    takes, and agrees with the service on every sample, as sent and as answered."""
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/customers/{customer_id}/offers"]["get"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "X-Request-ID"]
    sent = jsonschema_rs.validator_for(parameter["schema"])
    answered = jsonschema_rs.validator_for(
        operation["responses"]["200"]["headers"]["X-Request-ID"]["schema"]
    )
    samples = ["a", "order-1.retry_2", "x" * 128, "x" * 129, "", "order:1", "a b", "é"]
    for sample in samples:
        answer = client.get(
            "/v1/customers/a00/offers?record=true", headers={"X-Request-ID": sample.encode("utf-8")}
        )
        taken = answer.status_code == 200
        assert sent.is_valid(sample) == taken, (sample, answer.status_code)
        assert answer.headers["x-request-id"] == sample if taken else answer.status_code == 422
        assert answered.is_valid(answer.headers["x-request-id"])
