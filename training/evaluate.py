"""Step 4, evaluate: every method scored on the holdout, on the same customers.

The single methods (``training.methods``): ALS, popularity, buy-again and, with cycles,
ALS under the plain and the cycle-aware suppression window. Then the ranker,
trained one window before the cutoff so nothing it learns sees the holdout, with the
single methods that need its sources (ItemKNN, stage popularity). The churn model's
figures (judged in the fit step, on its own cutoffs) join them under ``CHURN_METRICS``.
Last, the propensity curves are calibrated on what the evaluated customers bought in
the holdout, for ALS and for the ranker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from nbo.models.propensity import Propensity
from nbo.offers.ranking import MIN_CANDIDATES as PROPENSITY_CANDIDATES
from training.config import TrainingConfig
from training.fit import Fitted, als_on, fit_cycles
from training.load import TrainingData
from training.methods import (
    Metrics,
    Recommender,
    als_recommender,
    buy_again_recommender,
    evaluate_methods,
    evaluation_customers,
    excluding,
    popularity_recommender,
    split_popularity,
    suppressed_at_cutoff,
)
from training.progress import Steps
from training.propensity import fit_propensity, with_ranker_curve
from training.ranker import RankerResult, WindowSettings, evaluate_ranker, window_facts
from training.split import TimeSplit

# ``metrics`` key of the churn model's metrics (method -> metric), next to the truths.
CHURN_METRICS = "churn"


@dataclass
class Evaluation:
    """The figures the quality gate and the reports read, and what the holdout taught
    that the published model keeps (the ranker's booster, the propensity curves)."""

    customers: np.ndarray  # the evaluated customers (rows of the split's training side)
    metrics: Metrics  # every method's, per truth; the churn model's under CHURN_METRICS
    ranker: RankerResult
    propensity: Propensity
    propensity_report: dict[str, Any]  # the manifest's ``propensity`` section


def evaluate(
    data: TrainingData, split: TimeSplit, fitted: Fitted, config: TrainingConfig, steps: Steps
) -> Evaluation:
    """Score every method at the cutoff, train and score the ranker, calibrate propensity."""
    k, seed = config.k, config.als.random_state
    with steps.step("evaluate"):
        # What the service would suppress at the cutoff, cycles included when learned.
        suppressed = suppressed_at_cutoff(split, fitted.cycles, config.suppression.days)
        popularity = split_popularity(split, config.popularity_days)
        methods = single_methods(split, fitted, popularity, suppressed, k)
        customers = evaluation_customers(split, config.eval_max_customers, seed)
        metrics = evaluate_methods(split, methods, customers, k)
        if fitted.churn.metrics is not None:
            metrics[CHURN_METRICS] = fitted.churn.metrics

    params = config.als.params()

    def cycles_of(window: TimeSplit) -> np.ndarray | None:
        """The split's cycles are learned already; an earlier window's are learned anew."""
        return fitted.cycles if window is split else fit_cycles(window.train_lines, config.cycles)

    with steps.step("ranker (trained one window earlier)"):
        ranker = evaluate_ranker(
            split,
            fitted.als,
            lambda counts: als_on(counts, params),
            cycles_of,
            window_facts(data.purchases, data.encoded.items, data.orders, fitted.churn, config),
            customers,
            WindowSettings.from_config(config),
            k,
        )
        for truth, by_method in ranker.metrics.items():
            metrics[truth].update(by_method)

    with steps.step("propensity calibration"):
        # On what the service proposes at the cutoff: candidates minus what it suppresses.
        propensity, report = fit_propensity(
            fitted.als,
            split,
            customers,
            popularity,
            suppressed,
            candidates=PROPENSITY_CANDIDATES,
            horizon_days=config.holdout_days,
            seed=seed,
        )
        if ranker.booster is not None:
            propensity, report = with_ranker_curve(propensity, report, ranker, seed)
    return Evaluation(customers, metrics, ranker, propensity, report)


def single_methods(
    split: TimeSplit,
    fitted: Fitted,
    popularity: np.ndarray,
    suppressed: sp.csr_matrix,
    k: int,
) -> dict[str, Recommender]:
    """The methods that need no second window: ALS, popularity, buy-again, and with
    cycles the fair comparison for them: ALS minus the plain window (what the service
    does without cycles) against ALS minus the cycle-aware window (``suppressed``)."""
    als = als_recommender(fitted.als, k)
    methods = {
        "als": als,
        "popularity": popularity_recommender(popularity, k),
        "buy_again": buy_again_recommender(
            split.train.counts, split.train.last_purchase, popularity, k
        ),
    }
    if fitted.cycles is not None:
        methods["als_window"] = excluding(als, split.suppressed)
        methods["als_cycles"] = excluding(als, suppressed)
    return methods
