"""The training config: unknown fields refused."""

from __future__ import annotations

import pytest

from training.config import TrainingConfig
from training.ranker import WindowSettings, min_history_days


def test_training_config_rejects_unknown_churn_and_lifecycle_fields() -> None:
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"churn": {"horizon": 90}})
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"lifecycle": {"loyal_min_orders": 0}})
    config = TrainingConfig.model_validate(
        {"churn": {"horizon_days": 60, "snapshots": 2}, "lifecycle": {"new_days": 14}}
    )
    assert config.churn.horizon_days == 60 and config.lifecycle.new_days == 14


@pytest.mark.parametrize(
    ("settings", "days"),
    [
        ({}, 45),  # the default 30-day window and half as much again
        ({"suppression_days": "10"}, 15),
        ({"suppression_days": "all", "holdout_days": 20}, 30),  # no window length: holdouts
        ({"suppression_days": "0"}, 45),
        ({"suppression_days": "10", "ranker": {"min_history_days": 75}}, 75),  # as set
    ],
)
def test_a_training_window_needs_one_and_a_half_suppression_windows_of_history(
    settings: dict[str, object], days: int
) -> None:
    config = TrainingConfig.model_validate(settings)
    assert min_history_days(config) == days
    assert WindowSettings.from_config(config).min_history_days == days
