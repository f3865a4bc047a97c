"""Step 6, refit: the model the service will serve, learned from all the purchases.

The evaluation judged models that never saw the holdout; the served one learns it too.
ALS continues from the evaluated factors for ``refit_iterations`` (or starts over),
popularity and the repurchase cycles and dead times are recounted, every customer gets a lifecycle
stage and a best send hour as of the end of the data, and the ranker's sources are
refitted for the booster the evaluation trained when the ranker is served (or alone,
for ItemKNN). The churn model, the booster, the propensity curves and the candidate
policy carry over as they were judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.data.history import PurchaseHistory, RecentOrders
from nbo.models.candidates import stage_codes
from nbo.models.cf import confidence_matrix, fit_als
from nbo.models.cycles import Repurchase
from nbo.models.policy import POLICY_ITEMKNN, POLICY_RANKER
from nbo.models.popularity import popularity_scores
from nbo.models.propensity import Propensity
from training.config import TrainingConfig
from training.evaluate import Evaluation
from training.fit import Fitted, fit_repurchase
from training.lifecycle import ChurnTraining, CustomerLifecycle, customer_lifecycle
from training.load import TrainingData
from training.progress import Steps
from training.ranker import ServedRanker, served_ranker
from training.split import TimeSplit


@dataclass
class FinalModel:
    """Everything the published model holds (rows and columns: the full data's ids)."""

    history: PurchaseHistory
    confidence: sp.csr_matrix
    als: AlternatingLeastSquares
    iterations: int  # ALS iterations of the refit
    warm_started: bool  # whether the refit continued from the evaluated factors
    popularity: np.ndarray  # as of the last purchase
    repurchase: Repurchase | None  # None when cycles are off
    lifecycle: CustomerLifecycle  # every customer as of the end of the data
    churn: ChurnTraining
    # The booster and its sources (the ranker policy), the sources alone (ItemKNN's), or
    # None (any other policy).
    ranker: ServedRanker | None
    propensity: Propensity
    policy: str  # the candidate policy (``nbo.models.policy``)
    # The customers' recency-weighted orders at the end of the data (the ranker's
    # features); None unless the ranker is served.
    recent: RecentOrders | None = None

    def section(self) -> dict[str, Any]:
        """The manifest's ``model`` section."""
        return {
            "algorithm": "implicit.als",
            "customers": len(self.history.customers),
            "items": len(self.history.items),
            "interactions": int(self.history.counts.nnz),
            "refit_iterations": self.iterations,
            "warm_started": self.warm_started,
        }


def refit(
    data: TrainingData,
    split: TimeSplit,
    fitted: Fitted,
    evaluation: Evaluation,
    config: TrainingConfig,
    steps: Steps,
) -> FinalModel:
    """Refit on all the purchases what must learn the holdout; keep the rest."""
    params = config.als.params()
    with steps.step("build full history"):
        history = data.encoded.history()
        confidence = confidence_matrix(history.counts, params)
        popularity = popularity_scores(
            history.counts, history.last_purchase, data.last_s, config.popularity_days
        )
    repurchase = None
    if config.cycles.enabled:
        with steps.step("repurchase cycles (all data)"):
            repurchase = fit_repurchase(data.encoded, config)
    iterations = config.als.refit_iterations or params.iterations
    with steps.step("refit ALS (all data)", iterations=iterations) as tick:
        warm = None
        if config.als.refit_iterations:
            warm = warm_start(fitted.als, split, history, params.random_state)
        als = fit_als(confidence, params, on_iteration=tick, warm_start=warm, iterations=iterations)
    with steps.step("lifecycle stages"):
        lifecycle = customer_lifecycle(data.orders, fitted.churn.model, config, data.end_s)
    ranker = None
    recent = None
    policy = evaluation.policy.name
    if policy == POLICY_RANKER:
        recent = data.encoded.recent_orders(data.last_s, config.ranker.half_life_days)
    if policy in (POLICY_RANKER, POLICY_ITEMKNN):
        with steps.step("ranker sources (all data)"):
            ranker = served_ranker(
                evaluation.ranker.booster if policy == POLICY_RANKER else None,
                history,
                data.last_s,
                stage_codes(lifecycle.stages),
                config,
            )
    return FinalModel(
        history=history,
        confidence=confidence,
        als=als,
        iterations=iterations,
        warm_started=warm is not None,
        popularity=popularity,
        repurchase=repurchase,
        lifecycle=lifecycle,
        churn=fitted.churn,
        ranker=ranker,
        propensity=evaluation.propensity,
        policy=policy,
        recent=recent,
    )


def warm_start(
    evaluated: AlternatingLeastSquares,
    split: TimeSplit,
    full: PurchaseHistory,
    seed: int,
) -> AlternatingLeastSquares:
    """Evaluated factors placed on the full id space; newcomers start small and random."""
    rng = np.random.default_rng(seed)
    factors = evaluated.item_factors.shape[1]

    def place(learned: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
        out = (rng.random((size, factors), dtype=np.float32) * 0.01).astype(np.float32)
        out[positions] = learned
        return out

    warm = AlternatingLeastSquares(factors=factors)
    warm.user_factors = place(
        evaluated.user_factors, split.train_customer_positions, len(full.customers)
    )
    warm.item_factors = place(evaluated.item_factors, split.train_item_positions, len(full.items))
    return warm
