"""Time-based holdout: the future never leaks into what the models see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nbo.core.errors import ConfigError
from nbo.core.vocabulary import DAY
from nbo.data.history import EncodedPurchases, PurchaseHistory, aggregate, encode_purchases


@dataclass
class TimeSplit:
    """Purchases before the cutoff (what models may learn from) and the truth after it."""

    cutoff: pd.Timestamp
    train: PurchaseHistory
    # The purchase lines before the cutoff, in training ids (what ``train`` aggregates).
    train_lines: EncodedPurchases
    # Per training customer, the items bought on or after the cutoff (binary, training ids).
    truth_all: sp.csr_matrix
    # The same minus what the customer bought in the suppression window before the cutoff.
    truth_new: sp.csr_matrix
    # What a service at the cutoff would suppress: items bought in the window before it.
    suppressed: sp.csr_matrix
    # Holdout items per customer that the training catalogue does not know (never hittable,
    # but they count in recall's denominator so no method gets credit for ignoring them).
    unknown_all: np.ndarray
    unknown_new: np.ndarray
    holdout_rows: int
    cold_start_customers: int
    # Positions of the training customers and items in the full data's id maps.
    train_customer_positions: np.ndarray
    train_item_positions: np.ndarray


def split_cutoff(time: np.ndarray, holdout_days: int) -> int:
    """Where ``time_split`` cuts purchases at ``time`` (unix s): the last purchase less the
    holdout."""
    return int(time.max()) - holdout_days * DAY


def time_split(
    purchases: EncodedPurchases | pd.DataFrame, holdout_days: int, suppression_days: int | None
) -> TimeSplit:
    """Split at ``last purchase - holdout_days``; ``suppression_days=None`` means 'all'."""
    encoded = purchases if isinstance(purchases, EncodedPurchases) else encode_purchases(purchases)
    last = int(encoded.time.max())
    cutoff_s = split_cutoff(encoded.time, holdout_days)
    before = encoded.time < cutoff_s
    if not before.any() or before.all():
        span = (last - int(encoded.time.min())) // DAY
        raise ConfigError(
            f"holdout_days={holdout_days} leaves "
            f"{'no training data' if not before.any() else 'no holdout data'} "
            f"(the data spans {span} days); choose a shorter holdout"
        )
    train_lines, train_customers, train_items = encoded.select(before)
    train = train_lines.history()

    suppressed = train.last_purchase.copy()
    if suppression_days is None:
        suppressed.data = np.ones_like(suppressed.data)
    else:
        suppressed.data = (suppressed.data >= cutoff_s - suppression_days * DAY).astype(np.int64)
    suppressed.eliminate_zeros()
    suppressed = suppressed.astype(np.float32)

    # Holdout lines in training ids (-1 where the training window never saw the id).
    after = ~before
    customer = train_customers.new[encoded.customer[after]]
    item = train_items.new[encoded.item[after]]
    known = customer >= 0
    hittable = known & (item >= 0)
    truth_all, _ = aggregate(
        customer[hittable],
        item[hittable],
        encoded.order[after][hittable],
        encoded.time[after][hittable],
        train.shape,
    )
    truth_all.data[:] = 1.0
    truth_new = (truth_all - truth_all.multiply(suppressed)).tocsr()
    truth_new.eliminate_zeros()

    # Distinct unknown items per known customer (unknown items are "new" too).
    unknown = known & (item < 0)
    pairs = np.unique(customer[unknown] * len(encoded.items) + encoded.item[after][unknown]) // len(
        encoded.items
    )
    unknown_counts = np.bincount(pairs, minlength=len(train.customers)).astype(np.int64)

    return TimeSplit(
        cutoff=pd.Timestamp(cutoff_s, unit="s"),
        train=train,
        train_lines=train_lines,
        truth_all=truth_all.tocsr(),
        truth_new=truth_new,
        suppressed=suppressed.tocsr(),
        unknown_all=unknown_counts,
        unknown_new=unknown_counts.copy(),
        holdout_rows=int(after.sum()),
        cold_start_customers=len(np.unique(encoded.customer[after][~known])),
        train_customer_positions=train_customers.kept,
        train_item_positions=train_items.kept,
    )
