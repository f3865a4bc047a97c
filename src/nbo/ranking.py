"""Ranking: the customer's history -> scores -> suppression -> top k with reasons.

Pure: the caller (the API, later batch runs and experiments) passes the model, the
customer, the purchases the service heard of since training, and the clock; ranking
never reaches for HTTP, files or the store, so every path that produces offers shares
this one function.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from nbo.cycles import suppressed_items
from nbo.model import ServingModel
from nbo.models.cf import FILTERED_SCORE, confidence_of_counts
from nbo.policies import RULE_FATIGUE, RULE_JUST_BOUGHT
from nbo.suppression import SuppressionWindow

SOURCE_CF = "cf"
SOURCE_POPULAR = "popular"
EXPLAINED_BY = 3

# How the customer's taste vector was obtained.
PROFILE_TRAINED = "trained"  # the model's own factors
PROFILE_UPDATED = "updated"  # refolded with purchases posted since the training data ended
PROFILE_LIVE = "live"  # unknown to the model; folded in from purchases posted since
PROFILE_NONE = "none"  # nothing known: popular items


@dataclass(frozen=True)
class RecentPurchase:
    """A purchase the service heard of after training (a posted event)."""

    item_id: str
    occurred_at: int
    order_key: str  # the order (or event) it belongs to: an item counts once per order


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
    profile: str
    offers: list[Offer]
    suppressed_items: int
    # Catalogue items each rule took out of the candidates, in rule order (an item is
    # counted under the first rule that removed it).
    removed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerHistory:
    """What is known of a customer: the model's history merged with posted purchases."""

    index: int | None
    items: np.ndarray
    confidence: np.ndarray
    last_purchase: np.ndarray
    has_new_orders: bool


def customer_history(
    model: ServingModel, customer_id: str, recent: Sequence[RecentPurchase] = ()
) -> CustomerHistory:
    """Merge the trained history with posted purchases of catalogue items.

    A posted purchase always counts for suppression; it adds to the order counts (and so
    to the taste vector) only when it happened after the training data ended, since
    earlier ones are already in the model.
    """
    index = model.customers.get(customer_id)
    if index is not None:
        items, confidence, last = model.history_of(index)
        counts = model.counts_of(index)
    else:
        items = np.empty(0, dtype=np.int32)
        counts = confidence = np.empty(0, dtype=np.float32)
        last = np.empty(0, dtype=np.int64)
    if not recent:
        return CustomerHistory(index, items, confidence, last, has_new_orders=False)

    positions = {}
    new_orders: dict[int, set[str]] = {}
    latest: dict[int, int] = {}
    for purchase in recent:
        item = model.items.get(purchase.item_id)
        if item is None:
            continue  # not in the catalogue: cannot be offered or scored
        latest[item] = max(latest.get(item, purchase.occurred_at), purchase.occurred_at)
        if purchase.occurred_at > model.trained_until_s:
            new_orders.setdefault(item, set()).add(purchase.order_key)
    if not latest:
        return CustomerHistory(index, items, confidence, last, has_new_orders=False)

    positions = {int(item): row for row, item in enumerate(items.tolist())}
    extra = [item for item in latest if item not in positions]
    merged_items = np.concatenate([items, np.asarray(extra, dtype=items.dtype)])
    merged_counts = np.concatenate([counts, np.zeros(len(extra), dtype=np.float32)])
    merged_last = np.concatenate([last, np.zeros(len(extra), dtype=np.int64)])
    rows = {**positions, **{item: len(items) + j for j, item in enumerate(extra)}}
    for item, when in latest.items():
        merged_last[rows[item]] = max(int(merged_last[rows[item]]), when)
    for item, orders in new_orders.items():
        merged_counts[rows[item]] += len(orders)
    if new_orders:
        merged_confidence = confidence_of_counts(merged_counts, model.params)
    else:
        merged_confidence = np.concatenate([confidence, np.zeros(len(extra), np.float32)])
    return CustomerHistory(
        index, merged_items, merged_confidence, merged_last, has_new_orders=bool(new_orders)
    )


def rank_offers(
    model: ServingModel,
    customer_id: str,
    k: int,
    now_s: int,
    window: SuppressionWindow,
    recent: Sequence[RecentPurchase] = (),
    fatigued: Collection[str] = (),
    personalize: bool = True,
) -> Ranking:
    """Top ``k`` offers for a customer at unix time ``now_s``.

    Known customers get ALS scores over the whole catalogue minus what they bought inside
    the suppression window, each offer explained by the purchases that drive it. Posted
    purchases count at once: they are suppressed, and purchases made after training
    refold the customer's taste vector (implicit's ``recalculate_user``), so a customer
    the model has never seen is personalized from their first posted purchase. Customers
    with no known purchase get the popular items, labelled as such; short lists are
    filled from popular.

    ``fatigued`` items (the contact policy's offer fatigue) are removed like suppressed
    ones; ``personalize=False`` (no consent to personalization) ranks by popularity alone
    while still never offering what was just bought.
    """
    history = customer_history(model, customer_id, recent)
    just_bought = _suppressed(model, history, now_s, window)
    rested = _fatigued(model, fatigued, just_bought)
    removed = {RULE_JUST_BOUGHT: len(just_bought), RULE_FATIGUE: len(rested)}
    suppressed = np.concatenate([just_bought, rested]) if len(rested) else just_bought
    known = np.asarray(history.confidence) > 0
    if not personalize or not known.any():
        fill = model.popular_order[~np.isin(model.popular_order, suppressed)][:k]
        offers = _popular_offers(model, fill, start_rank=1)
        return Ranking(customer_id, False, PROFILE_NONE, offers, len(just_bought), removed)

    n_items = len(model.items)
    # Never ask for more than can be offered: implicit pads a short list with filtered
    # items (score = lowest float32) or repeats of item 0.
    wanted = min(k, n_items - len(suppressed))
    ids = np.empty(0, dtype=np.int64)
    scores = np.empty(0, dtype=np.float32)
    refold = history.index is None or history.has_new_orders
    if wanted > 0:
        # Suppressed items as a plain filter list: for one customer this is the same
        # filter as a one-row liked-items matrix without building and slicing a CSR.
        filter_items = suppressed if len(suppressed) else None
        if refold:
            row = sp.csr_matrix(
                (history.confidence[known], history.items[known], [0, int(known.sum())]),
                shape=(1, n_items),
            )
            ids, scores = model.als.recommend(
                0,
                row,
                N=wanted,
                filter_already_liked_items=False,
                filter_items=filter_items,
                recalculate_user=True,
            )
        else:
            ids, scores = model.als.recommend(
                history.index,
                None,
                N=wanted,
                filter_already_liked_items=False,
                filter_items=filter_items,
            )
        valid = (ids >= 0) & (scores > FILTERED_SCORE)
        ids, scores = ids[valid], scores[valid]

    explanations = model.explainer.explain(
        history.items[known], history.confidence[known], ids, top=EXPLAINED_BY
    )
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
    if history.index is None:
        profile = PROFILE_LIVE
    else:
        profile = PROFILE_UPDATED if history.has_new_orders else PROFILE_TRAINED
    return Ranking(customer_id, True, profile, offers, len(just_bought), removed)


def _suppressed(
    model: ServingModel, history: CustomerHistory, now_s: int, window: SuppressionWindow
) -> np.ndarray:
    """Items bought too recently to offer: within the item's learned repurchase cycle
    (capped at the window) when the model has cycles, else within the window."""
    per_item = model.suppression_days(window.days)
    if per_item is not None:
        return suppressed_items(history.items, history.last_purchase, now_s, per_item)
    earliest = window.earliest_suppressed(now_s)
    if earliest is None:
        return np.empty(0, dtype=np.int32)
    return np.asarray(history.items[history.last_purchase >= earliest], dtype=np.int32)


def _fatigued(model: ServingModel, fatigued: Collection[str], taken: np.ndarray) -> np.ndarray:
    """Catalogue indices of fatigued items not already removed as just bought."""
    if not fatigued:
        return np.empty(0, dtype=np.int32)
    indices = [model.items.get(item) for item in fatigued]
    known = np.asarray([i for i in indices if i is not None], dtype=np.int32)
    return known[~np.isin(known, taken)]


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
