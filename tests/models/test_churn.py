"""The churn model: labels and cutoffs, fitting, the per-request path against
scikit-learn, calibration bins, and an artifact that refuses to load when it must not
serve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from support import data_end, orders_of

from nbo.core.errors import ArtifactError
from nbo.core.vocabulary import DAY
from nbo.data.features import FEATURE_NAMES, OrderTable, customer_features
from nbo.models.artifacts import load_artifact, write_artifact
from nbo.models.churn import (
    CHURN_FILE,
    CHURN_INPUTS,
    _interpolated,
    build_snapshot,
    churn_labels,
    churn_manifest,
    churn_model_bytes,
    evaluate_risk,
    fit_churn_model,
    load_churn_model,
    risk_bounds,
)
from nbo.models.served import load_serving_model
from training.pipeline import TrainResult

HORIZON = 90


# --- labels and cutoffs ---------------------------------------------------------------


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


def test_fitting_twice_gives_the_same_risks(churn_purchases: pd.DataFrame) -> None:
    orders, _ids = orders_of(churn_purchases)
    snapshot = build_snapshot(orders, data_end(orders) - 2 * HORIZON * DAY, HORIZON)

    first = fit_churn_model(snapshot.features, snapshot.labels, HORIZON, random_state=3)
    second = fit_churn_model(snapshot.features, snapshot.labels, HORIZON, random_state=3)

    risk = first.predict_risk(snapshot.features)
    assert np.array_equal(risk, second.predict_risk(snapshot.features))
    assert ((risk >= 0) & (risk <= 1)).all()


def test_the_per_request_path_answers_exactly_what_scikit_learn_answers(
    churn_purchases: pd.DataFrame,
) -> None:
    orders, _ids = orders_of(churn_purchases)
    end = data_end(orders)
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


def test_the_compiled_trees_send_every_row_where_the_nodes_send_it(
    churn_purchases: pd.DataFrame,
) -> None:
    """The per-request path's trees, walked by a compiled kernel, answer what
    scikit-learn answers: at each split's threshold, just above it, and with the
    feature missing (NaN goes the side the split learned)."""
    orders, _ids = orders_of(churn_purchases)
    snapshot = build_snapshot(orders, data_end(orders) - 2 * HORIZON * DAY, HORIZON)
    model = fit_churn_model(snapshot.features, snapshot.labels, HORIZON)
    assert model._fast is not None
    nodes = model._fast.nodes
    base = snapshot.features[:1]
    rows = []
    for node in (~nodes.is_leaf).nonzero()[0]:
        threshold = nodes.threshold[node]
        for x in (threshold, np.nextafter(threshold, np.inf), np.nan):
            row = base.copy()
            row[0, nodes.feature[node]] = x
            rows.append(row)
    rows_array = np.concatenate(rows)
    assert np.isnan(rows_array).any() and nodes.missing_left.any()

    assert np.array_equal(model._fast.predict(rows_array), model._calibrated_sklearn(rows_array))


def test_the_calibration_is_scipys_interpolation_to_the_last_bit(
    churn_purchases: pd.DataFrame,
) -> None:
    """The per-request path interpolates the isotonic calibrator in numpy: the same
    numbers as scipy's interp1d everywhere a raw score can land after clipping, at its
    points (where np.interp would answer otherwise), between them and at the ends."""
    orders, _ids = orders_of(churn_purchases)
    snapshot = build_snapshot(orders, data_end(orders) - 2 * HORIZON * DAY, HORIZON)
    model = fit_churn_model(snapshot.features, snapshot.labels, HORIZON)
    assert model.uses_fast_path and model._fast is not None
    fast = model._fast
    assert fast.points is not None
    calibrator = fast.calibrator
    x = fast.points[0]
    rng = np.random.default_rng(0)
    between = x[:-1] + (x[1:] - x[:-1]) * rng.random((7, len(x) - 1))
    raw = np.concatenate(
        [x, between.ravel(), [calibrator.X_min_, calibrator.X_max_], np.nextafter(x, np.inf)]
    )
    raw = np.clip(raw, calibrator.X_min_, calibrator.X_max_)
    expected = np.asarray(calibrator.f_(raw), dtype=np.float64)
    assert np.array_equal(_interpolated(fast.points, raw), expected)


def test_the_risk_bounds_are_the_end_blocks_churn_rates_smoothed() -> None:
    """Laplace's rule on the calibration rows at the lowest and the highest calibrated
    value: 3 rows at 0.0 none of whom churned give 1/5, not 0; 2 at 1.0 give 3/4."""
    calibrated = np.array([0.0, 0.0, 0.0, 0.4, 0.6, 1.0, 1.0])
    labels = np.array([0, 0, 0, 1, 0, 1, 1])

    assert risk_bounds(calibrated, labels) == (1 / 5, 3 / 4)
    # One block (a flat calibration): one rate, (2 + 1) / (4 + 2).
    assert risk_bounds(np.full(4, 0.5), np.array([0, 1, 0, 1])) == (0.5, 0.5)


def test_the_risk_follows_each_inputs_direction_and_ignores_other_features(fitted) -> None:
    """Each input of CHURN_INPUTS moved alone in its direction, over the whole range
    the rows cover, never lowers (1) or raises (-1) any row's risk; the features the
    model leaves out (which an order can move either way) change nothing."""
    model, snapshot = fitted
    rows = snapshot.features
    risk = model.predict_risk(rows)
    assert risk.min() > 0 and risk.max() < 1
    assert model.bounds[0] <= risk.min() and risk.max() <= model.bounds[1]
    for name, direction in CHURN_INPUTS.items():
        column = FEATURE_NAMES.index(name)
        previous = None
        for value in np.quantile(rows[:, column], np.linspace(0, 1, 12)):
            moved = rows.copy()
            moved[:, column] = value
            now = model.predict_risk(moved)
            if previous is not None:
                assert (direction * (now - previous) >= 0).all(), name
            previous = now
    for name in set(FEATURE_NAMES) - set(CHURN_INPUTS):
        scrambled = rows.copy()
        scrambled[:, FEATURE_NAMES.index(name)] = np.random.default_rng(0).permutation(
            rows[:, FEATURE_NAMES.index(name)]
        )
        assert np.array_equal(model.predict_risk(scrambled), risk), name


def test_beyond_the_longest_silence_it_saw_the_risk_keeps_rising_toward_1(fitted) -> None:
    """The trees are flat past the longest silence they learned from; the served chance
    of buying within the horizon falls there as 1 / silence: half at twice it."""
    model, snapshot = fitted
    recency = FEATURE_NAMES.index("recency_days")
    assert model.max_recency_days == snapshot.features[:, recency].max()
    edge = snapshot.features.copy()
    edge[:, recency] = model.max_recency_days
    at_edge = model.predict_risk(edge)
    twice, years = edge.copy(), edge.copy()
    twice[:, recency] *= 2
    years[:, recency] = 15 * 365

    assert np.allclose(1 - model.predict_risk(twice), (1 - at_edge) / 2, rtol=1e-12)
    far = model.predict_risk(years)
    assert (far > model.predict_risk(twice)).all() and (far < 1).all() and (far > 0.9).all()


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


# --- in the artifact ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(churn_purchases: pd.DataFrame):
    orders, _ids = orders_of(churn_purchases)
    snapshot = build_snapshot(orders, data_end(orders) - 2 * HORIZON * DAY, HORIZON)
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
    assert (loaded.inputs, loaded.bounds) == (model.inputs, model.bounds)
    assert loaded.max_recency_days == model.max_recency_days
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


def test_a_churn_section_without_a_model_loads_none(tmp_path: Path) -> None:
    write_artifact(tmp_path, "v1", {"x": np.arange(2)}, {}, {"churn": {"enabled": False}})
    assert load_churn_model(load_artifact(tmp_path)) is None
    write_artifact(tmp_path, "v2", {"x": np.arange(2)}, {}, {})
    assert load_churn_model(load_artifact(tmp_path)) is None
