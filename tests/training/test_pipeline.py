"""The trainer end to end: manifest, metrics, CURRENT, determinism, and the repurchase
cycles it learns, stores and evaluates."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import END, small_training_config

from nbo.data.mapping import load_mapping
from nbo.models import artifacts
from nbo.models.artifacts import SCHEMA_VERSION
from nbo.models.served import CYCLES_ARRAY, DEAD_DAYS_ARRAY, load_serving_model
from training import publish
from training.config import TrainingConfig
from training.pipeline import TrainResult, train

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


# --- the published model --------------------------------------------------------------


_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def _times(document: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, text) of ``document`` whose text starts as an ISO 8601 time does."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _times(value, f"{path}.{key}")
    elif isinstance(document, list):
        for n, value in enumerate(document):
            yield from _times(value, f"{path}[{n}]")
    elif isinstance(document, str) and _ISO_TIME.match(document):
        yield path, document


def test_every_time_in_the_manifest_carries_its_zone(
    trained: TrainResult, churn_trained: TrainResult
) -> None:
    """The data's first and last purchase, the split's cutoff, the churn model's cutoffs,
    the lifecycle's as_of, the policy's validation cutoff: all UTC, and written so."""
    times = dict(_times(_manifest(trained))) | dict(_times(_manifest(churn_trained)))
    assert {
        ".created_at",
        ".data.first_purchase",
        ".data.last_purchase",
        ".split.cutoff",
        ".churn.training_cutoffs[0]",
        ".churn.evaluation_cutoff",
        ".churn.published_cutoffs[0]",
        ".churn.scored_as_of",
        ".lifecycle.as_of",
        ".policy.validation_cutoff",
    } <= set(times)
    assert {path: text for path, text in times.items() if not text.endswith("+00:00")} == {}
    assert pd.Timestamp(times[".split.cutoff"]) < pd.Timestamp(times[".data.last_purchase"])


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
    # How the file was read: its columns under their own names, the ISO 8601 timestamps.
    assert manifest["data"]["columns"] == {
        c: c for c in ("customer_id", "item_id", "timestamp", "quantity", "price", "order_id")
    }
    assert manifest["data"]["rules"] == {
        "cancelled_order_prefix": "",
        "non_product_items": [],
        "timestamp_format": "ISO8601",
    }
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


def test_current_points_at_the_new_version(trained: TrainResult, models_dir: Path) -> None:
    assert (models_dir / "CURRENT").read_text(encoding="utf-8").strip() == trained.version


def test_training_twice_gives_identical_factors_and_two_versions(
    tmp_path: Path, planted_csv: Path, versions: list[str]
) -> None:
    models = tmp_path / "models"
    mapping = load_mapping("canonical")

    first = train(planted_csv, mapping, models, small_training_config())
    # Forced: the same data and config again is otherwise "unchanged", nothing published.
    second = train(planted_csv, mapping, models, small_training_config(), force=True)

    assert first.version != second.version
    assert [first.version, second.version] == versions
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == sorted(
        [first.version, second.version, "CURRENT", "PREVIOUS"]
    )
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == second.version
    # The second publication moved CURRENT: the rollback target is the first.
    assert (models / "PREVIOUS").read_text(encoding="utf-8").strip() == first.version
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
    second = train(  # forced: unchanged data and config otherwise publish nothing
        planted_csv, load_mapping("canonical"), models, small_training_config(), force=True
    )

    assert first.version != second.version


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


# --- repurchase cycles ----------------------------------------------------------------


def test_trainer_stores_the_cycles_in_the_artifact(with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    stored = np.load(with_cycles.path / f"{CYCLES_ARRAY}.npy")
    items = np.load(with_cycles.path / "item_ids.npy").tolist()

    assert stored.dtype == np.float32
    assert len(stored) == len(items) == 22
    assert stored[items.index("REFILL")] == 14.0
    others = [i for i, item in enumerate(items) if item != "REFILL"]
    assert np.isnan(stored[others]).all()

    model = load_serving_model(with_cycles.path.parent, with_cycles.version)
    assert model.repurchase_cycle_days is not None
    assert np.array_equal(model.repurchase_cycle_days, stored, equal_nan=True)
    # Every REFILL gap is 14 days: within an offer's 30-day horizon (the holdout) it is
    # bought again, so it is held back for the floor alone (1 day). RARE (four customers
    # buy it twice) has too few repeat buyers to be rebought: a customer who bought it
    # once keeps the window; one who bought it twice gets the shop's dead time.
    assert np.load(with_cycles.path / f"{DEAD_DAYS_ARRAY}.npy")[items.index("REFILL")] == 1.0
    windows = model.suppression_windows(30)
    assert windows is not None
    assert windows.once[items.index("REFILL")] == windows.again[items.index("REFILL")] == 1.0
    assert windows.once[items.index("RARE")] == 30.0
    assert windows.again[items.index("RARE")] < 30.0
    assert model.suppression_windows(30) is windows  # computed once per window


def test_manifest_cycles_section(with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    manifest = json.loads((with_cycles.path / "manifest.json").read_text(encoding="utf-8"))
    cycles = manifest["cycles"]

    assert cycles == with_cycles.manifest["cycles"]
    assert cycles["enabled"] is True
    assert cycles["min_repeat_buyers"] == 5
    assert cycles["max_days"] == 365
    assert cycles["items"] == 1
    assert cycles["share"] == pytest.approx(1 / 22)
    assert cycles["days"] == {
        name: 14.0 for name in ("min", "p10", "p25", "median", "p75", "p90", "max")
    }
    # Before the cutoff (30 days before the end) the REFILL buyers already repeat.
    assert cycles["items_before_cutoff"] == 1
    # REFILL alone is rebought; the 10% quantile of the repeat gaps is 14 days (RARE's
    # 30-day ones weigh four buyers against REFILL's twelve), less than the 30-day
    # horizon: the floor.
    assert cycles["dead_time"] == {
        "quantile": 0.1,
        "min_repeat_rate": 0.1,
        "floor_days": 1.0,
        "horizon_days": 30,
        "rebought_items": 1,
        "rebought_share": pytest.approx(1 / 22),
        "floor_items": 1,
        "days": {"p10": 1.0, "median": 1.0, "p90": 1.0},
        "shop_days": 1.0,
    }
    assert manifest["config"]["cycles"] == {
        "enabled": True,
        "min_repeat_buyers": 5,
        "max_days": 365,
        "dead_time_quantile": 0.1,
        "min_repeat_rate": 0.1,
        "floor_days": 1.0,
        "horizon_days": None,
    }


def test_als_cycles_is_evaluated_on_both_truths(with_cycles: TrainResult) -> None:
    for truth in ("all", "new"):
        metrics = with_cycles.metrics[truth]
        assert {"als", "als_window", "als_cycles", "buy_again", "popularity"} <= set(metrics)
        assert set(metrics["als_cycles"]) == set(metrics["als"])
        assert metrics["als_cycles"]["customers"] == metrics["als"]["customers"]
    gate = with_cycles.manifest["quality_gate"]
    assert gate[gate["method"]] == with_cycles.metrics["all"][gate["method"]]["ndcg@10"]


def test_cycles_can_be_turned_off(tmp_path: Path, refills_csv: Path) -> None:
    config = TrainingConfig.model_validate(
        {**small_training_config().model_dump(), "cycles": {"enabled": False}}
    )

    result = train(refills_csv, load_mapping("canonical"), tmp_path / "models", config)

    assert result.path is not None
    assert not (result.path / f"{CYCLES_ARRAY}.npy").exists()
    assert result.manifest["cycles"] == {"enabled": False}
    assert "als_cycles" not in result.metrics["all"]
    model = load_serving_model(result.path.parent)
    assert model.repurchase_cycle_days is None
    assert not (result.path / f"{DEAD_DAYS_ARRAY}.npy").exists()
    assert model.suppression_windows(30) is None
