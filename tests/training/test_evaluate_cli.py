"""``nbo evaluate`` through the real command line: the trainer's evaluation with nothing
published, written as evaluation.json and a self-contained report.html; a failed quality
gate is reported, not an error; user errors are one stderr line and exit code 2."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support import END, assert_one_error_line, without_progress

from nbo.cli import EXIT_USER_ERROR, main
from nbo.models.candidates import FEATURES, SOURCES
from training.cli import METHOD_ORDER
from training.evaluate import CHURN_METRICS
from training.evaluate_cli import default_out_dir, evaluation_document
from training.pipeline import TrainResult
from training.report import METHOD_GLOSSARY, evaluation_html, evaluation_json

pytestmark = pytest.mark.usefixtures("plain_terminal")

PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a models/ folder in it (as in a checkout), and the system's
    temporary folder redirected so what the command leaves there can be seen."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "README.md").write_text("models live here\n", encoding="utf-8")
    monkeypatch.chdir(work)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return work


def _evaluate(*args: str) -> int:
    return main(["evaluate", *args])


def _assert_one_error_line(err: str, *fragments: str) -> str:
    return assert_one_error_line(err, *fragments, command="evaluate")


def _gate_failing_csv(folder: Path) -> Path:
    """Everyone buys the same three items again: popularity is as good as ALS can be."""
    rows = [
        {
            "customer_id": f"c{c:02d}",
            "item_id": item,
            "timestamp": END - pd.Timedelta(days=days, hours=c),
        }
        for c in range(20)
        for item in ("P0", "P1", "P2")
        for days in (100, 10)
    ] + [
        {"customer_id": "z", "item_id": f"Q{q:02d}", "timestamp": END - pd.Timedelta(days=100)}
        for q in range(12)
    ]
    path = folder / "same.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --- success --------------------------------------------------------------------------


def test_evaluate_writes_json_and_html_and_publishes_nothing(
    workdir: Path,
    planted_csv: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = _evaluate("--data", str(planted_csv), "--config", str(config))

    out, err = capsys.readouterr()
    assert code == 0, err
    # The summary of `nbo train`, without publishing.
    for text in (
        "420 rows read, 420 kept",
        "60 customers evaluated",
        "truth: all holdout purchases",
        "truth: items not bought in the suppression window",
        # Compared with nothing: not "passed" (which read as a verdict).
        "quality gate not compared",
        "`nbo train` would publish this model",
    ):
        assert text in out, text
    assert "published" not in out
    # The ranker's sources and strongest features, as `nbo train` prints them.
    assert "ranker: where its top 10 came from" in out
    assert "strongest features" in out

    # The default folder, under reports/ of the working folder; both paths printed.
    (folder,) = (workdir / "reports").iterdir()
    assert folder.name.startswith("evaluate-purchases-")
    json_path, html_path = folder / "evaluation.json", folder / "report.html"
    assert f"wrote {Path('reports') / folder.name / 'evaluation.json'}" in out
    assert f"wrote {Path('reports') / folder.name / 'report.html'}" in out

    document = json.loads(json_path.read_text(encoding="utf-8"))
    assert document["published"] is False
    for section in (
        "split",
        "cycles",
        "churn",
        "lifecycle",
        "propensity",
        "ranker",
        "quality_gate",
    ):
        assert section in document, section
    ranker = document["ranker"]
    assert ranker["enabled"] is True
    assert set(ranker["contributions"]) == set(SOURCES)
    assert set(ranker["importance"]) == set(FEATURES)
    for section in ("data", "config", "timings"):
        assert document[section], section
    assert document["data"]["rows_kept"] == 420
    assert document["quality_gate"]["passed"] is None  # compared with nothing
    metrics = document["metrics"]
    methods = list(metrics["all"])
    assert {"als", "popularity", "buy_again"} <= set(methods)
    assert list(metrics["new"]) == methods
    for truth in ("all", "new"):
        customers = {m["customers"] for m in metrics[truth].values()}
        # Honest: every method scored on the same customers.
        assert customers == {document["evaluated_customers"][truth]}, (truth, customers)
        for method in methods:
            for name in ("precision@10", "recall@10", "ndcg@10", "map@10"):
                value = metrics[truth][method][name]
                assert 0.0 <= value <= 1.0, (truth, method, name)
    assert document["evaluated_customers"]["all"] == 60

    page = html_path.read_text(encoding="utf-8")
    pngs = PNG_URI.findall(page)
    assert len(pngs) >= 3  # NDCG, the other metrics, the stages (and churn if trained)
    for png in pngs:
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    for method in methods:
        assert f"<td>{method}</td>" in page, method
    text = PNG_URI.sub("", page)
    assert "<script" not in text and "http" not in text  # self-contained, no network
    assert "quality gate not compared" in page
    assert "Two-stage ranker" in page and 'alt="feature importance"' in page
    for source in SOURCES:
        assert f"<td>{source}</td>" in page, source

    # Nothing published, nothing left behind.
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["README.md"]
    assert list(Path(tempfile.gettempdir()).iterdir()) == []


def test_a_shop_where_nothing_beats_popularity_is_served_and_would_be_published(
    tmp_path: Path,
    workdir: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _gate_failing_csv(tmp_path)
    out_dir = tmp_path / "report"

    code = _evaluate("--data", str(data), "--config", str(config), "--out", str(out_dir))

    out, err = capsys.readouterr()
    assert code == 0, err
    assert without_progress(err).strip() == ""
    assert "quality gate not compared" in out and "`nbo train` would publish this model" in out
    document = json.loads((out_dir / "evaluation.json").read_text(encoding="utf-8"))
    policy = document["policy"]
    assert f"served: policy {policy['name']}: " in out
    assert document["quality_gate"]["policy"] == policy["name"]
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "What is served" in page
    assert '<div class="verdict warn">quality gate not compared' in page
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["README.md"]


def test_a_failed_quality_gate_is_reported_as_what_nbo_train_would_do() -> None:
    result = _fake_result()
    result.manifest["quality_gate"].update(passed=False, current=0.4, current_version="v1")

    document = evaluation_document(result, datetime(2026, 2, 1, tzinfo=UTC))

    message = document["quality_gate"]["message"]
    assert message.startswith("quality gate failed: served ndcg@10 0.3300 (policy ranker)")
    assert "is worse than the current model v1, 0.4000, on the same holdout" in message
    assert "would refuse to publish it (exit 3) unless --force" in message
    assert "use --force to publish anyway" not in message  # the trainer's advice, not ours
    page = evaluation_html(document, "t")
    assert '<div class="verdict fail">quality gate failed' in page


def test_the_document_records_how_the_file_was_read(
    workdir: Path,
    planted_purchases: pd.DataFrame,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Day-first dates in a column named "member" for the customers: the document said
    "canonical" and nothing of the columns or the dates' format."""
    data = workdir / "shop.csv"
    planted_purchases.rename(columns={"customer_id": "member"}).assign(
        timestamp=planted_purchases["timestamp"].dt.strftime("%d/%m/%Y %H:%M")
    ).to_csv(data, index=False)
    out = workdir / "out"

    code = _evaluate(
        "--data", str(data), "--column", "customer_id=member", "--config", str(config),
        "--out", str(out),
    )  # fmt: skip

    _, err = capsys.readouterr()
    assert code == 0, err
    recorded = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))["data"]
    assert recorded["mapping"] == "canonical with --column customer_id=member"
    assert recorded["columns"] == {
        "customer_id": "member",
        "item_id": "item_id",
        "timestamp": "timestamp",
        "quantity": "quantity",
        "price": "price",
        "order_id": "order_id",
    }
    assert recorded["rules"] == {
        "cancelled_order_prefix": "",
        "non_product_items": [],
        "timestamp_format": "%d/%m/%Y %H:%M",
    }
    assert recorded["first_purchase"] == planted_purchases["timestamp"].min().isoformat() + "+00:00"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "canonical with --column customer_id=member" in page
    assert "customer_id = member" in page
    assert "%d/%m/%Y %H:%M" in page


def test_dates_the_file_leaves_ambiguous_are_one_error_line_then_read_with_the_flag(
    workdir: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = workdir / "ambiguous.csv"
    data.write_text(
        "customer_id,item_id,timestamp\nc1,i1,03/07/2023 10:00\nc1,i2,04/07/2023 10:00\n",
        encoding="utf-8",
    )

    code = _evaluate("--data", str(data), "--config", str(config))

    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_error_line(err, str(data), "column 'timestamp'", "--timestamp-format")
    assert not (workdir / "reports").exists()

    code = _evaluate("--data", str(data), "--timestamp-format", "%d/%m", "--config", str(config))

    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_error_line(err, "--timestamp-format '%d/%m': not a strptime format")


# --- user errors ----------------------------------------------------------------------


def test_missing_data_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = workdir / "nowhere.csv"

    code = _evaluate("--data", str(missing))

    _, err = capsys.readouterr()
    assert code == EXIT_USER_ERROR == 2
    line = _assert_one_error_line(err, str(missing), "file not found")
    assert line == f"nbo evaluate: error: {missing}: file not found"
    assert not (workdir / "reports").exists()


def test_out_is_a_file(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any training, not after it."""
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")

    code = _evaluate("--data", str(planted_csv), "--out", str(taken))

    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_error_line(err, str(taken), "not a folder")


def test_missing_config_file(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"

    code = _evaluate(
        "--data", str(planted_csv), "--config", str(missing), "--out", str(tmp_path / "o")
    )

    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_error_line(err, str(missing), "no such file")
    assert not (tmp_path / "o").exists()


def test_a_missing_catalog_names_the_flag(
    tmp_path: Path, planted_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"

    code = _evaluate(
        "--data", str(planted_csv), "--catalog", str(missing), "--out", str(tmp_path / "o")
    )

    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_error_line(
        err, str(missing), "no such file (give --catalog a catalogue file, or leave it out)"
    )
    assert "NBO_CATALOG" not in err


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate"])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0], err


def test_installed_nbo_script(tmp_path: Path) -> None:
    """The entry point is registered: the real script knows ``evaluate``."""
    script = Path(sys.executable).parent / "nbo"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nbo.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    missing = tmp_path / "nowhere.parquet"

    done = subprocess.run(
        [*command, "evaluate", "--data", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"nbo evaluate: error: {missing}: file not found"]


# --- the document and the page, without training --------------------------------------


def _fake_result() -> TrainResult:
    """Methods the trainer may grow ("ranker", "itemknn"), listed out of display order."""

    def scores(base: float, customers: float) -> dict[str, float]:
        return {
            "precision@10": base,
            "recall@10": base / 2,
            "ndcg@10": base * 1.1,
            "map@10": base / 3,
            "coverage": 0.1,
            "customers": customers,
        }

    metrics: dict[str, Any] = {
        truth: {
            "ranker": scores(0.30, n),
            "popularity": scores(0.10, n),
            "als": scores(0.25, n),
            "itemknn": scores(0.20, n),
        }
        for truth, n in (("all", 40.0), ("new", 38.0))
    }
    metrics["churn"] = {
        "recency": {"roc_auc": 0.6, "pr_auc": 0.5, "brier": float("nan"), "customers": 50.0},
        "model": {"roc_auc": 0.7, "pr_auc": 0.6, "brier": 0.2, "customers": 50.0},
    }
    manifest = {
        "data": {"file": "x<y>.csv", "rows_read": 10, "rows_kept": 9, "dropped": {"dup": 1}},
        "config": {"k": 10},
        "split": {"cutoff": "2026-01-01T00:00:00", "evaluated_customers": 40},
        "churn": {"enabled": False, "reason": "no orders"},
        "lifecycle": {"as_of": "2026-01-31", "stages": {"lapsed": 3, "new": 1, "loyal": 2}},
        "quality_gate": {
            "passed": True,
            "metric": "ndcg@10",
            "truth": "all",
            "method": "served",
            "policy": "ranker",
            "served": 0.33,
            "current_version": None,
            "current": None,
            "note": "`nbo evaluate` compares with no model",
            "message": "quality gate: served ndcg@10 0.3300 (policy ranker); not compared "
            "with a current model: `nbo evaluate` compares with no model",
            "forced": False,
        },
    }
    return TrainResult(
        version=None,
        path=None,
        metrics=metrics,
        cleaning=None,  # type: ignore[arg-type]  # not read by the document
        manifest=manifest,
        timings={"evaluate": 1.5},
        published=False,
    )


def test_document_orders_known_methods_and_keeps_new_ones_last(tmp_path: Path) -> None:
    document = evaluation_document(_fake_result(), datetime(2026, 2, 1, tzinfo=UTC))

    # METHOD_ORDER's order (it may come to list the new ones too), unknown ones last.
    listed = [m for m in ("ranker", "popularity", "als", "itemknn") if m in METHOD_ORDER]
    unlisted = [m for m in ("ranker", "popularity", "als", "itemknn") if m not in METHOD_ORDER]
    expected = sorted(listed, key=METHOD_ORDER.index) + unlisted
    assert list(document["metrics"]["all"]) == expected
    assert list(document["metrics"]["new"]) == expected
    assert list(document["metrics"]["churn"]) == ["model", "recency"]
    assert list(document["lifecycle"]["stages"]) == ["new", "loyal", "lapsed"]
    assert document["evaluated_customers"] == {"all": 40, "new": 38}
    assert "forced" not in document["quality_gate"]
    assert document["quality_gate"]["message"] == (
        "quality gate passed: served ndcg@10 0.3300 (policy ranker); not compared with a "
        "current model: `nbo evaluate` compares with no model; `nbo train` would publish "
        "this model"
    )

    text = evaluation_json(document)
    assert "NaN" not in text
    assert json.loads(text)["metrics"]["churn"]["recency"]["brier"] is None

    page = evaluation_html(document, "nbo evaluate: x<y>.csv")
    for method in ("als", "popularity", "ranker", "itemknn"):
        assert f"<td>{method}</td>" in page, method
    positions = [page.index(f"<td>{method}</td>") for method in expected]
    assert positions == sorted(positions)
    assert "x&lt;y&gt;.csv" in page and "x<y>.csv" not in page
    assert "Churn model off: no orders." in page
    assert "same customers: 40 for truth all, 38 for truth new" in page
    assert len(PNG_URI.findall(page)) == 3


def test_page_warns_when_methods_saw_different_customers() -> None:
    result = _fake_result()
    result.metrics["new"]["ranker"]["customers"] = 37.0

    document = evaluation_document(result, datetime(2026, 2, 1, tzinfo=UTC))

    assert document["evaluated_customers"] == {"all": 40, "new": None}
    page = evaluation_html(document, "t")
    assert "different numbers of customers for truth new" in page


def test_default_out_dir_never_reuses_a_folder(tmp_path: Path) -> None:
    now = datetime(2026, 2, 1, 9, 30, 5, tzinfo=UTC)
    first = default_out_dir(Path("data/shop.parquet"), now, tmp_path)
    assert first == tmp_path / "evaluate-shop-20260201T093005Z"
    first.mkdir()
    assert default_out_dir(Path("shop.csv"), now, tmp_path).name == (
        "evaluate-shop-20260201T093005Z-2"
    )


def test_evaluate_reads_a_partitioned_parquet_dataset(
    workdir: Path,
    planted_purchases: pd.DataFrame,
    config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = workdir / "spark-export"
    for n, (_, part) in enumerate(planted_purchases.groupby("customer_id")):
        partition = folder / f"shard={n % 3}"
        partition.mkdir(parents=True, exist_ok=True)
        part.to_parquet(partition / f"part-{n:05d}.parquet", index=False)

    code = _evaluate("--data", str(folder), "--config", str(config))

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "420 rows read, 420 kept" in out
    assert "60 customers evaluated" in out
    (report,) = (workdir / "reports").iterdir()
    assert report.name.startswith("evaluate-spark-export-")
    document = json.loads((report / "evaluation.json").read_text(encoding="utf-8"))
    assert document["data"]["file"] == "spark-export"


def test_page_says_what_each_method_row_and_metric_is() -> None:
    document = evaluation_document(_fake_result(), datetime(2026, 2, 1, tzinfo=UTC))
    page = html.unescape(evaluation_html(document, "t"))

    shown = {m for by_method in document["metrics"].values() for m in by_method} - {CHURN_METRICS}
    assert shown, "the fake result has methods"
    for method in shown & set(METHOD_GLOSSARY):
        assert f"<td>{method}</td><td>{METHOD_GLOSSARY[method]}</td>" in page
    assert "NDCG@10 = DCG / the DCG of min(items bought, 10) hits at the top" in page


def test_the_page_warns_when_what_is_served_lost_to_a_simple_rule() -> None:
    result = _fake_result()
    result.manifest["served"] = {
        "policy": "ranker",
        "metric": "ndcg@10",
        "against_best_rule": {
            "all": {"served": 0.33, "best_rule": "itemknn", "best_rule_score": 0.22},
            "new": {
                "served": 0.2,
                "best_rule": "itemknn",
                "best_rule_score": 0.25,
                "change": -0.2,
            },
        },
    }
    document = evaluation_document(result, datetime(2026, 2, 1, tzinfo=UTC))

    page = evaluation_html(document, "t")

    assert page.count("<b>Warning:</b>") == 1
    assert (
        "served ndcg@10 0.2000 is below itemknn 0.2500 (-20.0%) on the holdout, truth new" in page
    )
    # Beside the verdict at the top, not among the tables.
    assert page.index("<b>Warning:</b>") < page.index("<h2>Data</h2>")
