"""``nbo.models.registry``: ALIASES.json replaced whole, or left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbo.core.errors import ArtifactError
from nbo.models.artifacts import MANIFEST
from nbo.models.registry import read_aliases, set_alias


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
