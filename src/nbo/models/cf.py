"""Collaborative filtering with implicit's ALS: confidence weighting, fitting, explaining.

The service and the trainer both build their ALS object here, so the weighting and the
hyperparameters that fitted a model are the ones that serve it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight

Weighting = Literal["none", "log", "bm25"]

# Above this many purchased items, partitioning beats a full sort of the contributions
# (measured: 17 vs 28 µs at 103 items, 397 vs 168 µs at 1,000 items, ten offers).
PARTITION_ABOVE = 200

# implicit's top-k scores filtered items with the lowest float32 and pads lists longer
# than the catalogue; any score at or below this is not a real candidate.
FILTERED_SCORE = float(np.finfo(np.float32).min) / 2


def real_candidates(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``ids`` with implicit's filler (filtered items, out-of-range slots) set to -1."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where((ids >= 0) & (np.asarray(scores) > FILTERED_SCORE), ids, -1)


@dataclass(frozen=True)
class AlsParams:
    """ALS hyperparameters and the confidence weighting of purchase counts."""

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 2.0
    weighting: Weighting = "log"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AlsParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


def confidence_matrix(counts: sp.csr_matrix, params: AlsParams) -> sp.csr_matrix:
    """Turn order counts into ALS confidences (before implicit multiplies by alpha).

    ``log`` damps wholesale buyers who order the same item fifty times; ``bm25`` also
    down-weights items everybody buys; ``none`` keeps raw counts.
    """
    if params.weighting == "none":
        weighted = counts.astype(np.float32, copy=True)
    elif params.weighting == "log":
        weighted = counts.astype(np.float32, copy=True)
        weighted.data = np.log1p(weighted.data).astype(np.float32)
    elif params.weighting == "bm25":
        weighted = bm25_weight(counts, K1=params.bm25_k1, B=params.bm25_b).tocsr()
        weighted = weighted.astype(np.float32)
    else:
        raise ValueError(f"unknown weighting '{params.weighting}' (use none, log or bm25)")
    weighted.sort_indices()
    return weighted


def confidence_of_counts(counts: np.ndarray, params: AlsParams) -> np.ndarray:
    """One customer's confidences from their order counts, as ``confidence_matrix`` would
    weight them: exact for ``none`` and ``log``. BM25 needs the whole matrix (item idf,
    average row length), which the artifact does not keep yet, so a refolded customer of
    a BM25 model is weighted with ``log`` instead."""
    counts = np.asarray(counts, dtype=np.float32)
    if params.weighting == "none":
        return counts.copy()
    return np.log1p(counts).astype(np.float32)


def new_als(params: AlsParams) -> AlternatingLeastSquares:
    """An unfitted CPU ALS model; one BLAS thread is the caller's job (threadpoolctl)."""
    return AlternatingLeastSquares(
        factors=params.factors,
        iterations=params.iterations,
        regularization=params.regularization,
        alpha=params.alpha,
        random_state=params.random_state,
        calculate_training_loss=False,
    )


def fit_als(
    confidence: sp.csr_matrix,
    params: AlsParams,
    on_iteration: Callable[[int], None] | None = None,
    warm_start: AlternatingLeastSquares | None = None,
    iterations: int | None = None,
) -> AlternatingLeastSquares:
    """Fit ALS on a customer x item confidence matrix.

    ``warm_start`` continues from another model's factors (same shape): the trainer uses
    it to refit on all data after evaluation in a few iterations instead of from scratch.
    """
    model = new_als(params)
    if iterations is not None:
        model.iterations = iterations
    if warm_start is not None:
        model.user_factors = np.array(warm_start.user_factors, dtype=np.float32, copy=True)
        model.item_factors = np.array(warm_start.item_factors, dtype=np.float32, copy=True)

    def callback(iteration: int, _elapsed: float, _loss: float | None) -> None:
        if on_iteration is not None:
            on_iteration(iteration)

    model.fit(confidence, show_progress=False, callback=callback)
    return model


def als_from_factors(
    user_factors: np.ndarray, item_factors: np.ndarray, params: AlsParams
) -> AlternatingLeastSquares:
    """Rebuild a fitted model from saved factors (e.g. memory-mapped .npy files).

    Serving refolds one customer at a time (``recalculate_user``); implicit's default of
    all cores for that added about 5 ms at p99 on a 2-core machine, where the other core
    is busy serving another request. One OpenMP thread per refold is faster here.
    """
    model = new_als(params)
    model.num_threads = 1
    model.user_factors = user_factors
    model.item_factors = item_factors
    return model


class AlsExplainer:
    """Explains ALS scores by the customer's purchases, for many offered items at once.

    The same decomposition as implicit's ``AlternatingLeastSquares.explain`` (Hu, Koren &
    Volinsky 2008, section 5): score(u, i) = sum over purchased j of
    (y_i^T W_u y_j) c_uj with W_u = (Y^T C_u Y + regularization I)^-1. implicit's version
    loops in Python per offered item and per purchased item, milliseconds for a heavy
    buyer on every offers call; here one Cholesky factorisation (LAPACK, with the
    customer-independent part Y^T Y + regularization I computed once per model) serves
    all offered items.
    """

    def __init__(self, model: AlternatingLeastSquares) -> None:
        # The model's own factors, not a float64 copy of them (items x factors x 8 bytes
        # in every serving process: 10 MB at 20,000 items). The rows a call reads are
        # cast to float64 as they are taken, which gives the same numbers, since every
        # float32 is exactly a float64.
        self._factors = model.item_factors
        exact = np.asarray(self._factors, dtype=np.float64)
        self._base = exact.T @ exact + model.regularization * np.eye(exact.shape[1])
        self._alpha = float(model.alpha)

    def _rows(self, items: np.ndarray) -> np.ndarray:
        return np.asarray(self._factors[items], dtype=np.float64)

    def explain(
        self,
        liked_items: np.ndarray,
        liked_confidence: np.ndarray,
        item_ids: np.ndarray,
        top: int = 3,
    ) -> list[list[tuple[int, float]]]:
        """Per offered item, up to ``top`` (purchased item, contribution), largest first."""
        if len(liked_items) == 0 or len(item_ids) == 0:
            return [[] for _ in item_ids]
        liked = self._rows(liked_items)
        confidence = self._alpha * np.asarray(liked_confidence, dtype=np.float64)
        system = self._base + (liked * (confidence - 1.0)[:, None]).T @ liked
        cholesky, info = scipy.linalg.lapack.dpotrf(system, lower=False, clean=False)
        if info != 0:  # not positive definite (cannot happen with positive confidences)
            return [[] for _ in item_ids]
        weighted, info = scipy.linalg.lapack.dpotrs(cholesky, self._rows(item_ids).T)
        if info != 0:
            return [[] for _ in item_ids]
        contributions = (liked @ weighted) * confidence[:, None]
        top = min(top, len(liked_items))
        if len(liked_items) > PARTITION_ABOVE:
            # Heavy buyers: partition first, then order only the best few per offer.
            candidates = np.argpartition(-contributions, top - 1, axis=0)[:top]
            picked = np.take_along_axis(contributions, candidates, axis=0)
            best = np.take_along_axis(candidates, np.argsort(-picked, axis=0), axis=0)
        else:
            best = np.argsort(-contributions, axis=0, kind="stable")[:top]
        items = np.asarray(liked_items)[best].T.tolist()
        values = np.take_along_axis(contributions, best, axis=0).T.tolist()
        return [list(zip(i, v, strict=True)) for i, v in zip(items, values, strict=True)]


def explain_items(
    model: AlternatingLeastSquares,
    liked_items: np.ndarray,
    liked_confidence: np.ndarray,
    item_ids: np.ndarray,
    top: int = 3,
) -> list[list[tuple[int, float]]]:
    """One-off explanations; build an ``AlsExplainer`` once to explain many customers."""
    return AlsExplainer(model).explain(liked_items, liked_confidence, item_ids, top)
