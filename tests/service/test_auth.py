"""Access control through the real app: API keys with ordered roles in either header, every
route open or needing its documented role, the OpenAPI security schemes, and failed
checks logged by key id, never the key.

Keys are made by ``create_key`` (the code ``nbo keys create`` runs), one per role."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from support import CLOCK, ENTRIES, KEYS, bearer

from nbo.core.apikeys import Role
from nbo.service.app import create_app
from nbo.service.auth import OPEN_PATHS, role_of
from nbo.settings import Settings

READ, WRITE, ADMIN = (KEYS[role][0] for role in (Role.read, Role.write, Role.admin))


# The documented table (docs/service.md, nbo.service.auth): which role each route needs.
ROUTE_ROLES = {
    ("GET", "/v1/customers/{customer_id}/offers"): Role.read,
    ("GET", "/v1/customers/{customer_id}"): Role.read,
    ("GET", "/v1/customers/{customer_id}/consent"): Role.read,
    ("GET", "/v1/items/{item_id}/similar"): Role.read,
    ("GET", "/v1/model"): Role.read,
    ("GET", "/v1/models"): Role.read,
    ("GET", "/v1/catalog"): Role.read,
    ("GET", "/v1/experiments"): Role.read,
    ("GET", "/v1/experiments/{name}/report"): Role.read,
    ("POST", "/v1/events"): Role.write,
    ("PUT", "/v1/customers/{customer_id}/consent"): Role.write,
    ("DELETE", "/v1/customers/{customer_id}"): Role.admin,
    ("GET", "/v1/customers/{customer_id}/data"): Role.admin,
    ("POST", "/v1/admin/reload"): Role.admin,
    ("GET", "/dashboard"): Role.read,
    ("GET", "/dashboard/offers"): Role.read,
    ("GET", "/dashboard/campaigns"): Role.read,
    ("GET", "/dashboard/customer"): Role.read,
    ("GET", "/dashboard/experiments"): Role.read,
    ("GET", "/dashboard/experiments/{name}"): Role.read,
    ("GET", "/dashboard/models"): Role.read,
}


def purchase(event_id: str, customer: str) -> dict:
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": "2026-06-30T10:00:00Z",
        "order_id": f"o-{event_id}",
        "items": [{"item_id": "A01", "quantity": 1, "price": 2.0}],
    }


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock=CLOCK, api_keys=ENTRIES)
    with TestClient(create_app(settings)) as client:
        yield client


def assert_error(response, status: int, error: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == error and body["message"]
    return body


def test_no_key_is_401_json_with_a_bearer_challenge(client: TestClient) -> None:
    answer = client.get("/v1/customers/a00/offers")
    body = assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert body["details"] == [{"field": "Authorization", "problem": "missing"}]
    # Not FastAPI's own answer for a missing credential.
    assert "detail" not in body
    # The challenge is declared with the 401, on every operation that can answer it.
    document = client.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = operation["responses"].get("401")
            if declared is not None:
                assert "WWW-Authenticate" in declared["headers"], (method, path)


@pytest.mark.parametrize("value", [READ, f"Basic {READ}", "Token abc", "Bearer"])
def test_an_authorization_header_without_bearer_is_named_not_missing(
    client: TestClient, value: str
) -> None:
    """``Authorization: <key>`` (or ``Basic ...``) answered ``"problem": "missing"``
    though the header was there."""
    body = assert_error(
        client.get("/v1/customers/a00/offers", headers={"Authorization": value}),
        401,
        "unauthorized",
    )
    assert body["details"] == [{"field": "Authorization", "problem": "not 'Bearer <key>'"}]
    assert "must be 'Bearer <key>'" in body["message"]
    assert READ not in body["message"]


@pytest.mark.parametrize(
    "headers",
    [
        bearer(READ[:-4] + "AAAA"),  # a configured id with a wrong secret
        bearer("nbo_00000000_" + READ.split("_", 2)[2]),  # an unknown id
        bearer("not-an-nbo-key"),
        {"X-API-Key": ADMIN + "x"},
        {"Authorization": f"Basic {READ}"},  # not a Bearer credential: no key at all
    ],
)
def test_a_wrong_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    answer = client.get("/v1/customers/a00/offers", headers=headers)
    assert_error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"


def test_the_right_role_is_200_in_either_header(client: TestClient) -> None:
    for headers in (bearer(READ), {"X-API-Key": READ}, {"Authorization": f"bearer {READ}"}):
        answer = client.get("/v1/customers/a00/offers", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["customer_id"] == "a00"


def test_a_read_key_cannot_post_events_and_nothing_is_stored(client: TestClient) -> None:
    answer = client.post("/v1/events", json=purchase("e-read", "c-auth-1"), headers=bearer(READ))
    body = assert_error(answer, 403, "forbidden")
    assert "'write'" in body["message"] and "'read'" in body["message"]
    assert body["details"][0]["field"] == "Authorization"
    # The event was not stored: the write key now stores it as new, not as a duplicate.
    stored = client.post("/v1/events", json=purchase("e-read", "c-auth-1"), headers=bearer(WRITE))
    assert stored.status_code == 200, stored.text
    assert stored.json()["accepted"] == ["e-read"]


def test_a_read_key_cannot_record_a_delivery_and_nothing_is_recorded(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    offers = "/v1/customers/a00/offers?channel=email&record=true"
    with caplog.at_level(logging.WARNING, logger="nbo.service.auth"):
        answer = client.get(offers, headers=bearer(READ))
    body = assert_error(answer, 403, "forbidden")
    assert "record=true" in body["message"] and "'write'" in body["message"]
    assert body["details"] == [{"field": "record", "problem": "role 'read' is below 'write'"}]
    read_id = READ.split("_")[1]
    refusals = [r.getMessage() for r in caplog.records]
    assert any(read_id in line and "record=true" in line for line in refusals)
    # Without record, the read key still gets its offers.
    plain = client.get("/v1/customers/a00/offers?channel=email", headers=bearer(READ))
    assert plain.status_code == 200 and plain.json()["recorded"] is False
    # Nothing was recorded: the write key's delivery is the first one the email cap (one a
    # week) sees, and a second one is capped.
    first = client.get(offers, headers=bearer(WRITE))
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] is True
    assert client.get(offers, headers=bearer(ADMIN)).json()["recorded"] is False


def test_read_and_write_keys_cannot_erase_and_the_customer_stays(client: TestClient) -> None:
    customer = "c-auth-2"
    consent = {"personalization": False, "channels": {"email": False}}
    put = client.put(f"/v1/customers/{customer}/consent", json=consent, headers=bearer(WRITE))
    assert put.status_code == 200, put.text
    for key, role in ((READ, "read"), (WRITE, "write")):
        answer = client.delete(f"/v1/customers/{customer}", headers={"X-API-Key": key})
        body = assert_error(answer, 403, "forbidden")
        assert "'admin'" in body["message"] and f"'{role}'" in body["message"]
        assert body["details"][0]["field"] == "X-API-Key"
    still = client.get(f"/v1/customers/{customer}/consent", headers=bearer(READ)).json()
    assert still["stored"] is True and still["personalization"] is False
    # The admin key erases.
    erased = client.delete(f"/v1/customers/{customer}", headers=bearer(ADMIN))
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["consent_records"] == 1


def test_a_read_key_cannot_write_consent(client: TestClient) -> None:
    answer = client.put(
        "/v1/customers/c-auth-3/consent", json={"personalization": False}, headers=bearer(READ)
    )
    assert_error(answer, 403, "forbidden")
    assert client.get("/v1/customers/c-auth-3/consent", headers=bearer(READ)).json()["stored"] is (
        False
    )


def test_higher_roles_may_do_what_lower_roles_may(client: TestClient) -> None:
    for key in (READ, WRITE, ADMIN):
        for path in ("/v1/customers/a00/offers", "/v1/customers/a00", "/v1/catalog", "/v1/model"):
            answer = client.get(path, headers=bearer(key))
            assert answer.status_code == 200, (path, answer.text)
    for i, key in enumerate((WRITE, ADMIN)):
        answer = client.post(
            "/v1/events", json=purchase(f"e-up-{i}", "c-auth-4"), headers=bearer(key)
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == [f"e-up-{i}"]


def test_open_routes_answer_without_a_key(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def served_routes(app: Any) -> list[Any]:
    """The routes as served: FastAPI from 0.12x on keeps included routers whole in
    ``app.routes`` and walks them with ``iter_route_contexts``."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk is not None else list(app.routes)


def test_every_route_is_open_or_needs_its_documented_role(client: TestClient) -> None:
    """Walks the app's routes: a new route that names no role fails here until it does
    (or is added to OPEN_PATHS on purpose)."""
    seen = {}
    for route in served_routes(client.app):
        path = route.path
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            assert path in OPEN_PATHS, f"{path} is not an API route and not listed open"
            continue
        path = route.path_format  # /{customer_id}, as the docs name it: no ``:id``
        role = role_of(route)
        for method in route.methods:
            seen[(method, path)] = role
            if path in OPEN_PATHS:
                assert role is None, f"{method} {path} is listed open but needs {role}"
                continue
            assert role is not None, f"{method} {path} needs no role and is not open"
            # The check runs: without a key the route answers 401 before anything.
            answer = client.request(method, re.sub(r"\{[^}]+\}", "x", path))
            assert answer.status_code == 401, (method, path, answer.text)
    protected = {route: role for route, role in seen.items() if role is not None}
    assert protected == ROUTE_ROLES
    assert ("GET", "/health/ready") in seen  # the walk reached the included routers


def test_without_keys_every_route_is_open(models_dir: Path) -> None:
    """The local mode: no keys configured, no check (nbo serve then binds loopback only)."""
    with TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK))) as client:
        assert client.get("/v1/customers/a00/offers").status_code == 200
        # A key nobody configured is ignored, not refused.
        assert client.get("/v1/model", headers=bearer("whatever")).status_code == 200
        answer = client.post("/v1/events", json=purchase("e-open", "c-auth-5"))
        assert answer.status_code == 200 and answer.json()["accepted"] == ["e-open"]
        assert client.delete("/v1/customers/c-auth-5").status_code == 200


def test_the_openapi_spec_declares_the_key_schemes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    offers = spec["paths"]["/v1/customers/{customer_id}/offers"]["get"]
    assert {name for entry in offers["security"] for name in entry} == set(schemes)
    assert {"401", "403"} <= set(offers["responses"])
    (record,) = (p for p in offers["parameters"] if p["name"] == "record")
    assert "record=true needs a key with role 'write'" in record["description"]
    assert "security" not in spec["paths"]["/health/ready"]["get"]


def test_failed_checks_log_at_most_the_key_id_never_the_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    read_id = KEYS[Role.read][1].id
    wrong_secret = READ[:-4] + "AAAA"
    # A botched rotation: the secret cut short when pasted, so not even well formed.
    cut_secret = READ[:20]
    unknown = "nbo_0badc0de_" + "s3cr3t-unknown-key-material-123456789"
    client.get("/v1/customers/a00/offers")
    client.get("/v1/customers/a00/offers", headers=bearer(wrong_secret))
    client.get("/v1/customers/a00/offers", headers=bearer(cut_secret))
    client.get("/v1/customers/a00/offers", headers={"X-API-Key": unknown})
    client.delete("/v1/customers/a00", headers=bearer(READ))
    client.get("/v1/customers/a00/offers", headers=bearer(READ))

    lines = [
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    ]
    refusals = [line for line in lines if "refused" in line]
    assert len(refusals) == 5, lines
    assert sum(read_id in line and "wrong secret" in line for line in refusals) == 2
    assert any(read_id in line and "needs role admin" in line for line in refusals)
    # An unknown id is not logged: it may be part of something mistyped.
    assert not any("0badc0de" in line for line in lines)
    forbidden = [READ, wrong_secret, unknown, READ.split("_", 2)[2], unknown.split("_", 2)[2]]
    forbidden += [cut_secret]
    forbidden += [entry.sha256 for entry in ENTRIES]
    for line in lines:
        for secret in forbidden:
            assert secret not in line
