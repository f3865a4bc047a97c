"""``nbo.models.registry``: ALIASES.json replaced whole, or left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbo.core.errors import ArtifactError
from nbo.models.artifacts import MANIFEST
from nbo.models.registry import ALIASES, read_aliases, resolve, set_alias


def test_an_alias_that_cannot_be_written_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / MANIFEST).write_text("{}", encoding="utf-8")
    set_alias(tmp_path, "candidate", "v1")

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ArtifactError) as caught:
        set_alias(tmp_path, "next", "v1")
    aliases = tmp_path / "ALIASES.json"
    assert str(caught.value) == f"{aliases}: cannot be written (No space left on device)"
    assert read_aliases(tmp_path) == {"candidate": "v1"}
    assert sorted(os.listdir(tmp_path)) == ["ALIASES.json", "v1"]


def test_an_alias_or_a_reference_never_leads_outside_the_models_folder(tmp_path: Path) -> None:
    """ALIASES.json edited by hand to name a path, or a reference that is one, would load
    a model from anywhere: refused, naming the alias."""
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    for folder in (models / "v1", elsewhere / "v2"):
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text("{}", encoding="utf-8")
    outside = ["../elsewhere/v2", str(elsewhere / "v2")]
    for target in outside:
        (models / ALIASES).unlink(missing_ok=True)
        with pytest.raises(ArtifactError, match="no model"):
            set_alias(models, "candidate", target)
        with pytest.raises(ArtifactError, match="no such alias or version"):
            resolve(models, target)
        (models / ALIASES).write_text(f'{{"candidate": "{target}"}}', encoding="utf-8")
        with pytest.raises(ArtifactError) as caught:
            resolve(models, "candidate")
        assert str(caught.value).startswith(
            f"{models / ALIASES}: alias 'candidate': {target!r} is not a model version ("
        )
    (models / ALIASES).unlink()
    set_alias(models, "candidate", "v1")
    assert resolve(models, "candidate") == "v1"
