"""Time-based holdout: the future never leaks into what the models see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nbo import columns as col
from nbo.errors import ConfigError
from nbo.history import PurchaseHistory, build_history, to_unix_seconds


@dataclass
class TimeSplit:
    """Purchases before the cutoff (what models may learn from) and the truth after it."""

    cutoff: pd.Timestamp
    train: PurchaseHistory
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


def time_split(
    purchases: pd.DataFrame, holdout_days: int, suppression_days: int | None
) -> TimeSplit:
    """Split at ``last purchase - holdout_days``; ``suppression_days=None`` means 'all'."""
    last = purchases[col.TIMESTAMP].max()
    cutoff = last - pd.Timedelta(days=holdout_days)
    before = purchases[purchases[col.TIMESTAMP] < cutoff]
    after = purchases[purchases[col.TIMESTAMP] >= cutoff]
    if before.empty or after.empty:
        span = (last - purchases[col.TIMESTAMP].min()).days
        raise ConfigError(
            f"holdout_days={holdout_days} leaves "
            f"{'no training data' if before.empty else 'no holdout data'} "
            f"(the data spans {span} days); choose a shorter holdout"
        )
    train = build_history(before)
    cutoff_s = int(to_unix_seconds(pd.Series([cutoff]))[0])

    suppressed = train.last_purchase.copy()
    if suppression_days is None:
        suppressed.data = np.ones_like(suppressed.data)
    else:
        suppressed.data = (suppressed.data >= cutoff_s - suppression_days * 86_400).astype(np.int64)
    suppressed.eliminate_zeros()
    suppressed = suppressed.astype(np.float32)

    known_customer = after[col.CUSTOMER_ID].isin(train.customers.ids)
    holdout = after[known_customer]
    truth_all = build_history(holdout, customers=train.customers, items=train.items).counts
    truth_all.data[:] = 1.0
    truth_new = truth_all - truth_all.multiply(suppressed)
    truth_new.eliminate_zeros()

    # Holdout items unknown to the training catalogue, per customer (they are "new" too).
    unknown = holdout[~holdout[col.ITEM_ID].isin(train.items.ids)]
    pairs = unknown.drop_duplicates([col.CUSTOMER_ID, col.ITEM_ID])
    rows = train.customers.to_index(pairs[col.CUSTOMER_ID])
    unknown_counts = np.bincount(rows, minlength=len(train.customers)).astype(np.int64)

    return TimeSplit(
        cutoff=cutoff,
        train=train,
        truth_all=truth_all.tocsr(),
        truth_new=truth_new.tocsr(),
        suppressed=suppressed.tocsr(),
        unknown_all=unknown_counts,
        unknown_new=unknown_counts.copy(),
        holdout_rows=len(after),
        cold_start_customers=int(after.loc[~known_customer, col.CUSTOMER_ID].nunique()),
    )
