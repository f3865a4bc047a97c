"""The trainer: load -> split -> fit -> evaluate -> gate -> refit on all data -> churn
model and lifecycle stages -> publish."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from nbo.core import columns as col
from nbo.core.checksums import sha256_file
from nbo.core.errors import PurchaseDataError, QualityGateError
from nbo.data.features import build_order_table, has_prices, item_prices, line_values
from nbo.data.history import PurchaseHistory, encode_purchases
from nbo.data.mapping import ColumnMapping
from nbo.data.purchases import CleaningReport, read_purchases
from nbo.models.artifacts import unique_version, write_artifact
from nbo.models.candidates import stage_codes
from nbo.models.cf import confidence_matrix, fit_als
from nbo.models.cycles import cycle_summary, repurchase_cycles, suppression_days_per_item
from nbo.models.lifecycle import STAGES
from nbo.models.popularity import group_popularity, popularity_scores
from nbo.models.propensity import DOCUMENT as PROPENSITY_DOCUMENT
from nbo.models.ranker import ranker_arrays, ranker_file
from nbo.models.served import model_arrays
from nbo.offers.ranking import MIN_CANDIDATES as PROPENSITY_CANDIDATES
from training.config import TrainingConfig
from training.lifecycle import (
    CALIBRATION_PLOT,
    CUSTOMERS_FILE,
    calibration_png,
    customer_lifecycle,
    customers_parquet,
    train_churn,
)
from training.methods import (
    als_recommender,
    buy_again_recommender,
    cycle_suppressed,
    evaluate_methods,
    evaluation_customers,
    excluding,
    popularity_recommender,
    split_popularity,
)
from training.propensity import fit_propensity, with_ranker_curve
from training.ranker import (
    POPULARITY_DAYS,
    WindowSettings,
    evaluate_ranker,
    fit_knn,
    window_facts,
)
from training.split import TimeSplit, time_split

DAY = 86_400
GATE_METRIC_TEMPLATE = "ndcg@{k}"
GATE_TRUTH = "all"
# ``metrics`` key of the churn model's metrics (method -> metric), next to the truths.
CHURN_METRICS = "churn"
# The cleaning report's reason for the rows of customers erased in the service's store.
DROP_ERASED = "erased customer"


class Progress:
    """What the trainer reports while it works; the CLI draws it, tests ignore it."""

    def step(self, name: str) -> None:  # pragma: no cover - display only
        """A new step starts."""

    def iterations(self, name: str, total: int) -> Callable[[int], None]:
        """A step with a known number of iterations; returns the per-iteration callback."""
        self.step(name)
        return lambda _iteration: None

    def done(self, name: str, seconds: float) -> None:  # pragma: no cover - display only
        """A step finished."""


@dataclass
class TrainResult:
    version: str | None
    path: Path | None
    metrics: dict[str, dict[str, dict[str, float]]]
    cleaning: CleaningReport
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    published: bool = True


def train(
    data_path: Path,
    mapping: ColumnMapping,
    models_dir: Path,
    config: TrainingConfig,
    force: bool = False,
    progress: Progress | None = None,
    erased: Collection[str] = (),
    publish: bool = True,
) -> TrainResult:
    """Train, evaluate and publish a model; QualityGateError if ALS loses to popularity.

    ``erased``: customer ids erased in the service's store; every row of theirs is dropped
    right after reading (counted as ``DROP_ERASED``), so nothing of them is learned.

    ``publish=False`` (``nbo evaluate``): everything is computed and reported, the quality
    gate only reports, and nothing is written (``version`` and ``path`` are None).
    """
    progress = progress or Progress()
    timings: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start
        progress.done(name, timings[name])

    params = config.als.params()
    k = config.k
    cycles_config = config.cycles
    with threadpool_limits(limits=1, user_api="blas"):
        progress.step("read purchases")
        with timed("read purchases"):
            purchases, cleaning = read_purchases(data_path, mapping)
            purchases, erased_customers = _drop_erased(purchases, cleaning, erased)
            fingerprint = sha256_file(data_path)

        progress.step("time split")
        with timed("time split"):
            encoded = encode_purchases(purchases)
            split = time_split(encoded, config.holdout_days, config.suppression.days)

        tick = progress.iterations("fit ALS (before cutoff)", params.iterations)
        with timed("fit ALS (before cutoff)"):
            train_confidence = confidence_matrix(split.train.counts, params)
            evaluated = fit_als(train_confidence, params, on_iteration=tick)

        train_cycles = None
        if cycles_config.enabled:
            progress.step("repurchase cycles (before cutoff)")
            with timed("repurchase cycles (before cutoff)"):
                train_cycles = repurchase_cycles(
                    split.train_lines, cycles_config.min_repeat_buyers, cycles_config.max_days
                )

        progress.step("evaluate")
        with timed("evaluate"):
            popularity = split_popularity(split, config.popularity_days)
            methods = {
                "als": als_recommender(evaluated, k),
                "popularity": popularity_recommender(popularity, k),
                "buy_again": buy_again_recommender(
                    split.train.counts, split.train.last_purchase, popularity, k
                ),
            }
            if train_cycles is not None:
                # The fair comparison for cycles: ALS minus the plain window (what the
                # service does without cycles) against ALS minus the cycle-aware window.
                methods["als_window"] = excluding(als_recommender(evaluated, k), split.suppressed)
                window_days = suppression_days_per_item(train_cycles, config.suppression.days)
                methods["als_cycles"] = excluding(
                    als_recommender(evaluated, k), cycle_suppressed(split, window_days)
                )
            customers = evaluation_customers(split, config.eval_max_customers, params.random_state)
            metrics = evaluate_methods(split, methods, customers, k)

        last_s = int(encoded.time.max())
        # Features "as of" a moment count orders strictly before it: the end of the data
        # is one second after the last purchase.
        data_end_s = last_s + 1
        progress.step("customer orders")
        with timed("customer orders"):
            values = line_values(purchases)
            orders = build_order_table(purchases, encoded.customers, cleaning.returns, values)
            priced = has_prices(purchases)
            typical_line_value = float(np.median(values)) if priced else None

        # Before the ranker: the churn model fitted for evaluation gives the ranker its
        # churn-risk feature (only as of moments after everything that model learned).
        progress.step("churn model")
        with timed("churn model"):
            churn = train_churn(orders, config.churn, data_end_s, params.random_state)
            if churn.metrics is not None:
                metrics[CHURN_METRICS] = churn.metrics

        facts_of = window_facts(purchases, encoded.items, orders, churn, config)

        progress.step("ranker (trained one window earlier)")
        with timed("ranker (trained one window earlier)"):

            def cycles_of(window: TimeSplit) -> np.ndarray | None:
                if not cycles_config.enabled:
                    return None
                if window is split and train_cycles is not None:
                    return train_cycles
                return repurchase_cycles(
                    window.train_lines, cycles_config.min_repeat_buyers, cycles_config.max_days
                )

            ranker, _sources_at_cutoff = evaluate_ranker(
                split,
                evaluated,
                lambda counts: fit_als(confidence_matrix(counts, params), params),
                cycles_of,
                facts_of,
                customers,
                WindowSettings(
                    config.holdout_days,
                    config.suppression.days,
                    config.popularity_days,
                    config.eval_max_customers,
                    params.random_state,
                    config.ranker.per_source,
                    config.ranker.max_rounds,
                    config.ranker.neighbours,
                    config.ranker.enabled,
                ),
                k,
            )
            for truth, by_method in ranker.metrics.items():
                metrics[truth].update(by_method)

        progress.step("propensity calibration")
        with timed("propensity calibration"):
            # On what the service proposes at the cutoff: candidates minus what it
            # suppresses there (the cycle-aware window when cycles are learned).
            served_suppression = (
                cycle_suppressed(
                    split, suppression_days_per_item(train_cycles, config.suppression.days)
                )
                if train_cycles is not None
                else split.suppressed
            )
            propensity, propensity_report = fit_propensity(
                evaluated,
                split,
                customers,
                popularity,
                served_suppression,
                candidates=PROPENSITY_CANDIDATES,
                horizon_days=config.holdout_days,
                seed=params.random_state,
            )
            if ranker.booster is not None:
                propensity, propensity_report = with_ranker_curve(
                    propensity, propensity_report, ranker, params.random_state
                )

        gate = _quality_gate(metrics, k)
        if not gate["passed"] and not force and publish:
            raise QualityGateError(gate["message"])

        with timed("build full history"):
            full = encoded.history()
            full_confidence = confidence_matrix(full.counts, params)
        full_cycles = None
        if cycles_config.enabled:
            progress.step("repurchase cycles (all data)")
            with timed("repurchase cycles (all data)"):
                full_cycles = repurchase_cycles(
                    encoded, cycles_config.min_repeat_buyers, cycles_config.max_days
                )
        refit_iterations = config.als.refit_iterations or params.iterations
        tick = progress.iterations("refit ALS (all data)", refit_iterations)
        with timed("refit ALS (all data)"):
            warm = (
                _warm_start(evaluated, split, full, params.random_state)
                if config.als.refit_iterations
                else None
            )
            final = fit_als(
                full_confidence,
                params,
                on_iteration=tick,
                warm_start=warm,
                iterations=refit_iterations,
            )

        progress.step("lifecycle stages")
        with timed("lifecycle stages"):
            lifecycle = customer_lifecycle(orders, churn.model, config, data_end_s)
            extra_files = {CUSTOMERS_FILE: customers_parquet(full.customers, lifecycle)}
            if churn.model is not None:
                extra_files.update(churn.files())
                extra_files[CALIBRATION_PLOT] = calibration_png(churn)

        progress.step("publish")
        with timed("publish"):
            served_popularity = popularity_scores(
                full.counts, full.last_purchase, last_s, config.popularity_days
            )
            arrays = model_arrays(
                final.user_factors,
                final.item_factors,
                full,
                full_confidence,
                served_popularity,
                repurchase_cycle_days=full_cycles,
                orders=orders,
                item_price=item_prices(purchases, full.items) if priced else None,
                send_hour_prior=lifecycle.send_hour_prior,
            )
            if ranker.booster is not None:
                # The sources at the end of the data, for the ranker the service serves.
                arrays.update(
                    ranker_arrays(
                        fit_knn(full.counts, config.ranker.neighbours),
                        popularity_scores(
                            full.counts,
                            full.last_purchase,
                            last_s - (config.popularity_days or POPULARITY_DAYS) * DAY,
                            config.popularity_days or POPULARITY_DAYS,
                        ),
                        group_popularity(full.counts, stage_codes(lifecycle.stages), len(STAGES)),
                    )
                )
                extra_files.update(ranker_file(ranker.booster))
            documents: dict[str, Any] = {PROPENSITY_DOCUMENT: propensity.to_document()}
            names = _item_names(purchases)
            if names:
                documents["item_names"] = names
            version = unique_version(models_dir, fingerprint)
            manifest = {
                "data": {
                    "file": data_path.name,
                    "sha256": fingerprint,
                    "mapping": mapping.name,
                    **cleaning.to_dict(),
                    "erased_customers": erased_customers,
                    "typical_line_value": typical_line_value,
                },
                "config": config.model_dump(),
                "split": {
                    "cutoff": split.cutoff.isoformat(),
                    "holdout_days": config.holdout_days,
                    "suppression_days": config.suppression_days,
                    "holdout_rows": split.holdout_rows,
                    "evaluated_customers": len(customers),
                    "cold_start_customers_in_holdout": split.cold_start_customers,
                },
                "model": {
                    "algorithm": "implicit.als",
                    "customers": len(full.customers),
                    "items": len(full.items),
                    "interactions": int(full.counts.nnz),
                    "refit_iterations": refit_iterations,
                    "warm_started": warm is not None,
                },
                "cycles": _cycles_section(config, full_cycles, train_cycles),
                "propensity": propensity_report,
                "ranker": ranker.section(),
                "churn": churn.section,
                "lifecycle": lifecycle.section,
                "metrics": metrics,
                "quality_gate": {**gate, "forced": force and not gate["passed"]},
            }
            path: Path | None = None
            if publish:
                path = write_artifact(models_dir, version, arrays, documents, manifest, extra_files)
    manifest["timings"] = timings
    return TrainResult(
        version=version if publish else None,
        path=path,
        metrics=metrics,
        cleaning=cleaning,
        manifest=manifest,
        timings=timings,
        published=publish,
    )


def _drop_erased(
    purchases: pd.DataFrame, report: CleaningReport, erased: Collection[str]
) -> tuple[pd.DataFrame, int]:
    """Drop every row of an erased customer, updating the cleaning report as the cleaning
    itself would; answers the purchases left and how many customers were dropped."""
    ids = purchases[col.CUSTOMER_ID]
    mask = ids.isin(list(erased)).to_numpy(dtype=bool) if erased else np.zeros(len(ids), bool)
    rows = int(mask.sum())
    report.dropped[DROP_ERASED] = rows
    if not rows:
        return purchases, 0
    customers = int(ids[mask].nunique())
    purchases = purchases[~mask].reset_index(drop=True)
    if report.returns is not None:
        erased_returns = report.returns[col.CUSTOMER_ID].isin(list(erased)).to_numpy(dtype=bool)
        report.returns = report.returns[~erased_returns].reset_index(drop=True)
    if purchases.empty:
        raise PurchaseDataError(
            report.path, f"no purchases left after cleaning ({rows} {DROP_ERASED})"
        )
    if isinstance(purchases[col.CUSTOMER_ID].dtype, pd.CategoricalDtype):
        # Not even the erased ids as unused categories.
        purchases[col.CUSTOMER_ID] = purchases[col.CUSTOMER_ID].cat.remove_unused_categories()
    report.rows_kept = len(purchases)
    report.customers = int(purchases[col.CUSTOMER_ID].nunique())
    report.items = int(purchases[col.ITEM_ID].nunique())
    report.first_purchase = purchases[col.TIMESTAMP].min().isoformat()
    report.last_purchase = purchases[col.TIMESTAMP].max().isoformat()
    return purchases, customers


# The single methods the two-stage ranker must beat (the best of them) to publish.
GATE_BASELINES = ("als", "itemknn", "buy_again", "popularity", "stage_popularity")


def _quality_gate(metrics: dict[str, dict[str, dict[str, float]]], k: int) -> dict[str, Any]:
    """With a ranker: it must beat the best single method on NDCG@k (truth ``all``); the
    service serves it. Without one (data too short): ALS must beat popularity."""
    metric = GATE_METRIC_TEMPLATE.format(k=k)
    scores = metrics[GATE_TRUTH]
    if "ranker" in scores:
        candidate = "ranker"
        rivals = [name for name in GATE_BASELINES if name in scores]
        rival = max(rivals, key=lambda name: scores[name][metric])
    else:
        candidate, rival = "als", "popularity"
    mine, theirs = scores[candidate][metric], scores[rival][metric]
    passed = mine > theirs
    verdict = "beats" if passed else "does not beat"
    best = "the best single method, " if candidate == "ranker" else ""
    return {
        "passed": passed,
        "metric": metric,
        "truth": GATE_TRUTH,
        "method": candidate,
        "baseline": rival,
        candidate: mine,
        rival: theirs,
        "message": (
            f"quality gate: {candidate} {metric} {mine:.4f} {verdict} {best}{rival} "
            f"{theirs:.4f} on the holdout"
            + ("" if passed else "; not published (use --force to publish anyway)")
        ),
    }


def _cycles_section(
    config: TrainingConfig, full: np.ndarray | None, before_cutoff: np.ndarray | None
) -> dict[str, Any]:
    """The manifest's view of the learned cycles: how many items (of the published model)
    have one, their share, the distribution in days, and the count the evaluation used."""
    if full is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "min_repeat_buyers": config.cycles.min_repeat_buyers,
        "max_days": config.cycles.max_days,
        **cycle_summary(full),
        "items_before_cutoff": cycle_summary(before_cutoff)["items"],
    }


def _warm_start(
    evaluated: AlternatingLeastSquares,
    split: TimeSplit,
    full: PurchaseHistory,
    seed: int,
) -> AlternatingLeastSquares:
    """Evaluated factors placed on the full id space; newcomers start small and random."""
    rng = np.random.default_rng(seed)
    factors = evaluated.item_factors.shape[1]

    def place(learned: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
        out = (rng.random((size, factors), dtype=np.float32) * 0.01).astype(np.float32)
        out[positions] = learned
        return out

    warm = AlternatingLeastSquares(factors=factors)
    warm.user_factors = place(
        evaluated.user_factors, split.train_customer_positions, len(full.customers)
    )
    warm.item_factors = place(evaluated.item_factors, split.train_item_positions, len(full.items))
    return warm


def _item_names(purchases: pd.DataFrame) -> dict[str, str]:
    """Each item's most common name, when the data has names (display only)."""
    if col.ITEM_NAME not in purchases:
        return {}
    named = purchases[[col.ITEM_ID, col.ITEM_NAME]].dropna()
    if named.empty:
        return {}
    # observed=True: ids and names are categoricals; never the cross product of the two.
    counts = named.groupby([col.ITEM_ID, col.ITEM_NAME], observed=True).size()
    ranked = counts.rename("n").reset_index().astype({col.ITEM_ID: str, col.ITEM_NAME: str})
    ranked = ranked.sort_values(["n", col.ITEM_NAME], ascending=[False, True], kind="stable")
    first = ranked.drop_duplicates(col.ITEM_ID)
    return dict(zip(first[col.ITEM_ID], first[col.ITEM_NAME], strict=True))
