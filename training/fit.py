"""Step 3, fit: the models learned from the purchases before the cutoff, which the
evaluation then scores on the holdout.

ALS and what is learned about buying items again (cycles and dead times) learn from the
split's training side only. The churn model
has cutoffs of its own (``training.lifecycle``): it is fitted, judged against recency on
a later label period and refitted for publishing, all here, because the ranker learns
from the risk it predicts. ``als_on`` and ``fit_repurchase`` are the one way to fit either
on any window: the ranker's earlier window and the refit on all data use them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.data.history import EncodedPurchases
from nbo.models.cf import AlsParams, confidence_matrix, fit_als
from nbo.models.cycles import Repurchase, learn_repurchase
from training.config import TrainingConfig
from training.lifecycle import ChurnTraining, train_churn
from training.load import TrainingData
from training.progress import Steps
from training.split import TimeSplit


@dataclass
class Fitted:
    """What was learned before the cutoff (rows and columns: the split's training ids)."""

    als: AlternatingLeastSquares
    # Repurchase cycles and dead times per training item; None when cycles are off in
    # the config.
    repurchase: Repurchase | None
    churn: ChurnTraining


def fit_before_cutoff(
    data: TrainingData, split: TimeSplit, config: TrainingConfig, steps: Steps
) -> Fitted:
    """ALS and the repurchase cycles on the purchases before the cutoff, and the churn
    model on its own cutoffs."""
    params = config.als.params()
    with steps.step("fit ALS (before cutoff)", iterations=params.iterations) as tick:
        als = als_on(split.train.counts, params, on_iteration=tick)
    repurchase = None
    if config.cycles.enabled:
        with steps.step("repurchase cycles (before cutoff)"):
            repurchase = fit_repurchase(split.train_lines, config)
    with steps.step("churn model"):
        churn = train_churn(data.orders, config.churn, data.end_s, params.random_state)
    return Fitted(als=als, repurchase=repurchase, churn=churn)


def als_on(
    counts: sp.csr_matrix,
    params: AlsParams,
    on_iteration: Callable[[int], None] | None = None,
) -> AlternatingLeastSquares:
    """ALS fitted from scratch on a customer x item matrix of order counts."""
    return fit_als(confidence_matrix(counts, params), params, on_iteration=on_iteration)


def fit_repurchase(lines: EncodedPurchases, config: TrainingConfig) -> Repurchase | None:
    """The repurchase cycle and dead time of each item of ``lines`` (None when cycles are
    off); an offer's horizon is ``[cycles] horizon_days``, else the holdout."""
    cycles = config.cycles
    if not cycles.enabled:
        return None
    return learn_repurchase(
        lines,
        cycles.min_repeat_buyers,
        cycles.max_days,
        quantile=cycles.dead_time_quantile,
        min_repeat_rate=cycles.min_repeat_rate,
        floor_days=cycles.floor_days,
        horizon_days=config.holdout_days if cycles.horizon_days is None else cycles.horizon_days,
    )
