"""Compiling the decision's kernels when a model loads, never on a customer's request.

A numba kernel (``nbo.core.compiled``) compiles at its first call for the argument types
it meets (seconds), or loads its machine code from numba's disk cache (milliseconds);
either way it must not be a customer's wait. ``warm_up`` runs every kernel once on a
made-up customer with the model's own arrays (their dtypes pick the compiled version the
requests will use): the service's load (in ``nbo serve``'s master before it forks its
workers, so they share the compiled code), a reload, ``nbo batch``'s workers.
``load_serving_model`` calls it when it loads a model to serve (``compiled=True``).

Kernels of a higher layer (the offers' arbitration, the profiles) add their own step with
``register_warm_up``, from the module that holds them: a step is a function of the
model, run after the candidates' in the order registered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from nbo.data.sparse import Rows
from nbo.models.candidates import CustomerSide, ItemSide, candidates

log = logging.getLogger(__name__)


class Loaded(Protocol):
    """What the warm-up reads of a loaded model (``nbo.models.served.ServingModel``,
    which imports this module)."""

    @property
    def version(self) -> str: ...
    @property
    def als(self) -> Any: ...
    @property
    def popular_order(self) -> np.ndarray: ...
    @property
    def item_side(self) -> ItemSide | None: ...
    @property
    def ranker_per_source(self) -> int: ...
    @property
    def als_shortlist(self) -> np.ndarray | None: ...


# A step: a function of the model (a ``ServingModel``).
WarmUp = Callable[[Any], None]
_STEPS: list[WarmUp] = []


def register_warm_up(step: WarmUp) -> WarmUp:
    """Run ``step`` (a function of the model) in every ``warm_up``; returns it, so it
    can decorate the step."""
    if step not in _STEPS:
        _STEPS.append(step)
    return step


def warm_up(model: Loaded) -> float:
    """Compile (or load from the cache) every kernel the model's decisions call, for the
    model's array types; returns the seconds it took."""
    start = time.perf_counter()
    for step in (_candidates, *_STEPS):
        try:
            step(model)
        except Exception as exc:
            # A model whose arrays do not hold together fails here first; the load's and
            # the reload's checks refuse it with their own message (a smoke ranking
            # names the customer it failed on), so the warm-up only says it and goes on.
            log.warning(
                "model %s: warm-up step %s failed (%s: %s); its kernels compile at their "
                "first call",
                model.version,
                getattr(step, "__qualname__", step),
                type(exc).__name__,
                exc,
            )
    took = time.perf_counter() - start
    log.debug("model %s: kernels ready in %.3f s", model.version, took)
    return took


def _candidates(model: Loaded) -> None:
    """The candidate stage (``nbo.models.candidates``) for one made-up customer who
    bought the most popular item, is excluded from the next one and has the first
    customer's shortlist: every kernel runs, with the model's arrays."""
    items = model.item_side
    if items is None or not len(model.popular_order):
        return
    n_items = len(model.popular_order)
    first = np.asarray(model.popular_order[:2], dtype=np.int64)
    one = np.array([0, 1], np.int64)
    counts = Rows(one, first[:1], np.ones(1, np.float32), (1, n_items))
    shortlist = None if model.als_shortlist is None else model.als_shortlist[:1]
    candidates(
        items,
        CustomerSide(
            np.asarray(model.als.user_factors[:1], dtype=np.float32),
            counts,
            Rows(one, first[:1], np.full(1, float(items.as_of_s)), (1, n_items)),
            Rows(one, first[1:2], np.ones(1, np.float32), (1, n_items)),
            stage=np.zeros(1, np.int64),
            churn_risk=np.full(1, 0.5),
            monetary=np.ones(1),
            baskets=np.ones(1),
            gap_days=np.full(1, np.nan),
            recent=Rows(one, first[:1], np.ones(1), (1, n_items)),
            recent_orders=np.ones(1),
            shortlist=shortlist,
        ),
        model.ranker_per_source,
    )
