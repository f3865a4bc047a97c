"""The served model: an artifact turned into what ranking needs, checked for consistency.

What is named here is the artifact's contract: the trainer writes these arrays with
``model_arrays`` and the service reads them with ``load_serving_model``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.core.errors import ArtifactError
from nbo.core.ids import CaseIndex, IdMap
from nbo.core.vocabulary import DAY
from nbo.data.features import OrderTable
from nbo.data.history import PurchaseHistory, RecentOrders
from nbo.models.artifacts import Artifact, load_artifact, trained_until
from nbo.models.candidates import ItemSide, als_shortlist
from nbo.models.cf import AlsExplainer, AlsParams, als_from_factors
from nbo.models.churn import ChurnModel, load_churn_model
from nbo.models.cycles import ItemWindows, Repurchase
from nbo.models.lifecycle import LifecycleThresholds
from nbo.models.policy import (
    LISTED_RULES,
    POLICIES,
    POLICY_ALS,
    POLICY_ITEMKNN,
    POLICY_RANKER,
    declared_policy,
)
from nbo.models.popularity import popular_order
from nbo.models.propensity import DOCUMENT as PROPENSITY_DOCUMENT
from nbo.models.propensity import Propensity
from nbo.models.ranker import RankerScorer, load_ranker
from nbo.models.send_time import HOURS_PER_WEEK, best_send_hours, send_hour_prior
from nbo.models.warmup import warm_up

REQUIRED_ARRAYS = (
    "user_factors",
    "item_factors",
    "customer_ids",
    "item_ids",
    "history_indptr",
    "history_indices",
    "history_counts",
    "history_confidence",
    "history_last_purchase",
    "popularity",
)
# Optional arrays: older artifacts without them still load.
CYCLES_ARRAY = "repurchase_cycle_days"
# The rest of what was learned about buying items again (``nbo.models.cycles``): the dead
# time, whether the item is rebought, its repeat rate. All three or none.
DEAD_DAYS_ARRAY = "repurchase_dead_days"
REBOUGHT_ARRAY = "repurchase_rebought"
REPEAT_RATE_ARRAY = "item_repeat_rate"
ITEM_PRICE_ARRAY = "item_price"
# The item factors again, column-major (``ItemSide.item_factors_column_major``): saved so
# that every serving process maps the layout rather than making its own copy. Optional:
# the service lays out an artifact's from before it.
COLUMN_MAJOR_ARRAY = "item_factors_column_major"
SEND_HOUR_PRIOR_ARRAY = "send_hour_prior"
# Candidates per source for a ranker whose manifest does not say (trained before it was
# recorded there; the trainer's own default is ``RankerConfig.per_source``).
DEFAULT_PER_SOURCE = 50
# Recency-weighted orders as of the end of the training data (``RecentOrders``): per
# (customer, item), aligned with the history, and per customer. Both or none.
HISTORY_RECENT_ARRAY = "history_recent"
CUSTOMER_RECENT_ARRAY = "customer_recent_orders"
# Each customer's best items by ALS, nothing excluded (``nbo.models.candidates.
# als_shortlist``), at least the ranker's ``per_source`` wide. Optional: without it,
# ALS's top-k runs per request.
SHORTLIST_ARRAY = "als_shortlist"
# (The order table's arrays are named in ``nbo.data.features.ORDER_ARRAYS``.)


@dataclass
class ServingModel:
    """Everything ranking reads; immutable once loaded (swaps replace the whole object),
    except that an erased customer can be forgotten (``forget``)."""

    version: str
    manifest: dict[str, Any]
    als: AlternatingLeastSquares
    customers: IdMap
    items: IdMap
    indptr: np.ndarray
    history_items: np.ndarray
    history_confidence: np.ndarray
    history_last_purchase: np.ndarray
    popularity: np.ndarray
    popular_order: np.ndarray
    item_names: dict[str, str] = field(default_factory=dict)
    # Learned days between two purchases of an item by one customer (NaN = no evidence);
    # None for artifacts trained without repurchase cycles.
    repurchase_cycle_days: np.ndarray | None = None
    # Everything learned about buying items again, dead times included (suppression);
    # None for artifacts without dead times (older, or trained with cycles off).
    repurchase: Repurchase | None = None
    history_counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    # Unix seconds of the last purchase in the training data: posted purchases after it
    # are news to the model, earlier ones are already in it.
    trained_until_s: int = 0
    # Each customer's orders and returns (positions of ``customers``), for lifecycle
    # features at request time; None for artifacts trained without them.
    orders: OrderTable | None = None
    # Median unit price per item (NaN where unknown); None for artifacts without it.
    item_price: np.ndarray | None = None
    # Recency-weighted orders as of ``trained_until_s``, per history entry and per
    # customer (the ranker's features decay them to the clock); None for artifacts
    # without them.
    history_recent: np.ndarray | None = None
    customer_recent: np.ndarray | None = None
    # Median value of one purchase line; None when the training data had no prices.
    typical_line_value: float | None = None
    # The churn model; None when the artifact has none (data too short, or older).
    churn: ChurnModel | None = None
    # Score -> probability of purchase (calibrated on the holdout by the trainer; a plain
    # monotone squash, marked uncalibrated, for artifacts trained before calibration).
    propensity: Propensity = field(default_factory=Propensity.uncalibrated)
    # The ranker and the item side of its sources (``nbo.models.candidates``); None
    # for artifacts without one (older, or data too short to train one).
    ranker: RankerScorer | None = None
    item_side: ItemSide | None = None
    ranker_per_source: int = DEFAULT_PER_SOURCE
    # Each trained customer's ALS shortlist (``SHORTLIST_ARRAY``); None: none saved.
    als_shortlist: np.ndarray | None = None
    # Where the product offers come from (``nbo.models.policy``); None: the ranker when
    # the model has one, else ALS.
    policy: str | None = None
    lifecycle: LifecycleThresholds = field(default_factory=LifecycleThresholds)
    # Share of all orders per hour of the week: the best send time's prior.
    send_hour_prior: np.ndarray = field(
        default_factory=lambda: np.full(HOURS_PER_WEEK, 1.0 / HOURS_PER_WEEK)
    )
    _buyers: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    loaded_at: float = field(default_factory=time.time)
    _params: AlsParams = field(init=False, repr=False)
    explainer: AlsExplainer = field(init=False)
    # External item ids as a Python list: indexing it per offer is cheaper than numpy's.
    item_ids: list[str] = field(init=False)
    # The same as an object array, for taking many at once.
    item_id_array: np.ndarray = field(init=False, repr=False)
    # Each item's name (None where the model has none) by catalogue index, and None
    # after the last (index -1: an incentive), for taking many at once.
    item_name_array: np.ndarray = field(init=False, repr=False)
    # Each customer's best send hour from their trained orders (None without an order
    # table): what a profile works out whenever all those orders are before its moment
    # and nothing was posted since training (``nbo.offers.profiles``), worked out once.
    trained_send_hours: np.ndarray | None = field(init=False, repr=False)

    _suppression_windows: dict[int | None, ItemWindows] = field(
        init=False, default_factory=dict, repr=False
    )
    # The item and customer ids folded by case (``case_index``), built on first use.
    _case_indexes: dict[str, CaseIndex] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = POLICY_RANKER if self.ranker is not None else POLICY_ALS
        if self.policy == POLICY_RANKER and (self.ranker is None or self.item_side is None):
            raise ValueError("the ranker policy needs the ranker and its sources")
        if self.policy == POLICY_ITEMKNN and self.item_side is None:
            raise ValueError("the itemknn policy needs the item similarity")
        self._params = AlsParams.from_dict(self.manifest.get("config", {}).get("als", {}))
        self.explainer = AlsExplainer(self.als)
        self.item_ids = self.items.ids.tolist()
        self.item_id_array = np.asarray(self.item_ids, dtype=object)
        names = self.item_names
        self.item_name_array = np.array(
            [*(names.get(item_id) for item_id in self.item_ids), None], dtype=object
        )
        self.trained_send_hours = (
            None
            if self.orders is None
            else best_send_hours(
                self.orders.indptr,
                self.orders.time,
                self.send_hour_prior,
                self.lifecycle.send_time_pseudo_orders,
            ).astype(np.int16)
        )

    def suppression_windows(self, default_days: int | None) -> ItemWindows | None:
        """Per item, days a purchase stays suppressed under the window ``default_days``
        (None = 'all', 0 = never): the learned dead times
        (``nbo.models.cycles.Repurchase.windows``), or for an older artifact with cycles
        alone the cycle where shorter than the window. None when the model has neither
        (the plain window). Computed once per window and kept (the model is immutable
        once loaded)."""
        if self.repurchase is None and self.repurchase_cycle_days is None:
            return None
        windows = self._suppression_windows.get(default_days)
        if windows is None:
            if self.repurchase is not None:
                windows = self.repurchase.windows(default_days)
            else:
                assert self.repurchase_cycle_days is not None
                windows = ItemWindows.of_cycles(self.repurchase_cycle_days, default_days)
            self._suppression_windows[default_days] = windows
        return windows

    def item_case_index(self) -> CaseIndex:
        """The model's item ids folded by case: which item a posted or listed id that the
        model does not know was meant to be. Built on first use (most processes never
        meet a case slip) and kept; two threads building it at once build the same
        index, and one is kept."""
        return self._case_index("items", self.items)

    def customer_case_index(self) -> CaseIndex:
        """``item_case_index`` for the customer ids (every row, erased ones included:
        the index names an id the model was trained with, and an erased customer's own
        id is not a slip)."""
        return self._case_index("customers", self.customers)

    def _case_index(self, name: str, ids: IdMap) -> CaseIndex:
        index = self._case_indexes.get(name)
        if index is None:
            index = self._case_indexes.setdefault(name, CaseIndex(ids.ids))
        return index

    def cycle_days_of(self, item_id: str) -> float | None:
        """The item's learned repurchase cycle in days, None without one."""
        index = self.items.get(item_id)
        if index is None or self.repurchase_cycle_days is None:
            return None
        days = float(self.repurchase_cycle_days[index])
        return days if np.isfinite(days) else None

    def buyers_per_item(self) -> np.ndarray:
        """Distinct customers of the training data who bought each item (its support),
        counted on first use and kept (erasures do not change what the factors learned
        from them, so neither do they change this)."""
        if self._buyers is None:
            self._buyers = np.bincount(
                np.asarray(self.history_items, dtype=np.int64), minlength=len(self.items)
            ).astype(np.int32)
        return self._buyers

    def forget(self, customer_id: str) -> bool:
        """Make a customer unknown to ranking (an erasure); True when the model knew them.

        Only the id lookup changes: the factor row and history stay in the read-only
        memory map, unreachable (nothing looks a row up but by the id), until the next
        training, which excludes the customer. The item factors and popularity keep the
        customer's share of what was learned until then. The one change to a loaded
        model; a dict removal, safe while other requests read it.
        """
        return self.customers.forget(customer_id) is not None

    @property
    def churn_horizon_days(self) -> int | None:
        """Days the churn risk looks ahead; None without a churn model."""
        return None if self.churn is None else self.churn.horizon_days

    @property
    def params(self) -> AlsParams:
        """The hyperparameters and weighting the model was trained with."""
        return self._params

    def counts_of(self, customer: int) -> np.ndarray:
        """Order counts per item of a known customer, aligned with ``history_of``."""
        start, end = self.indptr[customer], self.indptr[customer + 1]
        return self.history_counts[start:end]

    def recent_of(self, customer: int) -> tuple[np.ndarray, float] | None:
        """Recency-weighted orders of a known customer as of ``trained_until_s``: per
        item (aligned with ``history_of``) and in all; None when the model has none."""
        if self.history_recent is None or self.customer_recent is None:
            return None
        start, end = self.indptr[customer], self.indptr[customer + 1]
        return self.history_recent[start:end], float(self.customer_recent[customer])

    def history_of(self, customer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, confidences, last purchase seconds) of a known customer."""
        start, end = self.indptr[customer], self.indptr[customer + 1]
        return (
            self.history_items[start:end],
            self.history_confidence[start:end],
            self.history_last_purchase[start:end],
        )


def model_arrays(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    history: PurchaseHistory,
    confidence: sp.csr_matrix,
    popularity: np.ndarray,
    repurchase: Repurchase | None = None,
    orders: OrderTable | None = None,
    item_price: np.ndarray | None = None,
    send_hour_prior: np.ndarray | None = None,
    recent: RecentOrders | None = None,
    shortlist_width: int = 0,
    shortlisted: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an artifact, in the shape ``load_serving_model`` expects.

    Optional: ``repurchase`` (per item: cycles, dead times, rebought, repeat rates),
    ``orders`` (per customer of ``history``), ``item_price`` (per item, NaN = unknown),
    ``send_hour_prior`` (168 shares), ``recent`` (recency-weighted orders of the
    same purchases as ``history``, as of their last) and ``shortlist_width`` (each
    customer's ALS shortlist this wide; 0: none; ``shortlisted``: only those customers'
    rows, the others' scored by the top-k when served).
    """
    counts, last = history.counts, history.last_purchase
    if not (
        np.array_equal(counts.indptr, last.indptr)
        and np.array_equal(counts.indices, last.indices)
        and np.array_equal(counts.indptr, confidence.indptr)
        and np.array_equal(counts.indices, confidence.indices)
    ):
        raise ValueError("history matrices must share one sparsity pattern")
    arrays = {
        "user_factors": np.asarray(user_factors, dtype=np.float32),
        "item_factors": np.asarray(item_factors, dtype=np.float32),
        COLUMN_MAJOR_ARRAY: np.asfortranarray(item_factors, dtype=np.float32),
        "customer_ids": history.customers.ids,
        "item_ids": history.items.ids,
        "history_indptr": counts.indptr.astype(np.int64),
        "history_indices": counts.indices.astype(np.int32),
        "history_counts": counts.data.astype(np.float32),
        "history_confidence": confidence.data.astype(np.float32),
        "history_last_purchase": last.data.astype(np.int64),
        "popularity": popularity.astype(np.float32),
    }
    if repurchase is not None:
        if len(repurchase.cycle_days) != len(history.items):
            raise ValueError(
                f"{CYCLES_ARRAY} has {len(repurchase.cycle_days)} values for "
                f"{len(history.items)} items"
            )
        arrays[CYCLES_ARRAY] = np.asarray(repurchase.cycle_days, dtype=np.float32)
        arrays[DEAD_DAYS_ARRAY] = np.asarray(repurchase.dead_days, dtype=np.float32)
        arrays[REBOUGHT_ARRAY] = np.asarray(repurchase.rebought, dtype=bool)
        arrays[REPEAT_RATE_ARRAY] = np.asarray(repurchase.repeat_rate, dtype=np.float32)
    if orders is not None:
        orders.check(len(history.customers))
        arrays.update(orders.to_arrays())
    if item_price is not None:
        if len(item_price) != len(history.items):
            raise ValueError(
                f"item_price has {len(item_price)} values for {len(history.items)} items"
            )
        arrays[ITEM_PRICE_ARRAY] = np.asarray(item_price, dtype=np.float64)
    if send_hour_prior is not None:
        if len(send_hour_prior) != HOURS_PER_WEEK:
            raise ValueError(f"send_hour_prior has {len(send_hour_prior)} values, not 168")
        arrays[SEND_HOUR_PRIOR_ARRAY] = np.asarray(send_hour_prior, dtype=np.float64)
    if recent is not None:
        pairs = recent.pairs.tocsr()
        if not (
            np.array_equal(pairs.indptr, counts.indptr)
            and np.array_equal(pairs.indices, counts.indices)
            and len(recent.customers) == len(history.customers)
        ):
            raise ValueError("recent orders must share the history's customers and pattern")
        arrays[HISTORY_RECENT_ARRAY] = pairs.data.astype(np.float64)
        arrays[CUSTOMER_RECENT_ARRAY] = np.asarray(recent.customers, dtype=np.float64)
    if shortlist_width:
        arrays[SHORTLIST_ARRAY] = als_shortlist(
            item_factors, user_factors, shortlist_width, shortlisted
        )
    return arrays


def load_serving_model(
    models_dir: Path, version: str | None = None, compiled: bool = True
) -> ServingModel:
    """Load, verify and assemble a model; ArtifactError when it must not serve.
    ``compiled``: compile the ranker's trees (``nbo.models.compiled``) and the decision's
    kernels (``nbo.models.warmup``), worth its load time where the model serves many
    calls; a one-off check or evaluation passes False (its first decision compiles them)."""
    artifact = load_artifact(models_dir, version)
    return serving_model_from_artifact(artifact, compiled)


def serving_model_from_artifact(artifact: Artifact, compiled: bool = True) -> ServingModel:
    # Plain ndarray views of the memory maps: same pages, no np.memmap overhead on every
    # slice taken per request.
    arrays = {name: np.asarray(array) for name, array in artifact.arrays.items()}
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise ArtifactError(f"model {artifact.version}: missing arrays {missing}")
    user_factors = arrays["user_factors"]
    item_factors = _writable(artifact, "item_factors", arrays["item_factors"])
    customers = IdMap(np.asarray(arrays["customer_ids"]))
    items = IdMap(np.asarray(arrays["item_ids"]))
    indptr = np.asarray(arrays["history_indptr"])
    checks = {
        "user_factors rows = customers": user_factors.shape[0] == len(customers),
        "item_factors rows = items": item_factors.shape[0] == len(items),
        "factor widths agree": user_factors.shape[1] == item_factors.shape[1],
        "history rows = customers": len(indptr) == len(customers) + 1,
        "popularity per item": len(arrays["popularity"]) == len(items),
        "history lengths agree": len(arrays["history_indices"])
        == len(arrays["history_confidence"])
        == len(arrays["history_last_purchase"])
        == int(indptr[-1]),
    }
    cycles = arrays.get(CYCLES_ARRAY)
    if cycles is not None:
        checks[f"{CYCLES_ARRAY} per item"] = cycles.ndim == 1 and len(cycles) == len(items)
        checks[f"{CYCLES_ARRAY} positive or NaN"] = cycles.dtype.kind == "f" and not bool(
            np.any(cycles <= 0)
        )
    repurchase = None
    learned = [arrays.get(name) for name in (DEAD_DAYS_ARRAY, REBOUGHT_ARRAY, REPEAT_RATE_ARRAY)]
    if any(a is not None for a in learned):
        dead, rebought, rate = learned
        checks["repurchase arrays all there with the cycles"] = cycles is not None and all(
            a is not None for a in learned
        )
        if checks["repurchase arrays all there with the cycles"]:
            assert cycles is not None and dead is not None
            assert rebought is not None and rate is not None
            checks["repurchase arrays per item"] = all(
                a.ndim == 1 and len(a) == len(items) for a in (dead, rebought, rate)
            )
            # (0: never held back, with a floor of 0 days.)
            checks[f"{DEAD_DAYS_ARRAY} not negative"] = dead.dtype.kind == "f" and not bool(
                np.any(dead < 0)
            )
            if checks["repurchase arrays per item"]:
                repurchase = Repurchase(
                    np.asarray(cycles), np.asarray(dead), np.asarray(rebought, bool), rate
                )
    item_price = arrays.get(ITEM_PRICE_ARRAY)
    if item_price is not None:
        checks[f"{ITEM_PRICE_ARRAY} per item"] = item_price.ndim == 1 and len(item_price) == len(
            items
        )
    history_recent = arrays.get(HISTORY_RECENT_ARRAY)
    customer_recent = arrays.get(CUSTOMER_RECENT_ARRAY)
    if history_recent is not None or customer_recent is not None:
        checks[
            f"{HISTORY_RECENT_ARRAY} per history entry, {CUSTOMER_RECENT_ARRAY} per customer"
        ] = (
            history_recent is not None
            and customer_recent is not None
            and history_recent.shape == (int(indptr[-1]),)
            and customer_recent.shape == (len(customers),)
        )
    column_major = arrays.get(COLUMN_MAJOR_ARRAY)
    if column_major is not None:
        checks[f"{COLUMN_MAJOR_ARRAY} the item factors, column-major"] = (
            column_major.shape == item_factors.shape
            and column_major.dtype == item_factors.dtype
            and column_major.flags.f_contiguous
        )
    per_source = int(artifact.manifest.get("ranker", {}).get("per_source", DEFAULT_PER_SOURCE))
    shortlist = arrays.get(SHORTLIST_ARRAY)
    if shortlist is not None:
        checks[f"{SHORTLIST_ARRAY} per customer, per_source wide or the catalogue"] = (
            shortlist.ndim == 2
            and shortlist.dtype.kind == "i"
            and shortlist.shape[0] == len(customers)
            and shortlist.shape[1] >= min(per_source, len(items))
        )
    prior = arrays.get(SEND_HOUR_PRIOR_ARRAY)
    if prior is not None:
        checks[f"{SEND_HOUR_PRIOR_ARRAY} per hour of the week"] = prior.shape == (HOURS_PER_WEEK,)
    # Finite item factors: NaN ones scored as missing values in the ranker and served
    # offers without collaborative filtering (and no similar items) with no error. The
    # item side only: it is small, where reading every customer's would touch all their
    # pages at load.
    checks["item factors finite"] = bool(np.isfinite(item_factors).all())
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ArtifactError(f"model {artifact.version}: inconsistent arrays ({', '.join(failed)})")
    try:
        orders = OrderTable.from_arrays(arrays, len(customers))
    except ValueError as exc:
        raise ArtifactError(f"model {artifact.version}: {exc}") from None
    params = AlsParams.from_dict(artifact.manifest.get("config", {}).get("als", {}))
    if params.factors != item_factors.shape[1]:
        params = AlsParams.from_dict({**params.to_dict(), "factors": item_factors.shape[1]})
    als = als_from_factors(user_factors, item_factors, params)
    popularity = np.asarray(arrays["popularity"])
    propensity = _propensity(artifact)
    policy = _policy(artifact, propensity)
    ranked = load_ranker(artifact, len(items), booster=policy == POLICY_RANKER, compiled=compiled)
    if policy == POLICY_ITEMKNN and ranked is None:
        raise ArtifactError(f"model {artifact.version}: serves itemknn without its similarity")
    model = ServingModel(
        version=artifact.version,
        manifest=artifact.manifest,
        als=als,
        customers=customers,
        items=items,
        indptr=indptr,
        history_items=np.asarray(arrays["history_indices"]),
        history_confidence=np.asarray(arrays["history_confidence"]),
        history_last_purchase=np.asarray(arrays["history_last_purchase"]),
        popularity=popularity,
        popular_order=popular_order(popularity),
        item_names=dict(artifact.documents.get("item_names", {})),
        repurchase_cycle_days=None if cycles is None else np.asarray(cycles),
        repurchase=repurchase,
        history_counts=np.asarray(arrays["history_counts"]),
        trained_until_s=trained_until(artifact.manifest),
        orders=orders,
        item_price=None if item_price is None else np.asarray(item_price),
        history_recent=None if history_recent is None else np.asarray(history_recent),
        customer_recent=None if customer_recent is None else np.asarray(customer_recent),
        typical_line_value=_typical_line_value(artifact.manifest),
        churn=load_churn_model(artifact),
        propensity=propensity,
        ranker=None if ranked is None else ranked.scorer,
        policy=policy,
        item_side=None
        if ranked is None
        else ItemSide.build(
            trained_until(artifact.manifest),
            item_factors,
            ranked.similarity,
            np.asarray(popularity, dtype=np.float64),
            ranked.popularity_before,
            None if cycles is None else np.asarray(cycles, dtype=np.float64),
            price=None if item_price is None else np.asarray(item_price, dtype=np.float64),
            stage_popularity=ranked.stage_popularity,
            repeat_rate=None if repurchase is None else np.asarray(repurchase.repeat_rate),
            popularity_recent=ranked.popularity_recent,
            half_life_days=ranked.half_life_days,
            similar_to=ranked.similar_to,
            neighbours=ranked.neighbours,
            item_factors_column_major=column_major,
        ),
        ranker_per_source=per_source,
        als_shortlist=None if shortlist is None else np.asarray(shortlist),
        lifecycle=LifecycleThresholds.from_manifest(artifact.manifest.get("lifecycle")),
        send_hour_prior=(
            send_hour_prior(orders.time if orders is not None else np.empty(0, np.int64))
            if prior is None
            else np.asarray(prior)
        ),
    )
    if compiled:
        # The kernels compiled (or read from numba's cache) now, not on a request.
        warm_up(model)
    return model


def _writable(artifact: Artifact, name: str, array: np.ndarray) -> np.ndarray:
    """``array`` as a writable buffer, which implicit's solver for a refolded customer
    needs of the item factors though it never writes to them: the file mapped
    copy-on-write, whose pages stay shared with every other process that maps it as
    long as no one writes (a copy would be items x factors of each worker's own memory,
    5 MB at 20,000 items); a copy only when the array is not from a file."""
    if array.flags.writeable:
        return array
    path = artifact.files.get(f"{name}.npy")
    if path is None:
        return np.array(array)
    return np.asarray(np.load(path, mmap_mode="c", allow_pickle=False))


def _policy(artifact: Artifact, propensity: Propensity) -> str:
    """The policy the artifact declares, if this nbo serves it and its propensity curve
    is there."""
    policy = declared_policy(artifact.manifest)
    where = f"model {artifact.version}"
    if policy not in POLICIES:
        raise ArtifactError(
            f"{where}: declares the policy '{policy}', this nbo serves {', '.join(POLICIES)}; "
            "retrain with this version of nbo"
        )
    if policy == POLICY_RANKER and propensity.ranker is None:
        raise ArtifactError(f"{where}: a ranker without its propensity curve")
    if policy in LISTED_RULES and not propensity.serves_rules:
        raise ArtifactError(f"{where}: serves {policy} without its propensity curve")
    return policy


# The setting that pins the clock: named when the clock is far past a model's data.
CLOCK_SETTING = "NBO_CLOCK"


def clock_past_data(model: ServingModel, now: datetime) -> str | None:
    """A warning when ``now`` is further past the model's last purchase than its churn
    horizon: every customer who has bought nothing since is lapsed by then, so a
    campaign on a stage selects no one and every answer is a win-back (the bundled
    sample ends on 2011-12-09, and without NBO_CLOCK the clock is today). None when the
    clock is within the horizon, or the manifest does not say when the data ends."""
    if not model.trained_until_s:
        return None
    days = (now.timestamp() - model.trained_until_s) / DAY
    horizon = model.lifecycle.horizon_days
    if days <= horizon:
        return None
    end = datetime.fromtimestamp(model.trained_until_s, UTC)
    return (
        f"clock {now.isoformat(timespec='seconds')} is {days:,.0f} days past the last "
        f"purchase model {model.version} was trained on ({end:%Y-%m-%d}), more than its "
        f"churn horizon ({horizon:g} days): every customer who has bought nothing since is "
        f"lapsed. Set {CLOCK_SETTING} near the data's end (e.g. "
        f"{CLOCK_SETTING}={end:%Y-%m-%dT%H:%M:%SZ}) or train on recent data"
    )


def _typical_line_value(manifest: dict[str, Any]) -> float | None:
    value = manifest.get("data", {}).get("typical_line_value")
    return None if value is None else float(value)


def _propensity(artifact: Artifact) -> Propensity:
    document = artifact.documents.get(PROPENSITY_DOCUMENT)
    if document is None:
        return Propensity.uncalibrated()
    try:
        return Propensity.from_document(document)
    except ArtifactError as exc:
        raise ArtifactError(f"model {artifact.version}: {exc}") from None
