"""Fixtures of the campaign tests: ``nbo batch`` and the app on the same model, clock
and store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.service.app import create_app
from nbo.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, isolated_store: Path) -> Path:
    """``nbo batch`` and the app share the model, the clock and the store."""
    monkeypatch.setenv("NBO_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    return isolated_store


@pytest.fixture
def client(models_dir: Path, env: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=models_dir, clock=CLOCK, store_url=f"sqlite:///{env}")
    with TestClient(create_app(settings)) as client:
        yield client
