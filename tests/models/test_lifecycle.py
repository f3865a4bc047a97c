"""Lifecycle stages: each rule, their precedence, and the thresholds in the manifest."""

from __future__ import annotations

import dataclasses

import numpy as np

from nbo.core.vocabulary import STAGES
from nbo.data.features import FEATURE_INDEX, FEATURE_NAMES
from nbo.models.lifecycle import LifecycleThresholds, stages_of

THRESHOLDS = LifecycleThresholds(
    horizon_days=90,
    new_days=30,
    at_risk_threshold=0.5,
    loyal_max_risk=0.3,
    loyal_min_orders=10,
    loyal_min_monetary=1000,
)


def _rows(*customers: dict[str, float]) -> np.ndarray:
    """Feature rows with the given recency, tenure, frequency and monetary (rest NaN)."""
    features = np.full((len(customers), len(FEATURE_NAMES)), np.nan)
    for row, values in enumerate(customers):
        for name, value in values.items():
            features[row, FEATURE_INDEX[name]] = value
    return features


def _customer(
    recency: float, tenure: float, orders: float = 3, monetary: float = 100
) -> dict[str, float]:
    return {
        "recency_days": recency,
        "tenure_days": tenure,
        "frequency": orders,
        "monetary": monetary,
    }


def test_each_rule_gives_its_stage() -> None:
    features = _rows(
        {"frequency": 0, "monetary": 0},  # no purchase at all
        _customer(recency=5, tenure=5, orders=1),  # first purchase 5 days ago
        _customer(recency=120, tenure=400),  # no purchase for more than 90 days
        _customer(recency=10, tenure=200),  # risky
        _customer(recency=10, tenure=400, orders=12, monetary=2000),  # big and safe
        _customer(recency=10, tenure=400, orders=12, monetary=2000),  # big, not safe enough
        _customer(recency=10, tenure=400, orders=12, monetary=500),  # frequent, small
        _customer(recency=20, tenure=100),  # nothing special
    )
    risk = np.array([np.nan, 0.2, 0.9, 0.7, 0.1, 0.4, 0.1, 0.2])

    stages = stages_of(features, risk, THRESHOLDS)

    assert stages.tolist() == [
        "new",
        "new",
        "lapsed",
        "at_risk",
        "loyal",
        "active",
        "active",
        "active",
    ]
    assert set(stages) <= set(STAGES)


def test_precedence_lapsed_new_at_risk_loyal() -> None:
    features = _rows(
        _customer(recency=120, tenure=150, orders=20, monetary=5000),  # lapsed and new
        _customer(recency=5, tenure=5, orders=20, monetary=5000),  # new and at risk
        _customer(recency=5, tenure=300, orders=20, monetary=5000),  # at risk and loyal-sized
        _customer(recency=90, tenure=300),  # exactly the horizon: not lapsed yet
        _customer(recency=30, tenure=30),  # exactly new_days: still new
    )
    wide_new = dataclasses.replace(THRESHOLDS, new_days=200)

    stages = stages_of(features, np.array([0.1, 0.9, 0.9, 0.1, 0.1]), wide_new)

    assert stages.tolist()[:3] == ["lapsed", "new", "at_risk"]
    assert stages_of(features[3:], np.array([0.1, 0.1]), THRESHOLDS).tolist() == [
        "active",
        "new",
    ]


def test_without_a_churn_model_nobody_is_at_risk_and_loyal_rests_on_size() -> None:
    features = _rows(
        _customer(recency=10, tenure=400, orders=12, monetary=2000),
        _customer(recency=10, tenure=200),
    )
    assert stages_of(features, None, THRESHOLDS).tolist() == ["loyal", "active"]
    # Artifacts without loyal thresholds have no loyal customers.
    assert stages_of(features, None, LifecycleThresholds()).tolist() == ["active", "active"]


def test_thresholds_round_trip_through_the_manifest() -> None:
    section = {**THRESHOLDS.to_dict(), "stages": {"new": 3}, "as_of": "2026-01-01"}
    assert LifecycleThresholds.from_manifest(section) == THRESHOLDS
    assert LifecycleThresholds.from_manifest(None) == LifecycleThresholds()
