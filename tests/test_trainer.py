"""The trainer end to end: manifest, metrics, CURRENT, determinism, quality gate, time split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from support import END, small_training_config, worse_than_before

from nbo.core.errors import ConfigError, QualityGateError
from nbo.data.history import build_history
from nbo.data.mapping import load_mapping
from nbo.models import artifacts
from nbo.models.artifacts import SCHEMA_VERSION
from nbo.models.cf import fit_als
from training import publish
from training.methods import als_recommender, popularity_recommender
from training.pipeline import TrainResult, train
from training.split import time_split

METHODS = {
    "als",
    "als_window",
    "als_cycles",
    "popularity",
    "buy_again",
    "itemknn",
    "stage_popularity",
    "ranker",
    "served",
}
TRUTHS = {"all", "new"}
METRICS = {"precision@10", "recall@10", "ndcg@10", "map@10", "coverage", "customers"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(result: TrainResult) -> dict:
    assert result.path is not None
    return json.loads((result.path / "manifest.json").read_text(encoding="utf-8"))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under a folder (hidden ones too) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def versions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Versions one second apart, so two trainings in the same second stay distinct."""
    issued: list[str] = []
    clock = iter(datetime(2030, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(60))

    def unique_version(models_dir: Path, fingerprint: str) -> str:
        version = artifacts.unique_version(models_dir, fingerprint, now=next(clock))
        issued.append(version)
        return version

    monkeypatch.setattr(publish, "unique_version", unique_version)
    yield issued


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


# --- the published model --------------------------------------------------------------


def test_manifest_describes_data_config_libraries_and_files(
    trained: TrainResult, planted_csv: Path, planted_purchases: pd.DataFrame
) -> None:
    manifest = _manifest(trained)
    assert trained.path is not None

    assert manifest["version"] == trained.version == trained.path.name
    assert manifest["schema_version"] == SCHEMA_VERSION == 1
    created = datetime.fromisoformat(manifest["created_at"])
    assert created.tzinfo is not None
    assert manifest["data"]["sha256"] == _sha256(planted_csv)
    assert manifest["data"]["file"] == planted_csv.name
    assert manifest["data"]["mapping"] == "canonical"
    assert manifest["data"]["rows_read"] == len(planted_purchases) == 420
    assert manifest["data"]["rows_kept"] == 420
    assert manifest["data"]["customers"] == 60
    assert manifest["data"]["items"] == 20
    assert manifest["config"] == small_training_config().model_dump()
    assert manifest["libraries"]["numpy"] == np.__version__
    assert {"nbo", "implicit", "numpy", "scipy", "pandas", "pyarrow"} <= set(manifest["libraries"])
    # Every file in the folder except the manifest itself, with its sha256.
    on_disk = {p.name for p in trained.path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert digest == _sha256(trained.path / name), name
    assert {"user_factors.npy", "item_factors.npy", "customer_ids.npy"} <= on_disk
    # The version embeds the data fingerprint.
    assert trained.version.endswith("-" + manifest["data"]["sha256"][:8])


def test_manifest_counts_rows_before_and_after_cleaning(
    tmp_path: Path, planted_purchases: pd.DataFrame
) -> None:
    dirty = planted_purchases.copy()
    returns = dirty.head(3).assign(quantity=-1, order_id=["r1", "r2", "r3"])
    duplicates = dirty.tail(2)
    dirty = pd.concat([dirty, returns, duplicates], ignore_index=True)
    data = tmp_path / "dirty.csv"
    dirty.to_csv(data, index=False)

    result = train(data, load_mapping("canonical"), tmp_path / "models", small_training_config())

    manifest = _manifest(result)
    assert manifest["data"]["rows_read"] == 425
    assert manifest["data"]["rows_kept"] == 420
    assert manifest["data"]["dropped"]["return (quantity <= 0)"] == 3
    assert manifest["data"]["dropped"]["exact duplicate line"] == 2
    assert result.cleaning.rows_read == 425


def test_metrics_keyed_truth_method_metric(trained: TrainResult) -> None:
    for metrics in (trained.metrics, _manifest(trained)["metrics"]):
        assert set(metrics) - {"churn"} == TRUTHS
        for truth in TRUTHS:
            assert set(metrics[truth]) == METHODS
            for method in METHODS:
                values = metrics[truth][method]
                assert set(values) == METRICS
                for name in METRICS - {"customers"}:
                    assert 0.0 <= values[name] <= 1.0, (truth, method, name)
    # Every planted customer buys in the holdout, so all 60 are evaluated on "all".
    assert trained.metrics["all"]["als"]["customers"] == 60.0


@pytest.mark.learned
def test_quality_gate_passes_on_planted_data(trained: TrainResult) -> None:
    gate = _manifest(trained)["quality_gate"]

    assert gate["passed"] is True
    assert gate["forced"] is False
    assert gate["metric"] == "ndcg@10"
    assert gate["truth"] == "all"
    # What is served is judged; the ranker serves, and no model was published before.
    assert gate["method"] == "served" and gate["policy"] == "ranker"
    assert gate["served"] == trained.metrics["all"]["served"]["ndcg@10"]
    assert gate["current"] is None and "no model is published" in gate["note"]


def test_current_points_at_the_new_version(trained: TrainResult, models_dir: Path) -> None:
    assert (models_dir / "CURRENT").read_text(encoding="utf-8").strip() == trained.version


def test_training_twice_gives_identical_factors_and_two_versions(
    tmp_path: Path, planted_csv: Path, versions: list[str]
) -> None:
    models = tmp_path / "models"
    mapping = load_mapping("canonical")

    first = train(planted_csv, mapping, models, small_training_config())
    second = train(planted_csv, mapping, models, small_training_config())

    assert first.version != second.version
    assert [first.version, second.version] == versions
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == sorted(
        [first.version, second.version, "CURRENT"]
    )
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == second.version
    assert first.path is not None and second.path is not None
    for name in ("user_factors.npy", "item_factors.npy", "popularity.npy", "item_ids.npy"):
        assert np.array_equal(np.load(first.path / name), np.load(second.path / name)), name
    assert first.metrics == second.metrics


def test_two_trainings_in_the_same_second_get_distinct_versions(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return frozen

    monkeypatch.setattr(artifacts, "datetime", FrozenClock)
    models = tmp_path / "models"

    first = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    second = train(planted_csv, load_mapping("canonical"), models, small_training_config())

    assert first.version != second.version


# --- quality gate ---------------------------------------------------------------------


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
    assert _manifest(result)["quality_gate"]["passed"] is True
    assert result.metrics["all"]["served"]["ndcg@10"] == 1.0
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version


def test_force_publishes_and_records_it(tmp_path: Path, planted_purchases: pd.DataFrame) -> None:
    models = tmp_path / "models"
    published, worse = _current_and_worse(tmp_path, planted_purchases)

    result = train(worse, load_mapping("canonical"), models, small_training_config(), force=True)

    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is False
    assert gate["forced"] is True
    assert gate["current_version"] == published.version
    assert gate["served"] < gate["current"]
    assert result.published is True
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version


def test_metrics_on_a_catalogue_smaller_than_k(tmp_path: Path) -> None:
    # 20 customers buy all 5 items long before the cutoff and again in the holdout.
    rows = [
        {
            "customer_id": f"c{c:02d}",
            "item_id": f"P{i}",
            "timestamp": END - pd.Timedelta(days=days, hours=c),
        }
        for c in range(20)
        for i in range(5)
        for days in (100, 10)
    ]
    data = tmp_path / "five.csv"
    pd.DataFrame(rows).to_csv(data, index=False)

    result = train(
        data, load_mapping("canonical"), tmp_path / "models", small_training_config(), force=True
    )

    # Nobody bought anything in the window before the cutoff: no ranker, and why.
    assert result.manifest["ranker"]["enabled"] is False
    assert result.manifest["ranker"]["reason"]
    # At most 5 distinct items fit in a top-10 list: 5 hits of 5, 5 of 10 slots.
    for truth in TRUTHS:
        assert set(result.metrics[truth]) == METHODS - {"ranker"}
        for method in METHODS - {"ranker"}:
            assert result.metrics[truth][method] == pytest.approx(
                {
                    "precision@10": 5 / 10,
                    "recall@10": 1.0,
                    "ndcg@10": 1.0,
                    "map@10": 1.0,
                    "coverage": 1.0,
                    "customers": 20.0,
                }
            ), (truth, method)


def test_recommenders_never_repeat_or_return_excluded_items() -> None:
    counts = sp.csr_matrix(np.ones((3, 4), dtype=np.float32))
    model = fit_als(counts, small_training_config().als.params())
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    customers = np.array([0, 1])
    popularity = np.array([3.0, 2.0, 1.0, 0.5], dtype=np.float32)

    for recommend in (als_recommender(model, 6), popularity_recommender(popularity, 6)):
        for ids in (recommend(customers, None), recommend(customers, exclude)):
            for row in ids:
                real = row[row >= 0]
                assert len(real) == len(set(real.tolist()))
                assert (row[len(real) :] == -1).all()
        with_exclude = recommend(customers, exclude)
        assert 0 not in with_exclude[0].tolist()
        assert sorted(with_exclude[0][with_exclude[0] >= 0].tolist()) == [1, 2, 3]


# --- the time split -------------------------------------------------------------------


def _split_frame() -> pd.DataFrame:
    """holdout_days=10: last purchase 2024-01-31 00:00, so the cutoff is 2024-01-21 00:00."""
    rows = [
        # c1 before the cutoff: X 3 days before, V exactly 5 days before, Y 20 days before.
        ("c1", "X", "2024-01-18 00:00"),
        ("c1", "V", "2024-01-16 00:00"),
        ("c1", "Y", "2024-01-01 00:00"),
        # c1 in the holdout: X, Y, Z, V and W (W is unknown to the training catalogue).
        ("c1", "X", "2024-01-25 00:00"),
        ("c1", "Y", "2024-01-26 00:00"),
        ("c1", "Z", "2024-01-27 00:00"),
        ("c1", "V", "2024-01-27 00:00"),
        ("c1", "W", "2024-01-28 00:00"),
        # c2: Z long before; Y exactly at the cutoff (holdout) and Z on the last day.
        ("c2", "Z", "2024-01-05 00:00"),
        ("c2", "Y", "2024-01-21 00:00"),
        ("c2", "Z", "2024-01-31 00:00"),
        # c3: only before the cutoff.
        ("c3", "Y", "2024-01-10 00:00"),
        # c9: only in the holdout (cold start).
        ("c9", "X", "2024-01-22 00:00"),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def _rows(matrix: sp.csr_matrix, items: list[str]) -> list[set[str]]:
    return [
        {items[j] for j in matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]]}
        for r in range(matrix.shape[0])
    ]


def test_time_split_truths_and_suppression_window() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=5)

    assert split.cutoff == pd.Timestamp("2024-01-21 00:00")
    assert split.train.customers.ids.tolist() == ["c1", "c2", "c3"]
    items = split.train.items.ids.tolist()
    assert items == ["V", "X", "Y", "Z"]
    # Training history: only purchases strictly before the cutoff.
    assert _rows(split.train.counts, items) == [{"X", "V", "Y"}, {"Z"}, {"Y"}]
    assert _rows(split.truth_all, items) == [{"V", "X", "Y", "Z"}, {"Y", "Z"}, set()]
    # Window [cutoff - 5 days, cutoff): X (3 days) and V (exactly 5 days) are suppressed.
    assert _rows(split.suppressed, items) == [{"X", "V"}, set(), set()]
    assert _rows(split.truth_new, items) == [{"Y", "Z"}, {"Y", "Z"}, set()]
    assert split.unknown_all.tolist() == [1, 0, 0]
    assert split.unknown_new.tolist() == [1, 0, 0]
    assert split.holdout_rows == 8
    assert split.cold_start_customers == 1


def test_time_split_suppress_everything_ever_bought() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=None)
    items = split.train.items.ids.tolist()

    assert _rows(split.suppressed, items) == [{"X", "V", "Y"}, {"Z"}, {"Y"}]
    assert _rows(split.truth_new, items) == [{"Z"}, {"Y"}, set()]


def test_time_split_zero_day_window_suppresses_nothing() -> None:
    split = time_split(_split_frame(), holdout_days=10, suppression_days=0)
    items = split.train.items.ids.tolist()

    assert split.suppressed.nnz == 0
    assert _rows(split.truth_new, items) == _rows(split.truth_all, items)


def test_time_split_window_of_one_day_less_drops_the_boundary_item() -> None:
    # 4 days: V (bought exactly 5 days before the cutoff) is no longer suppressed.
    split = time_split(_split_frame(), holdout_days=10, suppression_days=4)
    items = split.train.items.ids.tolist()

    assert _rows(split.suppressed, items) == [{"X"}, set(), set()]
    assert _rows(split.truth_new, items) == [{"V", "Y", "Z"}, {"Y", "Z"}, set()]


def test_time_split_refuses_a_holdout_longer_than_the_data() -> None:
    # The data spans 30 days; a 100-day holdout leaves nothing to train on.
    with pytest.raises(ConfigError, match="holdout_days=100 leaves no training data"):
        time_split(_split_frame(), holdout_days=100, suppression_days=5)


def test_lines_without_an_order_id_each_count_as_an_order() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c1"],
            "item_id": ["i1", "i1", "i1", "i2"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03"]),
            "order_id": ["o1", None, None, "o1"],
        }
    )
    history = build_history(frame)
    row = history.counts.toarray()[0].tolist()
    counts = dict(zip(history.items.ids.tolist(), row, strict=True))
    assert counts == {"i1": 3.0, "i2": 1.0}
