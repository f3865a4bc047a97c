"""``nbo models`` (versions and aliases) and ``nbo report compare`` (two models scored on
purchases neither saw) through the real command line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from support import (
    CLOCK,
    END,
    EXPERIMENT,
    make_planted_purchases,
    small_training_config,
    unwritable_folders,
)

from nbo.cli import BLAS_THREAD_VARIABLES, main
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import current_version, list_versions, set_current, write_artifact
from nbo.models.registry import read_aliases, set_alias
from nbo.runtime.workers import BOARD, FOLDER_PREFIX, WorkerBoard, WorkerStatus
from nbo.service.app import create_app
from nbo.settings import Settings
from nbo.store import open_store
from training.config import RankerConfig
from training.pipeline import train


def test_models_command_sets_aliases(
    two_models: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    models, production, candidate = two_models
    assert main(["models", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    # previous: what CURRENT named before the second publication moved it.
    assert f"{production}  (previous, production)" in listing
    assert f"{candidate}  (candidate)" in listing
    assert main(["models", "--models-dir", str(models), "--alias", "next", "candidate"]) == 0
    assert read_aliases(models)["next"] == candidate
    assert main(["models", "--models-dir", str(models), "--alias", "next", "v-none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such alias or version" in err
    assert main(["models", "--models-dir", str(models), "--unalias", "next"]) == 0
    assert "next" not in read_aliases(models)


def test_models_listing_shows_each_versions_data_end_and_json_for_scripts(
    two_models: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Picking a rollback target needs the last purchase each version learned; a script
    reads the same listing as JSON."""
    models, production, candidate = two_models
    manifest = json.loads((models / production / "manifest.json").read_text())
    manifest["data"]["last_purchase"] = "2011-12-09T12:50:00+00:00"
    (models / production / "manifest.json").write_text(json.dumps(manifest))

    assert main(["models", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert (
        f"{production}  (previous, production)  data to 2011-12-09 12:50 UTC  gate not compared"
        in listing
    )

    assert main(["models", "--models-dir", str(models), "--json"]) == 0
    rows = {row["version"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows[production]["data_end"] == "2011-12-09T12:50:00+00:00"
    assert rows[production]["aliases"] == ["previous", "production"]
    assert (
        rows[candidate]["data_end"]
        == json.loads((models / candidate / "manifest.json").read_text())["data"]["last_purchase"]
    )
    assert [row["current"] for row in rows.values()].count(True) == 1
    assert rows[production]["broken"] is None
    # The gate's verdict: the first version had nothing to compare with; the second was
    # compared with the first, by the figures the listing gives.
    assert rows[production]["gate"]["verdict"] == "not compared"
    assert rows[production]["gate"]["current"] is None
    second = rows[candidate]["gate"]
    assert second["current_version"] == production and second["metric"] == "ndcg@10"
    assert second["verdict"] == (
        "passed" if second["served"] >= second["current"] else "refused but forced"
    )

    # Failed and published all the same (--force): said so, line and JSON.
    manifest = json.loads((models / candidate / "manifest.json").read_text())
    manifest["quality_gate"].update(passed=False, forced=True)
    (models / candidate / "manifest.json").write_text(json.dumps(manifest))
    assert main(["models", "--models-dir", str(models)]) == 0
    assert "gate refused but forced" in capsys.readouterr().out
    assert main(["models", "--models-dir", str(models), "--json"]) == 0
    rows = {row["version"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows[candidate]["gate"]["verdict"] == "refused but forced"

    assert main(["models", "--models-dir", str(models), "--json", "--prune", "1"]) == 2
    assert "--json: only for the listing" in capsys.readouterr().err


def test_experiment_report_refuses_a_store_that_is_not_a_database_in_one_line(
    experiments_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "purchases.csv"
    path.write_text("customer_id,item_id\n", encoding="utf-8")
    args = ["report", "experiment", "ranker-test", "--experiments", str(experiments_file)]
    assert main([*args, "--store-url", f"sqlite:///{path}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("nbo report: error: --store-url: ")  # what the user gave
    assert f"cannot use {path} as the store (file is not a database)" in err


def test_experiment_report_refuses_a_store_that_does_not_exist_and_makes_none(
    experiments_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report reads what the service recorded: a mistyped store path would report
    "nobody exposed" from a new empty store, and leave it behind."""
    missing = tmp_path / "nodir" / "store.db"
    args = ["report", "experiment", "ranker-test", "--experiments", str(experiments_file)]
    out = tmp_path / "report"
    assert main([*args, "--store-url", f"sqlite:///{missing}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nbo report: error: --store-url: no store at {missing} (")
    assert err.count("\n") == 1
    assert not (tmp_path / "nodir").exists() and not out.exists()


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


# --- outputs that cannot be written: one line, exit 2, before the work -------------------
# As root permission bits never refuse: a path under a regular file, and /proc (where no
# file can be created), stand for folders nbo cannot write.


def _unwritable_files(tmp_path: Path) -> list[tuple[Path, str]]:
    afile = tmp_path / "afile"
    afile.write_text("a regular file\n", encoding="utf-8")
    (tmp_path / "adir.json").mkdir()
    cases = [
        (tmp_path / "nodir" / "x.json", "does not exist"),
        (tmp_path / "adir.json", "is a folder; name a file"),
        (afile / "x.json", f"cannot be written ({afile} is not a folder)"),
    ]
    if Path("/proc").is_dir():
        cases.append((Path("/proc/x.json"), "cannot be written (no file can be created"))
    return cases


def _one_line(err: str, command: str, flag: str, path: Path, problem: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"nbo {command}: error: {flag} {path}: "), err
    assert problem in lines[0], (problem, err)


def test_compare_refuses_an_out_it_cannot_write_before_comparing(
    two_models: tuple[Path, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import nbo.evaluation.compare

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("--out was not checked before the comparison")

    monkeypatch.setattr(nbo.evaluation.compare, "compare_models", refuse)
    models, production, candidate = two_models
    data = tmp_path / "purchases.csv"
    make_planted_purchases().to_csv(data, index=False)
    args = ["report", "compare", production, candidate, "--data", str(data)]
    for out, problem in _unwritable_files(tmp_path):
        code = main([*args, "--models-dir", str(models), "--out", str(out)])
        assert code == 2, out
        _one_line(capsys.readouterr().err, "report", "--out", out, problem)
    assert not (tmp_path / "nodir").exists()


def _experiment(experiments_file: Path, *args: str) -> int:
    return main(
        ["report", "experiment", "ranker-test", "--experiments", str(experiments_file), *args]
    )


def test_an_experiment_report_refuses_an_out_it_cannot_write_before_reading_the_store(
    experiments_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import nbo.experiments.outcomes

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("--out was not checked before the report")

    monkeypatch.setattr(nbo.experiments.outcomes, "report_for", refuse)
    for out, problem in unwritable_folders(tmp_path, "rx"):
        assert _experiment(experiments_file, "--out", str(out)) == 2, out
        _one_line(capsys.readouterr().err, "report", "--out", out, problem)


def test_an_experiment_report_writes_both_files_or_neither(
    experiments_file: Path, isolated_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_store(f"sqlite:///{isolated_store}").close()  # the service's store, with nothing yet
    out = tmp_path / "report"
    assert _experiment(experiments_file, "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    capsys.readouterr()
    # The page cannot be replaced: the figures are not replaced either.
    (out / "report.json").write_text("last run\n", encoding="utf-8")
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    assert _experiment(experiments_file, "--out", str(out)) == 2
    _one_line(capsys.readouterr().err, "report", "--out", out, "report.html is a folder")
    assert (out / "report.json").read_text(encoding="utf-8") == "last run\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]


def test_two_models_without_a_control_are_compared_against_the_baseline(
    isolated_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An A/B test of two model versions: without a control, the first variant (or the
    one ``baseline`` names) is what the others are compared against."""
    open_store(f"sqlite:///{isolated_store}").close()
    experiments = tmp_path / "exp.yaml"
    two = (
        "version: 1\nexperiments:\n"
        "  - name: cand-vs-base\n    salt: s\n    start: 2026-06-01T00:00:00Z\n"
        "    variants:\n"
        "      - {name: base, model: baseline, weight: 1}\n"
        "      - {name: cand, model: candidate, weight: 1}\n"
    )
    experiments.write_text(two, encoding="utf-8")
    args = ["report", "experiment", "cand-vs-base", "--experiments", str(experiments)]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    report = json.loads((tmp_path / "first" / "report.json").read_text(encoding="utf-8"))
    assert report["baseline"] == "base" and report["baseline_is"] == "first variant"
    assert [(c["variant"], c["against"]) for c in report["comparisons"]] == [("cand", "base")]
    assert not any("not compared" in w for w in report["warnings"])
    assert "base (baseline)" in capsys.readouterr().out
    experiments.write_text(two.replace("    variants:", "    baseline: cand\n    variants:"))
    assert main([*args, "--out", str(tmp_path / "named")]) == 0
    report = json.loads((tmp_path / "named" / "report.json").read_text(encoding="utf-8"))
    assert report["baseline"] == "cand" and report["baseline_is"] == "configured"
    assert [(c["variant"], c["against"]) for c in report["comparisons"]] == [("base", "cand")]


def test_the_experiment_reports_help_names_the_baseline_it_compares_against(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The help said "each variant against the control", though an experiment without
    one is compared against its first variant or the one its baseline names."""
    for args in (["report", "--help"], ["report", "experiment", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "against control" not in text and "against the control" not in text
        assert "against the baseline" in text
    assert (
        "(the variant the experiment's baseline names, else the control, else the first variant)"
        in text
    )


def test_a_mistyped_experiment_name_lists_the_names_there_are(
    experiments_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "experiment", "ranker-tset", "--experiments", str(experiments_file)]
    assert main([*args, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"nbo report: error: experiment 'ranker-tset': not in {experiments_file} "
        "(its experiments: ranker-test)\n"
    )
    assert not (tmp_path / "report").exists()


# --- nbo models: one change per call, a models folder that is not there ---------------


def test_alias_and_unalias_together_are_a_usage_error(
    two_models: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    models, _production, candidate = two_models
    before = read_aliases(models)
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--models-dir", str(models), "--alias", "x", candidate, "--unalias", "a1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--unalias: not allowed with argument --alias" in err, err
    assert read_aliases(models) == before  # neither applied


def test_an_alias_that_cannot_be_written_is_one_line_and_leaves_no_temporary_file(
    two_models: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(two_models[0], models)
    (models / "ALIASES.json").unlink()
    (models / "ALIASES.json").mkdir()
    before = sorted(p.name for p in models.iterdir())
    assert main(["models", "--models-dir", str(models), "--alias", "y", two_models[2]]) == 2
    err = capsys.readouterr().err
    aliases = models / "ALIASES.json"
    assert err == f"nbo models: error: {aliases}: cannot be written (a folder is in its place)\n"
    assert sorted(p.name for p in models.iterdir()) == before


def test_models_in_a_folder_that_is_not_there_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("a regular file\n", encoding="utf-8")
    for models, problem in ((tmp_path / "nomodels", "no such folder"), (afile, "not a folder")):
        for extra in ([], ["--unalias", "a1"]):
            assert main(["models", "--models-dir", str(models), *extra]) == 2
            err = capsys.readouterr().err
            assert err == f"nbo models: error: --models-dir {models}: {problem}\n", err
    # An empty folder is a shop with no model yet: said, not an error.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["models", "--models-dir", str(empty)]) == 0
    assert "no published model in" in capsys.readouterr().out
    # Named by the setting, not a flag the user did not pass.
    monkeypatch.setenv("NBO_MODELS_DIR", str(tmp_path / "nomodels"))
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert f"the models folder {tmp_path / 'nomodels'} (--models-dir or NBO_MODELS_DIR)" in err


# --- nbo models --prune, --current; broken versions ------------------------------------


def test_prune_keeps_the_newest_and_every_version_named_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CURRENT, an alias, the experiments file, NBO_MODEL_VERSION and a running nbo serve
    (its workers' board) each keep their version; --dry-run removes nothing."""
    models = tmp_path / "models"
    names = [f"2026010{n}T000000Z-0000000{n}" for n in range(1, 9)]
    for name in names:
        write_artifact(models, name, {"a": np.arange(3)}, {}, {})
    set_current(models, names[6])
    set_alias(models, "old", names[0])
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENT.replace("model: candidate", f"model: {names[1]}"))
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments))
    monkeypatch.setenv("NBO_MODEL_VERSION", names[2])
    # An nbo serve on this machine whose worker serves names[3]: its board, as it writes it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    board = WorkerBoard(tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-abc" / BOARD)
    board.report(WorkerStatus(os.getpid(), 1, [(names[3], "current")]))
    (models / ".removing-gone-1234").mkdir()  # a removal cut short
    args = ["models", "--models-dir", str(models), "--prune", "1"]

    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {names[4]}" in out and f"would remove {names[5]}" in out
    assert "2 would be removed, 6 kept" in out
    assert len(list_versions(models)) == 8

    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"kept {names[7]} (newest 1, PREVIOUS)",
        f"kept {names[6]} (CURRENT, the experiments file (NBO_EXPERIMENTS))",
        f"kept {names[3]} (served by nbo serve (pid {os.getpid()}))",
        f"kept {names[2]} (NBO_MODEL_VERSION)",
        f"kept {names[1]} (the experiments file (NBO_EXPERIMENTS))",
        f"kept {names[0]} (alias old)",
        f"removed {names[5]}",
        f"removed {names[4]}",
        "removed .removing-gone-1234 (left by a removal cut short)",
        "2 removed, 6 kept",
    ]
    assert list_versions(models) == [*names[:4], *names[6:]]
    # Hidden leftovers gone; the lock file prune held the folder by stays (never removed).
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == [".lock"]


def test_prune_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    write_artifact(models, "v1", {"a": np.arange(3)}, {}, {})
    for extra, message in (
        (["--prune", "0"], "--prune 0: keep at least the newest 1"),
        (["--dry-run"], "--dry-run: only with --prune"),
    ):
        assert main(["models", "--models-dir", str(models), *extra]) == 2
        err = capsys.readouterr().err
        assert err == f"nbo models: error: {message}\n", err
    assert list_versions(models) == ["v1"]


def test_current_points_current_at_a_version_that_loads_and_a_restart_serves_it(
    two_models: tuple[Path, str, str],
    tmp_path: Path,
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rollback that survives a restart (a reload to a version is undone by the next
    SIGHUP, watcher event or restart): CURRENT itself, checked first."""
    models = tmp_path / "models"
    shutil.copytree(two_models[0], models)
    _, production, candidate = two_models
    broken = corrupt_copy(models, candidate, "20991231T000000Z-broken00")

    assert main(["models", "--models-dir", str(models), "--current", "production"]) == 0
    out = capsys.readouterr().out
    assert f"CURRENT -> {production} (was {candidate})" in out
    assert current_version(models) == production
    settings = Settings(models_dir=models, clock=CLOCK, store_url=f"sqlite:///{isolated_store}")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/model").json()["version"] == production

    for reference, message in (
        (broken, f"--current {broken}: model {broken}: file "),
        ("nope", "--current 'nope': no such alias or version"),
    ):
        assert main(["models", "--models-dir", str(models), "--current", reference]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert "CURRENT unchanged" in main_err(models, "--current", broken, capsys)
    assert current_version(models) == production


def test_current_previous_rolls_back_the_last_move_of_current_and_again_undoes_it(
    two_models: tuple[Path, str, str],
    tmp_path: Path,
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The documented rollback: nbo keeps ``previous`` (what CURRENT named before it last
    moved, by a publication or --current); it had answered "no such alias"."""
    models = tmp_path / "models"
    shutil.copytree(two_models[0], models)
    _, first, second = two_models  # published in that order: CURRENT moved to second
    aliases = json.loads((models / "ALIASES.json").read_text())
    aliases.pop("production")  # CURRENT's own alias, so `nbo models` shows both
    (models / "ALIASES.json").write_text(json.dumps(aliases))

    ends = {
        version: json.loads((models / version / "manifest.json").read_text())["data"][
            "last_purchase"
        ]
        for version in (first, second)
    }
    assert main(["models", "--models-dir", str(models)]) == 0
    listing = [line.split("  gate ")[0] for line in capsys.readouterr().out.splitlines()]
    assert listing == [
        f"{second}  (candidate, production)  data to {ends[second][:16].replace('T', ' ')} UTC",
        f"{first}  (previous)  data to {ends[first][:16].replace('T', ' ')} UTC",
    ]
    assert main(["models", "--models-dir", str(models), "--current", "previous"]) == 0
    out = capsys.readouterr().out
    assert f"CURRENT -> {first} (was {second})" in out and "note" not in out
    assert current_version(models) == first
    settings = Settings(models_dir=models, clock=CLOCK, store_url=f"sqlite:///{isolated_store}")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/model").json()["version"] == first
        assert client.get("/v1/models").json()["aliases"]["previous"] == second
    # previous is now what was rolled back from: a second rollback undoes the first.
    assert main(["models", "--models-dir", str(models), "--current", "previous"]) == 0
    assert f"CURRENT -> {second} (was {first})" in capsys.readouterr().out
    # Pointing CURRENT at what it already names moves nothing, previous included.
    assert main(["models", "--models-dir", str(models), "--current", second]) == 0
    assert "CURRENT already names" in capsys.readouterr().out
    assert main(["models", "--models-dir", str(models), "--current", "previous"]) == 0
    assert f"CURRENT -> {first} (was {second})" in capsys.readouterr().out


def test_current_previous_before_current_ever_moved_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    write_artifact(models, "20260101T000000Z-00000001", {"a": np.arange(3)}, {}, {})
    assert main(["models", "--models-dir", str(models), "--current", "previous"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "--current 'previous': CURRENT has not moved since" in err, err
    assert "no previous version" in err
    assert current_version(models) == "20260101T000000Z-00000001"


def test_a_broken_version_is_listed_as_broken_and_gets_no_alias(
    two_models: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(two_models[0], models)
    broken = corrupt_copy(models, two_models[2], "20991231T000000Z-broken00")
    missing = "20991231T000000Z-missing0"
    shutil.copytree(models / two_models[2], models / missing)
    manifest = json.loads((models / missing / "manifest.json").read_text())
    (models / missing / "manifest.json").write_text(json.dumps({**manifest, "version": missing}))
    (models / missing / "item_factors.npy").unlink()
    # A half-written copy: an array file shorter than its own header says, which the
    # listing showed as a good version (its header is a few bytes to read).
    half = "20991231T000000Z-halfwrit"
    shutil.copytree(models / two_models[2], models / half)
    manifest = json.loads((models / half / "manifest.json").read_text())
    (models / half / "manifest.json").write_text(json.dumps({**manifest, "version": half}))
    factors = models / half / "item_factors.npy"
    size = factors.stat().st_size
    with factors.open("r+b") as handle:
        handle.truncate(size - 100)

    assert main(["models", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"{missing}  BROKEN: file item_factors.npy is missing"
    assert listing[1] == (
        f"{half}  BROKEN: file item_factors.npy is cut short ({size - 100:,} of {size:,} bytes)"
    )
    # A checksum needs every byte read: not in a listing, which shows its data end.
    end = json.loads((models / broken / "manifest.json").read_text())["data"]["last_purchase"]
    assert listing[2].startswith(f"{broken}  data to {end[:16].replace('T', ' ')} UTC  gate ")
    assert main(["models", "--models-dir", str(models), "--alias", "cand", broken]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--alias cand {broken}: model {broken}: file " in err
    assert "corrupt (checksum mismatch); alias not set" in err
    assert "cand" not in read_aliases(models)


def corrupt_copy(models: Path, source: str, name: str) -> str:
    """``source`` published again as ``name`` with its item factors' last byte changed."""
    shutil.copytree(models / source, models / name)
    manifest = json.loads((models / name / "manifest.json").read_text())
    (models / name / "manifest.json").write_text(json.dumps({**manifest, "version": name}))
    factors = models / name / "item_factors.npy"
    data = bytearray(factors.read_bytes())
    data[-1] ^= 0xFF
    factors.write_bytes(bytes(data))
    return name


def main_err(models: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["models", "--models-dir", str(models), flag, value]) == 2
    return capsys.readouterr().err


def test_compare_reads_the_timestamps_in_the_format_given(
    two_models: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day-first dates given as month-first: refused in one line, so the flag is applied."""
    models, production, candidate = two_models
    purchases = make_planted_purchases()
    data = tmp_path / "day_first.csv"
    purchases.assign(timestamp=purchases["timestamp"].dt.strftime("%d/%m/%Y %H:%M")).to_csv(
        data, index=False
    )
    args = ["report", "compare", production, candidate, "--data", str(data)]

    code = main([*args, "--models-dir", str(models), "--timestamp-format", "%m/%d/%Y %H:%M"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "column 'timestamp'" in err and "in the format given, %m/%d/%Y %H:%M" in err
