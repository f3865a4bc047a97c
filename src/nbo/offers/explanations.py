"""Why each offer: the purchases behind it and its reason in words, for many offers at once.

An offer is credited to one source (``nbo.offers.ranking`` picks the most personal of those that
proposed it) and explained by it:

- ``cf`` (ALS): the customer's purchases that add most to the item's score (implicit's
  ``explain``, one solve per customer);
- ``buy_again``: the item itself, with how many orders of it the customer made;
- ``also_bought``: the customer's purchase that adds most to the item's ItemKNN score
  (its order count x similarity), never the item itself (the similarity holds each item
  as its own neighbour); an item whose only link is the customer's own purchase of it is
  explained as bought again;
- ``popular``, ``popular_in_stage``, ``catalog`` (an incentive): nothing more to say.

One wording for API answers and batch files alike: both read the text made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nbo.core.arrays import filled, lay_out_segments
from nbo.core.vocabulary import DAY
from nbo.models.served import ServingModel
from nbo.offers.arbitration import Choices

SOURCE_CF = "cf"
SOURCE_POPULAR = "popular"
SOURCE_CATALOG = "catalog"  # an incentive: the catalogue proposes it, no model does
SOURCE_BUY_AGAIN = "buy_again"  # the customer's own history (a ranker source)
SOURCE_ALSO_BOUGHT = "also_bought"  # item-to-item neighbours (a ranker source)
# Popular with customers in the same lifecycle stage (a ranker source).
SOURCE_POPULAR_IN_STAGE = "popular_in_stage"
# Purchases named behind an ALS offer.
EXPLAINED_BY = 3
# A buy-again item offered less than this share of its repurchase cycle after the
# customer last bought it is offered early: its reason says when it was last bought.
EARLY_SHARE = 0.5

# Whom an incentive is for, in words a customer may read: an email or app card carries
# the text, so it never tells a customer they were flagged as leaving or gone ("an offer
# for customers at risk of leaving"); the stage itself is in the answer for a marketer.
STAGE_WORDS = {
    "new": "new customers",
    "active": "you",
    "at_risk": "you",
    "lapsed": "you",
    "loyal": "loyal customers",
}


@dataclass(frozen=True)
class Bought:
    """What one customer bought (catalogue indices), as the model and posted purchases
    know it: order counts, ALS confidences and the last purchase of each (unix seconds;
    None: not known), aligned with ``items``."""

    items: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    last: np.ndarray | None = None


@dataclass(frozen=True)
class Explanations:
    """Per chosen offer (aligned with ``Choices``): the source credited, the item ids
    behind it, the customer's orders of it (buy again) and the reason in words."""

    source: np.ndarray
    because: np.ndarray  # tuples of item ids
    orders: np.ndarray
    text: np.ndarray


def credited_sources(choices: Choices) -> np.ndarray:
    """The source each chosen offer is credited to: the one that proposed it, or the
    catalogue for an incentive. Cheap, unlike the rest of an explanation: metrics count
    offers by source whether or not the caller asked for reasons."""
    source = choices.source.copy()
    source[choices.item < 0] = SOURCE_CATALOG
    return source


def explain(
    model: ServingModel,
    bought: Sequence[Bought],
    choices: Choices,
    stages: Sequence[str],
    now_s: int | None = None,
) -> Explanations:
    """The explanations of the offers chosen for many customers (``bought``, ``stages``:
    per customer of ``choices``) at ``now_s`` (None: when each item was last bought is
    not said)."""
    n = len(choices)
    customer = choices.customer
    source = credited_sources(choices)
    because = np.empty(n, dtype=object)
    because.fill(())
    orders = np.zeros(n, dtype=np.int64)
    lookup = _OrderCounts(bought, len(model.items))
    item_ids = model.item_id_array

    also = (source == SOURCE_ALSO_BOUGHT).nonzero()[0]
    if len(also) and model.item_side is not None:
        closest = _closest_bought(model, lookup, customer[also], choices.item[also])
        because[also] = [() if j < 0 else (item_ids[j],) for j in closest.tolist()]
        # Proposed only for the customer's own purchase of it ("customers who bought
        # Coffee box also bought this" on the coffee box): the honest reason is theirs.
        alone = also[closest < 0]
        own = lookup.at(customer[alone], choices.item[alone])
        source[alone[own > 0]] = SOURCE_BUY_AGAIN
    cf = (source == SOURCE_CF).nonzero()[0]
    if len(cf):
        for c in sorted(set(customer[cf].tolist())):
            mine = cf[customer[cf] == c]
            history = bought[c]
            explained = model.explainer.explain(
                history.items, history.confidence, choices.item[mine], top=EXPLAINED_BY
            )
            because[mine] = [tuple(item_ids[i] for i, _ in pairs) for pairs in explained]
    # Offers credited to buy-again (those reassigned above included): the purchase is the
    # reason, with its order count and, at a known moment, the days since the customer
    # last bought it (NaN: not known). One lookup of the pairs gives both.
    ago = None
    again = (source == SOURCE_BUY_AGAIN).nonzero()[0]
    if len(again):
        found = lookup.find(customer[again], choices.item[again])
        orders[again] = lookup.counts_at(found).astype(np.int64)
        because[again] = [(item_id,) for item_id in choices.item_id[again].tolist()]
        if now_s is not None:
            ago = filled(n, np.nan)
            ago[again] = (now_s - lookup.last_at(found)) / DAY
    return Explanations(
        source, because, orders, _texts(model, choices, source, because, orders, stages, ago)
    )


def _texts(
    model: ServingModel,
    choices: Choices,
    source: np.ndarray,
    because: np.ndarray,
    orders: np.ndarray,
    stages: Sequence[str],
    ago: np.ndarray | None = None,
) -> np.ndarray:
    """The reason of each offer, for a marketer or a customer, from the source it is
    credited to and the purchases behind it (item names where the model knows them), and
    for an item offered again, the days since the customer last bought it (``ago``; NaN
    or None: not known). Offers of one kind get their words together: most are popular
    or bought before."""
    texts = filled(len(source), "popular this month", object)
    texts[source == SOURCE_POPULAR_IN_STAGE] = "popular with customers like you"

    again = (source == SOURCE_BUY_AGAIN).nonzero()[0]
    cycles = model.repurchase_cycle_days
    days = filled(len(again), np.nan) if cycles is None else cycles[choices.item[again]]
    known = np.isfinite(days)
    texts[again[~known]] = "you bought this before"
    # Offered well before the item's typical gap (less than half of it since the
    # customer last bought it; its learned dead time, mostly a day, allows that): the
    # reason says when, or "customers buy it again about every 90 days" reads as if it
    # were due.
    shown = again[known]
    cycle_days = days[known]
    if ago is None:
        early = [False] * len(shown)
        since = early  # never read: nothing is early without a clock
    else:
        when_bought = ago[shown]
        early = (when_bought < EARLY_SHARE * cycle_days).tolist()
        since = when_bought.tolist()
    # The cycle is the item's, learned across its buyers, not this customer's own: said
    # as theirs ("you buy this about every 90 days") it was untrue of a customer who
    # bought it three times in seven weeks.
    for n, count, cycle, when, soon in zip(
        shown.tolist(), orders[shown].tolist(), cycle_days.tolist(), since, early, strict=True
    ):
        if count > 1:
            bought = f"you bought this {count} times" + (f", last {_ago(when)}" if soon else "")
        else:
            bought = f"you bought this {_ago(when)}" if soon else "you bought this before"
        texts[n] = f"{bought}; customers buy it again about every {cycle:.0f} days"

    names = model.item_names
    for n in (source == SOURCE_ALSO_BOUGHT).nonzero()[0].tolist():
        if because[n]:
            bought = ", ".join(names.get(i, i) for i in because[n])
            texts[n] = f"customers who bought {bought} also bought this"
    for n in (source == SOURCE_CF).nonzero()[0].tolist():
        behind, item_id = because[n], choices.item_id[n]
        if not behind:
            texts[n] = "matches your purchase history"
            continue
        others = [i for i in behind if i != item_id]
        bought = ", ".join(names.get(i, i) for i in others)
        if item_id in behind and others:
            texts[n] = f"you bought this before; it goes with {bought}"
        elif item_id in behind:
            texts[n] = "you bought this before"
        else:
            texts[n] = f"customers who bought what you bought ({bought}) also buy this"
    customer = choices.customer
    for n in (source == SOURCE_CATALOG).nonzero()[0].tolist():
        offer = choices.offer[n]
        title = offer.title if offer is not None else None
        stage = stages[customer[n]]
        texts[n] = f"{title or choices.offer_id[n]}: an offer for {STAGE_WORDS.get(stage, stage)}"
    return texts


def _ago(days: float) -> str:
    """'less than a day ago', '1 day ago', '5 days ago' (whole days elapsed)."""
    whole = int(days)
    if whole < 1:
        return "less than a day ago"
    return "1 day ago" if whole == 1 else f"{whole} days ago"


class _OrderCounts:
    """Each customer's order count per item, looked up for many (customer, item) pairs at
    once (0 where the customer never bought the item)."""

    def __init__(self, bought: Sequence[Bought], n_items: int) -> None:
        lengths = np.fromiter((len(b.items) for b in bought), dtype=np.int64, count=len(bought))
        customers = np.arange(len(bought), dtype=np.int64).repeat(lengths)
        items = (
            np.concatenate([b.items for b in bought]).astype(np.int64)
            if bought
            else np.empty(0, np.int64)
        )
        counts = (
            np.concatenate([b.counts for b in bought]).astype(np.float64) if bought else np.empty(0)
        )
        keys = customers * n_items + items
        order = keys.argsort(kind="stable")
        self._keys = keys[order]
        self._counts = counts[order]
        # When each was last bought is gathered only for the pairs asked about
        # (``last_at``): only an offer credited to buy-again says when.
        self._bought = bought
        self._order = order
        self._n_items = n_items

    def at(self, customers: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The orders of each (customer, item); 0 where the customer never bought it."""
        return self.counts_at(self.find(customers, items))

    def find(self, customers: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Where each (customer, item) lies among the purchases (-1: never bought), for
        ``counts_at`` and ``last_at``: one search for both."""
        keys = np.asarray(customers, dtype=np.int64) * self._n_items + np.asarray(
            items, dtype=np.int64
        )
        if not len(self._keys):
            return filled(len(keys), -1, np.int64)
        found = np.minimum(self._keys.searchsorted(keys), len(self._keys) - 1)
        found[self._keys[found] != keys] = -1
        return found

    def counts_at(self, found: np.ndarray) -> np.ndarray:
        """The order counts at ``find``'s places (0 where never bought)."""
        if not len(self._keys):
            return np.zeros(len(found))
        return np.where(found >= 0, self._counts[found], 0.0)

    def last_at(self, found: np.ndarray) -> np.ndarray:
        """When each of ``find``'s (customer, item) was last bought (unix seconds); NaN
        where never bought or not known."""
        out = filled(len(found), np.nan)
        hit = found >= 0
        if hit.any():
            last = np.concatenate(
                [filled(len(b.items), np.nan) if b.last is None else b.last for b in self._bought]
            )
            out[hit] = last[self._order[found[hit]]]
        return out


def _closest_bought(
    model: ServingModel, lookup: _OrderCounts, customers: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """Per (customer, item): the customer's purchase that adds most to the item's ItemKNN
    score (order count x similarity; the first such neighbour on a tie), never the item
    itself, -1 where no other purchase adds anything."""
    assert model.item_side is not None
    similar_to = model.item_side.similar_to
    indptr, positions = lay_out_segments(similar_to.indptr[items], similar_to.indptr[items + 1])
    segment_starts = indptr[:-1]
    lengths = indptr[1:] - segment_starts
    segment = np.arange(len(items)).repeat(lengths)
    neighbours = similar_to.indices[positions]
    contribution = similar_to.data[positions] * lookup.at(customers[segment], neighbours)
    contribution[neighbours == items[segment]] = 0.0
    closest = filled(len(items), -1, np.int64)
    has = (lengths > 0).nonzero()[0]
    if not len(has):
        return closest
    # Each segment's largest contribution, and the first neighbour that reaches it.
    best = np.maximum.reduceat(contribution, segment_starts[has])
    reached = (contribution == best.repeat(lengths[has])).nonzero()[0]
    first = reached[segment[reached].searchsorted(has)]
    closest[has] = np.where(best > 0, neighbours[first], -1)
    return closest
