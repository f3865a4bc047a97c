"""Artifacts: atomic versioned writes, verified loads, CURRENT, and checksummed side files."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbo.core.errors import ArtifactError
from nbo.models.artifacts import (
    CURRENT,
    MANIFEST,
    SCHEMA_VERSION,
    current_version,
    list_versions,
    load_artifact,
    new_version,
    previous_version,
    set_current,
    write_artifact,
)


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

    # PREVIOUS: what CURRENT named before the second publication (the rollback).
    assert sorted(p.name for p in models.iterdir()) == [CURRENT, "PREVIOUS", "v1", "v2"]
    assert previous_version(models) == "v1"
    assert not [p for p in models.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), MemoryError(), KeyboardInterrupt()],
)
def test_a_write_that_fails_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    save = np.save
    saved: list[str] = []

    def fill_the_disk(file: Any, array: Any, **kwargs: Any) -> None:
        # The first array is written whole, the second finds the disk full.
        if saved:
            raise failure
        saved.append(str(file))
        save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", fill_the_disk)

    with pytest.raises(type(failure)):
        _write(models, "v2")

    assert saved
    assert sorted(p.name for p in models.iterdir()) == [CURRENT, "v1"]
    assert current_version(models) == "v1"


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
    assert sorted(p.name for p in models.iterdir()) == [CURRENT, "PREVIOUS", "v1", "v2"]


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


def _outside(tmp_path: Path) -> list[str]:
    """CURRENT contents that name a valid model outside the models folder."""
    _write(tmp_path / "elsewhere", "v2")
    return ["../elsewhere/v2", str(tmp_path / "elsewhere" / "v2"), "./../elsewhere/v2"]


def test_current_is_never_followed_outside_the_models_folder(tmp_path: Path) -> None:
    """A CURRENT holding a path (relative or absolute) would load whatever model it
    reaches; a version is a plain name inside the models folder."""
    models = tmp_path / "models"
    _write(models, "v1")
    for pointer in [*_outside(tmp_path), ".tmp-v1-1234", "v1/..", "..", "v1\x00"]:
        (models / CURRENT).write_text(pointer + "\n", encoding="utf-8")
        with pytest.raises(ArtifactError) as caught:
            load_artifact(models)
        assert str(caught.value) == (
            f"{models / CURRENT}: {pointer!r} is not a model version (a version is a folder "
            "name inside the models folder: letters, digits, '.', '_' and '-', not "
            "starting with '.')"
        )


def test_a_version_name_is_never_followed_outside_the_models_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models, "v1")
    for version in _outside(tmp_path):
        with pytest.raises(ArtifactError, match="is not a model version"):
            load_artifact(models, version)
        with pytest.raises(ArtifactError, match="cannot point CURRENT at"):
            set_current(models, version)
    assert current_version(models) == "v1"


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


# --- side files -----------------------------------------------------------------------


def test_side_files_are_written_checksummed_and_listed(tmp_path: Path) -> None:
    path = write_artifact(
        tmp_path, "v1", {"x": np.arange(2)}, {"d": {"a": 1}}, {}, {"blob.bin": b"\x00\x01"}
    )

    artifact = load_artifact(tmp_path)

    assert (path / "blob.bin").read_bytes() == b"\x00\x01"
    assert "blob.bin" in artifact.manifest["files"]
    assert set(artifact.files) == {"x.npy", "d.json", "blob.bin"}
    assert "blob" not in artifact.arrays and "blob" not in artifact.documents
    for bad in ("../x.bin", "a/b.bin", "x.npy", "d.json", "manifest.json", ".hidden", ""):
        with pytest.raises(ArtifactError, match="side file name"):
            write_artifact(tmp_path, f"v-{len(bad)}", {}, {}, {}, {bad: b""})


def test_a_broken_current_never_becomes_previous(tmp_path: Path) -> None:
    """CURRENT edited by hand to a half-written copy, then moved to a good version:
    PREVIOUS keeps naming the last good one, so a rollback to `previous` does not lead
    back to the copy every worker refused."""
    models = tmp_path / "models"
    _write(models, "v1")
    _write(models, "v2")
    _write(models, "v3")  # CURRENT v3, PREVIOUS v2
    factors = next((models / "v3").glob("*.npy"))
    with factors.open("r+b") as handle:
        handle.truncate(factors.stat().st_size - 1)
    set_current(models, "v1")
    assert previous_version(models) == "v2"
    set_current(models, "v2")
    assert previous_version(models) == "v1"


@pytest.mark.parametrize(
    "written",
    [
        "2025-02-01T00:46:00+00:00",  # labelled UTC, as the trainer writes it now
        "2025-02-01T00:46:00",  # an older manifest: UTC without a zone
        "2025-02-01T00:46:00.250000000+00:00",  # nanoseconds, as pandas writes them
    ],
)
def test_the_end_of_the_training_data_reads_with_or_without_its_zone(written: str) -> None:
    from nbo.models.artifacts import trained_until

    assert trained_until({"data": {"last_purchase": written}}) == 1738370760
