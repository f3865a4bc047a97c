"""Step 4, evaluate: every method scored on the holdout, on the same customers.

The single methods (``training.methods``): ALS, popularity, buy-again and, with cycles,
ALS under the plain and the cycle-aware suppression window. Then the ranker,
trained one window before the cutoff so nothing it learns sees the holdout, with the
single methods that need its sources (ItemKNN, stage popularity). The churn model's
figures (judged in the fit step, on its own cutoffs) join them under ``CHURN_METRICS``.
Then the propensity curves are calibrated on what the evaluated customers bought in
the holdout, for ALS and for the ranker, and the chance of buying anything from the
churn risk at the cutoff, on every customer (``training.propensity``). Last, what is
served: the candidate policy is chosen on the window before the cutoff
(``training.policy``), and the service's decision serves it at the cutoff
(``training.served``), scored as ``served`` on both truths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.catalog.loading import default_catalog
from nbo.catalog.terms import Catalog
from nbo.core import columns as col
from nbo.data.features import line_values
from nbo.data.history import to_unix_seconds
from nbo.models.cycles import Repurchase
from nbo.models.policy import LISTED_RULES
from nbo.models.propensity import Propensity
from nbo.offers.ranking import MIN_CANDIDATES as PROPENSITY_CANDIDATES
from training.config import TrainingConfig
from training.fit import Fitted, als_on, fit_repurchase
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
from training.policy import PolicyChoice, choose_policy
from training.progress import Steps
from training.propensity import fit_propensity, with_buying_curve, with_ranker_curve
from training.ranker import (
    RankerResult,
    WindowSettings,
    cutoff_seconds,
    finish_ranker,
    prepare_ranker,
    risk_at,
    window_facts,
)
from training.served import Cutoff, served_metrics, served_model, with_rule_curves
from training.split import TimeSplit

# ``metrics`` key of the churn model's metrics (method -> metric), next to the truths.
CHURN_METRICS = "churn"
# Above this share of the items, a list of k hits by construction: its figures say little.
MAX_K_SHARE = 1 / 3


def few_items(manifest: dict[str, Any]) -> list[str]:
    """A warning when the lists of ``k`` offers hold a large share of the items there
    are to offer (over ``MAX_K_SHARE``): 10 of a 15-item catalogue scored recall@10 0.97
    served and 1.0 for ItemKNN, figures that look excellent and say little."""
    k = (manifest.get("config") or {}).get("k")
    items = (manifest.get("data") or {}).get("items")
    if not k or not items or k <= items * MAX_K_SHARE:
        return []
    return [
        f"k = {k} is {min(k / items, 1.0):.0%} of the {items:,} items: a list of {k} holds "
        f"much of the catalogue and hits by construction, so the @{k} figures say little "
        "about the model (set a smaller k in the config to tell methods apart; an "
        "experiment on live offers tells more)"
    ]


def case_variants(manifest: dict[str, Any]) -> list[str]:
    """A warning per id column whose ids match one another only by case ("85123a" beside
    "85123A"): ids are case-sensitive by design, so each is trained as its own item or
    customer, their purchases split between the two, and nothing else says so. Not
    merged here: which case is right is the data's owner's to say (docs/training.md)."""
    data = manifest.get("data") or {}
    counts = data.get("case_variants") or {}
    lines = []
    for column, what in ((col.ITEM_ID, "item"), (col.CUSTOMER_ID, "customer")):
        count = counts.get(column, 0)
        if not count:
            continue
        examples = (data.get("case_examples") or []) if column == col.ITEM_ID else []
        named = "; ".join(" and ".join(group) for group in examples)
        lines.append(
            f"{count:,} {what} ids match another {what} id only by case"
            + (f" (e.g. {named})" if named else "")
            + f": ids are case-sensitive, so each is trained as a separate {what}; if an "
            "export changed the case, fix the file and train again (docs/training.md, "
            "ids that differ only by case)"
        )
    return lines


@dataclass
class Evaluation:
    """The figures the quality gate and the reports read, and what the holdout taught
    that the published model keeps (the ranker's booster, the propensity curves, the
    candidate policy)."""

    customers: np.ndarray  # the evaluated customers (rows of the split's training side)
    metrics: Metrics  # every method's and what is served, per truth; the churn model's
    ranker: RankerResult
    propensity: Propensity
    propensity_report: dict[str, Any]  # the manifest's ``propensity`` section
    policy: PolicyChoice
    cutoff: Cutoff  # what was known at the cutoff: another model is served there too


def evaluate(
    data: TrainingData,
    split: TimeSplit,
    fitted: Fitted,
    config: TrainingConfig,
    steps: Steps,
    catalog: Catalog | None = None,
) -> Evaluation:
    """Score every method at the cutoff, train and score the ranker, calibrate propensity,
    choose the candidate policy on the window before, and score what is served at the
    cutoff under ``catalog`` (the default catalogue when None)."""
    catalog = catalog or default_catalog()
    k, seed = config.k, config.als.random_state
    with steps.step("evaluate"):
        # What the service would suppress at the cutoff, dead times included when learned.
        suppressed = suppressed_at_cutoff(split, fitted.repurchase, config.suppression.days)
        popularity = split_popularity(split, config.popularity_days)
        methods = single_methods(split, fitted, popularity, suppressed, k)
        customers = evaluation_customers(split, config.eval_max_customers, seed)
        metrics = evaluate_methods(split, methods, customers, k)
        if fitted.churn.metrics is not None:
            metrics[CHURN_METRICS] = fitted.churn.metrics

    params = config.als.params()

    def repurchase_of(window: TimeSplit) -> Repurchase | None:
        """The split's cycles are learned already; an earlier window's are learned anew."""
        if window is split:
            return fitted.repurchase
        return fit_repurchase(window.train_lines, config)

    def fit_als_on(counts: sp.csr_matrix) -> AlternatingLeastSquares:
        return als_on(counts, params)

    facts_of = window_facts(data.purchases, data.encoded.items, data.orders, fitted.churn, config)
    settings = WindowSettings.from_config(config)
    line_value = typical_line_values(data)
    with steps.step("policy (served on the window before)"):
        # Chosen, and the ranker's settings searched, before the test window is looked at.
        prepared = prepare_ranker(
            split, fitted.als, fit_als_on, repurchase_of, facts_of, settings, k
        )
        policy = choose_policy(
            split,
            prepared,
            fit_als_on,
            repurchase_of,
            facts_of,
            settings,
            config,
            catalog,
            line_value,
        )
    with steps.step("ranker (trained one window earlier)"):
        booster = None if prepared.table is None else prepared.train(policy.booster)
        searched = None if policy.search is None else policy.search.section()
        ranker = replace(finish_ranker(prepared, booster, customers, k), search=searched)
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
        # And the chance of buying anything, which those curves are conditional on.
        propensity, report = with_buying_curve(propensity, report, split, risk_at(ranker), seed)

    with steps.step("served (at the cutoff)"):
        at = Cutoff(
            split,
            fitted.als,
            fitted.repurchase,
            ranker,
            customers,
            line_value(cutoff_seconds(split)),
        )
        served = served_metrics(
            served_model(at, config, propensity), at, policy.name, config, catalog
        )
        for truth, by_method in served.items():
            metrics[truth].update(by_method)
        if policy.name in LISTED_RULES:
            # The published model's curves for its rule: fitted on every evaluated
            # customer, their held-out quality in the report.
            propensity, report = with_rule_curves(propensity, report, at, policy.name, config)
    return Evaluation(customers, metrics, ranker, propensity, report, policy, at)


def typical_line_values(data: TrainingData) -> Callable[[int], float | None]:
    """The median value of a purchase line before a moment (unix s; None without prices):
    the money scale a catalogue's incentives are read against, as known then."""
    if not data.priced:
        return lambda _as_of_s: None
    values = line_values(data.purchases)
    times = to_unix_seconds(data.purchases[col.TIMESTAMP])

    def before(as_of_s: int) -> float | None:
        mine = values[times < as_of_s]
        return float(np.median(mine)) if len(mine) else None

    return before


def single_methods(
    split: TimeSplit,
    fitted: Fitted,
    popularity: np.ndarray,
    suppressed: sp.csr_matrix,
    k: int,
) -> dict[str, Recommender]:
    """The methods that need no second window: ALS, popularity, buy-again, and with
    cycles the fair comparison for them: ALS minus the plain window (what the service
    does without cycles) against ALS minus the dead times (``suppressed``)."""
    als = als_recommender(fitted.als, k)
    methods = {
        "als": als,
        "popularity": popularity_recommender(popularity, k),
        "buy_again": buy_again_recommender(
            split.train.counts, split.train.last_purchase, popularity, k
        ),
    }
    if fitted.repurchase is not None:
        methods["als_window"] = excluding(als, split.suppressed)
        methods["als_cycles"] = excluding(als, suppressed)
    return methods
