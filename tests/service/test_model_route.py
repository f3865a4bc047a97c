"""GET /v1/model: what the manifest of the served version says."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import app_for

from nbo.cli import main
from nbo.models.served import load_serving_model
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
    assert planted["rule_basis"] is None  # the ranker serves: no rule curve
    assert "conditional on buying something" in planted["buying"]["reason"]

    assert churn_trained.path is not None
    with app_for(churn_trained.path.parent) as churn_client:
        body = churn_client.get("/v1/model").json()["propensity"]
    assert body["unconditional"] is True
    buying = churn_trained.manifest["propensity"]["buying"]
    assert body["buying"] == buying and buying["brier"] < buying["brier_constant"]


def test_a_model_whose_manifest_times_carry_no_zone_still_loads_and_shows(
    churn_trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Manifests written before every time carried '+00:00' (the split's cutoff, the churn
    model's cutoffs, the lifecycle's as_of, the policy's validation cutoff, even the data's
    first and last purchase) load, with the same training end, and show as written."""
    assert churn_trained.path is not None
    models = tmp_path / "models"
    shutil.copytree(churn_trained.path.parent, models)
    path = models / churn_trained.path.name / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    old = _without_zones(manifest) | {"created_at": manifest["created_at"]}  # it had one
    assert not old["split"]["cutoff"].endswith("+00:00") and old != manifest
    path.write_text(json.dumps(old, indent=2), encoding="utf-8")

    served = load_serving_model(models)
    assert served.trained_until_s == load_serving_model(churn_trained.path.parent).trained_until_s
    assert served.trained_until_s == int(
        datetime.fromisoformat(old["data"]["last_purchase"]).replace(tzinfo=UTC).timestamp()
    )
    with app_for(models) as client:
        body = client.get("/v1/model").json()
        overview = client.get("/dashboard")
        listing = client.get("/dashboard/models")
    assert body["split"] == old["split"] and body["data"] == old["data"]
    assert body["policy_choice"] == old["policy"]
    assert overview.status_code == 200 and listing.status_code == 200
    assert f"purchases after {old['split']['cutoff'][:10]} (" in overview.text
    assert main(["models", "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out.startswith(f"{churn_trained.path.name}  (")


def _without_zones(document: Any) -> Any:
    """``document`` with '+00:00' cut from every ISO 8601 time, as older trainers wrote."""
    if isinstance(document, dict):
        return {key: _without_zones(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_without_zones(value) for value in document]
    if isinstance(document, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", document):
        return document.removesuffix("+00:00")
    return document


def test_the_listing_answers_without_a_model_loaded(models_dir: Path, tmp_path: Path) -> None:
    """With nothing loaded (an empty folder, or a CURRENT that names no version) the
    listing still answers: it reads only the folder, and a version to roll back to is
    what an operator needs then. It was a 503."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with app_for(empty, require_model=False) as client:
        answer = client.get("/v1/models")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["serving"] is None and body["models"] == []
    broken = tmp_path / "broken"
    shutil.copytree(models_dir, broken)
    (version,) = [p.name for p in broken.iterdir() if p.is_dir() and p.name[0].isdigit()]
    (broken / "CURRENT").write_text("20000101T000000Z-00000000\n", encoding="utf-8")
    with app_for(broken, require_model=False) as client:
        answer = client.get("/v1/models")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["serving"] is None and body["current"] is None
        assert body["current_problem"]
        assert [(m["version"], m["serving"]) for m in body["models"]] == [(version, False)]
