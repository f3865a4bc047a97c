"""The trainer's lifecycle steps: the churn model, every customer's stage and best send
hour, and the files that report them.

Cutoffs (data ending at T, horizon H): the model is fitted on snapshots at ``T - 2H``
(and ``snapshots - 1`` more, ``spacing_days`` apart, earlier), whose labels end by
``T - H``, and judged at ``T - H`` against a recency-only baseline fitted on the same
rows: the evaluation never sees a label period the fit saw. The published model is then
refitted on the latest fully labelled cutoffs (``T - H`` and earlier) and scores every
customer as of T.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nbo.core.ids import IdMap
from nbo.core.vocabulary import STAGES, iso_utc
from nbo.data.features import DAY, FEATURE_INDEX, OrderTable, customer_features
from nbo.models.candidates import stage_codes
from nbo.models.churn import (
    CHURN_FILE,
    MODEL,
    RECENCY,
    ChurnModel,
    Snapshot,
    build_snapshot,
    churn_manifest,
    churn_model_bytes,
    evaluate_risk,
    fit_churn_model,
    fit_recency_baseline,
    stack,
)
from nbo.models.holdings import CUSTOMERS_FILE
from nbo.models.lifecycle import LifecycleThresholds, stages_of
from nbo.models.send_time import best_send_hour, best_send_hours, send_hour_prior
from training.config import ChurnConfig, TrainingConfig, config_warnings

__all__ = ["CUSTOMERS_FILE"]  # the artifact's profile file, named where the service reads it
CALIBRATION_PLOT = "churn_calibration.png"
# A snapshot with fewer customers of either class than this teaches nothing reliable.
MIN_CLASS_CUSTOMERS = 10


@dataclass
class ChurnTraining:
    """The churn step's outcome: the published model (None when skipped), the metrics
    per method (``metrics.churn``) and the manifest's ``churn`` section."""

    model: ChurnModel | None
    metrics: dict[str, dict[str, float]] | None
    section: dict[str, Any]
    # The model fitted for evaluation and the end of what it learned from (its last
    # training labels): honest to use as of any later moment, e.g. for the ranker.
    evaluated: ChurnModel | None = None
    evaluated_until_s: int | None = None

    @property
    def enabled(self) -> bool:
        return self.model is not None

    def files(self) -> dict[str, bytes]:
        """The artifact side file of the published model (none when skipped)."""
        if self.model is None:
            return {}
        return {CHURN_FILE: churn_model_bytes(self.model)}


@dataclass
class CustomerLifecycle:
    """Every customer as of the end of the data (positions of the order table)."""

    features: np.ndarray
    churn_risk: np.ndarray | None
    stages: np.ndarray
    best_send_hours: np.ndarray
    send_hour_prior: np.ndarray
    thresholds: LifecycleThresholds
    section: dict[str, Any]


def train_churn(
    orders: OrderTable, config: ChurnConfig, data_end_s: int, seed: int
) -> ChurnTraining:
    """Fit, evaluate and refit the churn model; skipped (with the reason in the section)
    when disabled or when the data cannot fill the cutoffs."""
    if not config.enabled:
        return _skipped("disabled in the training config")
    if len(orders) == 0:
        return _skipped("no orders")
    horizon = config.horizon_days
    first_s = int(orders.time.min())
    span_days = (data_end_s - first_s) / DAY
    needed = 2 * horizon + config.min_history_days
    if span_days < needed:
        return _skipped(
            f"the data spans {span_days:.0f} days; a {horizon}-day churn horizon needs "
            f"{needed} ({config.min_history_days} days of history before the training "
            f"cutoff, {horizon} days of training labels, {horizon} of evaluation labels)"
        )
    eval_cutoff = data_end_s - horizon * DAY
    earliest = first_s + config.min_history_days * DAY

    def snapshots_from(latest: int) -> list[Snapshot]:
        cutoffs = [latest - k * config.spacing_days * DAY for k in range(config.snapshots)]
        built = [build_snapshot(orders, c, horizon) for c in cutoffs if c >= earliest]
        return [s for s in built if _class_counts(s).min() >= MIN_CLASS_CUSTOMERS]

    training = snapshots_from(eval_cutoff - horizon * DAY)
    if not training:
        return _skipped(
            f"no training cutoff has {MIN_CLASS_CUSTOMERS} customers who stayed and "
            f"{MIN_CLASS_CUSTOMERS} who churned"
        )
    evaluation = build_snapshot(orders, eval_cutoff, horizon)
    if _class_counts(evaluation).min() < MIN_CLASS_CUSTOMERS:
        stayed, churned = _class_counts(evaluation).tolist()
        return _skipped(
            f"the evaluation cutoff has {stayed} customers who stayed and {churned} who "
            f"churned; at least {MIN_CLASS_CUSTOMERS} of each are needed"
        )

    features, labels = stack(training)
    evaluated = fit_churn_model(features, labels, horizon, random_state=seed)
    baseline = fit_recency_baseline(features, labels)
    metrics, calibration = evaluate_risk(
        evaluation.labels,
        {
            MODEL: evaluated.predict_risk(evaluation.features),
            RECENCY: baseline.predict_risk(evaluation.features),
        },
    )

    published_snapshots = snapshots_from(eval_cutoff)
    published = fit_churn_model(*stack(published_snapshots), horizon, random_state=seed)
    section = {
        "enabled": True,
        "horizon_days": horizon,
        "algorithm": "HistGradientBoostingClassifier, isotonic CalibratedClassifierCV",
        "baseline": "LogisticRegression on log1p(recency_days)",
        "training_cutoffs": [iso_utc(s.cutoff_s) for s in training],
        "training_rows": len(labels),
        "training_positive_rate": float(labels.mean()),
        "evaluation_cutoff": iso_utc(evaluation.cutoff_s),
        "evaluation_customers": len(evaluation),
        "evaluation_positive_rate": evaluation.positive_rate,
        "published_cutoffs": [iso_utc(s.cutoff_s) for s in published_snapshots],
        "published_rows": int(sum(len(s) for s in published_snapshots)),
        "scored_as_of": iso_utc(data_end_s),
        "calibration": calibration,
        "warnings": below_recency(metrics),
        **churn_manifest(published),
    }
    return ChurnTraining(
        model=published,
        metrics=metrics,
        section=section,
        evaluated=evaluated,
        evaluated_until_s=eval_cutoff,
    )


# The churn figures compared with recency's: whether higher is better.
CHURN_FIGURES = {
    "roc_auc": ("ROC AUC", True),
    "pr_auc": ("PR AUC", True),
    "brier": ("Brier", False),
}


def below_recency(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    """A warning when the churn model ranks customers worse than recency alone at the
    evaluation cutoff (lower ROC AUC or PR AUC), naming every figure it lost on. The
    model is still published: the stages need a risk, and recency alone is its floor."""
    model, recency = metrics.get(MODEL), metrics.get(RECENCY)
    if not model or not recency:
        return []
    lost = [
        f"{label} {model[name]:.4f} vs {recency[name]:.4f}"
        for name, (label, higher) in CHURN_FIGURES.items()
        if name in model
        and name in recency
        and (model[name] < recency[name] if higher else model[name] > recency[name])
    ]
    ranks_worse = any(
        name in model and name in recency and model[name] < recency[name]
        for name in ("roc_auc", "pr_auc")
    )
    if not ranks_worse:
        return []
    return [
        "the churn model does worse than recency alone at the evaluation cutoff ("
        + "; ".join(lost)
        + "): its risk still sets the stages; see 'When the churn model loses to recency' "
        "in docs/training.md"
    ]


def customer_lifecycle(
    orders: OrderTable, churn: ChurnModel | None, config: TrainingConfig, data_end_s: int
) -> CustomerLifecycle:
    """Features, churn risk, stage and best send hour of every customer as of the end of
    the data, with the thresholds resolved (data-derived loyal thresholds included)."""
    features = customer_features(orders, data_end_s)
    risk = _risk_of(churn, features)
    lifecycle = config.lifecycle
    thresholds, live = resolve_thresholds(features, config)
    stages = stages_of(features, risk, thresholds)
    prior = send_hour_prior(orders.time)
    hours = best_send_hours(orders.indptr, orders.time, prior, lifecycle.send_time_pseudo_orders)
    counts = {stage: int(np.count_nonzero(stages == stage)) for stage in STAGES}
    source = f"p{lifecycle.loyal_percentile * 100:g} of the {int(live.sum())} non-lapsed customers"
    section = {
        **thresholds.to_dict(),
        "loyal_min_orders_from": "config" if lifecycle.loyal_min_orders is not None else source,
        "loyal_min_monetary_from": (
            "config" if lifecycle.loyal_min_monetary is not None else source
        ),
        "as_of": iso_utc(data_end_s),
        "customers": len(stages),
        "stages": counts,
        "churn_model": churn is not None,
        "best_send_hour_global": best_send_hour(np.empty(0, np.int64), prior),
        "warnings": config_warnings(config),
    }
    return CustomerLifecycle(
        features=features,
        churn_risk=risk,
        stages=stages,
        best_send_hours=hours,
        send_hour_prior=prior,
        thresholds=thresholds,
        section=section,
    )


def resolve_thresholds(
    features: np.ndarray, config: TrainingConfig
) -> tuple[LifecycleThresholds, np.ndarray]:
    """The stage thresholds for customers with these features (loyal thresholds from
    their percentiles unless configured), and which customers are live (bought within
    the churn horizon), whom the percentiles describe."""
    lifecycle = config.lifecycle
    horizon = config.churn.horizon_days
    frequency = features[:, FEATURE_INDEX["frequency"]]
    min_orders, min_monetary = lifecycle.loyal_min_orders, lifecycle.loyal_min_monetary
    live = (frequency > 0) & (features[:, FEATURE_INDEX["recency_days"]] <= horizon)
    base = features[live] if live.any() else features[frequency > 0]
    if min_orders is None and len(base):
        min_orders = float(
            np.quantile(base[:, FEATURE_INDEX["frequency"]], lifecycle.loyal_percentile)
        )
    if min_monetary is None and len(base):
        min_monetary = float(
            np.quantile(base[:, FEATURE_INDEX["monetary"]], lifecycle.loyal_percentile)
        )
    thresholds = LifecycleThresholds(
        horizon_days=float(horizon),
        new_days=float(lifecycle.new_days),
        at_risk_threshold=lifecycle.at_risk_threshold,
        loyal_max_risk=lifecycle.loyal_max_risk,
        loyal_min_orders=min_orders,
        loyal_min_monetary=min_monetary,
        send_time_pseudo_orders=lifecycle.send_time_pseudo_orders,
    )
    return thresholds, live


@dataclass(frozen=True)
class CustomerTraits:
    """Stage (index into ``STAGES``), churn risk, total value, orders placed and mean
    days between orders per customer as of a moment: what the ranker learns from besides
    purchases (the service takes the same from each customer's profile)."""

    stage: np.ndarray
    churn_risk: np.ndarray
    monetary: np.ndarray
    baskets: np.ndarray
    gap_days: np.ndarray  # NaN with fewer than two orders


def customer_traits(
    orders: OrderTable,
    churn: ChurnTraining,
    config: TrainingConfig,
    as_of_s: int,
    positions: np.ndarray,
) -> CustomerTraits:
    """Traits as of ``as_of_s`` of the customers at ``positions`` of the order table, by
    the same features and stage rules as the service's profiles.

    Churn risk comes from the churn model fitted for evaluation, and only when all it
    learned from (labels included) lies before ``as_of_s``; otherwise it is unknown
    (NaN), so a ranker trained at a window never sees a churn model that knew its labels.
    """
    features = customer_features(orders, as_of_s)
    honest = churn.evaluated_until_s is not None and churn.evaluated_until_s <= as_of_s
    risk = _risk_of(churn.evaluated if honest else None, features)
    thresholds, _live = resolve_thresholds(features, config)
    stages = stage_codes(stages_of(features, risk, thresholds))
    if risk is None:
        risk = np.full(len(features), np.nan)
    return CustomerTraits(
        stages[positions],
        risk[positions],
        features[positions, FEATURE_INDEX["monetary"]],
        features[positions, FEATURE_INDEX["frequency"]],
        features[positions, FEATURE_INDEX["gap_mean_days"]],
    )


def _risk_of(churn: ChurnModel | None, features: np.ndarray) -> np.ndarray | None:
    """Churn risk of customers with at least one order (NaN for the others); None
    without a model."""
    if churn is None:
        return None
    risk = np.full(len(features), np.nan)
    bought = features[:, FEATURE_INDEX["frequency"]] > 0
    if bought.any():
        risk[bought] = churn.predict_risk(features[bought])
    return risk


def customers_parquet(customers: IdMap, lifecycle: CustomerLifecycle) -> bytes:
    """Every customer's stage, risk (null without a churn model), RFM and best send hour,
    as a Parquet file for the artifact (campaign tools and analysts read it as is)."""
    features = lifecycle.features
    risk = lifecycle.churn_risk
    table = pa.table(
        {
            "customer_id": pa.array(customers.ids.tolist(), pa.string()),
            "stage": pa.array(lifecycle.stages.tolist(), pa.string()),
            "churn_risk": pa.array(
                np.full(len(features), np.nan) if risk is None else risk,
                pa.float64(),
                from_pandas=True,
            ),
            "recency_days": pa.array(features[:, FEATURE_INDEX["recency_days"]], pa.float64()),
            "frequency": pa.array(features[:, FEATURE_INDEX["frequency"]].astype(np.int64)),
            "monetary": pa.array(features[:, FEATURE_INDEX["monetary"]], pa.float64()),
            "best_send_hour": pa.array(lifecycle.best_send_hours.astype(np.int16)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_customers(data: bytes | str) -> pd.DataFrame:
    """A ``customers.parquet`` as a DataFrame (reports and tests)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return pq.read_table(source).to_pandas()


def loyal_rule(section: Mapping[str, Any], priced: bool) -> str:
    """The loyal thresholds of a manifest's ``lifecycle`` section in words: value as money
    with prices, as units bought without them; the risk condition only when a churn model
    sets risks (without one loyal rests on orders and value alone)."""
    orders, value = section.get("loyal_min_orders"), section.get("loyal_min_monetary")
    if orders is None or value is None:
        return "no thresholds (no customers)"
    amount = float(value)
    if priced:
        worth = f"{amount:,.2f} in value"
    else:
        worth = f"{amount:,.{0 if amount.is_integer() else 2}f} units bought (no prices)"
    risk = (
        f", risk below {section.get('loyal_max_risk', float('nan')):g}"
        if section.get("churn_model")
        else " (no churn model: no risk condition)"
    )
    return (
        f"at least {float(orders):g} orders and {worth} "
        f"({section.get('loyal_min_orders_from', '')}){risk}"
    )


def measured_model(section: Mapping[str, Any]) -> str:
    """Which churn model the figures and the calibration describe: the one fitted for
    evaluation, at the evaluation cutoff. The published model is refitted on cutoffs
    whose labels reach the end of the data, so nothing is left to measure it on; the
    summary, the report and the plot say so rather than let the figures pass for it."""
    published = section.get("published_cutoffs") or []
    refit = f" on cutoffs up to {str(published[0])[:10]}" if published else ""
    return (
        f"figures and calibration: the model fitted for evaluation, at the evaluation "
        f"cutoff {str(section.get('evaluation_cutoff', ''))[:10]}; the published model "
        f"(refitted{refit}) is not measured, its labels reach the end of the data"
    )


def calibration_png(churn: ChurnTraining) -> bytes:
    """Reliability diagram of the evaluated model and the recency baseline: predicted
    risk against the observed churn rate per bin (on the diagonal = calibrated), with
    the AUC and Brier score of each in the legend. Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    section, metrics = churn.section, churn.metrics or {}
    figure = Figure(figsize=(6.0, 5.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    styles = {MODEL: ("tab:blue", "o"), RECENCY: ("tab:orange", "s")}
    for method, table in section["calibration"].items():
        color, marker = styles.get(method, ("tab:gray", "^"))
        m = metrics.get(method, {})
        axes.plot(
            [row["mean_predicted"] for row in table],
            [row["observed_rate"] for row in table],
            color=color,
            marker=marker,
            label=f"{method}: AUC {m.get('roc_auc', float('nan')):.3f}, "
            f"Brier {m.get('brier', float('nan')):.3f}",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("predicted churn risk")
    axes.set_ylabel("observed churn rate")
    axes.set_title(
        f"Churn within {section['horizon_days']} days, cutoff {section['evaluation_cutoff'][:10]}"
        f" ({section['evaluation_customers']} customers)\n"
        "the model fitted for evaluation; the published refit is not measured",
        fontsize=10,
    )
    axes.legend(loc="upper left", fontsize=9)
    axes.grid(True, linewidth=0.3)
    buffer = io.BytesIO()
    # No software/date metadata: the same model gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _skipped(reason: str) -> ChurnTraining:
    return ChurnTraining(model=None, metrics=None, section={"enabled": False, "reason": reason})


def _class_counts(snapshot: Snapshot) -> np.ndarray:
    """(customers who stayed, customers who churned)."""
    return np.bincount(snapshot.labels.astype(np.int64), minlength=2)
