"""Train and evaluate the ranker over its candidate sources (``nbo.models.candidates``) honestly.

The ranker evaluated at the cutoff was trained one window earlier: sources fitted on the
purchases before ``cutoff - holdout``, labels from the window ending at the cutoff. So no
feature, candidate or training label sees the holdout. The service serves this same
ranker (with sources refitted on all data), so the figures in the report are the served
ranker's, and its scores are calibrated on the holdout like ALS's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import BM25Recommender

from nbo.core import columns as col
from nbo.core.errors import ConfigError
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.features import OrderTable, has_prices, item_prices
from nbo.data.history import PurchaseHistory, RecentOrders
from nbo.data.sparse import Rows, sparse_topk
from nbo.models.candidates import (
    CATEGORICAL_FEATURES,
    FEATURES,
    HALF_LIFE_DAYS,
    NO_STAGE,
    RECENT_POPULARITY_DAYS,
    SOURCES,
    CandidateTable,
    CustomerSide,
    ItemSide,
    candidates,
    ranked_top,
)
from nbo.models.cycles import Repurchase
from nbo.models.popularity import group_popularity, popularity_scores
from nbo.models.ranker import lightgbm_version, ranker_arrays, ranker_file
from training.config import TrainingConfig
from training.lifecycle import ChurnTraining, CustomerTraits, customer_traits
from training.methods import (
    Metrics,
    Recommender,
    evaluate_methods,
    evaluation_customers,
    first_allowed,
)
from training.split import TimeSplit, split_cutoff, time_split

# Rounds without a better held-out NDCG@10 before boosting stops.
EARLY_STOPPING_ROUNDS = 30
# Below this many customers with a purchase among their candidates, the rounds are
# chosen by cross-validation over this many folds of customers (see ``train_ranker``).
CROSS_VALIDATE_BELOW = 10_000
CROSS_VALIDATION_FOLDS = 5
# Popularity window when the config has none ("all time" would make no trend).
POPULARITY_DAYS = 90


@dataclass(frozen=True)
class BoosterSettings:
    """The LambdaRank settings the settings search (``training.search``) varies; the
    rest of ``train_ranker``'s parameters stay fixed."""

    learning_rate: float = 0.1
    num_leaves: int = 15
    min_data_in_leaf: int = 20

    def label(self) -> str:
        return (
            f"num_leaves {self.num_leaves}, learning_rate {self.learning_rate:g}, "
            f"min_data_in_leaf {self.min_data_in_leaf}"
        )


# Small trees and a brisk rate: the service walks every tree for every candidate on each
# offers call, so fewer, shallower trees bound its cost (on Online Retail this also
# ranked better than 31 leaves at 0.05).
DEFAULT_BOOSTER = BoosterSettings()


def fit_knn(counts: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """implicit's BM25 item-item similarity on order counts (item x item, CSR)."""
    model = BM25Recommender(K=neighbours)
    with warnings.catch_warnings():
        # implicit converts its own BM25-weighted matrix to CSR and warns about it.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(counts.tocsr().astype(np.float32), show_progress=False)
    return model.similarity.tocsr().astype(np.float32)


@dataclass(frozen=True)
class WindowFacts:
    """What is known at a window's cutoff besides the purchase matrices: the customers'
    traits (window customer order) and item prices (window item order); None = unknown."""

    traits: CustomerTraits | None = None
    price: np.ndarray | None = None


# (cutoff in unix s, window customers' positions in the full data, the same for items)
FactsOf = Callable[[int, np.ndarray, np.ndarray], WindowFacts]


def window_facts(
    purchases: pd.DataFrame,
    items: IdMap,
    orders: OrderTable,
    churn: ChurnTraining,
    config: TrainingConfig,
) -> FactsOf:
    """The facts of any window, from the purchases (and orders) before its cutoff alone:
    median prices, and stage, churn risk and value by ``customer_traits``."""
    priced = has_prices(purchases)
    times = purchases[col.TIMESTAMP]

    def facts_of(as_of_s: int, customers: np.ndarray, item_positions: np.ndarray) -> WindowFacts:
        price = None
        if priced:
            before = purchases[times < pd.Timestamp(as_of_s, unit="s")]
            price = item_prices(before, items)[item_positions]
        return WindowFacts(customer_traits(orders, churn, config, as_of_s, customers), price)

    return facts_of


def risk_at(ranker: RankerResult) -> np.ndarray | None:
    """The training customers' churn risk at the cutoff the ranker was evaluated at (NaN:
    unknown, as ``customer_traits`` leaves it when no churn model was honest there)."""
    traits = ranker.facts.traits
    return None if traits is None else traits.churn_risk


def cutoff_seconds(split: TimeSplit) -> int:
    return int(split.cutoff.value // 1_000_000_000)


def item_side(
    split: TimeSplit,
    als: AlternatingLeastSquares,
    similarity: sp.csr_matrix,
    popularity_days: int | None,
    repurchase: Repurchase | None,
    facts: WindowFacts = WindowFacts(),
    half_life_days: float = HALF_LIFE_DAYS,
) -> ItemSide:
    """The sources as known at the split's cutoff."""
    cutoff_s = cutoff_seconds(split)
    counts, last = split.train.counts, split.train.last_purchase
    days = popularity_days or POPULARITY_DAYS
    stage_popularity = None
    if facts.traits is not None:
        stage_popularity = group_popularity(counts, facts.traits.stage, len(STAGES))
    return ItemSide.build(
        cutoff_s,
        als.item_factors,
        similarity,
        popularity_scores(counts, last, cutoff_s, days),
        popularity_scores(counts, last, cutoff_s - days * DAY, days),
        None if repurchase is None else repurchase.cycle_days,
        price=facts.price,
        stage_popularity=stage_popularity,
        repeat_rate=None if repurchase is None else repurchase.repeat_rate,
        popularity_recent=popularity_scores(counts, last, cutoff_s, RECENT_POPULARITY_DAYS),
        half_life_days=half_life_days,
    )


def recent_at_cutoff(split: TimeSplit, half_life_days: float) -> RecentOrders:
    """Every training customer's recency-weighted orders as of the split's cutoff: a sort
    of all the lines before it, so worked out once per split and sliced per call."""
    return split.train_lines.recent_orders(cutoff_seconds(split), half_life_days)


def customer_side(
    split: TimeSplit,
    als: AlternatingLeastSquares,
    customers: np.ndarray,
    exclude: sp.csr_matrix | None,
    recent: RecentOrders,
    facts: WindowFacts = WindowFacts(),
) -> CustomerSide:
    """The ``customers`` (rows of the split's training side) as known at its cutoff:
    their purchases before it, ``recent`` (``recent_at_cutoff``), and their ``facts``."""
    traits = facts.traits
    return CustomerSide(
        np.asarray(als.user_factors)[customers],
        Rows.of(split.train.counts[customers].tocsr()),
        Rows.of(split.train.last_purchase[customers].tocsr()),
        None if exclude is None else Rows.of(exclude),
        stage=None if traits is None else traits.stage[customers],
        churn_risk=None if traits is None else traits.churn_risk[customers],
        monetary=None if traits is None else traits.monetary[customers],
        baskets=None if traits is None else traits.baskets[customers],
        gap_days=None if traits is None else traits.gap_days[customers],
        recent=Rows.of(recent.pairs[customers].tocsr()),
        recent_orders=recent.customers[customers],
    )


def labels_of(table: CandidateTable, truth: sp.csr_matrix) -> np.ndarray:
    """1 where the row's customer bought the item in the window (``truth`` rows aligned
    with the table's rows): one sorted-key lookup for all pairs."""
    return _pairs_in(table.rows, table.items, truth)


def _pairs_in(rows: np.ndarray, items: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    truth = truth.tocsr()
    width = truth.shape[1]
    counts = np.diff(truth.indptr)
    keys = np.repeat(np.arange(truth.shape[0], dtype=np.int64), counts) * width + truth.indices
    keys.sort()
    wanted = rows.astype(np.int64) * width + items
    if len(keys) == 0:
        return np.zeros(len(wanted), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return keys[pos] == wanted


def train_ranker(
    table: CandidateTable,
    labels: np.ndarray,
    seed: int,
    max_rounds: int,
    booster: BoosterSettings = DEFAULT_BOOSTER,
) -> lgb.Booster:
    """LambdaRank over each customer's candidates (customers whose candidates hold no
    purchase teach the ranking nothing and are left out).

    The number of boosting rounds follows the data (a few on a small shop, up to
    ``max_rounds`` on a large one) instead of overfitting a small one: it is where
    NDCG@10 on customers the boosting did not see stops improving. With fewer than
    ``CROSS_VALIDATE_BELOW`` such customers that is measured by grouped
    ``CROSS_VALIDATION_FOLDS``-fold cross-validation (lightgbm.cv), every customer
    judged once: a fifth of a small shop is a few dozen customers, whose NDCG is noise
    (on the test's 60 customers it stopped after one to three rounds, and which ones
    depended on the last bits of the ALS factors, i.e. the CPU's BLAS kernel). Larger
    shops hold a fifth of the customers out, as cheap and as steady.
    """
    positives = np.bincount(table.rows, weights=labels.astype(float))
    keep = positives[table.rows] > 0
    if not keep.any():
        raise ValueError("no customer bought any candidate in the training window")
    customers = np.unique(table.rows[keep])

    def dataset(mask: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        rows = table.rows[mask]
        return lgb.Dataset(
            table.features[mask],
            label=labels[mask].astype(np.int32),
            group=np.bincount(rows)[np.unique(rows)],
            feature_name=list(FEATURES),
            categorical_feature=list(CATEGORICAL_FEATURES),
            reference=reference,
            free_raw_data=True,
        )

    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "learning_rate": booster.learning_rate,
        "num_leaves": booster.num_leaves,
        "min_data_in_leaf": booster.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        # One thread: measured 10x slower with two on a 2-core machine (OpenMP
        # contention with the rest of the process), and deterministic.
        "num_threads": 1,
        "verbose": -1,
    }
    stop: list[Callable[..., Any]] = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
    if len(customers) < CROSS_VALIDATION_FOLDS:
        return lgb.train(params, dataset(keep), num_boost_round=max_rounds)
    if len(customers) < CROSS_VALIDATE_BELOW:
        curves = lgb.cv(
            params,
            dataset(keep),
            num_boost_round=max_rounds,
            nfold=CROSS_VALIDATION_FOLDS,
            stratified=False,
            seed=seed,
            callbacks=stop,
        )
        mean_ndcg = np.asarray(curves["valid ndcg@10-mean"], dtype=np.float64)
        rounds = int(np.argmax(mean_ndcg)) + 1
        return lgb.train(params, dataset(keep), num_boost_round=rounds)
    rng = np.random.default_rng(seed)
    held = np.isin(table.rows, customers[rng.random(len(customers)) < 0.2]) & keep
    train_set = dataset(keep & ~held)
    return lgb.train(
        params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[dataset(held, train_set)],
        callbacks=stop,
    )


def ranker_recommender(
    items: ItemSide,
    split: TimeSplit,
    als: AlternatingLeastSquares,
    booster: lgb.Booster,
    k: int,
    per_source: int,
    facts: WindowFacts = WindowFacts(),
    record: list[tuple[CandidateTable, np.ndarray, np.ndarray]] | None = None,
) -> Recommender:
    """The ranker as an evaluation ``Recommender``; ``record`` collects each
    call's candidate table, scores and chosen top k (for the contribution table)."""

    recent = recent_at_cutoff(split, items.half_life_days)

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        side = customer_side(split, als, customers, exclude, recent, facts)
        table = candidates(items, side, per_source)
        scores = np.asarray(booster.predict(table.features, num_threads=1))
        top = ranked_top(table, scores, len(customers), k)
        if record is not None:
            record.append((table, scores, top))
        return top

    return recommend


def knn_recommender(items: ItemSide, split: TimeSplit, k: int) -> Recommender:
    """ItemKNN (BM25) alone: neighbours of what the customer bought, by summed similarity."""

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        scores = (split.train.counts[customers] @ items.similarity).tocsr()
        return sparse_topk(scores, k, exclude)

    return recommend


def stage_popularity_recommender(items: ItemSide, stages: np.ndarray | None, k: int) -> Recommender:
    """Popularity within the customer's lifecycle stage alone (``stages``: per split
    customer, as of the cutoff); overall popularity for a customer without a stage."""

    def recommend(customers: np.ndarray, exclude: sp.csr_matrix | None) -> np.ndarray:
        out = np.full((len(customers), k), -1, dtype=np.int64)
        mine = np.full(len(customers), NO_STAGE) if stages is None else stages[customers]
        for stage in np.unique(mine).tolist():
            rows = np.flatnonzero(mine == stage)
            if stage == NO_STAGE or items.stage_popular_order is None:
                order = items.popular_order
            else:
                order = items.stage_popular_order[stage]
            if exclude is None:
                picked = np.tile(order[:k], (len(rows), 1))
            else:
                picked = first_allowed(order, exclude[rows], k)
            out[rows, : picked.shape[1]] = picked
        return out

    return recommend


def contributions(
    table: CandidateTable, top: np.ndarray, truth: sp.csr_matrix
) -> dict[str, dict[str, float]]:
    """Per source: its share of the final top-k slots and the hit rate of those slots
    (an item two sources proposed counts for both)."""
    slot_rows: np.ndarray = np.repeat(np.arange(top.shape[0], dtype=np.int64), top.shape[1])
    slot_items: np.ndarray = top.ravel()
    filled = slot_items >= 0
    slot_rows, slot_items = slot_rows[filled], slot_items[filled]
    if len(slot_items) == 0:
        return {name: {"share": 0.0, "hit_rate": 0.0} for name in SOURCES}
    width = int(max(table.items.max(initial=0), slot_items.max())) + 1
    pair_keys = table.rows.astype(np.int64) * width + table.items
    order = np.argsort(pair_keys)
    wanted = slot_rows * width + slot_items
    position = order[np.searchsorted(pair_keys[order], wanted)]
    flags = table.sources[position]
    hits = _pairs_in(slot_rows, slot_items, truth)
    out: dict[str, dict[str, float]] = {}
    for column, name in enumerate(SOURCES):
        mask = flags[:, column]
        out[name] = {
            "share": float(mask.mean()),
            "hit_rate": float(hits[mask].mean()) if mask.any() else 0.0,
        }
    return out


def booster_document(
    booster: lgb.Booster, per_source: int, half_life_days: float = HALF_LIFE_DAYS
) -> dict[str, Any]:
    """How the booster is described in the manifest (with the half-life its
    recency-weighted features are decayed by: the service decays them the same way)."""
    gain = booster.feature_importance("gain")
    total = float(gain.sum()) or 1.0
    return {
        "algorithm": "lightgbm.lambdarank",
        "lightgbm_version": lightgbm_version(),
        "rounds": booster.current_iteration(),
        "per_source": per_source,
        "half_life_days": half_life_days,
        "features": list(FEATURES),
        "importance": {
            name: round(float(value) / total, 4)
            for name, value in sorted(zip(FEATURES, gain, strict=True), key=lambda p: -p[1])
        },
    }


@dataclass
class RankerResult:
    """The ranker trained one window before the cutoff, and its evaluation at the cutoff.

    ``booster`` is None (with ``reason``) when the data cannot train one: too short for
    a second window, or nobody bought a candidate in it.
    """

    booster: lgb.Booster | None
    reason: str | None
    metrics: Metrics
    contributions: dict[str, dict[str, float]]
    # The candidates at the cutoff for the "all" truth, their ranker scores and labels:
    # what the propensity calibration of the ranker's score is fitted on.
    scores: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    training_pairs: int = 0
    training_customers: int = 0
    training_windows: int = 0
    per_source: int = 0
    half_life_days: float = HALF_LIFE_DAYS
    # The sources as known at the cutoff and the customers' facts there (what a model
    # served at the cutoff is made of), and the window the booster was trained on (None
    # when there was none).
    items: ItemSide | None = None
    facts: WindowFacts = WindowFacts()
    window: TrainingWindow | None = None
    # The settings search on the validation window (``SettingsSearch.section`` of
    # ``training.search``; None: not searched).
    search: dict[str, Any] | None = None

    def section(self) -> dict[str, Any]:
        """The manifest's ``ranker`` section."""
        if self.booster is None:
            return {"enabled": False, "reason": self.reason}
        searched = {} if self.search is None else {"settings_search": self.search}
        return {
            "enabled": True,
            **booster_document(self.booster, self.per_source, self.half_life_days),
            "trained_on": "the windows before the cutoff, each a holdout before the next "
            "(sources fitted before each)",
            "training_pairs": self.training_pairs,
            "training_customers": self.training_customers,
            "training_windows": self.training_windows,
            "contributions": self.contributions,
            **searched,
        }


@dataclass(frozen=True)
class WindowSettings:
    """How the trainer's windows are cut and sampled (from the training config)."""

    holdout_days: int
    suppression_days: int | None
    popularity_days: int | None
    max_customers: int | None
    seed: int
    per_source: int
    max_rounds: int
    neighbours: int
    enabled: bool = True
    windows: int = 1  # past windows stacked for the ranker's training data
    half_life_days: float = HALF_LIFE_DAYS  # of the recency-weighted counts
    min_history_days: int = 0  # before a stacked window's cutoff (``history_days``)
    booster: BoosterSettings = DEFAULT_BOOSTER  # the search's winner (``training.search``)

    @classmethod
    def from_config(cls, config: TrainingConfig) -> WindowSettings:
        return cls(
            config.holdout_days,
            config.suppression.days,
            config.popularity_days,
            config.eval_max_customers,
            config.als.random_state,
            config.ranker.per_source,
            config.ranker.max_rounds,
            config.ranker.neighbours,
            config.ranker.enabled,
            config.ranker.windows,
            config.ranker.half_life_days,
            min_history_days(config),
        )


def min_history_days(config: TrainingConfig) -> int:
    """``ranker.min_history_days``, or when unset one and a half suppression windows
    (holdouts, where the window is "all" or 0)."""
    if config.ranker.min_history_days is not None:
        return config.ranker.min_history_days
    window = config.suppression.days
    return round(1.5 * (window if window else config.holdout_days))


@dataclass(frozen=True)
class TrainingWindow:
    """The ranker's training data: candidates and features as of the earlier cutoff
    (``split``), labelled by what the customers bought in the window after it."""

    split: TimeSplit
    customers: np.ndarray  # the split's customers the table covers (rows index them)
    table: CandidateTable
    labels: np.ndarray
    # What the sources were fitted to at the window's cutoff: ALS, the item side and the
    # customers' facts.
    als: AlternatingLeastSquares
    items: ItemSide
    facts: WindowFacts


@dataclass(frozen=True)
class EarlierWindow:
    """What is known at the window before a split's cutoff: its split, and ALS, the
    sources' item side and the customers' facts fitted to the purchases before it."""

    split: TimeSplit
    als: AlternatingLeastSquares
    items: ItemSide
    facts: WindowFacts


def earlier_window(
    split: TimeSplit,
    fit_als_on: Callable[[sp.csr_matrix], AlternatingLeastSquares],
    repurchase_of: Callable[[TimeSplit], Repurchase | None],
    facts_of: FactsOf,
    settings: WindowSettings,
) -> EarlierWindow:
    """The window before ``split``'s cutoff, with sources and facts computed from the
    purchases before it alone; ConfigError when the data has no such window, saying
    what spans what (``no_earlier_window``)."""
    try:
        earlier = time_split(split.train_lines, settings.holdout_days, settings.suppression_days)
    except ConfigError:
        raise ConfigError(no_earlier_window(split, settings.holdout_days)) from None
    als_earlier = fit_als_on(earlier.train.counts)
    facts = facts_of(
        cutoff_seconds(earlier),
        split.train_customer_positions[earlier.train_customer_positions],
        split.train_item_positions[earlier.train_item_positions],
    )
    items = item_side(
        earlier,
        als_earlier,
        fit_knn(earlier.train.counts, settings.neighbours),
        settings.popularity_days,
        repurchase_of(earlier),
        facts,
        settings.half_life_days,
    )
    return EarlierWindow(earlier, als_earlier, items, facts)


def no_earlier_window(split: TimeSplit, holdout_days: int) -> str:
    """Why there is no window before ``split``'s cutoff, in the data's own terms: the
    purchases before the cutoff (not the file) span less than a holdout, and what would
    give one: more history, or a holdout short enough that two fit in the file."""
    time = split.train_lines.time
    before = (int(time.max()) - int(time.min())) // DAY
    file_days = (int(split.cutoff.timestamp()) - int(time.min())) // DAY + holdout_days
    longest = (file_days + 1) // 2 - 1  # two holdouts must fit in the file's span
    shorter = f", or holdout_days (--holdout-days) {longest} or less" if longest >= 1 else ""
    return (
        f"the purchases before the test window span {before} days, less than the "
        f"{holdout_days}-day holdout a window before it needs; the file spans {file_days} "
        f"days: more than {2 * holdout_days} days of history{shorter} would give one"
    )


def training_window(
    split: TimeSplit,
    fit_als_on: Callable[[sp.csr_matrix], AlternatingLeastSquares],
    repurchase_of: Callable[[TimeSplit], Repurchase | None],
    facts_of: FactsOf,
    settings: WindowSettings,
) -> TrainingWindow:
    """The ranker's training data: the candidates at the window before ``split``'s
    cutoff (``earlier_window``), labelled by what was bought up to the cutoff;
    ConfigError when the data has no such window."""
    window = earlier_window(split, fit_als_on, repurchase_of, facts_of, settings)
    earlier, facts = window.split, window.facts
    customers = evaluation_customers(earlier, settings.max_customers, settings.seed)
    table = candidates(
        window.items,
        customer_side(
            earlier,
            window.als,
            customers,
            None,
            recent_at_cutoff(earlier, settings.half_life_days),
            facts,
        ),
        settings.per_source,
    )
    labels = labels_of(table, earlier.truth_all[customers])
    return TrainingWindow(earlier, customers, table, labels, window.als, window.items, facts)


def stacked_windows(
    split: TimeSplit,
    first: TrainingWindow,
    fit_als_on: Callable[[sp.csr_matrix], AlternatingLeastSquares],
    repurchase_of: Callable[[TimeSplit], Repurchase | None],
    facts_of: FactsOf,
    settings: WindowSettings,
) -> tuple[CandidateTable, np.ndarray, int]:
    """The ranker's training pairs: ``first`` (the window before ``split``'s cutoff) and
    up to ``settings.windows - 1`` earlier ones, each cut a holdout before the one after
    it, with sources and facts fitted to what was known at its own cutoff; as many as the
    data holds. Each window's customers are groups of their own (their rows follow the
    previous windows'). Returns the table, its labels and the windows stacked."""
    tables, labels = [first.table], [first.labels]
    window, within, rows = first, facts_of, int(first.table.rows.max(initial=-1)) + 1
    outer = split
    while len(tables) < settings.windows:
        # The next window is cut from this one's training side: its facts by positions
        # there (``facts_within`` the split this one was cut from).
        within = facts_within(outer, within)
        outer = window.split
        try:
            window = training_window(outer, fit_als_on, repurchase_of, within, settings)
        except ConfigError:
            break
        if not window.labels.any() or not mature(window.split, settings):
            break
        tables.append(replace(window.table, rows=window.table.rows + rows))
        labels.append(window.labels)
        rows += int(window.table.rows.max(initial=-1)) + 1
    if len(tables) == 1:
        return first.table, first.labels, 1
    table = CandidateTable(
        np.concatenate([t.rows for t in tables]),
        np.concatenate([t.items for t in tables]),
        np.concatenate([t.features for t in tables]),
        np.concatenate([t.sources for t in tables]),
    )
    return table, np.concatenate(labels), len(tables)


def history_days(split: TimeSplit) -> float:
    """Days of purchases before ``split``'s cutoff (from the first purchase)."""
    if not len(split.train_lines.time):
        return 0.0
    return (cutoff_seconds(split) - int(split.train_lines.time.min())) / DAY


def earlier_history_days(split: TimeSplit, settings: WindowSettings) -> float:
    """``history_days`` of the window ``earlier_window`` cuts before ``split``'s cutoff
    (without cutting it: at ``time_split``'s cutoff of the purchases before it)."""
    time = split.train_lines.time
    if not len(time):
        return 0.0
    return (split_cutoff(time, settings.holdout_days) - int(time.min())) / DAY


def mature(split: TimeSplit, settings: WindowSettings) -> bool:
    """Whether a window cut at ``split`` has the history a training window needs
    (``settings.min_history_days``): on less, the customers' habits are too young to
    show, e.g. none can reorder after the suppression window."""
    return history_days(split) >= settings.min_history_days


def facts_within(split: TimeSplit, facts_of: FactsOf) -> FactsOf:
    """``facts_of`` for windows cut from ``split``'s training side, whose customer and
    item positions are the split's training rows, not the full data's."""

    def within(as_of_s: int, customers: np.ndarray, items: np.ndarray) -> WindowFacts:
        return facts_of(
            as_of_s,
            split.train_customer_positions[customers],
            split.train_item_positions[items],
        )

    return within


@dataclass(frozen=True)
class PreparedRanker:
    """Everything the ranker at a cutoff needs but its booster: the sources and facts at
    the cutoff, the single methods that need them, and the training pairs (``table``,
    None with ``reason`` when the data cannot train one). The settings search
    (``training.search``) trains several boosters on one."""

    split: TimeSplit
    evaluated: AlternatingLeastSquares
    items: ItemSide
    facts: WindowFacts
    singles: dict[str, Recommender]
    settings: WindowSettings
    reason: str | None = None
    window: TrainingWindow | None = None
    table: CandidateTable | None = None
    labels: np.ndarray | None = None
    stacked: int = 0

    def train(self, booster: BoosterSettings) -> lgb.Booster:
        assert self.table is not None and self.labels is not None
        return train_ranker(
            self.table, self.labels, self.settings.seed, self.settings.max_rounds, booster
        )


def prepare_ranker(
    split: TimeSplit,
    evaluated: AlternatingLeastSquares,
    fit_als_on: Callable[[sp.csr_matrix], AlternatingLeastSquares],
    repurchase_of: Callable[[TimeSplit], Repurchase | None],
    facts_of: FactsOf,
    settings: WindowSettings,
    k: int,
) -> PreparedRanker:
    """The ranker's sources at the cutoff and its training pairs from the windows before."""
    facts_now = facts_of(
        cutoff_seconds(split), split.train_customer_positions, split.train_item_positions
    )
    now = item_side(
        split,
        evaluated,
        fit_knn(split.train.counts, settings.neighbours),
        settings.popularity_days,
        repurchase_of(split),
        facts_now,
        settings.half_life_days,
    )
    stages = None if facts_now.traits is None else facts_now.traits.stage
    singles = {
        "itemknn": knn_recommender(now, split, k),
        "stage_popularity": stage_popularity_recommender(now, stages, k),
    }
    prepared = PreparedRanker(split, evaluated, now, facts_now, singles, settings)
    if not settings.enabled:
        return replace(prepared, reason="disabled in the training config")
    try:
        window = training_window(split, fit_als_on, repurchase_of, facts_of, settings)
    except ConfigError as exc:
        return replace(prepared, reason=f"no window before the cutoff to train on ({exc})")
    if not window.labels.any():
        return replace(
            prepared,
            reason="nobody bought a candidate in the window before the cutoff",
            window=window,
        )
    table, labels, stacked = stacked_windows(
        split, window, fit_als_on, repurchase_of, facts_of, settings
    )
    return replace(prepared, window=window, table=table, labels=labels, stacked=stacked)


def finish_ranker(
    prepared: PreparedRanker,
    booster: lgb.Booster | None,
    customers: np.ndarray,
    k: int,
    measure: bool = True,
) -> RankerResult:
    """``prepared``'s ranker with ``booster`` (None: ``prepared`` could train none),
    evaluated at the cutoff on ``customers`` with ItemKNN and stage popularity alone,
    which need its sources.

    ``measure=False`` (the ranker of the validation window, ``training.policy``): no
    metrics, only its candidates' scores at the cutoff, for its curve.
    """
    split, now, facts_now, singles = (
        prepared.split,
        prepared.items,
        prepared.facts,
        prepared.singles,
    )
    settings = prepared.settings
    empty = np.empty(0)
    if booster is None or prepared.table is None or prepared.labels is None:
        return RankerResult(
            None,
            prepared.reason,
            evaluate_methods(split, singles, customers, k) if measure else {},
            {},
            empty,
            empty,
            empty,
            items=now,
            facts=facts_now,
            window=prepared.window,
        )
    table, labels = prepared.table, prepared.labels
    record: list[tuple[CandidateTable, np.ndarray, np.ndarray]] = []
    methods = {
        "ranker": ranker_recommender(
            now, split, prepared.evaluated, booster, k, settings.per_source, facts_now, record
        ),
        **singles,
    }
    sizes = np.diff(split.truth_all.indptr) + split.unknown_all
    evaluated_rows = customers[sizes[customers] > 0]
    metrics: Metrics = {}
    if measure:
        metrics = evaluate_methods(split, methods, customers, k)
    else:
        methods["ranker"](evaluated_rows, None)
    # The first call is the "all" truth's: every customer with a holdout purchase.
    all_table, all_scores, all_top = record[0]
    truth = split.truth_all[evaluated_rows]
    return RankerResult(
        booster,
        None,
        metrics,
        contributions(all_table, all_top, truth),
        all_scores,
        labels_of(all_table, truth),
        all_table.rows,
        training_pairs=len(table),
        training_customers=len(np.unique(table.rows[labels])),
        training_windows=prepared.stacked,
        per_source=settings.per_source,
        half_life_days=settings.half_life_days,
        items=now,
        facts=facts_now,
        window=prepared.window,
    )


@dataclass(frozen=True)
class ServedRanker:
    """The ranker the service serves: the booster trained one window before the cutoff
    (the one the evaluation scored), with its sources refitted on all the data (or, for
    the model the evaluation serves at a cutoff, as known there). Without a booster, the
    sources alone: what the ItemKNN policy serves from (``nbo.models.policy``)."""

    booster: lgb.Booster | None
    similarity: sp.csr_matrix  # ItemKNN, item x item
    popularity_before: np.ndarray  # popularity one window before the end (the trend)
    stage_popularity: np.ndarray  # popularity within each lifecycle stage
    popularity_recent: np.ndarray  # distinct buyers in the last fortnight
    per_source: int  # the most items each source proposes per customer

    def arrays(self) -> dict[str, Any]:
        return ranker_arrays(
            self.similarity, self.popularity_before, self.stage_popularity, self.popularity_recent
        )

    def files(self) -> dict[str, bytes]:
        return {} if self.booster is None else ranker_file(self.booster)


def served_ranker(
    booster: lgb.Booster | None,
    history: PurchaseHistory,
    last_s: int,
    stages: np.ndarray,
    config: TrainingConfig,
    similarity: sp.csr_matrix | None = None,
) -> ServedRanker:
    """The sources at ``last_s`` (the end of the data, or a cutoff) for ``booster``: what
    ``item_side`` gives at a cutoff, for every customer's ``stages`` there (indices into
    ``STAGES``, ``NO_STAGE`` for none); ``similarity``: ItemKNN's, when already fitted
    on ``history``."""
    days = config.popularity_days or POPULARITY_DAYS
    if similarity is None:
        similarity = fit_knn(history.counts, config.ranker.neighbours)
    return ServedRanker(
        booster,
        similarity,
        popularity_scores(history.counts, history.last_purchase, last_s - days * DAY, days),
        group_popularity(history.counts, stages, len(STAGES)),
        popularity_scores(history.counts, history.last_purchase, last_s, RECENT_POPULARITY_DAYS),
        config.ranker.per_source,
    )
