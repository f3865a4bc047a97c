"""The churn model: labels and cutoffs, a planted signal recency alone cannot see, the
manifest and report, and an artifact that refuses to load when it must not serve."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.calibration import calibration_curve
from support import END, profile_one

from nbo.core import columns as col
from nbo.core.errors import ArtifactError
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.features import FEATURE_NAMES, OrderTable, build_order_table, customer_features
from nbo.models.artifacts import load_artifact, write_artifact
from nbo.models.churn import (
    CHURN_FILE,
    build_snapshot,
    churn_labels,
    churn_manifest,
    churn_model_bytes,
    evaluate_risk,
    fit_churn_model,
    load_churn_model,
)
from nbo.models.served import load_serving_model
from training.cli import print_summary
from training.config import ChurnConfig, TrainingConfig
from training.lifecycle import CALIBRATION_PLOT, CUSTOMERS_FILE, read_customers, train_churn
from training.pipeline import TrainResult

HORIZON = 90


def _orders_of(purchases: pd.DataFrame) -> tuple[OrderTable, IdMap]:
    ids = IdMap(sorted(purchases[col.CUSTOMER_ID].unique()))
    return build_order_table(purchases, ids), ids


def _data_end(orders: OrderTable) -> int:
    return int(orders.time.max()) + 1


# --- labels and cutoffs ----------------------------------------------------------------


def test_labels_and_population_at_a_cutoff() -> None:
    cutoff = 1_000 * DAY
    day = DAY

    def orders_at(*days: float) -> list[int]:
        return [cutoff + int(d * day) for d in days]

    times = [
        orders_at(-100, 10),  # a: buys again within the horizon -> stays (0)
        orders_at(-50),  # b: never again -> churns (1)
        orders_at(5),  # c: first order after the cutoff -> not in the population
        orders_at(-20, 95),  # d: buys again, but after the horizon -> churns (1)
        orders_at(-30, 0),  # e: an order exactly at the cutoff is in the label window
    ]
    table = OrderTable(
        indptr=np.cumsum([0] + [len(t) for t in times]).astype(np.int64),
        time=np.concatenate(times).astype(np.int64),
        value=np.ones(sum(map(len, times))),
        lines=np.ones(sum(map(len, times)), dtype=np.int32),
        new_items=np.ones(sum(map(len, times)), dtype=np.int32),
        returns_indptr=np.zeros(len(times) + 1, dtype=np.int64),
        return_time=np.empty(0, dtype=np.int64),
    )

    assert churn_labels(table, cutoff, HORIZON).tolist() == [0, 1, 0, 1, 0]
    snapshot = build_snapshot(table, cutoff, HORIZON)
    assert snapshot.customers.tolist() == [0, 1, 3, 4]
    assert snapshot.labels.tolist() == [0, 1, 1, 0]
    # Features as of the cutoff: e's order at the cutoff is not among them.
    assert np.array_equal(
        snapshot.features, customer_features(table, cutoff)[[0, 1, 3, 4]], equal_nan=True
    )
    frequency = snapshot.features[:, FEATURE_NAMES.index("frequency")]
    assert frequency.tolist() == [1, 1, 1, 1]


def test_cutoffs_leave_the_evaluation_labels_unseen(churn_purchases: pd.DataFrame) -> None:
    orders, _ids = _orders_of(churn_purchases)
    end = _data_end(orders)

    result = train_churn(orders, ChurnConfig(), end, seed=0)

    section = result.section
    assert section["enabled"] is True and result.enabled
    evaluation = pd.Timestamp(section["evaluation_cutoff"])
    assert evaluation == pd.Timestamp(end - HORIZON * DAY, unit="s")
    training = [pd.Timestamp(c) for c in section["training_cutoffs"]]
    # The latest training labels end where the evaluation starts.
    assert training == [evaluation - pd.Timedelta(days=HORIZON + 30 * k) for k in range(3)]
    published = [pd.Timestamp(c) for c in section["published_cutoffs"]]
    assert published == [evaluation - pd.Timedelta(days=30 * k) for k in range(3)]
    assert section["scored_as_of"] == pd.Timestamp(end, unit="s").isoformat()
    assert section["sklearn_version"] and section["feature_names"] == list(FEATURE_NAMES)


def test_model_beats_recency_when_churn_depends_on_the_rhythm(
    churn_purchases: pd.DataFrame,
) -> None:
    orders, _ids = _orders_of(churn_purchases)

    result = train_churn(orders, ChurnConfig(), _data_end(orders), seed=0)

    assert result.metrics is not None
    model, recency = result.metrics["model"], result.metrics["recency"]
    assert model["customers"] == recency["customers"] == result.section["evaluation_customers"]
    assert 0.2 < model["positive_rate"] < 0.8
    assert model["roc_auc"] > 0.9
    assert model["roc_auc"] > recency["roc_auc"] + 0.15
    assert model["pr_auc"] > recency["pr_auc"]
    assert model["brier"] < recency["brier"] * 0.7
    table = result.section["calibration"]
    assert sum(row["count"] for row in table["model"]) == model["customers"]


def test_fitting_twice_gives_the_same_risks(churn_purchases: pd.DataFrame) -> None:
    orders, _ids = _orders_of(churn_purchases)
    snapshot = build_snapshot(orders, _data_end(orders) - 2 * HORIZON * DAY, HORIZON)

    first = fit_churn_model(snapshot.features, snapshot.labels, HORIZON, random_state=3)
    second = fit_churn_model(snapshot.features, snapshot.labels, HORIZON, random_state=3)

    risk = first.predict_risk(snapshot.features)
    assert np.array_equal(risk, second.predict_risk(snapshot.features))
    assert ((risk >= 0) & (risk <= 1)).all()


def test_the_per_request_path_answers_exactly_what_scikit_learn_answers(
    churn_purchases: pd.DataFrame,
) -> None:
    orders, _ids = _orders_of(churn_purchases)
    end = _data_end(orders)
    snapshot = build_snapshot(orders, end - 2 * HORIZON * DAY, HORIZON)
    model = fit_churn_model(snapshot.features, snapshot.labels, HORIZON)
    rows = customer_features(orders, end)  # other rows than the fit's, NaN included
    assert np.isnan(rows).any()

    one_by_one = np.concatenate([model.predict_risk(row) for row in rows])

    assert model.uses_fast_path
    assert np.array_equal(one_by_one, model.predict_risk_sklearn(rows))
    assert np.array_equal(model.predict_risk(rows), one_by_one)  # a batch: scikit-learn
    # Without reference rows to prove it on, the fast path stays off; same answers.
    model.reference = model.reference[:0]
    assert not model.compile_fast_path() and not model.uses_fast_path
    assert np.array_equal(model.predict_risk(rows[:3]), one_by_one[:3])


def test_too_little_data_skips_the_model_with_the_reason(
    churn_purchases: pd.DataFrame,
) -> None:
    recent = churn_purchases[churn_purchases[col.TIMESTAMP] > END - pd.Timedelta(days=200)]
    orders, _ids = _orders_of(recent)

    short = train_churn(orders, ChurnConfig(), _data_end(orders), seed=0)
    off = train_churn(orders, ChurnConfig(enabled=False), _data_end(orders), seed=0)

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
    orders, _ids = _orders_of(pd.DataFrame(rows))

    result = train_churn(orders, ChurnConfig(), _data_end(orders), seed=0)

    assert result.model is None and "who churned" in result.section["reason"]


def test_evaluation_uses_sklearn_calibration_bins() -> None:
    rng = np.random.default_rng(0)
    risk = rng.random(500)
    labels = (rng.random(500) < risk).astype(int)

    metrics, tables = evaluate_risk(labels, {"m": risk}, bins=5)

    observed, predicted = calibration_curve(labels, risk, n_bins=5)
    rows = tables["m"]
    assert [r["observed_rate"] for r in rows] == pytest.approx(observed.tolist())
    assert [r["mean_predicted"] for r in rows] == pytest.approx(predicted.tolist())
    assert [r["count"] for r in rows] == np.histogram(risk, bins=np.linspace(0, 1, 6))[0].tolist()
    assert metrics["m"]["customers"] == 500.0
    assert metrics["m"]["positive_rate"] == pytest.approx(labels.mean())
    assert set(metrics["m"]) == {"roc_auc", "pr_auc", "brier", "customers", "positive_rate"}


# --- the trainer ----------------------------------------------------------------------


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


def test_the_served_risk_is_the_published_risk(churn_trained: TrainResult) -> None:

    assert churn_trained.path is not None
    model = load_serving_model(churn_trained.path.parent)
    customers = read_customers(str(churn_trained.path / CUSTOMERS_FILE)).set_index("customer_id")

    assert model.churn is not None and model.churn_horizon_days == HORIZON
    for customer_id in ("f000", "s001", "f010", "s011"):
        profile = profile_one(model, customer_id, (), model.trained_until_s)
        row = customers.loc[customer_id]
        assert profile.churn_risk == row["churn_risk"]
        assert profile.stage == row["stage"]
        assert profile.frequency == row["frequency"]
        assert profile.recency_days == pytest.approx(row["recency_days"])
        assert profile.best_send_hour == row["best_send_hour"]


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


# --- in the artifact ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(churn_purchases: pd.DataFrame):
    orders, _ids = _orders_of(churn_purchases)
    snapshot = build_snapshot(orders, _data_end(orders) - 2 * HORIZON * DAY, HORIZON)
    return fit_churn_model(snapshot.features, snapshot.labels, HORIZON), snapshot


def _publish(models: Path, fitted_model, **churn_overrides: object) -> Path:
    arrays = {"x": np.arange(3)}
    section = {"enabled": True, **churn_manifest(fitted_model), **churn_overrides}
    return write_artifact(
        models,
        "v1",
        arrays,
        {},
        {"churn": section},
        extra_files={CHURN_FILE: churn_model_bytes(fitted_model)},
    )


def test_save_then_load_changes_no_risk(tmp_path: Path, fitted) -> None:
    model, snapshot = fitted
    path = _publish(tmp_path, model)

    artifact = load_artifact(tmp_path)
    loaded = load_churn_model(artifact)

    assert artifact.files[CHURN_FILE] == path / CHURN_FILE
    assert loaded is not None and loaded.feature_names == FEATURE_NAMES
    assert loaded.uses_fast_path  # proven on the reference rows saved with it
    risk = model.predict_risk(snapshot.features)
    assert np.array_equal(loaded.predict_risk(snapshot.features), risk)


def test_a_tampered_churn_file_is_refused_before_unpickling(tmp_path: Path, fitted) -> None:
    path = _publish(tmp_path, fitted[0])
    data = bytearray((path / CHURN_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / CHURN_FILE).write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=f"{CHURN_FILE} is corrupt"):
        load_artifact(tmp_path)


@pytest.mark.parametrize("version", ["0.24.2", "1.0.0", "99.1"])
def test_a_model_from_another_scikit_learn_is_refused(tmp_path: Path, fitted, version: str) -> None:
    path = _publish(tmp_path, fitted[0])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["churn"]["sklearn_version"] = version
    (path / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(ArtifactError, match=re.escape(f"scikit-learn {version}")):
        load_churn_model(load_artifact(tmp_path))


def test_a_patch_release_of_scikit_learn_still_loads(tmp_path: Path, fitted) -> None:
    model = fitted[0]
    major, minor = model.sklearn_version.split(".")[:2]
    model_at_patch = type(model)(
        model.estimator, model.feature_names, f"{major}.{minor}.999", model.horizon_days
    )
    _publish(tmp_path, model_at_patch)
    assert load_churn_model(load_artifact(tmp_path)) is not None


def test_other_features_or_a_missing_file_are_refused(tmp_path: Path, fitted) -> None:
    _publish(tmp_path / "a", fitted[0], feature_names=["recency_days"])
    with pytest.raises(ArtifactError, match="trained on features"):
        load_churn_model(load_artifact(tmp_path / "a"))
    _publish(tmp_path / "b", fitted[0], file="elsewhere.joblib")
    with pytest.raises(ArtifactError, match="not among the artifact's checksummed files"):
        load_churn_model(load_artifact(tmp_path / "b"))


def test_a_serving_model_with_a_refused_churn_model_is_refused(
    tmp_path: Path, churn_trained: TrainResult
) -> None:
    import shutil

    assert churn_trained.path is not None
    models = tmp_path / "models"
    shutil.copytree(churn_trained.path.parent, models)
    manifest_path = models / churn_trained.path.name / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["churn"]["sklearn_version"] = "0.1.0"
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(ArtifactError, match=r"scikit-learn 0\.1\.0"):
        load_serving_model(models)


def test_side_files_are_written_checksummed_and_listed(tmp_path: Path) -> None:
    path = write_artifact(
        tmp_path, "v1", {"x": np.arange(2)}, {"d": {"a": 1}}, {}, {"blob.bin": b"\x00\x01"}
    )

    artifact = load_artifact(tmp_path)

    assert (path / "blob.bin").read_bytes() == b"\x00\x01"
    assert "blob.bin" in artifact.manifest["files"]
    assert set(artifact.files) == {"x.npy", "d.json", "blob.bin"}
    assert "blob" not in artifact.arrays and "blob" not in artifact.documents
    for bad in ("../x.bin", "a/b.bin", "x.npy", "d.json", "manifest.json", ".hidden", ""):
        with pytest.raises(ArtifactError, match="side file name"):
            write_artifact(tmp_path, f"v-{len(bad)}", {}, {}, {}, {bad: b""})


def test_a_churn_section_without_a_model_loads_none(tmp_path: Path) -> None:
    write_artifact(tmp_path, "v1", {"x": np.arange(2)}, {}, {"churn": {"enabled": False}})
    assert load_churn_model(load_artifact(tmp_path)) is None
    write_artifact(tmp_path, "v2", {"x": np.arange(2)}, {}, {})
    assert load_churn_model(load_artifact(tmp_path)) is None


def test_training_config_rejects_unknown_churn_and_lifecycle_fields() -> None:
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"churn": {"horizon": 90}})
    with pytest.raises(ValueError):
        TrainingConfig.model_validate({"lifecycle": {"loyal_min_orders": 0}})
    config = TrainingConfig.model_validate(
        {"churn": {"horizon_days": 60, "snapshots": 2}, "lifecycle": {"new_days": 14}}
    )
    assert config.churn.horizon_days == 60 and config.lifecycle.new_days == 14
