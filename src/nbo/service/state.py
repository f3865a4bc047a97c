"""The model the service is serving, held so it can be swapped as one reference."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from nbo.errors import ArtifactError
from nbo.model import ServingModel, load_serving_model

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the current model. Readers take one reference per request, so a swap never
    mixes two versions in one answer; a failed load leaves the old model serving."""

    def __init__(self) -> None:
        self._model: ServingModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def model(self) -> ServingModel | None:
        return self._model

    def load(self, models_dir: Path, version: str | None = None) -> ServingModel:
        with self._lock:
            try:
                model = load_serving_model(models_dir, version)
            except ArtifactError as exc:
                self.last_error = str(exc)
                log.error("model refused: %s", exc)
                raise
            self._model = model
            self.last_error = None
            log.info("serving model %s", model.version)
            return model
