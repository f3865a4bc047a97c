"""``nbo train``'s progress: a plain line per step when stderr is not a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import PROGRESS_LINE

from nbo.cli import main


def test_train_writes_a_line_per_step_when_stderr_is_not_a_terminal(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(planted_csv), "--models-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().err.splitlines()
    steps = [line.split(": ")[1] for line in lines]
    assert steps[0] == "read purchases" and steps[-1] == "publish"
    assert {"fit ALS (before cutoff)", "evaluate", "refit ALS (all data)"} <= set(steps)
    assert all(PROGRESS_LINE.match(line) for line in lines), lines
