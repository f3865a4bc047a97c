"""Two published models compared offline, before an experiment puts either in front of
customers: the offers each would have made, against what customers bought next.

Honest by construction: the holdout is every purchase in the data file after the later
of the two models' training data ended, so neither model saw it. Each model answers
through ``nbo.offers.ranking.rank_offers`` (the service's ranking: suppression, sources,
ranker) at that moment, for the same customers (those both models know who bought in
the holdout), and is scored with the trainer's metrics on both truths: every holdout
purchase, and items the customer had not bought in the suppression window before.
The NDCG difference comes with a paired t-test over the customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from threadpoolctl import threadpool_limits

from nbo.core import columns as col
from nbo.core.errors import NboError
from nbo.core.vocabulary import DAY
from nbo.evaluation.ranking_metrics import ranking_metric_rows
from nbo.models.served import ServingModel
from nbo.offers.ranking import OfferRequest, rank_offers
from nbo.offers.suppression import SuppressionWindow

TRUTHS = ("all", "new")
# Customers ranked in one call (as a campaign chunk).
CHUNK = 1000


class CompareError(NboError):
    """Two models that cannot be compared on this data."""


@dataclass(frozen=True)
class Holdout:
    start_s: int
    end_s: int
    customers: list[str]
    truth: dict[str, dict[str, set[str]]]  # truth -> customer -> items bought
    rows: int


def forward_holdout(
    purchases: pd.DataFrame,
    models: tuple[ServingModel, ServingModel],
    window: SuppressionWindow,
    max_customers: int | None,
    seed: int,
) -> Holdout:
    """The purchases after both models' training data, for customers both models know."""
    start_s = max(m.trained_until_s for m in models)
    times = purchases[col.TIMESTAMP].to_numpy(dtype="datetime64[s]").astype(np.int64)
    after = times > start_s
    if not after.any():
        last = datetime.fromtimestamp(int(times.max()), UTC).isoformat() if len(times) else "-"
        raise CompareError(
            f"no purchase after {datetime.fromtimestamp(start_s, UTC).isoformat()}, where the "
            f"newer model's training data ends (the file ends {last}); compare on newer data"
        )
    holdout = purchases[after]
    known = [
        c
        for c in sorted(holdout[col.CUSTOMER_ID].astype(str).unique())
        if all(m.customers.get(c) is not None for m in models)
    ]
    if not known:
        raise CompareError(
            "no customer who bought after the models' training data is known to both"
        )
    if max_customers is not None and len(known) > max_customers:
        rng = np.random.default_rng(seed)
        known = sorted(rng.choice(known, size=max_customers, replace=False).tolist())
    wanted = set(known)
    bought: dict[str, set[str]] = {c: set() for c in known}
    for customer_id, item_id in zip(
        holdout[col.CUSTOMER_ID].astype(str), holdout[col.ITEM_ID].astype(str), strict=True
    ):
        if customer_id in wanted:
            bought[customer_id].add(item_id)
    recent: dict[str, set[str]] = {c: set() for c in known}
    if window.days is None or window.days > 0:
        since = start_s - (window.days or 36_500) * DAY
        before = purchases[(times > since) & ~after]
        for customer_id, item_id in zip(
            before[col.CUSTOMER_ID].astype(str), before[col.ITEM_ID].astype(str), strict=True
        ):
            if customer_id in wanted:
                recent[customer_id].add(item_id)
    new = {c: bought[c] - recent[c] for c in known}
    return Holdout(
        start_s=start_s,
        end_s=int(times[after].max()),
        customers=known,
        truth={"all": bought, "new": new},
        rows=int(after.sum()),
    )


def compare_models(
    models: tuple[ServingModel, ServingModel],
    names: tuple[str, str],
    purchases: pd.DataFrame,
    k: int = 10,
    window: SuppressionWindow | None = None,
    max_customers: int | None = 10_000,
    seed: int = 42,
) -> dict[str, Any]:
    """Both models' metrics on the forward holdout, and B minus A with a paired test."""
    window = window or SuppressionWindow.parse("30")
    holdout = forward_holdout(purchases, models, window, max_customers, seed)
    offers = [_offers(model, holdout, k, window) for model in models]
    vocabulary = sorted(
        {i for truth in holdout.truth.values() for items in truth.values() for i in items}
        | {i for answer in offers for items in answer for i in items}
    )
    position = {item: n for n, item in enumerate(vocabulary)}
    result: dict[str, Any] = {
        "models": {name: model.version for name, model in zip(names, models, strict=True)},
        "holdout": {
            "start": datetime.fromtimestamp(holdout.start_s, UTC).isoformat(),
            "end": datetime.fromtimestamp(holdout.end_s, UTC).isoformat(),
            "purchase_lines": holdout.rows,
            "customers": len(holdout.customers),
        },
        "k": k,
        "metrics": {},
        "difference": {},
    }
    for truth_name in TRUTHS:
        truth = holdout.truth[truth_name]
        rows = [c for c in holdout.customers if truth[c]]
        matrix = _truth_matrix(rows, truth, position)
        sizes = np.array([len(truth[c]) for c in rows], dtype=np.int64)
        per_model = []
        result["metrics"][truth_name] = {}
        for name, answer in zip(names, offers, strict=True):
            by_customer = dict(zip(holdout.customers, answer, strict=True))
            recommended = np.full((len(rows), k), -1, dtype=np.int64)
            for row, customer_id in enumerate(rows):
                items = [position[i] for i in by_customer[customer_id][:k]]
                recommended[row, : len(items)] = items
            values = (
                ranking_metric_rows(recommended, matrix, sizes, k)
                if rows
                else {f"ndcg@{k}": np.zeros(0)}
            )
            per_model.append(values)
            result["metrics"][truth_name][name] = {
                **{metric: _mean(v) for metric, v in values.items()},
                "customers": len(rows),
            }
        result["difference"][truth_name] = _paired(
            per_model[0].get(f"ndcg@{k}", np.zeros(0)), per_model[1].get(f"ndcg@{k}", np.zeros(0))
        )
    return result


def _offers(
    model: ServingModel, holdout: Holdout, k: int, window: SuppressionWindow
) -> list[list[str]]:
    """The product offers the model makes to each holdout customer at the holdout start."""
    answers = []
    customers = list(holdout.customers)
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(customers), CHUNK):
            requests = [OfferRequest(c, k) for c in customers[start : start + CHUNK]]
            for ranking in rank_offers(model, requests, holdout.start_s, window):
                answers.append([o.item_id for o in ranking.offers if o.item_id is not None])
    return answers


def _truth_matrix(
    rows: list[str], truth: dict[str, set[str]], position: dict[str, int]
) -> sp.csr_matrix:
    indptr, indices = [0], []
    for customer_id in rows:
        indices.extend(sorted(position[i] for i in truth[customer_id]))
        indptr.append(len(indices))
    data = np.ones(len(indices))
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), max(len(position), 1)))


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """B minus A in NDCG per customer: mean, 95% CI and the paired t-test's p-value."""
    if len(a) < 2:
        return {"ndcg_difference": _mean(b - a), "ci_low": None, "ci_high": None, "p_value": None}
    difference = b - a
    if np.allclose(difference, difference[0]):
        value = float(difference[0])
        return {"ndcg_difference": value, "ci_low": value, "ci_high": value, "p_value": None}
    test = stats.ttest_rel(b, a)
    interval = test.confidence_interval(0.95)
    return {
        "ndcg_difference": float(np.mean(difference)),
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "p_value": float(test.pvalue),
    }
