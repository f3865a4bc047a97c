"""The quality gate judges what is served against the current model: passed on the
planted data; a model that serves worse than the published one refused and nothing
written; a shop where nothing beats popularity still gets a model; ``force`` publishes
and says so."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from rich.console import Console
from support import END, make_nobody_comes_back, small_training_config, worse_than_before

from nbo.core.errors import QualityGateError
from nbo.data.mapping import load_mapping
from training.cli import print_summary
from training.config import RECORDED_TOLERANCE, TrainingConfig
from training.evaluate_cli import evaluation_document
from training.pipeline import ModelRefused, TrainResult, train
from training.report import evaluation_html


def _manifest(result: TrainResult) -> dict:
    assert result.path is not None
    return json.loads((result.path / "manifest.json").read_text(encoding="utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under a folder (hidden ones too) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _same_items_purchases() -> pd.DataFrame:
    """Twenty customers buy the same three items before and after the cutoff (outside the
    suppression window), plus one customer who bought twelve other items once: popularity
    is already perfect, so ALS can at best tie it."""
    rows = []
    for c in range(20):
        for item in ("P0", "P1", "P2"):
            for days in (100, 10):
                rows.append(
                    {
                        "customer_id": f"c{c:02d}",
                        "item_id": item,
                        "timestamp": END - pd.Timedelta(days=days, hours=c),
                    }
                )
    for q in range(12):
        rows.append(
            {"customer_id": "z", "item_id": f"Q{q:02d}", "timestamp": END - pd.Timedelta(days=100)}
        )
    return pd.DataFrame(rows)


@pytest.mark.learned
def test_quality_gate_passes_on_planted_data(trained: TrainResult) -> None:
    gate = _manifest(trained)["quality_gate"]

    # Nothing to compare with: neither passed nor failed.
    assert gate["passed"] is None
    assert gate["forced"] is False
    assert gate["metric"] == "ndcg@10"
    assert gate["truth"] == "all"
    # What is served is judged; the ranker serves, and no model was published before.
    assert gate["method"] == "served" and gate["policy"] == "ranker"
    assert gate["served"] == trained.metrics["all"]["served"]["ndcg@10"]
    assert gate["current"] is None and "no model is published" in gate["note"]


def _current_and_worse(folder: Path, planted: pd.DataFrame) -> tuple[TrainResult, Path]:
    """A model published from the planted lines before the holdout, and a file whose
    lines before it teach the wrong tastes (``worse_than_before``)."""
    cutoff = planted["timestamp"].max() - pd.Timedelta(days=30)
    before = folder / "before.csv"
    planted[planted["timestamp"] < cutoff].to_csv(before, index=False)
    current = train(before, load_mapping("canonical"), folder / "models", small_training_config())
    worse = folder / "worse.csv"
    worse_than_before(planted).to_csv(worse, index=False)
    return current, worse


def test_quality_gate_refuses_what_serves_worse_than_the_current_model(
    tmp_path: Path, planted_purchases: pd.DataFrame
) -> None:
    models = tmp_path / "models"
    published, worse = _current_and_worse(tmp_path, planted_purchases)
    before = _snapshot(models)

    with pytest.raises(QualityGateError) as caught:
        train(worse, load_mapping("canonical"), models, small_training_config())

    message = str(caught.value)
    assert f"is worse than the current model {published.version}" in message
    assert "on the same holdout" in message and "--force" in message
    # The refused training's figures come with the refusal, for the command's report.
    assert isinstance(caught.value, ModelRefused)
    refused = caught.value.result
    assert refused.path is None and refused.version is None and not refused.published
    assert refused.manifest["quality_gate"]["message"] == message
    assert refused.metrics["all"]["served"]["ndcg@10"] < refused.manifest["quality_gate"]["current"]
    # Nothing written, no staging folder left, CURRENT unchanged.
    assert _snapshot(models) == before
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == published.version


def test_a_shop_where_nothing_beats_popularity_still_gets_a_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    data = tmp_path / "same.csv"
    _same_items_purchases().to_csv(data, index=False)

    result = train(data, load_mapping("canonical"), models, small_training_config())

    # Every method scores 1.0 on this data, and all it bought before the holdout is
    # from one day: no window before the holdout to train a ranker or to validate on.
    # ALS serves, unvalidated, and the manifest says why; the model is published.
    policy = _manifest(result)["policy"]
    assert policy["name"] == policy["model"] == "als" and policy["validated"] is False
    assert "no window before the test window" in policy["reason"]
    assert _manifest(result)["quality_gate"]["passed"] is None  # the first: nothing compared
    assert result.metrics["all"]["served"]["ndcg@10"] == 1.0
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version


def test_force_publishes_and_records_it(tmp_path: Path, planted_purchases: pd.DataFrame) -> None:
    models = tmp_path / "models"
    published, worse = _current_and_worse(tmp_path, planted_purchases)

    result = train(worse, load_mapping("canonical"), models, small_training_config(), force=True)

    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is False
    assert gate["forced"] is True
    # The manifest says what happened: it said "not published (use --force ...)".
    assert gate["message"].endswith(": published because of --force")
    assert "not published" not in gate["message"]
    assert gate["current_version"] == published.version
    assert gate["served"] < gate["current"]
    assert result.published is True
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version


def test_a_model_evaluated_on_nobody_is_published_saying_so(tmp_path: Path) -> None:
    """It was published with every metric 0.0000 and "quality gate: served ndcg@10
    0.0000": zeros that were never measured. The shop still gets a model; the gate, the
    summary and the report say it was not evaluated, and why."""
    data = tmp_path / "tiny.csv"
    make_nobody_comes_back().to_csv(data, index=False)
    models = tmp_path / "models"

    result = train(data, load_mapping("canonical"), models, small_training_config())

    assert result.manifest["split"]["evaluated_customers"] == 0
    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is None and gate["evaluated"] is False
    assert gate["served"] is None and gate["current"] is None
    assert gate["message"] == (
        "quality gate: served ndcg@10 not evaluated (policy als): too few customers bought "
        "in the holdout: none who bought before the cutoff bought in it, so there is "
        "nothing to judge a model by; published unevaluated"
    )
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version
    # Nothing served to anyone: no comparison with the simple rules either.
    assert _manifest(result)["served"]["against_best_rule"] == {}

    out = io.StringIO()
    print_summary(Console(file=out, width=200, color_system=None), result)
    text = out.getvalue()
    assert "0 customers evaluated" in text and "not evaluated: too few customers" in text
    assert "0.0000" not in text
    methods = set(result.metrics["all"])
    rows = [line for line in text.splitlines() if line[1:].split("│")[0].strip() in methods]
    assert len(rows) == 2 * len(methods)
    assert all(line.split("│")[2].strip() == "–" for line in rows)

    document = evaluation_document(result, datetime(2026, 2, 1, tzinfo=UTC))
    page = evaluation_html(document, "t")
    assert document["quality_gate"]["message"].startswith("quality gate not evaluated: ")
    assert '<div class="verdict warn">' in page and "Not evaluated: nobody was scored" in page
    assert "<td>0.0000</td>" not in page and "<img" not in page.split("Churn")[0]


def _raise_recorded(models: Path, version: str, factor: float) -> float:
    """Edit a published model's manifest so its recorded served figure is ``factor``
    times what it measured (the manifest is not among the checksummed files); the new
    figure."""
    path = models / version / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    figures = manifest["metrics"]["all"]["served"]
    figures["ndcg@10"] *= factor
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return float(figures["ndcg@10"])


def _another_config() -> object:
    """The small config with one setting changed: a training that is not a rerun."""
    config = small_training_config()
    return config.model_copy(update={"als": config.als.model_copy(update={"iterations": 9})})


def test_a_current_model_that_saw_the_holdout_is_compared_by_its_recorded_figure(
    tmp_path: Path, planted_csv: Path
) -> None:
    # Nightly retraining: the current model learned every purchase of the holdout, so it
    # cannot be served on it. The gate compared nothing and recorded "passed", and any
    # model published. Now it compares with the figure the current model's manifest
    # records: on the same file and cutoff exactly.
    models = tmp_path / "models"
    current = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    assert current.version is not None
    recorded = _raise_recorded(models, current.version, 1.5)
    before = _snapshot(models)

    with pytest.raises(ModelRefused) as caught:
        train(planted_csv, load_mapping("canonical"), models, _another_config())  # type: ignore[arg-type]

    gate = caught.value.result.manifest["quality_gate"]
    assert gate["passed"] is False and gate["recorded"] is True and gate["tolerance"] == 0.0
    assert gate["current"] == pytest.approx(recorded)
    message = str(caught.value)
    assert f"is worse than the current model {current.version}" in message
    assert "as its manifest records" in message and "compared exactly" in message
    assert "its own holdout, 30 days from" in message
    assert _snapshot(models) == before


def test_a_recorded_figure_on_another_window_allows_the_tolerance(
    tmp_path: Path, planted_csv: Path
) -> None:
    models = tmp_path / "models"
    current = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    assert current.version is not None
    # Recorded on another data file (the same training, so the same figure, as the
    # trainer is deterministic): a figure 4% better than the new model's passes (within
    # RECORDED_TOLERANCE), one 10% better refuses.
    path = models / current.version / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["data"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest), encoding="utf-8")
    _raise_recorded(models, current.version, 1.04)

    result = train(planted_csv, load_mapping("canonical"), models, small_training_config())

    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is True and gate["tolerance"] == RECORDED_TOLERANCE
    assert gate["served"] < gate["current"] and "worse by more than 5%" in gate["message"]
    assert result.version is not None
    path = models / result.version / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["data"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest), encoding="utf-8")
    _raise_recorded(models, result.version, 1.1)
    with pytest.raises(ModelRefused, match="is worse by more than 5% than the current model"):
        train(planted_csv, load_mapping("canonical"), models, small_training_config())


def test_the_tolerance_is_a_config_setting(tmp_path: Path, planted_csv: Path) -> None:
    """A shop whose nights move less (or more) sets ``gate_tolerance``: a recorded figure
    4% better than the new model's refuses it under 2%."""
    models = tmp_path / "models"
    current = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    assert current.version is not None
    path = models / current.version / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["data"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest), encoding="utf-8")
    _raise_recorded(models, current.version, 1.04)

    strict = small_training_config().model_copy(update={"gate_tolerance": 0.02})
    with pytest.raises(ModelRefused, match="is worse by more than 2% than the current model"):
        train(planted_csv, load_mapping("canonical"), models, strict)
    with pytest.raises(ValidationError, match="gate_tolerance"):
        TrainingConfig.model_validate({"gate_tolerance": 1.0})


def test_nothing_compared_is_not_recorded_as_passed(tmp_path: Path, planted_csv: Path) -> None:
    # The first publication compares with nothing: neither passed nor failed.
    models = tmp_path / "models"
    result = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is None and gate["current"] is None
    assert "not compared with a current model" in gate["message"]
