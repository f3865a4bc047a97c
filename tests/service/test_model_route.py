"""GET /v1/model: what the manifest of the served version says."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support import app_for

from training.pipeline import TrainResult


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


def test_model_endpoint_shows_the_thresholds_the_stages_use(
    client: TestClient, manifest: dict
) -> None:
    """The config says null for the loyal thresholds the trainer derives from the data;
    the summary shows the derived ones, which the profiles apply, and their origin."""
    body = client.get("/v1/model").json()

    assert body["config"]["lifecycle"]["loyal_min_orders"] is None
    lifecycle = body["lifecycle"]
    derived = manifest["lifecycle"]
    assert lifecycle["loyal_min_orders"] == derived["loyal_min_orders"] is not None
    assert lifecycle["loyal_min_monetary"] == derived["loyal_min_monetary"] is not None
    assert lifecycle["loyal_min_orders_from"].startswith("p80 of the")
    assert lifecycle["at_risk_threshold"] == 0.5 and lifecycle["loyal_max_risk"] == 0.3
    assert lifecycle["new_days"] == 30 and lifecycle["horizon_days"] == 90
    assert lifecycle["churn_model"] is False and lifecycle["value"] == "money"


def test_model_endpoint_shows_whether_propensities_are_the_chance_of_buying(
    client: TestClient, manifest: dict, churn_trained: TrainResult
) -> None:
    """The calibration report, the buying curve's quality among it, and whether product
    propensities are unconditional. The planted model has no churn model: no buying
    curve, and the summary says the figures are conditional and why."""
    planted = client.get("/v1/model").json()["propensity"]
    assert planted["cf"] == manifest["propensity"]["cf"]
    assert planted["calibrated"] is True and planted["unconditional"] is False
    assert "conditional on buying something" in planted["buying"]["reason"]

    assert churn_trained.path is not None
    with app_for(churn_trained.path.parent) as churn_client:
        body = churn_client.get("/v1/model").json()["propensity"]
    assert body["unconditional"] is True
    buying = churn_trained.manifest["propensity"]["buying"]
    assert body["buying"] == buying and buying["brier"] < buying["brier_constant"]
