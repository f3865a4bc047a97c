"""Fixtures every folder's tests share: small planted-answer purchase data (``support``)
and a model trained on it, the churn data and a model trained on that, and an event store
of its own for every test. A folder's own conftest.py holds what only its tests use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import (
    make_churn_purchases,
    make_planted_purchases,
    make_refill_purchases,
    small_training_config,
)

from nbo.data.mapping import load_mapping
from nbo.models.served import ServingModel, load_serving_model
from training.pipeline import TrainResult, train


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


@pytest.fixture(scope="module")
def served(models_dir: Path) -> ServingModel:
    """The served model of the planted data, loaded once per test module (a test that
    needs it changed makes a changed copy, as ``dataclasses.replace`` does)."""
    return load_serving_model(models_dir)


@pytest.fixture(scope="session")
def churn_purchases() -> pd.DataFrame:
    return make_churn_purchases()


@pytest.fixture(scope="session")
def churn_trained(
    tmp_path_factory: pytest.TempPathFactory, churn_purchases: pd.DataFrame
) -> TrainResult:
    """The whole trainer on the planted churn data (ALS is beside the point: forced)."""
    path = tmp_path_factory.mktemp("churn-data") / "purchases.csv"
    churn_purchases.to_csv(path, index=False)
    models = tmp_path_factory.mktemp("churn-models")
    return train(path, load_mapping("canonical"), models, small_training_config(), force=True)


@pytest.fixture(scope="session")
def refills_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refills") / "refills.csv"
    make_refill_purchases().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def with_cycles(tmp_path_factory: pytest.TempPathFactory, refills_csv: Path) -> TrainResult:
    """A model of the planted data with a repurchase cycle to learn (``REFILL``)."""
    models = tmp_path_factory.mktemp("models")
    return train(refills_csv, load_mapping("canonical"), models, small_training_config())


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own event store file, never the working folder's."""
    path = tmp_path / "store" / "nbo.db"
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{path}")
    return path
