"""The training config: unknown fields refused, an unreadable file one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbo.core.errors import ConfigError
from training.config import TrainingConfig, load_training_config
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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe[als]\n", "not UTF-8 text (byte 0)"),
        ("[als]\nfactors = 8 # \u00e9\n".encode("latin-1"), "not UTF-8 text (byte 20)"),
    ],
)
def test_a_config_that_is_not_utf8_is_one_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as caught:
        load_training_config(path)

    assert str(caught.value) == f"{path}: {problem}"


def test_a_config_that_is_a_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_training_config(tmp_path)

    assert str(caught.value) == f"{tmp_path}: is a directory, not a training config (TOML)"


def test_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_training_config(tmp_path / "nope.toml")

    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Notepad's "UTF-8 with BOM": the mark is not text, and TOML would refuse it."""
    path = tmp_path / "config.toml"
    path.write_bytes("\ufeffholdout_days = 21\n".encode())

    assert load_training_config(path).holdout_days == 21
