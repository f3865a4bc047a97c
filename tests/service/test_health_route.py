"""/health/live and /health/ready: ready with the model's version, and 503 (JSON) while a
service started without a model waits for one."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from support import CLOCK, assert_json_error

from nbo.service.app import create_app
from nbo.settings import Settings


def test_health(client: TestClient, current: str) -> None:
    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model_version"] == current
    assert ready.json()["store"] == "available"


def test_liveness_answers_its_status_only_in_its_schema_too(client: TestClient) -> None:
    """/health/live answers ``{"status": "ok"}`` and its OpenAPI schema says so; the
    store's state is readiness's. Before, it answered readiness's fields too, always
    null (``"store": null`` while the store was away)."""
    assert client.get("/health/live").json() == {"status": "ok"}
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    live = client.get("/openapi.json").json()["paths"]["/health/live"]["get"]
    ref = live["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert list(schemas[ref.rsplit("/", 1)[1]]["properties"]) == ["status"]
    ready = schemas["HealthResponse"]
    assert "store" in ready["properties"] and "store" in ready["required"]


def test_starts_unready_without_a_model_when_allowed(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "empty", require_model=False, clock=CLOCK)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/json")
        assert ready.json()["status"] == "not ready"
        assert ready.json()["reason"]
        body = assert_json_error(client.get("/v1/customers/a00/offers"), 503)
        assert body["error"] == "not_ready"
        assert_json_error(client.get("/v1/items/A00/similar"), 503)
        assert_json_error(client.get("/v1/model"), 503)
