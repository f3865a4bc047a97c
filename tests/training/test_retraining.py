"""Retraining nightly into one models folder: older data than CURRENT's is refused, a
rerun on CURRENT's own data and config publishes no twin, one training at a time holds
the folder, and staging folders killed trainings left are removed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from support import assert_one_error_line, small_training_config

from nbo.cli import main
from nbo.core.errors import EXIT_REFUSED, EXIT_TEMPFAIL
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import ModelsDirBusy, library_versions, list_versions, lock_models_dir
from training.gate import StaleData, Unchanged
from training.pipeline import ModelRefused, TrainResult, train


def _current(models: Path) -> str:
    return (models / "CURRENT").read_text(encoding="utf-8").strip()


def _published(models: Path, data: Path) -> TrainResult:
    result = train(data, load_mapping("canonical"), models, small_training_config())
    assert result.version is not None
    return result


def test_older_data_than_the_current_model_is_refused_unless_forced(
    tmp_path: Path, planted_csv: Path, planted_purchases: pd.DataFrame
) -> None:
    # A file from last month, given by mistake, replaced a newer CURRENT (exit 0).
    models = tmp_path / "models"
    current = _published(models, planted_csv)
    older = tmp_path / "older.csv"
    end = planted_purchases["timestamp"].max()
    planted_purchases[planted_purchases["timestamp"] < end - pd.Timedelta(days=5)].to_csv(
        older, index=False
    )

    with pytest.raises(StaleData) as caught:
        train(older, load_mapping("canonical"), models, small_training_config())

    message = str(caught.value)
    assert f"before the data of the current model {current.version}" in message
    assert message.count("the data ends") == 1 and "which ends" in message and "--force" in message
    assert list_versions(models) == [current.version] and _current(models) == current.version

    code = main(["train", "--data", str(older), "--models-dir", str(models)])
    assert code == EXIT_REFUSED

    forced = train(older, load_mapping("canonical"), models, small_training_config(), force=True)
    assert forced.published and _current(models) == forced.version


def test_a_rerun_on_unchanged_data_and_config_publishes_no_twin(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It published a twin (same fingerprint, new name), and PREVIOUS named it, so
    # `nbo models --current previous` rolled back to the same model.
    models = tmp_path / "models"
    current = _published(models, planted_csv)

    with pytest.raises(Unchanged, match="unchanged: CURRENT already is this data and config"):
        train(planted_csv, load_mapping("canonical"), models, small_training_config())
    assert list_versions(models) == [current.version]
    assert not (models / "PREVIOUS").exists()

    # The command: one line, exit 0 (a night without new purchases is no failure).
    config = tmp_path / "small.toml"
    config.write_text(
        "[als]\nfactors = 8\niterations = 10\nregularization = 0.1\nrefit_iterations = 5\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    args = [
        "train",
        "--data",
        str(planted_csv),
        "--models-dir",
        str(models),
        "--config",
        str(config),
    ]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("unchanged: CURRENT already is this data and config")
    assert list_versions(models) == [current.version]

    forced = train(
        planted_csv, load_mapping("canonical"), models, small_training_config(), force=True
    )
    assert forced.published and len(list_versions(models)) == 2


def test_other_customers_left_out_are_not_unchanged_though_as_many(
    tmp_path: Path, planted_csv: Path
) -> None:
    # The rerun compared the counts of erased customers: one customer erased, then
    # another (one each night) was taken for the current model's own data.
    models = tmp_path / "models"
    mapping, config = load_mapping("canonical"), small_training_config()
    first = train(planted_csv, mapping, models, config, erased=["a09"], force=True)
    assert first.manifest["data"]["erased_customers"] == 1

    with pytest.raises(Unchanged):
        train(planted_csv, mapping, models, config, erased=["a09"])
    with pytest.raises(Unchanged):  # an id the file does not have drops nothing more
        train(planted_csv, mapping, models, config, erased=["a09", "nobody"])
    try:
        other = train(planted_csv, mapping, models, config, erased=["b27"])
    except ModelRefused as refused:  # gated, so not taken for unchanged
        other = refused.result
    data = other.manifest["data"]
    assert data["erased_customers"] == 1
    assert data["erased_digest"] != first.manifest["data"]["erased_digest"]

    withdrawn = train(planted_csv, mapping, models, config, erased=["a09"], withdrawn=["b27"])
    assert withdrawn.manifest["data"]["withdrawn_customers"] == 1


@pytest.mark.parametrize("library", ["nbo", "implicit", "lightgbm", "scikit-learn", "numpy"])
def test_a_rerun_after_an_upgrade_publishes_without_force(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    # A rerun after an upgrade of nbo or a library that fits the model was "unchanged":
    # the new versions' model was never published without --force.
    models = tmp_path / "models"
    current = _published(models, planted_csv)
    recorded = library_versions()
    monkeypatch.setattr("training.gate.library_versions", lambda: {**recorded, library: "999.0"})

    upgraded = _published(models, planted_csv)
    assert upgraded.published and _current(models) == upgraded.version != current.version
    # The same data and cutoff: compared exactly with the figure CURRENT records.
    gate = upgraded.manifest["quality_gate"]
    assert gate["passed"] is True and gate["tolerance"] == 0.0


def test_a_data_reading_library_upgrade_alone_is_unchanged(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    _published(models, planted_csv)
    recorded = library_versions()
    monkeypatch.setattr("training.gate.library_versions", lambda: {**recorded, "pyarrow": "0.1"})
    with pytest.raises(Unchanged):
        train(planted_csv, load_mapping("canonical"), models, small_training_config())


def test_a_second_training_into_a_held_models_folder_is_refused_at_once(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two at once each gated against the CURRENT they read before their fit, and both
    # published; the second is now refused before it reads anything.
    models = tmp_path / "models"
    with lock_models_dir(models):
        with pytest.raises(
            ModelsDirBusy, match=f"held by another training \\(pid {os.getpid()}\\)"
        ):
            train(planted_csv, load_mapping("canonical"), models, small_training_config())
        code = main(["train", "--data", str(planted_csv), "--models-dir", str(models)])
        _, err = capsys.readouterr()
        assert code == EXIT_TEMPFAIL
        assert_one_error_line(err, "held by another training", "try again")
        assert list_versions(models) == [] and not (models / "CURRENT").exists()
    # Released with the holder (flock: also when it is killed): the next one publishes.
    assert _published(models, planted_csv).published


def _staging(models: Path, name: str, age_s: float) -> Path:
    folder = models / name
    folder.mkdir(parents=True)
    (folder / "item_factors.npy").write_bytes(b"\0" * 1000)
    then = time.time() - age_s
    os.utime(folder, (then, then))
    return folder


def test_staging_folders_of_killed_trainings_are_removed(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A training SIGKILLed while publishing left .tmp-<version>-xxxx (a model's size)
    # that nothing removed. The next training removes every one (it holds the folder).
    models = tmp_path / "models"
    left = _staging(models, ".tmp-20260101T000000Z-abcdef12-1a2b3c4d", 0)

    result = _published(models, planted_csv)

    assert not left.exists() and result.cleaned == [left.name]

    # nbo models --prune: every one while no training holds the folder...
    old = _staging(models, ".tmp-20260101T000000Z-abcdef12-00000001", 7200)
    fresh = _staging(models, ".tmp-20260101T000000Z-abcdef12-00000002", 0)
    capsys.readouterr()
    with lock_models_dir(models):
        # ... and only those an hour old while one does (the other is its own).
        assert main(["models", "--models-dir", str(models), "--prune", "5"]) == 0
        out, _ = capsys.readouterr()
        assert f"removed {old.name} (the staging folder of a training killed" in out
        assert not old.exists() and fresh.exists()
    assert main(["models", "--models-dir", str(models), "--prune", "5"]) == 0
    assert not fresh.exists() and f"removed {fresh.name}" in capsys.readouterr().out


def test_json_says_the_outcome_for_scripts(tmp_path: Path, planted_csv: Path) -> None:
    models, outcome = tmp_path / "models", tmp_path / "outcome.json"
    args = [
        "train",
        "--data",
        str(planted_csv),
        "--models-dir",
        str(models),
        "--json",
        str(outcome),
    ]

    assert main(args) == 0
    published = json.loads(outcome.read_text(encoding="utf-8"))
    assert published["outcome"] == "published" and published["exit_status"] == 0
    assert published["version"] == _current(models)
    assert published["quality_gate"]["passed"] is None  # the first: nothing compared
    assert published["served"]["ndcg@10"] == published["quality_gate"]["served"]

    assert main(args) == 0
    unchanged = json.loads(outcome.read_text(encoding="utf-8"))
    assert unchanged["outcome"] == "unchanged" and unchanged["version"] is None
    assert unchanged["reason"].startswith("unchanged: CURRENT already is this data and config")

    with lock_models_dir(models):
        assert main(args) == EXIT_TEMPFAIL
    busy = json.loads(outcome.read_text(encoding="utf-8"))
    assert busy["outcome"] == "error" and busy["exit_status"] == EXIT_TEMPFAIL
    assert "held by another training" in busy["reason"]
