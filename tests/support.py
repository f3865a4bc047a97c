"""Helpers the tests share: planted-answer purchase data, a small training config, and
one-customer views of the many-customer functions (an API call is a chunk of one).

Two groups of customers with disjoint tastes: group "a" buys only items A00..A09, group
"b" only B00..B09. Each customer bought some of their group's items before the holdout
and buys others in it, so a working CF model must rank the customer's own group first.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from nbo.catalog.terms import Catalog
from nbo.models.served import ServingModel
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.ranking import OfferRequest, Ranking, rank_offers
from nbo.offers.state import Contact, PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training.config import TrainingConfig

END = pd.Timestamp("2026-06-30 12:00:00")
# A plain progress line (``nbo.progress``), which commands write to stderr when it is not
# a terminal (as under pytest): "nbo train: fit ALS (before cutoff): done in 0.1 s".
PROGRESS_LINE = re.compile(r"nbo [a-z]+: [^:]+: (done in [\d.]+ s|[^\n]*running for \d+ s)")


def without_progress(err: str) -> str:
    """``err`` less its progress lines: what is left is the command's messages."""
    return "".join(line for line in err.splitlines(keepends=True) if not PROGRESS_LINE.match(line))


GROUP_ITEMS = {"a": [f"A{i:02d}" for i in range(10)], "b": [f"B{i:02d}" for i in range(10)]}
CUSTOMERS_PER_GROUP = 30


def make_planted_purchases(seed: int = 7) -> pd.DataFrame:
    """Purchases in canonical columns over 150 days ending at ``END``."""
    rng = np.random.default_rng(seed)
    rows = []
    order = 0
    for group, items in GROUP_ITEMS.items():
        for c in range(CUSTOMERS_PER_GROUP):
            customer = f"{group}{c:02d}"
            basket = rng.choice(items, size=7, replace=False)
            for position, item in enumerate(basket):
                # The last two items of each basket fall in the final 30 days (holdout).
                days_before_end = rng.integers(1, 25) if position >= 5 else rng.integers(35, 150)
                order += 1
                rows.append(
                    {
                        "customer_id": customer,
                        "item_id": str(item),
                        "timestamp": END - pd.Timedelta(days=int(days_before_end)),
                        "quantity": int(rng.integers(1, 4)),
                        "price": 2.5,
                        "order_id": f"o{order}",
                    }
                )
    return pd.DataFrame(rows).sort_values("timestamp").reset_index(drop=True)


def worse_than_before(purchases: pd.DataFrame, holdout_days: int = 30) -> pd.DataFrame:
    """``purchases`` with every line before the holdout's cutoff moved to the other
    group's item of the same number (A03 <-> B03): a model learns the wrong tastes from
    it, while one trained on the lines before the cutoff as they were serves the holdout
    well (the quality gate's comparison with the current model)."""
    cutoff = purchases["timestamp"].max() - pd.Timedelta(days=holdout_days)
    swapped = purchases.copy()
    early = swapped["timestamp"] < cutoff
    other = {"A": "B", "B": "A"}
    swapped.loc[early, "item_id"] = [other[i[0]] + i[1:] for i in swapped.loc[early, "item_id"]]
    return swapped


def small_training_config() -> TrainingConfig:
    """Enough factors for two tastes, few iterations: seconds, not minutes."""
    return TrainingConfig.model_validate(
        {"als": {"factors": 8, "iterations": 10, "regularization": 0.1, "refit_iterations": 5}}
    )


def rank_one(
    model: ServingModel,
    customer_id: str,
    k: int,
    now_s: int,
    window: SuppressionWindow,
    posted: Sequence[PostedPurchase] = (),
    fatigued: Collection[str] = (),
    personalize: bool = True,
    *,
    catalog: Catalog | None = None,
    stage: str = "active",
    channel: str = "email",
    impressions: Sequence[Contact] = (),
    churn_risk: float | None = None,
    monetary: float | None = None,
) -> Ranking:
    """One customer's ``rank_offers``, as an API call ranks them."""
    request = OfferRequest(
        customer_id,
        k,
        posted,
        fatigued,
        personalize,
        stage,
        channel,
        impressions,
        churn_risk,
        monetary,
    )
    return rank_offers(model, [request], now_s, window, catalog)[0]


def profile_one(
    model: ServingModel, customer_id: str, posted: Sequence[PostedPurchase], now_s: int
) -> CustomerProfile:
    """One customer's ``customer_profiles``."""
    return customer_profiles(model, [(customer_id, posted)], now_s)[0]


def posted(item_id: str, at: int, order: str, quantity: float = 1.0) -> PostedPurchase:
    """A posted purchase line of ``order`` (its event id is the order's)."""
    return PostedPurchase(item_id, quantity, at, order, order)
