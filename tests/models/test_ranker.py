"""The ranker's scorer: the service's C-API scores are LightGBM's own."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from nbo.core.vocabulary import STAGES
from nbo.models.candidates import FEATURES
from nbo.models.ranker import RankerScorer


def test_the_scorer_gives_the_boosters_own_scores() -> None:
    """The service's C-API scorer and LightGBM's Booster.predict agree on features in
    either memory layout, with missing values and the categorical stage."""
    rng = np.random.default_rng(0)
    n_rows, width = 600, len(FEATURES)
    features = rng.normal(size=(n_rows, width)).astype(np.float32)
    stage = FEATURES.index("customer_stage")
    features[:, stage] = rng.integers(0, len(STAGES), n_rows)
    features[rng.random((n_rows, width)) < 0.1] = np.nan
    labels = (np.nan_to_num(features[:, 0]) + rng.normal(size=n_rows) > 0.5).astype(int)
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(
            features,
            label=labels,
            group=[20] * (n_rows // 20),
            feature_name=list(FEATURES),
            categorical_feature=["customer_stage"],
        ),
        num_boost_round=20,
    )
    scorer = RankerScorer(booster)
    expected = booster.predict(features)
    np.testing.assert_allclose(scorer.predict(features), expected, rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(np.asfortranarray(features)), expected, rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(features[::2]), expected[::2], rtol=1e-6)
    assert scorer.predict(features[:0]).shape == (0,)
    with pytest.raises(ValueError, match=f"expected {len(FEATURES)} features"):
        scorer.predict(features[:, :-1])
