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
    """Rebuild a fitted model from saved factors (e.g. memory-mapped .npy files)."""
    model = new_als(params)
    model.user_factors = user_factors
    model.item_factors = item_factors
    return model


def explain_items(
    model: AlternatingLeastSquares,
    liked_items: np.ndarray,
    liked_confidence: np.ndarray,
    item_ids: np.ndarray,
    top: int = 3,
) -> list[list[tuple[int, float]]]:
    """For each of ``item_ids``, the customer's purchased items that most explain its score.

    The same decomposition as implicit's ``AlternatingLeastSquares.explain`` (Hu, Koren &
    Volinsky 2008, section 5), done for all offered items at once with one Cholesky
    factorisation: implicit's version loops in Python per item and per purchased item,
    which costs milliseconds for a heavy buyer on every offers call.
    """
    if len(liked_items) == 0 or len(item_ids) == 0:
        return [[] for _ in item_ids]
    factors = np.asarray(model.item_factors)
    liked = factors[liked_items].astype(np.float64)
    confidence = (model.alpha * liked_confidence).astype(np.float64)
    gram = np.asarray(model.YtY, dtype=np.float64)
    system = gram + model.regularization * np.eye(model.factors)
    system += (liked * (confidence - 1.0)[:, None]).T @ liked
    weights = scipy.linalg.cho_factor(system)
    weighted = scipy.linalg.cho_solve(weights, factors[item_ids].astype(np.float64).T)
    contributions = (liked @ weighted) * confidence[:, None]
    top = min(top, len(liked_items))
    best = np.argsort(-contributions, axis=0, kind="stable")[:top]
    return [
        [(int(liked_items[row]), float(contributions[row, column])) for row in best[:, column]]
        for column in range(len(item_ids))
    ]
