"""``nbo train --models-dir`` and ``nbo evaluate --out`` that cannot be written: one
line naming the flag, exit 2, before any training (not a traceback once the model is
published, minutes later).

As root permission bits never refuse, so a path under a regular file, and ``/proc``
(where no file can be created), stand for folders nbo cannot write.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from support import assert_one_error_line, unwritable_folders, without_progress

import training.cli
import training.evaluate_cli
import training.pipeline
from nbo.cli import main
from training.pipeline import TrainResult

pytestmark = pytest.mark.usefixtures("plain_terminal")


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training is not reached: the output is refused first."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the output was not checked before training")

    monkeypatch.setattr(training.cli, "train", refuse)
    monkeypatch.setattr(training.evaluate_cli, "train", refuse)


@pytest.mark.usefixtures("no_training")
def test_train_refuses_a_models_dir_it_cannot_write_before_training(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for models, problem in unwritable_folders(tmp_path, "nbo_models"):
        code = main(["train", "--data", str(planted_csv), "--models-dir", str(models)])
        assert code == 2, models
        line = assert_one_error_line(capsys.readouterr().err, problem)
        assert line.startswith(f"nbo train: error: --models-dir {models}: "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.usefixtures("no_training")
def test_evaluate_refuses_an_out_it_cannot_write_before_evaluating(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for out, problem in unwritable_folders(tmp_path, "nbo_models"):
        code = main(["evaluate", "--data", str(planted_csv), "--out", str(out)])
        assert code == 2, out
        line = assert_one_error_line(capsys.readouterr().err, problem, command="evaluate")
        assert line.startswith(f"nbo evaluate: error: --out {out}: "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_evaluate_replaces_both_files_or_neither(
    tmp_path: Path,
    planted_csv: Path,
    trained: TrainResult,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """evaluation.json and report.html are one report: a disk that fills up while the
    page is written leaves the previous pair, not a new document beside an old page."""
    monkeypatch.setattr(training.evaluate_cli, "train", lambda *_args, **_kwargs: trained)
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.json").write_text("the old document\n", encoding="utf-8")
    (out / "report.html").write_text("the old page\n", encoding="utf-8")
    disk_full = True
    real_open = os.open

    def open_unless_full(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if disk_full and "report.html" in os.fspath(path) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_unless_full)
    args = ["evaluate", "--data", str(planted_csv), "--out", str(out)]
    assert main(args) == 2
    line = assert_one_error_line(
        capsys.readouterr().err, "No space left on device", command="evaluate"
    )
    assert line.startswith(f"nbo evaluate: error: --out {out}: cannot be written"), line
    assert (out / "evaluation.json").read_text(encoding="utf-8") == "the old document\n"
    assert (out / "report.html").read_text(encoding="utf-8") == "the old page\n"
    assert sorted(os.listdir(out)) == ["evaluation.json", "report.html"]  # no temporaries

    disk_full = False
    assert main(args) == 0
    assert json.loads((out / "evaluation.json").read_text(encoding="utf-8"))["published"] is False
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_train_out_of_memory_is_one_line_naming_the_step(
    tmp_path: Path,
    planted_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ArrowMemoryError (ulimit -v on a 3M-line file) was a 30-frame traceback, exit 1."""

    def out_of_memory(*_args: Any, **_kwargs: Any) -> Any:
        raise pa.lib.ArrowMemoryError("malloc of size 4096 failed")

    monkeypatch.setattr(training.pipeline, "time_split", out_of_memory)

    code = main(["train", "--data", str(planted_csv), "--models-dir", str(tmp_path / "models")])

    assert code == 71
    err = without_progress(capsys.readouterr().err)
    assert err == (
        "nbo train: out of memory during time split (malloc of size 4096 failed): give it a "
        "machine or a limit with more memory, or less data; see docs/operations.md, Sizing\n"
    )


def test_train_on_a_full_disk_is_one_line_naming_the_version_and_leaves_nothing(
    tmp_path: Path,
    planted_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A disk full while the model was published: a traceback ending ``OSError: [Errno 28]
    No space left on device``, and a hidden staging folder left holding the space."""
    models = tmp_path / "models"
    save = np.save
    saved: list[str] = []

    def fill_the_disk(file: Any, array: Any, **kwargs: Any) -> None:
        # The models folder's disk only (the evaluation writes a model to a temporary
        # folder too), and after one array written whole.
        if str(file).startswith(str(models)):
            if saved:
                raise OSError(errno.ENOSPC, "No space left on device")
            saved.append(str(file))
        save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", fill_the_disk)

    code = main(["train", "--data", str(planted_csv), "--models-dir", str(models)])

    assert code == 74
    line = without_progress(capsys.readouterr().err)
    assert re.fullmatch(
        f"nbo train: error: {re.escape(str(models))}/[^/ ]+: no space left on device\n", line
    ), line
    assert saved
    # No staging folder left, and the models folder the run made is gone with it.
    assert not models.exists()
