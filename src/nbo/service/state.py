"""The model the service is serving, held so it can be swapped as one reference."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from nbo.errors import ArtifactError
from nbo.model import ServingModel, load_serving_model

log = logging.getLogger(__name__)


def _nothing_erased() -> Iterable[str]:
    return ()


class ModelHolder:
    """Holds the current model. Readers take one reference per request, so a swap never
    mixes two versions in one answer; a failed load leaves the old model serving.

    Erasures hold for every model served: ``forget`` removes a customer from the current
    model, and ``load`` removes every id ``erased_ids`` answers (the store's erased list,
    set by the app once the store is open) before the new model serves. Both take the
    same lock, so an erasure during a load reaches the model that ends up serving.
    """

    def __init__(self, erased_ids: Callable[[], Iterable[str]] = _nothing_erased) -> None:
        self._model: ServingModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.erased_ids = erased_ids

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
            forgotten = sum(model.forget(customer_id) for customer_id in self.erased_ids())
            self._model = model
            self.last_error = None
            log.info("serving model %s (%d erased customers removed)", model.version, forgotten)
            return model

    def forget(self, customer_id: str) -> bool:
        """Make an erased customer unknown to the serving model; True when it knew them
        (False too when no model is loaded: ``load`` applies the erasure later)."""
        with self._lock:
            model = self._model
            return model.forget(customer_id) if model is not None else False
