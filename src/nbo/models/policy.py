"""The candidate policy a served model declares: where its product offers come from.

A shop must never get offers worse than a rule a marketer would write. The trainer
therefore compares, on a validation window before its test window, the model (the
ranker over its candidate sources, or ALS where there is no ranker) with three simple
rules, each served through the same decision (``nbo.offers.ranking``: suppression,
arbitration under the catalogue, explanations), and declares the winner in the
artifact's manifest (its ``policy`` section). The service then proposes that policy's
candidates:

- ``ranker``: the ranker's order over its five candidate sources;
- ``als``: ALS's top items (a model trained without a ranker);
- ``buy_again``: the customer's own items, most ordered first (ties: the most recent,
  then the catalogue order), then the popular items;
- ``itemknn``: the items most similar (BM25 ItemKNN, summed over the whole history,
  weighted by order counts) to what the customer bought, then the popular items;
- ``popularity``: the popular items alone.

Never an item suppressed for the customer. ``rule_lists`` is the one definition of the
three rules: the service ranks them with it, the trainer evaluates and calibrates them
with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from nbo.data.sparse import Rows, row_of, sparse_topk

POLICY_RANKER = "ranker"
POLICY_ALS = "als"
POLICY_BUY_AGAIN = "buy_again"
POLICY_ITEMKNN = "itemknn"
POLICY_POPULARITY = "popularity"
# The simple rules, and those of them ranked by their own list (the popularity rule is
# the popular list itself, with its own propensity curve).
RULES = (POLICY_BUY_AGAIN, POLICY_ITEMKNN, POLICY_POPULARITY)
LISTED_RULES = (POLICY_BUY_AGAIN, POLICY_ITEMKNN)
POLICIES = (POLICY_RANKER, POLICY_ALS, *RULES)
# The manifest's section that declares the policy (``name``) and why it was chosen.
SECTION = "policy"


def declared_policy(manifest: Mapping[str, Any]) -> str:
    """The policy a manifest declares; for an artifact from before policies, the ranker
    when it has one, else ALS (what such an artifact was always served by)."""
    section = manifest.get(SECTION)
    if isinstance(section, Mapping) and section.get("name"):
        return str(section["name"])
    ranker = manifest.get("ranker")
    return POLICY_RANKER if isinstance(ranker, Mapping) and ranker.get("enabled") else POLICY_ALS


@dataclass(frozen=True)
class RuleLists:
    """Each customer's list under a simple rule, best first: the rule's own items, then
    the popular fill (-1 pads where the catalogue runs out)."""

    items: np.ndarray  # customers x n, catalogue indices
    scores: np.ndarray  # the rule's score: order count, summed similarity, popularity
    filled: np.ndarray  # True where the item is popular fill, not the rule's own
    # The 1-based place of each of the rule's own items in the customer's list before
    # suppression (what was just bought left in): the box's mug stays second when the
    # box is held back. The popular fill's (and a pad's) is its place in this list.
    places: np.ndarray


def rule_lists(
    policy: str,
    counts: Rows,
    last: Rows,
    exclude: Rows | None,
    popularity: np.ndarray,
    popular: np.ndarray,
    n: int,
    similarity: sp.csr_matrix | None = None,
) -> RuleLists:
    """The first ``n`` items of each customer's (a row of ``counts``: order counts, of
    ``last``: last purchase times, same pattern) list under the simple rule ``policy``,
    never an item of their ``exclude`` row; ``popular`` is the catalogue by
    ``popularity``, best first. ``itemknn`` needs the item x item ``similarity``."""
    n_rows = counts.shape[0]
    places = np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), (n_rows, n)).copy()
    if policy == POLICY_BUY_AGAIN:
        items, scores, places = _buy_again(counts, last, exclude, n)
    elif policy == POLICY_ITEMKNN:
        if similarity is None:
            raise ValueError("the itemknn rule needs the item similarity")
        items, scores, places = _itemknn(counts, exclude, similarity, n)
    elif policy == POLICY_POPULARITY:
        items = np.full((n_rows, n), -1, np.int64)
        scores = np.zeros((n_rows, n))
    else:
        raise ValueError(f"'{policy}' is not a simple rule ({', '.join(RULES)})")
    filled = np.zeros(items.shape, dtype=bool)
    rank = np.empty(len(popular), np.int64)
    rank[popular] = np.arange(len(popular))
    nothing = np.empty(0, np.int64)
    for row in range(n_rows):
        own = items[row][items[row] >= 0]
        if len(own) == n:
            continue
        banned = nothing if exclude is None else np.asarray(row_of(exclude, row), np.int64)
        fill = first_allowed(popular, rank, np.concatenate([own, banned]), n - len(own))
        end = len(own) + len(fill)
        items[row, len(own) : end] = fill
        scores[row, len(own) : end] = popularity[fill]
        filled[row, len(own) : end] = True
        places[row, len(own) :] = np.arange(len(own) + 1, n + 1)
    return RuleLists(items, scores, filled, places)


def first_allowed(order: np.ndarray, rank: np.ndarray, banned: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` items of ``order`` (``rank`` is its inverse) not in ``banned``."""
    if len(banned) == 0:
        return order[:n]
    window = order[: n + len(banned)]
    banned_ranks = rank[banned]
    keep = np.ones(len(window), dtype=bool)
    keep[banned_ranks[banned_ranks < len(window)]] = False
    return window[keep][:n]


def _buy_again(
    counts: Rows, last: Rows, exclude: Rows | None, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each customer's own items, most ordered first, then most recent, then by index;
    their scores and their places before ``exclude`` (``RuleLists``)."""
    n_rows = counts.shape[0]
    lengths = np.diff(counts.indptr)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    items = np.asarray(counts.indices, dtype=np.int64)
    ordered = np.asarray(counts.data, dtype=np.float64)
    latest = np.asarray(last.data, dtype=np.float64)
    order = np.lexsort((items, -latest, -ordered, rows))
    rows, items, ordered = rows[order], items[order], ordered[order]
    # The place in the whole list first, then what is excluded leaves it.
    before = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows] + 1
    keep = ~_excluded(rows, items, exclude, counts.shape[1])
    rows, items, ordered, before = rows[keep], items[keep], ordered[keep], before[keep]
    within = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows]
    top = within < n
    out = np.full((n_rows, n), -1, np.int64)
    scores = np.zeros((n_rows, n))
    places = np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), (n_rows, n)).copy()
    out[rows[top], within[top]] = items[top]
    scores[rows[top], within[top]] = ordered[top]
    places[rows[top], within[top]] = before[top]
    return out, scores, places


def _itemknn(
    counts: Rows, exclude: Rows | None, similarity: sp.csr_matrix, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items of highest summed similarity x order count to each customer's history;
    their scores and their places before ``exclude`` (``RuleLists``)."""
    history = sp.csr_matrix(
        (np.asarray(counts.data, np.float64), counts.indices, counts.indptr), shape=counts.shape
    )
    scores = (history @ similarity).tocsr()
    banned = None
    if exclude is not None:
        banned = sp.csr_matrix(
            (np.ones(len(exclude.indices)), exclude.indices, exclude.indptr), shape=exclude.shape
        )
    items = sparse_topk(scores, n, banned)
    values = np.zeros(items.shape)
    rows, columns = np.nonzero(items >= 0)
    values[rows, columns] = np.asarray(scores[rows, items[rows, columns]]).ravel()
    places = np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), items.shape).copy()
    if banned is not None:
        places[rows, columns] += _ahead(
            rows, items[rows, columns], values[rows, columns], scores, exclude
        )
    return items, values, places


def _ahead(
    rows: np.ndarray,
    items: np.ndarray,
    values: np.ndarray,
    scores: sp.csr_matrix,
    exclude: Rows | None,
) -> np.ndarray:
    """Per listed (row, item) of score ``values``, how many of its row's ``exclude``
    items ``sparse_topk`` would have put before it (a higher score, or the same and a
    lower index): what suppression moved it up by. One sort of the listed and the
    excluded pairs together, no second top-k."""
    if exclude is None or len(exclude.indices) == 0:
        return np.zeros(len(rows), np.int64)
    banned_rows = np.repeat(np.arange(exclude.shape[0], dtype=np.int64), np.diff(exclude.indptr))
    banned_items = np.asarray(exclude.indices, np.int64)
    banned_values = np.asarray(scores[banned_rows, banned_items]).ravel()
    listed = banned_values > 0  # an item the rule gives no score was never in the list
    all_rows = np.concatenate([rows, banned_rows[listed]])
    all_items = np.concatenate([items, banned_items[listed]])
    all_values = np.concatenate([values, banned_values[listed]])
    is_banned = np.r_[np.zeros(len(rows), np.int64), np.ones(int(listed.sum()), np.int64)]
    order = np.lexsort((all_items, -all_values, all_rows))
    seen = np.cumsum(is_banned[order])
    # Subtract the count at each row's start: banned ones of earlier rows are not ahead.
    sorted_rows = all_rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows)
    before_row = np.where(starts > 0, seen[starts - 1], 0)
    ahead = np.empty(len(all_rows), np.int64)
    ahead[order] = seen - before_row
    return ahead[: len(rows)]


def _excluded(
    rows: np.ndarray, items: np.ndarray, exclude: Rows | None, n_items: int
) -> np.ndarray:
    """Which (row, item) pairs ``exclude`` holds."""
    if exclude is None or len(exclude.indices) == 0:
        return np.zeros(len(rows), dtype=bool)
    banned_rows = np.repeat(np.arange(exclude.shape[0], dtype=np.int64), np.diff(exclude.indptr))
    banned = np.sort(banned_rows * n_items + np.asarray(exclude.indices, np.int64))
    keys = rows * n_items + items
    at = np.minimum(np.searchsorted(banned, keys), len(banned) - 1)
    return banned[at] == keys
