"""A customer's lifecycle profile as of a moment: stage, churn risk, RFM and best send hour,
from the trained history plus the purchases posted since (``nbo.models.lifecycle`` rules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nbo.core.arrays import filled
from nbo.core.vocabulary import DAY
from nbo.data.features import FEATURE_INDEX, FEATURE_NAMES, OrderTable, customer_features
from nbo.models.send_time import best_send_hours
from nbo.models.warmup import register_warm_up
from nbo.offers.state import PostedPurchase

if TYPE_CHECKING:
    from nbo.models.served import ServingModel

from nbo.models.lifecycle import stages_of


@dataclass(frozen=True)
class CustomerProfile:
    customer_id: str
    # Any purchase known (trained history or posted); None when withheld (not profiled).
    known: bool | None
    stage: str  # one of STAGES; a customer with no purchase at all is "new"
    churn_risk: float | None  # None without purchases or without a churn model
    recency_days: float | None
    frequency: int | None  # orders; None when withheld (not profiled)
    monetary: float | None  # total value, net of returns; None when withheld
    first_purchase_s: int | None
    last_purchase_s: int | None
    best_send_hour: int  # hour of week 0..167, Monday 00:00 UTC = 0 (global best if unknown)
    # The churn features that are defined for the customer (undefined ones, such as the
    # gap between orders of a one-order customer, are left out rather than NaN).
    features: dict[str, float]
    # False when nothing was derived from the customer's history (no consent to
    # personalization: the caller builds a neutral profile, whose facts about the
    # customer are None, withheld, never the zeros of a customer without purchases);
    # ``customer_profiles`` sets True.
    profiled: bool = True


def customer_profiles(
    model: ServingModel,
    customers: Sequence[tuple[str, Sequence[PostedPurchase]]],
    now_s: int,
) -> list[CustomerProfile]:
    """Each customer's stage, churn risk, RFM figures and best send hour as of ``now_s``,
    computed for all of them at once (one feature pass, one churn-model call).

    Orders are the trained ones (the model's order table) plus the posted purchases that
    happened after the training data ended (earlier ones are already in the model),
    grouped into orders by order id, else by event. For a customer the model does not
    know (new, or erased and back), every posted purchase counts: none is in the model.
    Purchases after ``now_s`` do not count yet.
    """
    indices = [model.customers.get(customer_id) for customer_id, _ in customers]
    recent: dict[int, Sequence[PostedPurchase]] = {}
    for n, ((_, posted), index) in enumerate(zip(customers, indices, strict=True)):
        news = (
            posted
            if index is None
            else [p for p in posted if p.occurred_at > model.trained_until_s]
        )
        if news:
            recent[n] = news
    known = [index is not None or n in recent for n, index in enumerate(indices)]
    table = _orders_of(model, indices, recent)
    as_of = now_s + 1  # features count orders strictly before their cutoff
    features = customer_features(table, as_of)
    frequency = features[:, FEATURE_INDEX["frequency"]]
    risk = None
    if model.churn is not None:
        risk = filled(len(features), np.nan)
        bought = frequency > 0
        if bought.any():
            risk[bought] = model.churn.predict_risk(features[bought])
    thresholds = model.lifecycle
    stages = stages_of(features, risk, thresholds)
    # The orders before the cutoff, per customer, for the send hour and the first/last.
    before = table.time < as_of
    if before.all():
        # The usual case (the clock is past every order): all of them.
        indptr = np.asarray(table.indptr, dtype=np.int64) - int(table.indptr[0])
        times = table.time
    else:
        owner = np.repeat(np.arange(len(customers)), np.diff(table.indptr))
        counts = np.bincount(owner[before], minlength=len(customers))
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        times = table.time[before]
    trained_hours = model.trained_send_hours
    if trained_hours is not None and not recent and before.all() and None not in indices:
        # Only trained orders, all of them counting: the hours worked out at load.
        hours = trained_hours[np.asarray(indices, dtype=np.int64)]
    else:
        hours = best_send_hours(
            indptr, times, model.send_hour_prior, thresholds.send_time_pseudo_orders
        )
    # Read as Python numbers once for all (not element by element from the arrays); a
    # customer's features without an unknown one are their row as it is.
    rows = features.tolist()
    whole = (~np.isnan(features).any(axis=1)).tolist()
    risks = None if risk is None else risk.tolist()
    stage_names = [str(stage) for stage in stages.tolist()]
    send_hours = hours.tolist()
    starts, ends = indptr[:-1].tolist(), indptr[1:].tolist()
    frequency_at = FEATURE_INDEX["frequency"]
    recency_at = FEATURE_INDEX["recency_days"]
    monetary_at = FEATURE_INDEX["monetary"]
    profiles = []
    for n, (customer_id, _posted) in enumerate(customers):
        row = rows[n]
        start, end = starts[n], ends[n]
        frequency_of = int(row[frequency_at])
        churn_risk = None if risks is None or math.isnan(risks[n]) else risks[n]
        profiles.append(
            CustomerProfile(
                customer_id=customer_id,
                known=known[n],
                stage=stage_names[n],
                churn_risk=churn_risk,
                recency_days=None if frequency_of == 0 else row[recency_at],
                frequency=frequency_of,
                monetary=row[monetary_at],
                first_purchase_s=int(times[start]) if end > start else None,
                last_purchase_s=int(times[end - 1]) if end > start else None,
                best_send_hour=int(send_hours[n]),
                features=dict(zip(FEATURE_NAMES, row, strict=True))
                if whole[n]
                else {
                    name: value
                    for name, value in zip(FEATURE_NAMES, row, strict=True)
                    if not math.isnan(value)
                },
            )
        )
    return profiles


_NO_ORDERS = OrderTable.single(
    np.empty(0, np.int64), np.empty(0), np.empty(0, np.int32), np.empty(0, np.int32)
)


def _orders_of(
    model: ServingModel,
    indices: Sequence[int | None],
    recent: Mapping[int, Sequence[PostedPurchase]],
) -> OrderTable:
    """The orders of each customer (model positions, None: unknown), in order: the trained
    ones taken for all at once, and for those with ``recent`` posted purchases (by
    position in ``indices``) those added as orders of their own."""
    if not indices:
        return _NO_ORDERS
    if model.orders is None:
        trained = OrderTable.concatenate([_trained_orders(model, i) for i in indices])
    elif len(indices) == 1 and indices[0] is not None:
        # An API call's one known customer: their segment as views, nothing gathered.
        trained = model.orders.of_customer(indices[0])
    else:
        positions = np.fromiter(
            (-1 if i is None else i for i in indices), dtype=np.int64, count=len(indices)
        )
        trained = model.orders.of_customers(positions)
    if not recent:
        return trained
    # Runs of customers without posted purchases stay one table each.
    pieces, run_start = [], 0
    for n in sorted(recent):
        if n > run_start:
            pieces.append(trained.of_customers(np.arange(run_start, n)))
        pieces.append(_with_posted(model, indices[n], trained.of_customer(n), recent[n]))
        run_start = n + 1
    if run_start < len(indices):
        pieces.append(trained.of_customers(np.arange(run_start, len(indices))))
    return OrderTable.concatenate(pieces)


def _trained_orders(model: ServingModel, index: int | None) -> OrderTable:
    """The customer's orders in the trained data. Artifacts without an order table
    (older ones) give one order per distinct last-purchase time of the customer's items:
    a lower bound on their orders, enough to place them in a stage."""
    if index is None:
        return _NO_ORDERS
    if model.orders is not None:
        return model.orders.of_customer(index)
    _items, _confidence, last = model.history_of(index)
    times = np.unique(last)
    ones = np.ones(len(times), dtype=np.int32)
    return OrderTable.single(times, ones.astype(np.float64), ones, ones)


def _with_posted(
    model: ServingModel, index: int | None, orders: OrderTable, posted: Sequence[PostedPurchase]
) -> OrderTable:
    """``orders`` followed by the posted purchases, grouped into orders and valued like
    the trainer's lines: quantity * price, with the item's median price when the event
    gave none; an item without a known price counts as one typical line (the trainer
    had the item's lines to price it by). Units when the model knows no prices."""
    seen: set[str] = set()
    if index is not None:
        items, _confidence, _last = model.history_of(index)
        seen = set(model.items.external(items))
    time, value, lines, new_items = [], [], [], []
    for lines_of_order in _posted_orders(posted):
        fresh = {p.item_id for p in lines_of_order} - seen
        seen |= fresh
        time.append(lines_of_order[0].occurred_at)
        value.append(sum(_line_value(model, p) for p in lines_of_order))
        lines.append(len(lines_of_order))
        new_items.append(len(fresh))
    return OrderTable.single(
        np.concatenate([orders.time, np.asarray(time, dtype=np.int64)]),
        np.concatenate([orders.value, np.asarray(value, dtype=np.float64)]),
        np.concatenate([orders.lines, np.asarray(lines, dtype=np.int32)]),
        np.concatenate([orders.new_items, np.asarray(new_items, dtype=np.int32)]),
        orders.return_time,
    )


# Lines of one order id belong to one order while they fall within this long of its first
# line (seconds); a later line under the same id is another order (an order number used
# again, by a shop that restarts its numbering or a client that reuses one): dated by its
# first line, one order spanning months would hide the newer purchase from the recency.
ORDER_SPAN_S = DAY


def _posted_orders(posted: Sequence[PostedPurchase]) -> list[list[PostedPurchase]]:
    """The posted lines grouped into orders (by order id, else by event), each within
    ``ORDER_SPAN_S`` of its first line, in the order of their first lines."""
    orders: list[list[PostedPurchase]] = []
    open_orders: dict[str, list[PostedPurchase]] = {}
    for purchase in sorted(posted, key=lambda p: (p.occurred_at, p.event_id)):
        key = purchase.order_key
        order = open_orders.get(key)
        if order is None or purchase.occurred_at - order[0].occurred_at > ORDER_SPAN_S:
            order = open_orders[key] = []
            orders.append(order)
        order.append(purchase)
    return orders


def _line_value(model: ServingModel, purchase: PostedPurchase) -> float:
    if model.typical_line_value is None:
        return float(purchase.quantity)
    price = purchase.price
    if price is None and model.item_price is not None:
        item = model.items.get(purchase.item_id)
        if item is not None and not np.isnan(model.item_price[item]):
            price = float(model.item_price[item])
    if price is None:
        return float(model.typical_line_value)
    return float(purchase.quantity) * float(price)


@register_warm_up
def _warm_up(model: ServingModel) -> None:
    """The profiles' kernels (``customer_features``) compiled at model load
    (``nbo.models.warmup``) for every kind of order table a request meets: one known
    customer's (views of the model's arrays), one with a purchase posted since (arrays
    of their own) beside an unknown customer."""
    if not len(model.customers) or not len(model.items):
        return
    known = str(model.customers.ids[0])
    at = model.trained_until_s + 1
    posted = (PostedPurchase(str(model.items.ids[0]), 1.0, at, None, "warm-up"),)
    customer_profiles(model, [(known, ())], at + DAY)
    customer_profiles(model, [(known, posted), ("", ())], at + DAY)
