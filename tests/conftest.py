"""Shared fixtures: small planted-answer purchase data (``support``) and a model trained
on it, and an event store of its own for every test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from backends import postgres_url, skip_without_postgres, store_url  # noqa: F401
from support import make_planted_purchases, small_training_config

from nbo.data.mapping import load_mapping
from training.pipeline import TrainResult, train


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_without_postgres(items)


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
