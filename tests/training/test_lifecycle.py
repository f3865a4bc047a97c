"""The trainer's churn model and lifecycle: cutoffs that never see the evaluation labels,
a planted signal recency alone cannot see, the model skipped with its reason, and the
manifest, customers file and calibration plot it publishes."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from support import END, data_end, orders_of

from nbo.cli import main
from nbo.core import columns as col
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.features import FEATURE_NAMES
from nbo.models.churn import CHURN_FILE
from nbo.models.served import load_serving_model
from training.cli import print_summary
from training.config import ChurnConfig, TrainingConfig, config_warnings
from training.evaluate_cli import evaluation_document
from training.lifecycle import (
    CALIBRATION_PLOT,
    CUSTOMERS_FILE,
    below_recency,
    customer_lifecycle,
    loyal_rule,
    read_customers,
    train_churn,
)
from training.pipeline import TrainResult
from training.report import evaluation_html

HORIZON = 90


def test_cutoffs_leave_the_evaluation_labels_unseen(churn_purchases: pd.DataFrame) -> None:
    orders, _ids = orders_of(churn_purchases)
    end = data_end(orders)

    result = train_churn(orders, ChurnConfig(), end, seed=0)

    section = result.section
    assert section["enabled"] is True and result.enabled
    evaluation = pd.Timestamp(section["evaluation_cutoff"])
    assert evaluation == pd.Timestamp(end - HORIZON * DAY, unit="s", tz="UTC")
    training = [pd.Timestamp(c) for c in section["training_cutoffs"]]
    # The latest training labels end where the evaluation starts.
    assert training == [evaluation - pd.Timedelta(days=HORIZON + 30 * k) for k in range(3)]
    published = [pd.Timestamp(c) for c in section["published_cutoffs"]]
    assert published == [evaluation - pd.Timedelta(days=30 * k) for k in range(3)]
    assert section["scored_as_of"] == pd.Timestamp(end, unit="s", tz="UTC").isoformat()
    assert section["sklearn_version"] and section["feature_names"] == list(FEATURE_NAMES)


def test_model_beats_recency_when_churn_depends_on_the_rhythm(
    churn_purchases: pd.DataFrame,
) -> None:
    """Fast buyers who stopped are told from slow buyers between two orders at the same
    recency (the overdue ratio and the recent counts). Slow buyers who just bought, and
    will not be back within the horizon, the model may not tell from those halfway to
    their next order (its risk never falls with silence nor rises with an order): hence
    an AUC of about 0.84 here, not the 0.98 an unconstrained model reaches."""
    orders, _ids = orders_of(churn_purchases)

    result = train_churn(orders, ChurnConfig(), data_end(orders), seed=0)

    assert result.metrics is not None
    model, recency = result.metrics["model"], result.metrics["recency"]
    assert model["customers"] == recency["customers"] == result.section["evaluation_customers"]
    assert 0.2 < model["positive_rate"] < 0.8
    assert model["roc_auc"] > 0.8
    assert model["roc_auc"] > recency["roc_auc"] + 0.15
    assert model["pr_auc"] > recency["pr_auc"]
    assert model["brier"] < recency["brier"] * 0.7
    table = result.section["calibration"]
    assert sum(row["count"] for row in table["model"]) == model["customers"]


def test_too_little_data_skips_the_model_with_the_reason(
    churn_purchases: pd.DataFrame,
) -> None:
    recent = churn_purchases[churn_purchases[col.TIMESTAMP] > END - pd.Timedelta(days=200)]
    orders, _ids = orders_of(recent)

    short = train_churn(orders, ChurnConfig(), data_end(orders), seed=0)
    off = train_churn(orders, ChurnConfig(enabled=False), data_end(orders), seed=0)

    assert short.model is None and short.metrics is None and not short.enabled
    assert short.section["enabled"] is False
    assert re.search(r"the data spans 19\d days", short.section["reason"])
    assert "needs 210" in short.section["reason"]
    assert off.section == {"enabled": False, "reason": "disabled in the training config"}


def test_one_class_at_every_training_cutoff_skips_the_model() -> None:
    # Everybody buys every ten days until the end: nobody ever churns.
    rows = [
        {col.CUSTOMER_ID: f"c{c}", col.ITEM_ID: "A", col.TIMESTAMP: END - pd.Timedelta(days=d)}
        for c in range(30)
        for d in range(0, 400, 10)
    ]
    orders, _ids = orders_of(pd.DataFrame(rows))

    result = train_churn(orders, ChurnConfig(), data_end(orders), seed=0)

    assert result.model is None and "who churned" in result.section["reason"]


def test_trainer_publishes_the_churn_model_metrics_stages_and_plot(
    churn_trained: TrainResult,
) -> None:
    assert churn_trained.path is not None
    manifest = json.loads((churn_trained.path / "manifest.json").read_text())

    churn = manifest["metrics"]["churn"]
    assert set(churn) == {"model", "recency"}
    for method in churn.values():
        assert set(method) == {"roc_auc", "pr_auc", "brier", "customers", "positive_rate"}
        assert all(isinstance(v, float) for v in method.values())
    assert churn["model"]["roc_auc"] > churn["recency"]["roc_auc"]
    assert manifest["churn"]["enabled"] is True
    assert manifest["churn"]["sklearn_version"] == manifest["libraries"]["scikit-learn"]
    assert set(manifest["churn"]["calibration"]) == {"model", "recency"}
    assert {CHURN_FILE, CUSTOMERS_FILE, CALIBRATION_PLOT} <= set(manifest["files"])
    assert (churn_trained.path / CALIBRATION_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert manifest["data"]["typical_line_value"] == 4.0

    lifecycle = manifest["lifecycle"]
    customers = read_customers(str(churn_trained.path / CUSTOMERS_FILE))
    assert len(customers) == lifecycle["customers"] == manifest["model"]["customers"]
    assert list(customers.columns) == [
        "customer_id",
        "stage",
        "churn_risk",
        "recency_days",
        "frequency",
        "monetary",
        "best_send_hour",
    ]
    assert set(customers["stage"]) <= set(STAGES)
    assert customers["stage"].value_counts().to_dict() == {
        stage: n for stage, n in lifecycle["stages"].items() if n
    }
    assert customers["churn_risk"].between(0, 1).all()
    assert customers["best_send_hour"].between(0, 167).all()
    # Loyal thresholds derived from the data, at or above the median customer.
    assert lifecycle["loyal_min_orders"] >= customers["frequency"].median()
    assert lifecycle["loyal_min_orders_from"].startswith("p80 of the")


def test_the_churn_figures_say_the_published_model_is_not_measured(
    churn_trained: TrainResult,
) -> None:
    """The figures and the calibration are the evaluated model's at the evaluation
    cutoff; the summary and the report say so, and that the published refit is not
    measured (its labels reach the end of the data)."""
    evaluation = churn_trained.manifest["churn"]["evaluation_cutoff"][:10]
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=400), churn_trained)
    page = evaluation_html(evaluation_document(churn_trained, datetime.now(UTC)), "t")

    summary = " ".join(buffer.getvalue().split())
    expected = f"the model fitted for evaluation, at the evaluation cutoff {evaluation}"
    assert f"churn: figures and calibration: {expected}" in summary
    assert "the published model (refitted on cutoffs up to" in summary
    assert "is not measured, its labels reach the end of the data" in summary
    assert f"Figures and calibration: {expected}; the published model" in page


def test_a_churn_model_that_loses_to_recency_alone_is_published_with_a_warning(
    churn_trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subscription brand's churn model scored ROC AUC 0.9259 / PR AUC 0.8793 / Brier
    0.0320 against recency's 0.9611 / 0.9270 / 0.0304, and nbo train said nothing."""
    lost = {
        "model": {"roc_auc": 0.9259, "pr_auc": 0.8793, "brier": 0.0320},
        "recency": {"roc_auc": 0.9611, "pr_auc": 0.9270, "brier": 0.0304},
    }
    (warning,) = below_recency(lost)
    assert warning.startswith(
        "the churn model does worse than recency alone at the evaluation cutoff (ROC AUC "
        "0.9259 vs 0.9611; PR AUC 0.8793 vs 0.9270; Brier 0.0320 vs 0.0304): its risk "
        "still sets the stages"
    )
    # Better ranking, worse calibration alone: nothing to warn of.
    assert (
        below_recency({**lost, "model": {**lost["model"], "roc_auc": 0.97, "pr_auc": 0.93}}) == []
    )
    # The trainer writes the section's warnings from its own figures (the planted model wins).
    churn = churn_trained.manifest["churn"]
    assert churn["warnings"] == below_recency(churn_trained.metrics["churn"]) == []

    manifest = {
        **churn_trained.manifest,
        "churn": {**churn, "warnings": [warning]},
        "metrics": {**churn_trained.manifest["metrics"], "churn": lost},
    }
    result = dataclasses.replace(churn_trained, manifest=manifest)
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=1000, color_system=None), result)
    assert f"warning: {warning}" in buffer.getvalue().splitlines()
    page = evaluation_html(evaluation_document(result, datetime.now(UTC)), "t")
    assert "does worse than recency alone" in page

    # nbo models marks the version.
    assert churn_trained.path is not None
    models = tmp_path / "models"
    shutil.copytree(churn_trained.path.parent, models, symlinks=True)
    version = churn_trained.path.name
    written = json.loads((models / version / "manifest.json").read_text())
    written["churn"]["warnings"] = [warning]
    (models / version / "manifest.json").write_text(json.dumps(written))
    capsys.readouterr()
    assert main(["models", "--models-dir", str(models)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(version))
    assert line.endswith("warning: churn model does worse than recency alone")


def test_a_short_history_publishes_with_churn_off(trained: TrainResult) -> None:
    """The shared planted data spans 150 days: too short for a 90-day horizon."""
    assert trained.path is not None
    manifest = json.loads((trained.path / "manifest.json").read_text())
    model = load_serving_model(trained.path.parent)

    assert manifest["churn"]["enabled"] is False
    assert "needs 210" in manifest["churn"]["reason"]
    assert "churn" not in manifest["metrics"]
    assert CHURN_FILE not in manifest["files"] and CALIBRATION_PLOT not in manifest["files"]
    assert model.churn is None and model.churn_horizon_days is None
    customers = read_customers(str(trained.path / CUSTOMERS_FILE))
    assert customers["churn_risk"].isna().all()
    assert "at_risk" not in set(customers["stage"])
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=200), trained)
    assert "churn model: off (the data spans" in buffer.getvalue()
    # Loyal rests on orders and value alone: no risk condition is printed.
    loyal = next(line for line in buffer.getvalue().splitlines() if line.startswith("loyal:"))
    assert "in value" in loyal and loyal.endswith("(no churn model: no risk condition)")
    assert "risk below" not in loyal


def test_contradictory_lifecycle_settings_are_trained_on_with_a_warning_in_the_summary(
    churn_purchases: pd.DataFrame, trained: TrainResult
) -> None:
    orders, _ids = orders_of(churn_purchases)
    config = TrainingConfig.model_validate({"lifecycle": {"loyal_max_risk": 0.8}})

    section = customer_lifecycle(orders, None, config, data_end(orders)).section

    assert section["warnings"] == config_warnings(config) != []
    manifest = {**trained.manifest, "lifecycle": {**trained.manifest["lifecycle"], **section}}
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=400), dataclasses.replace(trained, manifest=manifest))
    assert "warning: config field 'lifecycle.loyal_max_risk' (0.8) is above" in buffer.getvalue()


def test_the_loyal_rule_says_units_without_prices_and_risk_only_with_a_churn_model() -> None:
    section = {
        "loyal_min_orders": 21.0,
        "loyal_min_monetary": 245.0,
        "loyal_min_orders_from": "p80 of the 40 non-lapsed customers",
        "loyal_max_risk": 0.3,
        "churn_model": False,
    }

    assert loyal_rule(section, priced=False) == (
        "at least 21 orders and 245 units bought (no prices) (p80 of the 40 non-lapsed "
        "customers) (no churn model: no risk condition)"
    )
    priced = loyal_rule({**section, "churn_model": True, "loyal_min_monetary": 2876.48}, True)
    assert priced == (
        "at least 21 orders and 2,876.48 in value (p80 of the 40 non-lapsed customers), "
        "risk below 0.3"
    )
    assert "245.50 units bought" in loyal_rule({**section, "loyal_min_monetary": 245.5}, False)
