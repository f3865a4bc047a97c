"""The model the service is serving, held so it can be swapped as one reference."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from nbo.core.erased import ErasedList
from nbo.core.errors import ArtifactError
from nbo.core.processes import give_back_freed_heap
from nbo.experiments.assignment import ServingModels, load_serving_models
from nbo.experiments.definitions import NO_EXPERIMENTS, Experiments
from nbo.models.served import ServingModel
from nbo.store.base import StoreUnavailable

log = logging.getLogger(__name__)


def _nothing_erased() -> Collection[str]:
    return ()


def _run_now(callback: Callable[[], None]) -> None:
    callback()


class ModelHolder:
    """Holds the current model. Readers take one reference per request, so a swap never
    mixes two versions in one answer; a failed load leaves the old model serving.

    A load reads the new version beside the one serving, outside the lock (requests never
    take the lock anyway, and an erasure need not wait for a load); only the swap of the
    reference is under it. Loads are serialized among themselves, so two reloads cannot
    swap in each other's order.

    Erasures hold for every model served: ``forget`` removes a customer from the current
    model, and ``load`` removes every customer ``erased_list`` holds (the store's erased list,
    set by the app once the store is open) from the new model, once after reading it and
    again under the lock just before the swap. The store records an erasure before
    ``forget`` is called, so an erasure during a load either reaches the old model before
    the swap (and is in the list read under the lock) or the new one after it. A load
    while the store is unavailable (a worker started during an outage) goes ahead
    without the list, which is applied once the store is back (``when_store_available``);
    meanwhile no customer is answered from the model without the store's erased check
    of that customer (``nbo.runtime.decide.forget_erased``), which answers 503 too.
    """

    def __init__(
        self,
        erased_list: Callable[[], ErasedList | Collection[str]] = _nothing_erased,
        experiments: Experiments = NO_EXPERIMENTS,
    ) -> None:
        self._models: ServingModels | None = None
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self.last_error: str | None = None
        self.erased_list = erased_list
        # Runs a callback once the store is available (``Store.when_available``).
        self.when_store_available: Callable[[Callable[[], None]], None] = _run_now
        self.experiments = experiments
        # How long the last successful load took (for the metrics); None before one.
        self.load_seconds: float | None = None
        # Called with the models each successful load swaps in.
        self.on_load: Callable[[ServingModels], None] | None = None

    @property
    def model(self) -> ServingModel | None:
        """The current model (what serves customers outside experiments)."""
        models = self._models
        return None if models is None else models.current

    @property
    def serving(self) -> ServingModels | None:
        """The current model with the experiments' variant models, as one reference."""
        return self._models

    def load(
        self,
        models_dir: Path,
        version: str | None = None,
        check: Callable[[ServingModels], None] | None = None,
        source: str | None = None,
        experiments: Experiments | None = None,
    ) -> ServingModel:
        """Load ``version`` (a version or an alias; CURRENT when None; ``source`` names
        where it was read, for the message when it names nothing) with the models of
        ``experiments`` (None: those serving now; a reload passes the file as read
        again), run ``check`` on them (it raises ArtifactError to refuse them), then swap
        them in as one reference, the experiments with them. ArtifactError when refused:
        the models and experiments serving before keep serving."""
        with self._loading:
            started = time.perf_counter()
            erased = self._erased()
            wanted = self.experiments if experiments is None else experiments
            try:
                models = load_serving_models(models_dir, version, wanted, erased or (), source)
                if check is not None:
                    check(models)
            except ArtifactError as exc:
                self.last_error = str(exc)
                log.error("model refused: %s", exc)
                raise
            with self._lock:
                again = self._erased()
                if again is None:
                    models.forget_erased(erased or ())
                elif isinstance(again, ErasedList) and isinstance(erased, ErasedList):
                    # Only those erased since the first read: each hashed test is a
                    # pass over every customer of the models, not to be made twice.
                    models.forget_erased(again.since(erased))
                else:
                    models.forget_erased(again)
                self._models = models
                self.experiments = wanted
                self.last_error = None
                # The load and the checks: how long a new version took to be ready.
                self.load_seconds = time.perf_counter() - started
            # The models replaced are gone (unless a request still holds them), and with
            # them the load's working memory: handed back to the system, not kept by the
            # allocator until the next load (``give_back_freed_heap``).
            give_back_freed_heap()
            log.info(
                "serving model %s%s",
                models.current.version,
                "".join(f"; experiment model {m.version}" for m in models.models()[1:]),
            )
            if self.on_load is not None:
                self.on_load(models)
            if again is None:
                log.warning(
                    "model %s loaded without the store's erased list (the store is "
                    "unavailable): applied once the store is back",
                    models.current.version,
                )
                self.when_store_available(self.forget_erased)
            return models.current

    def _erased(self) -> ErasedList | Collection[str] | None:
        """The store's erased list, or None while the store is unavailable."""
        try:
            return self.erased_list()
        except StoreUnavailable:
            return None

    def forget_erased(self) -> None:
        """Forget every customer ``erased_list`` holds (an erasure another worker took)."""
        with self._lock:
            models = self._models
            if models is not None:
                models.forget_erased(self.erased_list())

    def forget(self, customer_id: str) -> bool:
        """Make an erased customer unknown to every served model; True when one knew
        them (False too when no model is loaded: ``load`` applies the erasure later)."""
        with self._lock:
            models = self._models
            return models.forget(customer_id) if models is not None else False
