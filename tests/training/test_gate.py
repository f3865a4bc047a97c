"""The quality gate: passed on the planted data; a model that cannot beat the best single
method refused and nothing published; ``force`` publishes and says so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from support import END, small_training_config

from nbo.core.errors import QualityGateError
from nbo.data.mapping import load_mapping
from training.pipeline import TrainResult, train


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

    assert gate["passed"] is True
    assert gate["forced"] is False
    assert gate["metric"] == "ndcg@10"
    assert gate["truth"] == "all"
    # The ranker against the best single method.
    assert gate["method"] == "ranker"
    singles = ("als", "itemknn", "buy_again", "popularity")
    best = max(singles, key=lambda name: trained.metrics["all"][name]["ndcg@10"])
    assert gate["baseline"] == best
    assert gate["ranker"] == trained.metrics["all"]["ranker"]["ndcg@10"]
    assert gate[best] == trained.metrics["all"][best]["ndcg@10"]
    assert gate["ranker"] > gate[best]


def test_quality_gate_refuses_when_the_ranker_cannot_beat_the_best_method(
    tmp_path: Path, planted_csv: Path
) -> None:
    models = tmp_path / "models"
    published = train(planted_csv, load_mapping("canonical"), models, small_training_config())
    before = _snapshot(models)
    data = tmp_path / "same.csv"
    _same_items_purchases().to_csv(data, index=False)

    with pytest.raises(QualityGateError) as caught:
        train(data, load_mapping("canonical"), models, small_training_config())

    message = str(caught.value)
    # Every method scores 1.0 on this data: no ranker can be trained (nothing to learn
    # in the earlier window), and ALS does not beat popularity.
    assert "ndcg@10 1.0000 does not beat popularity 1.0000" in message
    assert "--force" in message
    # Nothing written, no staging folder left, CURRENT unchanged.
    assert _snapshot(models) == before
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == published.version


def test_quality_gate_refusal_into_an_empty_models_dir_writes_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    data = tmp_path / "same.csv"
    _same_items_purchases().to_csv(data, index=False)

    with pytest.raises(QualityGateError):
        train(data, load_mapping("canonical"), models, small_training_config())

    assert not models.exists() or list(models.iterdir()) == []


def test_force_publishes_and_records_it(tmp_path: Path, planted_csv: Path) -> None:
    models = tmp_path / "models"
    train(planted_csv, load_mapping("canonical"), models, small_training_config())
    data = tmp_path / "same.csv"
    _same_items_purchases().to_csv(data, index=False)

    result = train(data, load_mapping("canonical"), models, small_training_config(), force=True)

    gate = _manifest(result)["quality_gate"]
    assert gate["passed"] is False
    assert gate["forced"] is True
    assert gate["als"] == gate["popularity"] == 1.0
    assert result.published is True
    assert (models / "CURRENT").read_text(encoding="utf-8").strip() == result.version
