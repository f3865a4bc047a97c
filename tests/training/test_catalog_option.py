"""``--catalog`` of nbo train and nbo evaluate: what is served is evaluated under the
catalogue the service would serve with; a broken one is one readable line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import without_progress

from nbo.cli import EXIT_USER_ERROR, main

SMALL_CONFIG = """
[als]
factors = 8
iterations = 10
regularization = 0.1
refit_iterations = 5
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(SMALL_CONFIG, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("COLUMNS", "200")


def test_evaluate_records_the_catalogue_it_served_under(
    tmp_path: Path, planted_csv: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text('version: 1\nitems:\n  - item_id: "A00"\n    exclude: true\n')
    out_dir = tmp_path / "report"

    code = main(
        [
            "evaluate",
            "--data",
            str(planted_csv),
            "--config",
            str(config),
            "--catalog",
            str(catalog),
            "--out",
            str(out_dir),
        ]
    )

    out, err = capsys.readouterr()
    assert code == 0, err
    served = json.loads((out_dir / "evaluation.json").read_text(encoding="utf-8"))["served"]
    assert served["catalog"] == str(catalog) and served["catalog_fingerprint"] != "default"
    assert "served against the best simple rule" in out


def test_a_broken_catalogue_is_one_line_naming_the_file(
    tmp_path: Path, planted_csv: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nproducts:\n  lever: -2\n")
    models = tmp_path / "models"

    code = main(
        [
            "train",
            "--data",
            str(planted_csv),
            "--config",
            str(config),
            "--catalog",
            str(catalog),
            "--models-dir",
            str(models),
        ]
    )

    _, err = capsys.readouterr()
    assert code == EXIT_USER_ERROR
    lines = without_progress(err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbo train: error: ")
    assert str(catalog) in lines[0] and "lever" in lines[0]
    assert not models.exists()
