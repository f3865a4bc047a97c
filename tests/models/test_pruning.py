"""Removing old versions: the newest N kept, and every version CURRENT, an alias or the
caller names; a removal cut short leaves a hidden folder, never half a version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbo.core.errors import ArtifactError
from nbo.models import artifacts
from nbo.models.artifacts import (
    CURRENT,
    list_versions,
    remove_leftovers,
    remove_version,
    set_current,
    write_artifact,
)
from nbo.models.pruning import keep_problem, plan_prune, prune
from nbo.models.registry import set_alias


def publish(models: Path, *versions: str) -> None:
    """Tiny versions (one array each), CURRENT at the last."""
    for version in versions:
        write_artifact(models, version, {"a": np.arange(3)}, {}, {})


def test_the_newest_and_every_named_version_are_kept(tmp_path: Path) -> None:
    models = tmp_path / "models"
    publish(models, "v1", "v2", "v3", "v4", "v5", "v6")
    set_current(models, "v2")
    set_alias(models, "old", "v1")
    (models / "not-a-version").mkdir()  # no manifest: not a version, left alone

    plan = plan_prune(models, 2, {"the experiments file": {"v3"}})
    assert plan.removed == ["v4"]
    assert plan.kept == {
        "v6": ["newest 2", "PREVIOUS"],  # CURRENT named it before moving to v2
        "v5": ["newest 2"],
        "v3": ["the experiments file"],
        "v2": [CURRENT],
        "v1": ["alias old"],
    }
    assert list_versions(models) == ["v1", "v2", "v3", "v4", "v5", "v6"]  # a plan only

    done = prune(models, 2, {"the experiments file": {"v3"}})
    assert done == plan
    assert list_versions(models) == ["v1", "v2", "v3", "v5", "v6"]
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(".")) == []
    assert (models / "not-a-version").is_dir()


def test_a_prune_that_cannot_tell_what_current_names_removes_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    publish(models, "v1", "v2", "v3")
    (models / CURRENT).write_text("../elsewhere\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match="is not a model version"):
        prune(models, 1)
    (models / "ALIASES.json").write_text("{not json", encoding="utf-8")
    set_current(models, "v3")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        prune(models, 1)
    assert list_versions(models) == ["v1", "v2", "v3"]
    with pytest.raises(ArtifactError, match="keep at least"):
        plan_prune(models, 0)


def test_a_removal_cut_short_leaves_a_hidden_folder_the_next_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    publish(models, "v1", "v2")

    def cut_short(path: Any, **_: Any) -> None:
        pass  # the process died before the delete

    monkeypatch.setattr(artifacts.shutil, "rmtree", cut_short)
    remove_version(models, "v1")
    monkeypatch.undo()
    # Never half a version: the folder is out of the listing from the rename on.
    assert list_versions(models) == ["v2"]
    (left,) = [p.name for p in models.iterdir() if p.name.startswith(".removing-")]
    assert remove_leftovers(models) == [left]
    assert sorted(p.name for p in models.iterdir()) == ["CURRENT", "PREVIOUS", "v2"]


def test_a_current_that_cannot_be_read_removes_nothing(tmp_path: Path) -> None:
    """A CURRENT linked to nowhere was taken for no CURRENT at all (``exists()`` follows
    the link), and a prune would remove the version it was meant to name."""
    models = tmp_path / "models"
    publish(models, "v1", "v2", "v3")
    (models / CURRENT).unlink(missing_ok=True)
    (models / CURRENT).symlink_to(tmp_path / "nowhere")

    with pytest.raises(ArtifactError):
        plan_prune(models, 1)
    assert list_versions(models) == ["v1", "v2", "v3"]


@pytest.mark.parametrize("keep", [0, -3])
def test_how_many_to_keep_is_one_rule_with_one_reason(
    tmp_path: Path, keep: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nbo models --prune`` and ``plan_prune`` each wrote out keep < 1 and its message:
    one rule now, the flag's name or the argument's in front of the same reason."""
    from nbo.cli import main

    models = tmp_path / "models"
    publish(models, "v1", "v2")
    reason = keep_problem(keep)
    assert reason == "keep at least the newest 1" and keep_problem(1) is None
    with pytest.raises(ArtifactError) as refused:
        plan_prune(models, keep)
    assert str(refused.value) == f"keep {keep}: {reason}"
    assert main(["models", "--models-dir", str(models), "--prune", str(keep)]) == 2
    assert capsys.readouterr().err == f"nbo models: error: --prune {keep}: {reason}\n"
    assert list_versions(models) == ["v1", "v2"]


def test_a_broken_version_is_not_counted_among_the_newest_kept(tmp_path: Path) -> None:
    """A version that cannot load (a file its manifest lists is missing) took one of the
    newest KEEP places, and a prune keeping 2 kept one good version only."""
    models = tmp_path / "models"
    publish(models, "v1", "v2", "v3", "v4")
    (models / "v4" / "a.npy").unlink()
    set_current(models, "v3")  # not PREVIOUS: broken

    plan = plan_prune(models, 2)
    assert plan.kept == {"v3": ["newest 2", CURRENT, "PREVIOUS"], "v2": ["newest 2"]}
    assert plan.removed == ["v4", "v1"]
    assert list(plan.broken) == ["v4"] and "a.npy" in plan.broken["v4"]
    assert prune(models, 2) == plan
    assert list_versions(models) == ["v2", "v3"]
