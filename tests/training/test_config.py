"""The training config: unknown fields refused, an unreadable file one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbo.core.errors import ConfigError
from training.config import TrainingConfig, config_warnings, load_training_config
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


@pytest.mark.parametrize(
    ("toml", "field", "given"),
    [
        ("k = true\n", "'k'", "(got true)"),  # was k = 1
        ('k = "10"\n', "'k'", '(got "10")'),  # was k = 10
        ("k = 10.0\n", "'k'", "(got 10.0)"),
        ("[ranker]\nenabled = 0\n", "'ranker.enabled'", "(got 0)"),  # was off
        ('[cycles]\nenabled = "no"\n', "'cycles.enabled'", '(got "no")'),
        ("suppression_days = true\n", "'suppression_days'", "got true"),  # was one day
        ("suppression_days = 7.5\n", "'suppression_days'", "got 7.5"),  # was seven
        ("[ranker]\nsearch_seconds = -1\n", "'ranker.search_seconds'", "(got -1)"),
        ("[ranker]\nsearch_trials = 7\n", "'ranker.search_trials'", "(got 7)"),
    ],
)
def test_config_values_are_taken_in_their_own_types_only(
    tmp_path: Path, toml: str, field: str, given: str
) -> None:
    path = tmp_path / "loose.toml"
    path.write_text(toml, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_training_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: config field {field}: "), message
    assert given in message


def test_toml_natural_types_are_taken(tmp_path: Path) -> None:
    """An integer where a number is wanted is that number (TOML writes ``2``, not 2.0),
    and the window is days or "all", as a number or a string."""
    path = tmp_path / "natural.toml"
    path.write_text(
        "suppression_days = 14\n[cycles]\nfloor_days = 2\ndead_time_quantile = 0\n"
        "[ranker]\nhalf_life_days = 30\nenabled = false\n[lifecycle]\nloyal_min_orders = 3\n",
        encoding="utf-8",
    )

    config = load_training_config(path)

    assert config.suppression_days == "14"
    assert config.cycles.floor_days == 2.0 and config.cycles.dead_time_quantile == 0.0
    assert config.ranker.half_life_days == 30.0 and config.ranker.enabled is False
    assert config.lifecycle.loyal_min_orders == 3.0
    path.write_text('suppression_days = "all"\n', encoding="utf-8")
    assert load_training_config(path).suppression.days is None


@pytest.mark.parametrize(
    ("toml", "field", "known"),
    [
        ("[als]\nfactor = 8\n", "'als.factor'", "(known in [als]: factors, iterations, "),
        ("holdout = 30\n", "'holdout'", "(known: holdout_days, k, suppression_days, "),
        ("[ranker]\nsources = 3\n", "'ranker.sources'", "(known in [ranker]: enabled, "),
    ],
)
def test_an_unknown_key_lists_the_known_keys_of_its_table(
    tmp_path: Path, toml: str, field: str, known: str
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(toml, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_training_config(path)

    assert str(caught.value).startswith(f"{path}: unknown config field {field} {known}")


def test_a_bad_option_value_names_the_option_not_the_config_field() -> None:
    with pytest.raises(ConfigError) as caught:
        load_training_config(None, holdout_days=0)

    assert str(caught.value) == "--holdout-days: Input should be greater than or equal to 1"


def test_lifecycle_settings_that_undo_one_another_are_named() -> None:
    """Valid alone, contradictory together: loyal_max_risk above at_risk_threshold (at
    risk comes first, so the higher limit does nothing) and new_days above the churn
    horizon (new customers could never be at risk). Trained on, with a warning each."""
    assert config_warnings(TrainingConfig()) == []
    config = TrainingConfig.model_validate(
        {"lifecycle": {"loyal_max_risk": 0.8, "new_days": 200}, "churn": {"horizon_days": 90}}
    )

    risk, new = config_warnings(config)

    assert risk.startswith(
        "config field 'lifecycle.loyal_max_risk' (0.8) is above "
        "'lifecycle.at_risk_threshold' (0.5): "
    )
    assert new.startswith(
        "config field 'lifecycle.new_days' (200) is above 'churn.horizon_days' (90): "
    )
    equal = {"lifecycle": {"loyal_max_risk": 0.5, "new_days": 90}}
    assert config_warnings(TrainingConfig.model_validate(equal)) == []
