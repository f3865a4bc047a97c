"""Fixtures of the trainer's command-line tests (``nbo train``, ``nbo evaluate``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_CONFIG = """
[als]
factors = 8
iterations = 10
regularization = 0.1
refit_iterations = 5
"""


@pytest.fixture
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No progress display on stderr, wide enough that the summary is not wrapped."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A training config file with the small ALS settings of ``support``."""
    path = tmp_path / "train.toml"
    path.write_text(SMALL_CONFIG, encoding="utf-8")
    return path
