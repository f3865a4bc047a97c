"""Fixtures every folder's tests share: small planted-answer purchase data (``support``)
and models trained on it (one, one with a repurchase cycle, two for an experiment), the
churn data and a model trained on that, and an event store of its own for every test. A
folder's own conftest.py holds what only its tests use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from backends import (  # noqa: F401
    postgres_database,
    postgres_url,
    relay,
    skip_without_postgres,
    store_url,
)
from fastapi.testclient import TestClient
from support import (
    CLOCK,
    EXPERIMENT,
    make_churn_purchases,
    make_planted_purchases,
    make_refill_purchases,
    small_training_config,
)

from nbo.data.mapping import load_mapping
from nbo.models.registry import set_alias
from nbo.models.served import ServingModel, load_serving_model
from nbo.service.app import create_app
from nbo.settings import Settings
from training.config import RankerConfig
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


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two versions of the planted data's model, aliased: with the ranker (production)
    and without (candidate); CURRENT at the later one, candidate."""
    folder = tmp_path_factory.mktemp("two-models")
    data = folder / "purchases.csv"
    make_planted_purchases().to_csv(data, index=False)
    models = folder / "models"
    with_ranker = train(data, load_mapping("canonical"), models, small_training_config())
    config = small_training_config().model_copy(update={"ranker": RankerConfig(enabled=False)})
    # Forced: on the same data the gate compares it with the first one's recorded figure,
    # and a model without its ranker may serve worse (a candidate to test, on purpose).
    without = train(data, load_mapping("canonical"), models, config, force=True)
    assert with_ranker.version and without.version
    set_alias(models, "production", with_ranker.version)
    set_alias(models, "candidate", without.version)
    return models, with_ranker.version, without.version


@pytest.fixture
def experiments_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    return path


@pytest.fixture
def experiment_client(
    two_models: tuple[Path, str, str], experiments_file: Path, isolated_store: Path
) -> Iterator[TestClient]:
    """The app serving ``two_models`` under the experiment of ``support.EXPERIMENT``."""
    settings = Settings(
        models_dir=two_models[0],
        clock=CLOCK,
        store_url=f"sqlite:///{isolated_store}",
        experiments=experiments_file,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(autouse=True)
def isolated_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own event store file, never the working folder's: in a folder
    of its own that exists, as a new store's must (``nbo.store.sqlite.check_folder``),
    and out of the test's tmp_path, which stays the test's alone."""
    path = tmp_path_factory.mktemp("store") / "nbo.db"
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{path}")
    return path
