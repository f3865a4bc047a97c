"""The app refuses to start on what it cannot serve: no model, a corrupt or incompatible
one, a bad catalogue, a bad experiments file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import BAD_CATALOG, EXPERIMENT, write

from nbo.core.errors import ArtifactError, CatalogError
from nbo.models.artifacts import MANIFEST
from nbo.service.app import create_app
from nbo.settings import Settings


def start(models_dir: Path) -> None:
    with TestClient(create_app(Settings(models_dir=models_dir, require_model=True))):
        pass


def test_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no model") as caught:
        start(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_refuses_to_start_with_a_corrupt_file(
    tmp_path: Path, models_dir: Path, current: str
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    target = copy / current / "item_factors.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"item_factors\.npy is corrupt") as caught:
        start(copy)
    assert current in str(caught.value)
    # The shared fixture is untouched and still serves.
    start(models_dir)


def test_refuses_to_start_with_an_incompatible_schema(
    tmp_path: Path, models_dir: Path, current: str
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    manifest_path = copy / current / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["schema_version"] = 999
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ArtifactError, match="schema version 999 is not supported"):
        start(copy)


def test_a_bad_experiments_file_refuses_the_start(
    two_models: tuple[Path, str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXPERIMENT.replace("weight: 20", "weight: 0"), encoding="utf-8")
    with pytest.raises(Exception, match="weight"):
        create_app(Settings(models_dir=two_models[0], experiments=bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(EXPERIMENT.replace("model: candidate", "model: nightly"), encoding="utf-8")
    settings = Settings(models_dir=two_models[0], experiments=unknown, require_model=True)
    with pytest.raises(Exception, match="nightly"), TestClient(create_app(settings)):
        pass


def test_the_app_refuses_to_start_with_a_bad_catalogue(models_dir: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "catalog.yaml", BAD_CATALOG)
    with pytest.raises(CatalogError, match="offer 'two' field 'value'"):
        create_app(Settings(models_dir=models_dir, catalog=bad))
