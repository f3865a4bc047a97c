"""Ranking: candidates -> scores -> suppression -> top k with reasons.

Pure: the caller (the API, later batch runs and experiments) passes the model, the
customer and the clock; ranking never reaches for HTTP, files or the store, so every
path that produces offers shares this one function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbo.model import ServingModel
from nbo.models.cf import FILTERED_SCORE
from nbo.suppression import SuppressionWindow

SOURCE_CF = "cf"
SOURCE_POPULAR = "popular"
EXPLAINED_BY = 3


@dataclass(frozen=True)
class Reason:
    """Where an offer came from: the CF model (and the purchases behind it) or popularity."""

    source: str
    because: tuple[str, ...] = ()


@dataclass(frozen=True)
class Offer:
    item_id: str
    score: float
    rank: int
    reason: Reason


@dataclass(frozen=True)
class Ranking:
    """The ranked offers for one customer, and how they were produced."""

    customer_id: str
    personalized: bool
    offers: list[Offer]
    suppressed_items: int


def rank_offers(
    model: ServingModel,
    customer_id: str,
    k: int,
    now_s: int,
    window: SuppressionWindow,
) -> Ranking:
    """Top ``k`` offers for a customer at unix time ``now_s``.

    Known customers get ALS scores over the whole catalogue minus what they bought inside
    the suppression window, each offer explained by the purchases that drive it; unknown
    customers get the popular items, labelled as such. Short lists are filled from popular.
    """
    customer = model.customers.get(customer_id)
    if customer is None:
        picked = model.popular_order[:k]
        offers = _popular_offers(model, picked, start_rank=1)
        return Ranking(customer_id, personalized=False, offers=offers, suppressed_items=0)

    items, confidence, last_purchase = model.history_of(customer)
    suppressed = _suppressed(items, last_purchase, now_s, window)
    n_items = len(model.items)
    # Never ask for more than can be offered: implicit pads a short list with filtered
    # items (score = lowest float32) or repeats of item 0.
    wanted = min(k, n_items - len(suppressed))
    ids = np.empty(0, dtype=np.int64)
    scores = np.empty(0, dtype=np.float32)
    if wanted > 0:
        # Suppressed items as a plain filter list: for one customer this is the same
        # filter as a one-row liked-items matrix without building and slicing a CSR.
        ids, scores = model.als.recommend(
            customer,
            None,
            N=wanted,
            filter_already_liked_items=False,
            filter_items=suppressed if len(suppressed) else None,
        )
        valid = (ids >= 0) & (scores > FILTERED_SCORE)
        ids, scores = ids[valid], scores[valid]

    explanations = model.explainer.explain(items, confidence, ids, top=EXPLAINED_BY)
    item_ids = model.item_ids
    offers = [
        Offer(
            item_id=item_ids[item],
            score=score,
            rank=rank,
            reason=Reason(SOURCE_CF, tuple(item_ids[i] for i, _ in explanation)),
        )
        for rank, (item, score, explanation) in enumerate(
            zip(ids.tolist(), scores.tolist(), explanations, strict=True), start=1
        )
    ]
    if len(offers) < k:
        taken = np.concatenate([suppressed, ids]).astype(np.int64)
        fill = model.popular_order[~np.isin(model.popular_order, taken)][: k - len(offers)]
        offers += _popular_offers(model, fill, start_rank=len(offers) + 1)
    return Ranking(customer_id, personalized=True, offers=offers, suppressed_items=len(suppressed))


def _suppressed(
    items: np.ndarray, last_purchase: np.ndarray, now_s: int, window: SuppressionWindow
) -> np.ndarray:
    earliest = window.earliest_suppressed(now_s)
    if earliest is None:
        return np.empty(0, dtype=np.int32)
    return np.asarray(items[last_purchase >= earliest], dtype=np.int32)


def _popular_offers(model: ServingModel, picked: np.ndarray, start_rank: int) -> list[Offer]:
    return [
        Offer(
            item_id=model.item_ids[item],
            score=float(model.popularity[item]),
            rank=rank,
            reason=Reason(SOURCE_POPULAR),
        )
        for rank, item in enumerate(picked.tolist(), start=start_rank)
    ]
