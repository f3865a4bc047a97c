"""GET /v1/model: what the manifest of the served version says."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_model_endpoint_matches_the_manifest(
    client: TestClient, current: str, manifest: dict
) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == current == manifest["version"]
    assert body["metrics"] == manifest["metrics"]
    assert body["schema_version"] == manifest["schema_version"]
    assert body["created_at"] == manifest["created_at"]
    assert body["config"] == manifest["config"]
    assert body["quality_gate"] == manifest["quality_gate"]
    assert body["policy"] == manifest["policy"]["name"]
    assert body["policy_choice"] == manifest["policy"]
    assert body["served"] == manifest["served"]
    # The fixture's model serves its ranker, compiled (lleaves is in the lock).
    assert body["policy"] == "ranker" and body["ranker_scoring"] == "compiled"
    assert body["customers"] == 60
    assert body["items"] == 20
