"""Propensity: scores become probabilities of purchase, calibrated on the holdout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from nbo.core.checksums import sha256_file
from nbo.core.errors import ArtifactError
from nbo.models.artifacts import MANIFEST
from nbo.models.propensity import Curve, Propensity
from nbo.models.served import load_serving_model
from training.pipeline import TrainResult
from training.propensity import fit_curve


def test_a_curve_interpolates_between_breakpoints_and_clips_outside() -> None:
    curve = Curve(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.2, 0.6]))
    assert curve(np.array([-5.0, 0.5, 1.5, 9.0])).tolist() == pytest.approx([0, 0.1, 0.4, 0.6])


@pytest.mark.parametrize(
    "document",
    [
        {"horizon_days": 30, "cf": {"x": [0, 1], "y": [0, 0.5]}},  # no popular curve
        {"horizon_days": 30, "cf": {"x": [1, 0], "y": [0, 0.5]}, "popular": {"x": [1], "y": [0.1]}},
        {"horizon_days": 30, "cf": {"x": [0, 1], "y": [0, 1.5]}, "popular": {"x": [1], "y": [0.1]}},
        {"horizon_days": 30, "cf": {"x": [], "y": []}, "popular": {"x": [1], "y": [0.1]}},
    ],
)
def test_a_malformed_document_is_refused(document: dict) -> None:
    with pytest.raises(ArtifactError, match="propensity"):
        Propensity.from_document(document)


def test_the_trainer_publishes_calibrated_curves(trained: TrainResult) -> None:
    assert trained.path is not None
    model = load_serving_model(trained.path.parent, trained.version)
    assert model.propensity.calibrated
    assert model.propensity.horizon_days == trained.manifest["split"]["holdout_days"]
    report = trained.manifest["propensity"]
    cf = report["cf"]
    # Held-out customers: the curve fitted on the other half predicts their hit rate and
    # scores better than the constant base rate.
    assert cf["mean_predicted"] == pytest.approx(cf["observed"], abs=0.1)
    assert cf["brier"] <= cf["brier_constant"]
    # Monotone: a higher ALS score never means a lower probability.
    scores = np.linspace(-1, 2, 200)
    assert np.all(np.diff(model.propensity.of_scores(scores)) >= 0)
    ranks = np.arange(1, 60)
    assert np.all(np.diff(model.propensity.of_popular_ranks(ranks)) <= 0)


def test_planted_groups_make_top_candidates_likely(trained: TrainResult) -> None:
    """In the planted data each customer buys within their group, so the model's top
    candidates are bought in the holdout far more often than its last ones."""
    assert trained.path is not None
    model = load_serving_model(trained.path.parent, trained.version)
    factors = np.asarray(model.als.user_factors) @ np.asarray(model.als.item_factors).T
    top = model.propensity.of_scores(np.sort(factors, axis=1)[:, -1])
    bottom = model.propensity.of_scores(np.sort(factors, axis=1)[:, 0])
    assert top.mean() > bottom.mean() + 0.05


def test_an_artifact_without_curves_serves_uncalibrated(
    trained: TrainResult, tmp_path: Path
) -> None:
    """Older artifacts (before calibration) still load, marked uncalibrated."""
    assert trained.path is not None and trained.version is not None
    copy = tmp_path / trained.version
    shutil.copytree(trained.path, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["files"]["propensity.json"]
    (copy / "propensity.json").unlink()
    manifest["ranker"] = {"enabled": False}  # older artifacts had no ranker either
    del manifest["policy"]  # nor a declared policy
    (copy / MANIFEST).write_text(json.dumps(manifest))
    model = load_serving_model(tmp_path, trained.version)
    assert not model.propensity.calibrated
    assert 0 <= float(model.propensity.of_scores(np.array([0.7]))[0]) <= 1


def test_a_broken_curve_refuses_the_model(trained: TrainResult, tmp_path: Path) -> None:
    assert trained.path is not None and trained.version is not None
    copy = tmp_path / trained.version
    shutil.copytree(trained.path, copy)
    (copy / "propensity.json").write_text(json.dumps({"horizon_days": 30}))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["propensity.json"] = sha256_file(copy / "propensity.json")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="propensity"):
        load_serving_model(tmp_path, trained.version)


def test_the_curve_is_strictly_monotone_where_isotonic_regression_has_plateaus() -> None:
    """Scores 0..9 with hits that isotonic regression pools into plateaus: the fitted
    curve still gives every higher score a higher probability over the scores seen, and
    keeps the plateaus' levels at their mean scores."""
    rng = np.random.default_rng(0)
    scores = np.repeat(np.arange(10.0), 50)
    # Hit rates that fall back twice (violations the isotonic fit pools).
    rates = np.repeat([0.1, 0.3, 0.2, 0.2, 0.5, 0.4, 0.6, 0.6, 0.9, 0.8], 50)
    hits = (rng.random(len(scores)) < rates).astype(float)
    curve = fit_curve(scores, hits, np.ones(len(scores), dtype=bool), increasing=True)
    probabilities = curve(np.arange(10.0))
    assert np.all(np.diff(probabilities) > 0)
    isotonic = IsotonicRegression(out_of_bounds="clip").fit(scores, hits)
    assert set(np.round(curve.y, 9)) <= set(np.round(isotonic.predict(np.arange(10.0)), 9))
    # The popular list's curve decreases with the rank just as strictly.
    ranks = fit_curve(scores, hits[::-1], np.ones(len(scores), dtype=bool), increasing=False)
    assert np.all(np.diff(ranks(np.arange(10.0))) < 0)
