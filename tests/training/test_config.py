"""The training config: unknown fields refused."""

from __future__ import annotations

import pytest

from training.config import TrainingConfig


def test_training_config_rejects_unknown_churn_and_lifecycle_fields() -> None:
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"churn": {"horizon": 90}})
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"lifecycle": {"loyal_min_orders": 0}})
    config = TrainingConfig.model_validate(
        {"churn": {"horizon_days": 60, "snapshots": 2}, "lifecycle": {"new_days": 14}}
    )
    assert config.churn.horizon_days == 60 and config.lifecycle.new_days == 14
