"""Propensity calibration in the trainer: curves published, the planted groups' top
candidates made likely, and curves strictly monotone where isotonic regression pools
plateaus."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from nbo.models.served import load_serving_model
from training.pipeline import TrainResult
from training.propensity import fit_curve


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
