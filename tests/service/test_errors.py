"""Errors answer JSON: an unknown route or method is a JSON 404 or 405, never HTML."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support import assert_json_error


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    body = assert_json_error(client.get("/no/such/route"), 404)
    assert body["error"] == "not_found"
    assert "<html" not in client.get("/no/such/route").text.lower()
    assert_json_error(client.post("/v1/customers/a00/offers"), 405)
