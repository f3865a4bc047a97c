"""Fixtures of the service's tests: the app on the planted model, the published version
and its manifest, and the service's log lines as JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import app_for

from nbo.models.artifacts import CURRENT, MANIFEST
from nbo.service.logs import JsonFormatter


@pytest.fixture
def client(models_dir: Path) -> Iterator[TestClient]:
    """The app on the planted model at the test clock, with the test's own store. A test
    module that needs other settings has a ``client`` of its own."""
    with app_for(models_dir) as client:
        yield client


@pytest.fixture(scope="module")
def current(models_dir: Path) -> str:
    """The planted model's version (models/CURRENT)."""
    return (models_dir / CURRENT).read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def manifest(models_dir: Path, current: str) -> dict:
    return json.loads((models_dir / current / MANIFEST).read_text(encoding="utf-8"))


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the ``nbo`` loggers write, as the service's JSON lines. The ``nbo`` logger
    only: the test client's own logger (httpx) logs full URLs, and it is not the
    service."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nbo")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
