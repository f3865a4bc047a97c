"""``nbo models`` (versions and aliases) and ``nbo report compare`` (two models scored on
purchases neither saw) through the real command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support import END, make_planted_purchases, small_training_config

from nbo.cli import BLAS_THREAD_VARIABLES, main
from nbo.data.mapping import load_mapping
from nbo.models.registry import read_aliases
from training.config import RankerConfig
from training.pipeline import train


def test_models_command_sets_aliases(
    two_models: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    models, production, candidate = two_models
    assert main(["models", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert f"{production}  (production)" in listing and f"{candidate}  (candidate)" in listing
    assert main(["models", "--models-dir", str(models), "--alias", "next", "candidate"]) == 0
    assert read_aliases(models)["next"] == candidate
    assert main(["models", "--models-dir", str(models), "--alias", "next", "v-none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such alias or version" in err
    assert main(["models", "--models-dir", str(models), "--unalias", "next"]) == 0
    assert "next" not in read_aliases(models)


def test_experiment_report_refuses_a_store_that_is_not_a_database_in_one_line(
    experiments_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "purchases.csv"
    path.write_text("customer_id,item_id\n", encoding="utf-8")
    args = ["report", "experiment", "ranker-test", "--experiments", str(experiments_file)]
    assert main([*args, "--store-url", f"sqlite:///{path}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nbo report: error: setting NBO_STORE_URL: ")
    assert f"cannot use {path} as the store (file is not a database)" in err


def test_compare_scores_two_models_on_purchases_neither_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    purchases = make_planted_purchases()
    cutoff = END - pd.Timedelta(days=12)
    earlier = tmp_path / "earlier.csv"
    purchases[purchases["timestamp"] < cutoff].to_csv(earlier, index=False)
    full = tmp_path / "full.csv"
    purchases.to_csv(full, index=False)
    models = tmp_path / "models"
    config = small_training_config().model_copy(update={"holdout_days": 20})
    a = train(earlier, load_mapping("canonical"), models, config, force=True)
    off = config.model_copy(update={"ranker": RankerConfig(enabled=False)})
    b = train(earlier, load_mapping("canonical"), models, off, force=True)
    out = tmp_path / "compare.json"
    args = ["report", "compare", str(a.version), str(b.version), "--data", str(full)]
    assert (
        main([*args, "--models-dir", str(models), "--mapping", "canonical", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["holdout"]["customers"] > 0
    for truth in ("all", "new"):
        for name in (str(a.version), str(b.version)):
            assert 0.0 <= result["metrics"][truth][name]["ndcg@10"] <= 1.0
        assert "ndcg_difference" in result["difference"][truth]
    printed = capsys.readouterr().out
    assert "truth: all" in printed and "paired t-test" in printed
    # As a user runs it, piped (COLUMNS unset): both versions whole, not "20261205T17…",
    # and no OpenBLAS thread warning (with one CPU there is nothing to warn about anyway).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", *BLAS_THREAD_VARIABLES}
    }
    piped = subprocess.run(
        [sys.executable, "-m", "nbo.cli", *args, "--models-dir", str(models)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "…" not in piped.stdout
    words = re.split(r"[\s│]+", piped.stdout)
    for version in (a.version, b.version):
        assert words.count(str(version)) == 4  # 2 tables, 2 difference lines
    assert "OpenBLAS" not in piped.stderr and "Warning" not in piped.stderr, piped.stderr
    # Data that ends where the models' does has nothing to compare on: one line.
    assert (
        main(
            [
                *args[:4],
                "--data",
                str(earlier),
                "--models-dir",
                str(models),
                "--mapping",
                "canonical",
            ]
        )
        == 2
    )
    assert "compare on newer data" in capsys.readouterr().err
