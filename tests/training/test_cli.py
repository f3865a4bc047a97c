"""``nbo train`` through the real command line: a summary on success (the evaluation,
churn, cycles and the ranker's sources), and one readable stderr line with exit code 2
for every input a user can get wrong."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from support import (
    DATA,
    assert_one_error_line,
    make_planted_purchases,
    small_training_config,
    worse_than_before,
)

from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.errors import EXIT_REFUSED, EXIT_TEMPFAIL
from nbo.data.purchases import dataset_files, fingerprint
from nbo.models.candidates import SOURCES
from training.cli import cycles_line, dead_time_line, print_summary, propensity_line
from training.lifecycle import CALIBRATION_PLOT
from training.pipeline import TrainResult

pytestmark = pytest.mark.usefixtures("plain_terminal")


def _train(*args: str) -> int:
    return main(["train", *args])


# --- success --------------------------------------------------------------------------


def test_train_prints_a_summary_and_publishes(
    tmp_path: Path, planted_csv: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"

    code = _train("--data", str(planted_csv), "--models-dir", str(models), "--config", str(config))

    out, _ = capsys.readouterr()
    assert code == 0
    for word in ("als", "popularity", "buy_again", "published", "precision@10", "ndcg@10"):
        assert word in out, word
    assert "420 rows read, 420 kept" in out
    assert "60 customers evaluated" in out
    assert "truth: all holdout purchases" in out
    assert "truth: items not bought in the suppression window" in out
    version = (models / "CURRENT").read_text(encoding="utf-8").strip()
    assert f"published {version}" in out
    assert (models / version / "manifest.json").is_file()


def test_train_warns_of_item_ids_alike_but_for_case(
    tmp_path: Path,
    planted_purchases: pd.DataFrame,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One day's export lowercased the item ids: trained as other items (ids are
    case-sensitive), but the summary and the report say so, naming examples."""
    data = planted_purchases.copy()
    last_day = data["timestamp"].dt.normalize() == data["timestamp"].dt.normalize().max()
    data.loc[last_day, "item_id"] = data.loc[last_day, "item_id"].str.lower()
    path = tmp_path / "purchases.csv"
    data.to_csv(path, index=False)
    slipped = sorted(data.loc[last_day, "item_id"].unique())

    code = _train(
        "--data", str(path), "--models-dir", str(tmp_path / "models"), "--config", str(config)
    )

    out, _ = capsys.readouterr()
    assert code == 0
    flat = " ".join(out.split())
    assert f"{2 * len(slipped)} item ids match another item id only by case" in flat
    assert f"{slipped[0].upper()} and {slipped[0]}" in flat
    assert "customer ids match" not in flat


def test_train_publishes_where_the_service_reads_models(
    tmp_path: Path,
    planted_csv: Path,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --models-dir, NBO_MODELS_DIR (as nbo models, batch and serve read it): in
    the service's environment it published into ./models, which the service never saw."""
    monkeypatch.chdir(tmp_path)
    served = tmp_path / "served"
    monkeypatch.setenv("NBO_MODELS_DIR", str(served))

    code = _train("--data", str(planted_csv), "--config", str(config))

    out, err = capsys.readouterr()
    assert code == 0, err
    version = (served / "CURRENT").read_text(encoding="utf-8").strip()
    assert f"published {version}" in out
    assert not (tmp_path / "models").exists()


def test_a_models_folder_that_cannot_be_one_names_where_it_came_from(
    tmp_path: Path,
    planted_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # where ./models would be written
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n", encoding="utf-8")
    monkeypatch.setenv("NBO_MODELS_DIR", str(afile))
    assert _train("--data", str(planted_csv)) == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, f"NBO_MODELS_DIR {afile}: exists and is not")
    monkeypatch.setenv("NBO_MODELS_DIR", str(tmp_path / "models"))
    assert _train("--data", str(planted_csv), "--models-dir", str(afile / "m")) == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, f"--models-dir {afile / 'm'}: cannot be")


def test_train_reads_a_partitioned_parquet_dataset(
    tmp_path: Path, planted_purchases: pd.DataFrame, config: Path, capsys: pytest.CaptureFixture
) -> None:
    """The planted purchases as Spark would write them (one hive folder per month, an
    extra column the mapping does not name): the same rows, and the model's data
    fingerprint is the dataset's."""
    folder = tmp_path / "purchases"
    timestamps = pd.to_datetime(planted_purchases["timestamp"])
    with_month = planted_purchases.assign(month=timestamps.dt.strftime("%Y-%m"), note="x")
    pq.write_to_dataset(pa.Table.from_pandas(with_month), folder, partition_cols=["month"])
    (folder / "_SUCCESS").write_bytes(b"")
    assert len(dataset_files(folder)) > 1
    models = tmp_path / "models"

    code = _train("--data", str(folder), "--models-dir", str(models), "--config", str(config))

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "420 rows read, 420 kept" in out
    version = (models / "CURRENT").read_text(encoding="utf-8").strip()
    manifest = json.loads((models / version / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["data"]["file"] == "purchases"
    assert manifest["data"]["sha256"] == fingerprint(folder)
    assert manifest["data"]["customers"] == 60


def test_a_folder_without_parquet_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "purchases.csv").write_text("customer_id,item_id,timestamp\n", encoding="utf-8")

    code = _train("--data", str(folder), "--models-dir", str(tmp_path / "models"))

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(folder), "is a folder without .parquet files")
    assert not (tmp_path / "models").exists()


def test_a_dataset_missing_a_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    frame = pd.DataFrame({"customer_id": ["c1"], "timestamp": [pd.Timestamp("2024-01-01")]})
    frame.to_parquet(folder / "part-0.parquet", index=False)

    code = _train("--data", str(folder), "--models-dir", str(tmp_path / "models"))

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(folder), "column 'item_id'", "missing required column")


def test_train_with_mapping_and_column_override(
    tmp_path: Path, planted_purchases: pd.DataFrame, config: Path, capsys: pytest.CaptureFixture
) -> None:
    """online-retail names, except the item column which this file calls "sku"."""
    named = planted_purchases.assign(item_name="item " + planted_purchases["item_id"])
    renamed = named.rename(
        columns={
            "customer_id": "CustomerID",
            "item_id": "sku",
            "timestamp": "InvoiceDate",
            "quantity": "Quantity",
            "price": "UnitPrice",
            "order_id": "InvoiceNo",
            "item_name": "Description",
        }
    )
    data = tmp_path / "renamed.parquet"
    renamed.to_parquet(data, index=False)
    models = tmp_path / "models"

    code = _train(
        "--data",
        str(data),
        "--mapping",
        "online-retail",
        "--column",
        "item_id=sku",
        "--models-dir",
        str(models),
        "--config",
        str(config),
    )

    out, _ = capsys.readouterr()
    assert code == 0
    assert "420 rows read, 420 kept" in out
    assert "published" in out


def test_quality_gate_failure_is_a_refusal_and_force_publishes(
    tmp_path: Path,
    config: Path,
    planted_purchases: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The current model learned the planted tastes before the holdout; the new file's
    # lines before it teach the wrong ones, so the new model serves the holdout worse.
    cutoff = planted_purchases["timestamp"].max() - pd.Timedelta(days=30)
    before, worse = tmp_path / "before.csv", tmp_path / "worse.csv"
    planted_purchases[planted_purchases["timestamp"] < cutoff].to_csv(before, index=False)
    worse_than_before(planted_purchases).to_csv(worse, index=False)
    models = tmp_path / "models"
    assert _train("--data", str(before), "--models-dir", str(models), "--config", str(config)) == 0
    current = (models / "CURRENT").read_text(encoding="utf-8")
    capsys.readouterr()
    args = ["--data", str(worse), "--models-dir", str(models), "--config", str(config)]

    code = _train(*args)

    out, err = capsys.readouterr()
    # A refusal (3), told apart from bad input (2) by the exit status alone.
    assert code == EXIT_REFUSED
    line = assert_one_error_line(err, "quality gate", "is worse than the current model", "--force")
    # The evaluation the verdict rests on is shown (it printed nothing), nothing published.
    assert "truth: all holdout purchases" in out and "│ served " in out
    assert "served against the best simple rule" in out
    assert line.removeprefix("nbo train: error: ") in out
    assert not re.search(r"^published ", out, re.MULTILINE)
    assert (models / "CURRENT").read_text(encoding="utf-8") == current
    assert len([p for p in models.iterdir() if p.is_dir()]) == 1

    code = _train(*args, "--force")

    out, _ = capsys.readouterr()
    assert code == 0
    # What happened, not "not published (use --force ...) (forced)" then "published".
    assert "is worse than the current model" in out
    assert "published because of --force" in out and "not published" not in out
    version = (models / "CURRENT").read_text(encoding="utf-8").strip()
    assert version != current.strip()
    assert re.search(rf"^published {version} ", out, re.MULTILINE)


# A models/CURRENT that is there but names no published version, and what is wrong with it.
BAD_CURRENTS = {
    "empty": (b"\n", "is empty"),
    "a path": (b"../elsewhere/v1\n", "is not a model version"),
    "no such version": (b"v1\n", "names v1, which is not a model in"),
    "not text": (b"\xff\xfe\n", "is not UTF-8 text"),
    "a folder": (None, "cannot be read"),
}


def _bad_current(models: Path, content: bytes | None) -> Path:
    models.mkdir()
    pointer = models / "CURRENT"
    if content is None:
        pointer.mkdir()
    else:
        pointer.write_bytes(content)
    return pointer


@pytest.mark.parametrize("case", list(BAD_CURRENTS))
def test_a_current_naming_no_version_is_refused_before_training(
    tmp_path: Path, planted_csv: Path, config: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """The gate took such a CURRENT for "no model is published yet" (a folder or a
    non-UTF-8 file was a traceback), passed, and publishing replaced it unseen: one line
    now says what is wrong with the file, before any training, and nothing is written."""
    content, problem = BAD_CURRENTS[case]
    models = tmp_path / "models"
    pointer = _bad_current(models, content)

    code = _train("--data", str(planted_csv), "--models-dir", str(models), "--config", str(config))

    out, err = capsys.readouterr()
    assert code == EXIT_REFUSED
    assert_one_error_line(err, f"quality gate: {pointer}", problem, "--force")
    assert "no model is published" not in err
    assert "rows read" not in out  # refused before the data was read
    # Nothing written but the lock file a training holds the folder by (never removed:
    # unlinking a lock file another process has open would let two hold it).
    assert sorted(p.name for p in models.iterdir()) == [".lock", "CURRENT"]
    if content is not None:
        assert pointer.read_bytes() == content


def test_force_publishes_over_a_bad_current_and_says_so(
    tmp_path: Path, planted_csv: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    pointer = _bad_current(models, b"../elsewhere/v1\n")

    code = _train(
        "--data", str(planted_csv), "--models-dir", str(models), "--config", str(config), "--force"
    )

    out, _ = capsys.readouterr()
    assert code == 0
    flat = " ".join(out.split())
    assert f"{pointer}: '../elsewhere/v1' is not a model version" in flat
    assert "which model serves now is unknown" in flat
    assert "published because of --force" in flat
    version = pointer.read_text(encoding="utf-8").strip()
    assert f"published {version}" in out
    gate = json.loads((models / version / "manifest.json").read_text(encoding="utf-8"))
    gate = gate["quality_gate"]
    assert gate["passed"] is False and gate["forced"] is True
    assert gate["current_version"] is None and "is not a model version" in gate["note"]


# --- user errors ----------------------------------------------------------------------


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.csv"

    code = _train("--data", str(missing), "--models-dir", str(tmp_path / "models"))

    _, err = capsys.readouterr()
    assert code == EXIT_USER_ERROR == 2
    line = assert_one_error_line(err, str(missing), "file not found")
    assert line == f"nbo train: error: {missing}: file not found"
    assert not (tmp_path / "models").exists()


def test_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "no_item.csv"
    pd.DataFrame({"customer_id": ["c1"], "timestamp": ["2024-01-01"]}).to_csv(data, index=False)

    code = _train("--data", str(data), "--models-dir", str(tmp_path / "models"))

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(data), "column 'item_id'", "missing required column")


def test_missing_column_under_a_mapping(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The planted file uses canonical names, not the online-retail ones.
    code = _train(
        "--data",
        str(planted_csv),
        "--mapping",
        "online-retail",
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, "column 'CustomerID'", "missing required column")


SAMPLE = DATA / "online_retail_sample.parquet"


@pytest.mark.parametrize(
    "command", [["train", "--models-dir", "MODELS"], ["evaluate", "--out", "MODELS"]]
)
def test_the_bundled_sample_without_its_mapping_is_told_which_mapping_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """What a newcomer types first: the file's own columns and the fitting mapping, not
    ``found []``; nothing is published or written."""
    out = tmp_path / "out"
    args = [out.as_posix() if a == "MODELS" else a for a in command]

    code = main([*args, "--data", str(SAMPLE)])

    _, err = capsys.readouterr()
    assert code == 2
    line = assert_one_error_line(
        err,
        f"{SAMPLE}: column 'customer_id': missing required column",
        "the file's columns are InvoiceNo, StockCode, Description, Quantity, InvoiceDate, "
        "UnitPrice, CustomerID, Country;",
        "add --mapping online-retail",
        command=command[0],
    )
    assert "found []" not in line
    assert not out.exists()


def test_unparseable_timestamp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad_time.csv"
    pd.DataFrame(
        {"customer_id": ["c1", "c2"], "item_id": ["i1", "i2"], "timestamp": ["2024-01-01", "soon"]}
    ).to_csv(data, index=False)

    code = _train("--data", str(data), "--models-dir", str(tmp_path / "models"))

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(data), "column 'timestamp'", "not timestamps", "'soon'")


def test_bad_mapping_name(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _train(
        "--data",
        str(planted_csv),
        "--mapping",
        "online-retial",
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, "mapping 'online-retial'", "online-retail")


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("item_id", "--column 'item_id': expected CANONICAL=SOURCE"),
        ("sku=StockCode", "unknown canonical column 'sku'"),
    ],
)
def test_bad_column_pair(
    tmp_path: Path,
    planted_csv: Path,
    capsys: pytest.CaptureFixture[str],
    pair: str,
    expected: str,
) -> None:
    code = _train(
        "--data", str(planted_csv), "--column", pair, "--models-dir", str(tmp_path / "models")
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, expected)


@pytest.mark.parametrize("days", ["0", "-5"])
def test_bad_holdout_days(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    code = _train(
        "--data",
        str(planted_csv),
        "--holdout-days",
        days,
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, "--holdout-days: ", "greater than or equal to 1")


def test_holdout_longer_than_the_data(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _train(
        "--data",
        str(planted_csv),
        "--holdout-days",
        "1000",
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, "holdout_days=1000", "no training data")


def test_missing_config_file(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"

    code = _train(
        "--data",
        str(planted_csv),
        "--config",
        str(missing),
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(missing), "no such file")


def test_unknown_config_field(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("[als]\nfactor = 8\n", encoding="utf-8")

    code = _train(
        "--data",
        str(planted_csv),
        "--config",
        str(config),
        "--models-dir",
        str(tmp_path / "models"),
    )

    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, str(config), "als.factor")


# --- the real process -----------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["TTY_COMPATIBLE"] = "0"
    return env


def test_console_script_exit_code_and_single_stderr_line(tmp_path: Path) -> None:
    data = tmp_path / "bad_qty.csv"
    pd.DataFrame(
        {
            "customer_id": ["c1"],
            "item_id": ["i1"],
            "timestamp": ["2024-01-01"],
            "quantity": ["lots"],
        }
    ).to_csv(data, index=False)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbo.cli",
            "train",
            "--data",
            str(data),
            "--models-dir",
            str(tmp_path / "models"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"nbo train: error: {data}: column 'quantity': 1 value(s) are not numbers "
        "(e.g. 'lots' on line 2)"
    ]


def test_installed_nbo_script_success(tmp_path: Path, planted_csv: Path, config: Path) -> None:
    script = Path(sys.executable).parent / "nbo"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nbo.cli"]
    models = tmp_path / "models"

    done = subprocess.run(
        [
            *command,
            "train",
            "--data",
            str(planted_csv),
            "--models-dir",
            str(models),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "published" in done.stdout
    assert (models / "CURRENT").is_file()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--data", "x.csv", "--holdout-days", "abc"], "--holdout-days"),
        (["train"], "--data"),
        (["bogus"], "bogus"),
        ([], "COMMAND"),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and fragment in lines[0]


# --- the summary ----------------------------------------------------------------------


def test_the_summary_shows_churn_against_recency_stages_and_the_plot(
    churn_trained: TrainResult,
) -> None:
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=200), churn_trained)
    text = buffer.getvalue()

    assert "churn: model against recency only" in text
    assert "roc_auc" in text and "pr_auc" in text and "brier" in text
    assert "lifecycle stages" in text and "loyal" in text and "lapsed" in text
    assert f"calibration plot {churn_trained.path / CALIBRATION_PLOT}" in text


def test_report_shows_the_cycles_line(with_cycles: TrainResult) -> None:
    out = io.StringIO()
    print_summary(Console(file=out, width=200, color_system=None), with_cycles)
    text = out.getvalue()

    assert (
        "repurchase cycles: 1 items (4.5%), median 14 days (p10 14 .. p90 14); "
        "1 before the cutoff for als_cycles" in text
    )
    assert (
        "just bought: a dead time on 1 items (4.5%), 1 at the floor, median 1 days; 1 days "
        "for other repeat purchases, the window for one-offs; floor 1 days, quantile 0.1 "
        "of the gaps less a 30-day horizon" in text
    )
    assert "als_cycles" in text.split("truth: all holdout purchases")[1]


def test_cycles_line_formats() -> None:
    days = {"min": 2.0, "p10": 7.0, "p25": 10.0, "median": 21.5, "p75": 30.0, "p90": 45.25}
    line = cycles_line(
        {
            "enabled": True,
            "min_repeat_buyers": 5,
            "items": 1234,
            "share": 0.25,
            "days": {**days, "max": 90.0},
            "items_before_cutoff": 1100,
        }
    )
    assert line == (
        "[bold]repurchase cycles:[/] 1,234 items (25.0%), median 21.5 days "
        "(p10 7 .. p90 45.2); 1,100 before the cutoff for als_cycles"
    )
    none = {"enabled": True, "min_repeat_buyers": 5, "items": 0, "share": 0.0, "days": None}
    assert cycles_line(none).endswith("0 items (0.0%), none learned (fewer than 5 repeat buyers)")
    assert cycles_line({"enabled": False}) == "[bold]repurchase cycles:[/] off"


def test_dead_time_line_without_repeat_buyers() -> None:
    line = dead_time_line(
        {
            "quantile": 0.2,
            "floor_days": 0.5,
            "horizon_days": 14,
            "floor_items": 0,
            "rebought_items": 0,
            "rebought_share": 0.0,
            "days": None,
            "shop_days": None,
        }
    )
    assert line == (
        "[bold]just bought:[/] a dead time on 0 items (0.0%), 0 at the floor; the window "
        "for other repeat purchases, the window for one-offs; floor 0.5 days, quantile 0.2 "
        "of the gaps less a 14-day horizon"
    )


def test_the_report_shows_the_source_contributions(trained: TrainResult) -> None:
    import io

    from rich.console import Console

    from training.cli import print_summary

    out = io.StringIO()
    print_summary(Console(file=out, width=200, color_system=None), trained)
    text = out.getvalue()
    assert "ranker: where its top 10 came from" in text
    for source in SOURCES:
        assert source in text.split("ranker: where its top 10 came from")[1]
    assert "strongest features" in text


def test_the_ranker_table_names_the_k_its_lists_are_cut_at(tmp_path: Path) -> None:
    """With k = 5 the summary's and the report's ranker table still said "where its top
    10 came from": the title names the configured k."""
    from datetime import UTC, datetime

    from nbo.data.mapping import load_mapping
    from training.evaluate_cli import evaluation_document
    from training.pipeline import train
    from training.report import evaluation_html

    data = tmp_path / "purchases.csv"
    make_planted_purchases().to_csv(data, index=False)
    config = small_training_config().model_copy(update={"k": 5})
    result = train(data, load_mapping("canonical"), tmp_path / "models", config, publish=False)
    assert result.manifest["ranker"]["enabled"]

    out = io.StringIO()
    print_summary(Console(file=out, width=200, color_system=None), result)
    page = evaluation_html(evaluation_document(result, datetime(2026, 7, 1, tzinfo=UTC)), "t")

    assert "ranker: where its top 5 came from (truth: all)" in out.getvalue()
    assert "where the ranker's top 5 came from (truth: all;" in page
    assert "top 10" not in out.getvalue() + page


def _served_section(served_all: float, served_new: float) -> dict:
    return {
        "policy": "itemknn",
        "metric": "ndcg@10",
        "against_best_rule": {
            "all": {
                "served": served_all,
                "best_rule": "buy_again",
                "best_rule_score": 0.7712,
                "change": served_all / 0.7712 - 1,
            },
            "new": {
                "served": served_new,
                "best_rule": "itemknn",
                "best_rule_score": 0.5,
                "change": served_new / 0.5 - 1,
            },
        },
    }


def test_a_served_model_below_the_best_simple_rule_is_warned_about(
    trained: TrainResult,
) -> None:
    """The policy picked on the validation window lost to buy-again by 3.9% on the
    holdout, and the summary read "quality gate passed" and nothing more."""
    from dataclasses import replace

    # A catalogue far larger than k: no warning that the figures say little.
    data = {**trained.manifest["data"], "items": 1000}
    lost = replace(
        trained,
        manifest={**trained.manifest, "data": data, "served": _served_section(0.7409, 0.5)},
    )

    out = io.StringIO()
    print_summary(Console(file=out, width=400, color_system=None), lost)
    text = out.getvalue()

    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: served ndcg@10 0.7409 is below buy_again 0.7712 (-3.9%) on the holdout, "
        "truth all: the policy chosen on the validation window (itemknn) lost to a simple "
        "rule here (the quality gate does not judge this: it compares what is served "
        "with the current model)"
    ]
    # Right under the verdict, where it is seen.
    lines = text.splitlines()
    assert lines[lines.index(warnings[0]) - 1].startswith("quality gate: ")

    level = replace(
        trained,
        manifest={**trained.manifest, "data": data, "served": _served_section(0.78, 0.6)},
    )
    out = io.StringIO()
    print_summary(Console(file=out, width=400, color_system=None), level)
    assert "warning" not in out.getvalue()


def test_the_propensity_line_names_the_curve_that_serves() -> None:
    """The summary said "from the ALS score" when the ranker served with its own curve
    (evaluation.json's propensity.ranker); a rule's line names the basis chosen and
    both bases' held-out Brier."""
    quality = {"brier": 0.11, "brier_constant": 0.13, "mean_predicted": 0.15, "observed": 0.16}
    report = {
        "horizon_days": 30,
        "customers": 325,
        "candidates": 50,
        "cf": {**quality, "brier": 0.12, "first_slot_rate": 0.31},
        "ranker": quality,
    }
    ranker = propensity_line(report, "ranker")
    assert "from the ranker's score, calibrated on 325 customers x 50 candidates" in ranker
    assert "Brier 0.1100 vs 0.1300" in ranker and "first slot" not in ranker
    als = propensity_line(report, "als")
    assert (
        "from the ALS score" in als and "Brier 0.1200" in als and "first slot bought 31.0%" in als
    )
    rule = propensity_line(report, "itemknn")
    assert "from the position in the itemknn list" in rule and "Brier" not in rule
    by_score = {**quality, "basis": "score", "brier": 0.10, "brier_position": 0.12}
    rule = propensity_line({**report, "rule": by_score}, "buy_again")
    assert "from the buy_again score of its own items (the place for the popular fill)" in rule
    assert "Brier 0.1000 (0.1200 by the place in the list alone) vs 0.1300" in rule
    by_place = {
        **by_score,
        "basis": "place",
        "brier": 0.09,
        "brier_score": 0.10,
        "brier_place": 0.09,
    }
    rule = propensity_line({**report, "rule": by_place}, "buy_again")
    assert "from the place of its own items in the buy_again list before suppression" in rule
    assert (
        "Brier 0.0900 (chosen: by the score 0.1000, by the place before suppression 0.0900; "
        "by the place in the list alone 0.1200) vs 0.1300" in rule
    )
    assert "from the ALS score" in propensity_line({**report, "ranker": None}, "ranker")


def test_figures_on_a_catalogue_little_larger_than_k_are_said_to_say_little(
    trained: TrainResult,
) -> None:
    """15 items and k = 10: served recall@10 0.97 and ItemKNN 1.0 looked excellent, and
    the summary did not say that a list of 10 of 15 items hits by construction."""
    from dataclasses import replace

    def warnings_with(items: int) -> list[str]:
        manifest = {**trained.manifest, "data": {**trained.manifest["data"], "items": items}}
        manifest["config"] = {**trained.manifest["config"], "k": 10}
        out = io.StringIO()
        print_summary(
            Console(file=out, width=1000, color_system=None), replace(trained, manifest=manifest)
        )
        return [line for line in out.getvalue().splitlines() if "hits by construction" in line]

    assert warnings_with(15) == [
        "warning: k = 10 is 67% of the 15 items: a list of 10 holds much of the catalogue "
        "and hits by construction, so the @10 figures say little about the model (set a "
        "smaller k in the config to tell methods apart; an experiment on live offers "
        "tells more)"
    ]
    assert warnings_with(30) == []  # a third: still a choice
    assert warnings_with(500) == []


def test_the_propensity_line_names_the_chance_of_buying_anything() -> None:
    """The buying curve the product curves are multiplied by, with its held-out quality,
    or why the figures stay conditional; nothing of it for a manifest from before it."""
    quality = {"brier": 0.11, "brier_constant": 0.13, "mean_predicted": 0.15, "observed": 0.16}
    report = {"horizon_days": 30, "customers": 325, "candidates": 50, "ranker": quality}
    buying = {
        "customers": 922,
        "brier": 0.1862,
        "brier_constant": 0.2288,
        "mean_predicted": 0.356,
        "observed": 0.354,
    }
    line = propensity_line({**report, "buying": buying}, "ranker")
    assert line.endswith(
        "; times P(buys anything within 30 days) from the churn risk, fitted on 922 "
        "customers: held-out half predicted 0.356 vs observed 0.354, Brier 0.1862 vs 0.2288"
    )
    reason = "no churn risk at the cutoff: product propensities are conditional"
    assert propensity_line({**report, "buying": {"reason": reason}}, "ranker").endswith(
        f"; {reason}"
    )
    assert "buys anything" not in propensity_line(report, "ranker")


def test_a_store_that_cannot_be_reached_is_try_again_later(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every failure exited 2: a cron job could not tell a store that is down (retry)
    from bad input (fix it) or a gate refusal. A store nobody answers at is 75
    (EX_TEMPFAIL), one line naming the flag."""
    models = tmp_path / "models"
    url = "postgresql://nbo@127.0.0.1:1/nbo"  # port 1: refused at once

    code = _train("--data", str(planted_csv), "--models-dir", str(models), "--store-url", url)

    _, err = capsys.readouterr()
    assert code == EXIT_TEMPFAIL == 75
    assert_one_error_line(err, "--store-url", "cannot connect")
    assert not (models / "CURRENT").exists()
