"""Shared fixtures: small planted-answer purchase data and a model trained on it.

Two groups of customers with disjoint tastes: group "a" buys only items A00..A09, group
"b" only B00..B09. Each customer bought some of their group's items before the holdout
and buys others in it, so a working CF model must rank the customer's own group first.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbo.data.mapping import load_mapping
from training.config import TrainingConfig
from training.pipeline import TrainResult, train

END = pd.Timestamp("2026-06-30 12:00:00")
# A plain progress line (``nbo.progress``), which commands write to stderr when it is not
# a terminal (as under pytest): "nbo train: fit ALS (before cutoff): done in 0.1 s".
PROGRESS_LINE = re.compile(r"nbo [a-z]+: [^:]+: (done in [\d.]+ s|[^\n]*running for \d+ s)")


def without_progress(err: str) -> str:
    """``err`` less its progress lines: what is left is the command's messages."""
    return "".join(line for line in err.splitlines(keepends=True) if not PROGRESS_LINE.match(line))


GROUP_ITEMS = {"a": [f"A{i:02d}" for i in range(10)], "b": [f"B{i:02d}" for i in range(10)]}
CUSTOMERS_PER_GROUP = 30


def make_planted_purchases(seed: int = 7) -> pd.DataFrame:
    """Purchases in canonical columns over 150 days ending at ``END``."""
    rng = np.random.default_rng(seed)
    rows = []
    order = 0
    for group, items in GROUP_ITEMS.items():
        for c in range(CUSTOMERS_PER_GROUP):
            customer = f"{group}{c:02d}"
            basket = rng.choice(items, size=7, replace=False)
            for position, item in enumerate(basket):
                # The last two items of each basket fall in the final 30 days (holdout).
                days_before_end = rng.integers(1, 25) if position >= 5 else rng.integers(35, 150)
                order += 1
                rows.append(
                    {
                        "customer_id": customer,
                        "item_id": str(item),
                        "timestamp": END - pd.Timedelta(days=int(days_before_end)),
                        "quantity": int(rng.integers(1, 4)),
                        "price": 2.5,
                        "order_id": f"o{order}",
                    }
                )
    return pd.DataFrame(rows).sort_values("timestamp").reset_index(drop=True)


def small_training_config() -> TrainingConfig:
    """Enough factors for two tastes, few iterations: seconds, not minutes."""
    return TrainingConfig.model_validate(
        {"als": {"factors": 8, "iterations": 10, "regularization": 0.1, "refit_iterations": 5}}
    )


@pytest.fixture(scope="session")
def planted_purchases() -> pd.DataFrame:
    return make_planted_purchases()


@pytest.fixture(scope="session")
def planted_csv(tmp_path_factory: pytest.TempPathFactory, planted_purchases: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("data") / "purchases.csv"
    planted_purchases.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, planted_csv: Path) -> TrainResult:
    """A model trained once on the planted data, shared by read-only tests."""
    models_dir = tmp_path_factory.mktemp("models")
    return train(planted_csv, load_mapping("canonical"), models_dir, small_training_config())


@pytest.fixture(scope="session")
def models_dir(trained: TrainResult) -> Path:
    assert trained.path is not None
    return trained.path.parent


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own event store file, never the working folder's."""
    path = tmp_path / "store" / "nbo.db"
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{path}")
    return path
