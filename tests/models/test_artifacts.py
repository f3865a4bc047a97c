"""Artifacts: atomic versioned writes, verified loads, and the serving model built from them."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import small_training_config

from nbo.core.errors import ArtifactError
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import (
    CURRENT,
    MANIFEST,
    SCHEMA_VERSION,
    current_version,
    list_versions,
    load_artifact,
    new_version,
    set_current,
    write_artifact,
)
from nbo.models.served import load_serving_model
from training import publish
from training.pipeline import TrainResult, train


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "user_factors": rng.random((4, 3), dtype=np.float32),
        "item_factors": rng.random((5, 3), dtype=np.float32),
        "customer_ids": np.array(["007", "17850", "c", "d"]),
        "counts": np.array([1, 2, 3], dtype=np.int64),
    }


def _documents() -> dict[str, Any]:
    return {"item_names": {"00123": "RED MUG", "B": "Ünïcode ☕"}, "extra": [1, 2.5, None]}


def _write(models: Path, version: str = "v1", **manifest: Any) -> Path:
    return write_artifact(models, version, _arrays(), _documents(), manifest or {"note": "x"})


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# --- write and load -------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path: Path, mmap: bool) -> None:
    models = tmp_path / "models"

    path = _write(models, "v1", note="hello")
    artifact = load_artifact(models, mmap=mmap)

    assert path == models / "v1"
    assert artifact.path == path
    assert artifact.version == "v1"
    assert set(artifact.arrays) == set(_arrays())
    for name, expected in _arrays().items():
        loaded = artifact.arrays[name]
        assert loaded.dtype == expected.dtype, name
        assert np.array_equal(loaded, expected), name
    assert artifact.documents == _documents()
    assert artifact.manifest["note"] == "hello"
    assert artifact.manifest["version"] == "v1"
    assert artifact.manifest["schema_version"] == SCHEMA_VERSION
    assert set(artifact.manifest["files"]) == {
        "user_factors.npy",
        "item_factors.npy",
        "customer_ids.npy",
        "counts.npy",
        "item_names.json",
        "extra.json",
    }


def test_write_points_current_at_the_new_version(tmp_path: Path) -> None:
    models = tmp_path / "models"

    _write(models, "v1")
    assert current_version(models) == "v1"
    _write(models, "v2")

    assert (models / CURRENT).read_text(encoding="utf-8") == "v2\n"
    assert current_version(models) == "v2"
    assert load_artifact(models).version == "v2"
    assert load_artifact(models, "v1").version == "v1"
    assert list_versions(models) == ["v1", "v2"]


def test_no_temporary_folders_or_pointer_files_remain(tmp_path: Path) -> None:
    models = tmp_path / "models"

    _write(models, "v1")
    _write(models, "v2")

    assert sorted(p.name for p in models.iterdir()) == [CURRENT, "v1", "v2"]
    assert not [p for p in models.rglob("*") if p.name.startswith(".")]


def test_writing_an_existing_version_raises_and_leaves_it_untouched(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    _write(models, "v2")
    before = {p.name: p.read_bytes() for p in (models / "v1").iterdir()}
    different = {"user_factors": np.zeros((2, 2), dtype=np.float32)}

    with pytest.raises(ArtifactError) as caught:
        write_artifact(models, "v1", different, {}, {})

    assert str(caught.value) == f"model version v1 already exists in {models}"
    assert {p.name: p.read_bytes() for p in (models / "v1").iterdir()} == before
    assert current_version(models) == "v2"
    assert sorted(p.name for p in models.iterdir()) == [CURRENT, "v1", "v2"]


def test_new_version_is_sortable_time_plus_fingerprint() -> None:
    from datetime import UTC, datetime

    early = new_version("abcdef0123456789", now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    late = new_version("0000000000", now=datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC))

    assert early == "20240506T070809Z-abcdef01"
    assert late == "20240506T070810Z-00000000"
    assert sorted([late, early]) == [early, late]


# --- refusing to load -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["user_factors.npy", "counts.npy", "item_names.json"])
def test_corrupted_file_is_refused(tmp_path: Path, name: str) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    _flip_last_byte(models / "v1" / name)

    with pytest.raises(ArtifactError) as caught:
        load_artifact(models)

    message = str(caught.value)
    assert "checksum" in message
    assert name in message
    assert message.startswith("model v1:")


def test_corrupted_file_with_same_size_and_valid_format_is_refused(tmp_path: Path) -> None:
    # A .npy whose data changed but is still a perfectly loadable array.
    models = tmp_path / "models"
    _write(models, "v1")
    target = models / "v1" / "item_factors.npy"
    tampered = np.load(target)
    tampered[0, 0] += 1.0
    np.save(target, tampered, allow_pickle=False)

    expected = re.escape("item_factors.npy is corrupt (checksum mismatch)")
    with pytest.raises(ArtifactError, match=expected):
        load_artifact(models)


def _edit_manifest(models: Path, version: str, **changes: Any) -> None:
    path = models / version / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(changes)
    path.write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize("schema", [2, 0, None])
def test_unsupported_schema_version_is_refused(tmp_path: Path, schema: Any) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    _edit_manifest(models, "v1", schema_version=schema)

    with pytest.raises(ArtifactError) as caught:
        load_artifact(models)

    message = str(caught.value)
    assert f"schema version {schema} is not supported" in message
    assert f"reads schema {SCHEMA_VERSION}" in message


def test_manifest_without_files_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    _edit_manifest(models, "v1", files={})

    with pytest.raises(ArtifactError, match="manifest lists no files"):
        load_artifact(models)


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    (models / "v1" / MANIFEST).write_text("{not json", encoding="utf-8")

    with pytest.raises(ArtifactError, match=re.escape("manifest.json is not valid JSON")):
        load_artifact(models)


@pytest.mark.parametrize("exists", [True, False])
def test_missing_current(tmp_path: Path, exists: bool) -> None:
    models = tmp_path / "models"
    if exists:
        models.mkdir()

    with pytest.raises(ArtifactError) as caught:
        load_artifact(models)

    assert str(caught.value) == (
        f"no model in {models} (no CURRENT file): train one with 'nbo train'"
    )


def test_empty_current(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    (models / CURRENT).write_text("\n", encoding="utf-8")

    with pytest.raises(ArtifactError, match="is empty"):
        load_artifact(models)


def test_current_pointing_at_a_missing_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    (models / CURRENT).write_text("v9\n", encoding="utf-8")

    with pytest.raises(ArtifactError) as caught:
        load_artifact(models)

    assert str(caught.value).startswith("model v9:")
    assert "manifest.json is missing" in str(caught.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    (models / "v1" / "user_factors.npy").unlink()

    with pytest.raises(ArtifactError) as caught:
        load_artifact(models)

    assert str(caught.value) == "model v1: file user_factors.npy is missing"


def test_set_current_refuses_an_unknown_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")

    with pytest.raises(ArtifactError, match="cannot point CURRENT at v7"):
        set_current(models, "v7")

    assert current_version(models) == "v1"


def test_list_versions_of_a_missing_folder(tmp_path: Path) -> None:
    assert list_versions(tmp_path / "nothing") == []


# --- the serving model ----------------------------------------------------------------


def test_serving_model_scores_equal_the_in_memory_model(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture the arrays the trainer hands to write_artifact; the loaded model must score
    exactly the same (save -> load changes nothing)."""
    captured: dict[str, np.ndarray] = {}
    real_write = publish.write_artifact

    def capturing_write(models_dir: Path, version: str, arrays: dict, *rest: Any) -> Path:
        captured.update({name: np.array(value, copy=True) for name, value in arrays.items()})
        return real_write(models_dir, version, arrays, *rest)

    monkeypatch.setattr(publish, "write_artifact", capturing_write)
    models = tmp_path / "models"
    result = train(planted_csv, load_mapping("canonical"), models, small_training_config())

    model = load_serving_model(models)

    assert model.version == result.version
    expected = captured["user_factors"] @ captured["item_factors"].T
    loaded = np.asarray(model.als.user_factors) @ np.asarray(model.als.item_factors).T
    assert expected.shape == (60, 20)
    assert np.array_equal(loaded, expected)
    assert model.customers.ids.tolist() == captured["customer_ids"].tolist()
    assert model.items.ids.tolist() == captured["item_ids"].tolist()
    assert np.array_equal(model.indptr, captured["history_indptr"])
    assert np.array_equal(model.history_items, captured["history_indices"])
    assert np.array_equal(model.history_confidence, captured["history_confidence"])
    assert np.array_equal(model.history_last_purchase, captured["history_last_purchase"])
    assert np.array_equal(model.popularity, captured["popularity"])
    # Hyperparameters come back from the manifest.
    assert model.als.factors == 8
    assert model.als.regularization == pytest.approx(0.1)


def test_serving_model_from_the_trained_fixture(trained: TrainResult, models_dir: Path) -> None:
    model = load_serving_model(models_dir)
    assert trained.path is not None

    assert model.version == trained.version
    assert len(model.customers) == 60
    assert len(model.items) == 20
    user = np.load(trained.path / "user_factors.npy")
    item = np.load(trained.path / "item_factors.npy")
    assert np.array_equal(
        np.asarray(model.als.user_factors) @ np.asarray(model.als.item_factors).T,
        user @ item.T,
    )
    # Popular order: most distinct buyers first, ties by item index.
    popularity = np.asarray(model.popularity)
    order = model.popular_order.tolist()
    assert sorted(order) == list(range(20))
    assert all((popularity[a], -a) >= (popularity[b], -b) for a, b in itertools.pairwise(order))


def test_serving_model_refuses_an_artifact_without_the_model_arrays(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")

    with pytest.raises(ArtifactError, match="model v1: missing arrays"):
        load_serving_model(models)


def test_serving_model_refuses_inconsistent_arrays(tmp_path: Path, trained: TrainResult) -> None:
    """A checksum-valid artifact whose customer ids do not match the factor rows."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    arrays = dict(source.arrays)
    arrays["customer_ids"] = arrays["customer_ids"][:-1]
    models = tmp_path / "models"
    manifest = {"config": source.manifest["config"]}
    write_artifact(models, "bad", arrays, {}, manifest)

    with pytest.raises(ArtifactError) as caught:
        load_serving_model(models)

    assert "inconsistent arrays" in str(caught.value)
    assert "user_factors rows = customers" in str(caught.value)
    assert "history rows = customers" in str(caught.value)
