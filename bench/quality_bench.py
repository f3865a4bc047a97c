"""``python -m bench --only quality``: what nbo serves, on several kinds of shop.

For each synthetic regime (``bench/regimes.py``: grocery, grocery-chain, small-catalogue,
wholesale, wholesale-reorders) and the shared Online Retail file when it is there,
``nbo train`` runs with the default config into a throwaway models folder (no --force),
and the figures it acts on are printed: what is served (``served``) beside every
method, on both truths, each against the best simple rule (buy-again with the popular
fill, ItemKNN, popularity), the candidate policy that is served and why, whether it was
published, and the issue's targets: on ``all`` served at least the best simple rule, on
``new`` at least 10% above it. Quality, not speed: the training time is shown only so a
slow regime is noticed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from bench.ceilings import ODDS, ODDS_FROM_DATA, POPULARITY, ceiling, has_odds
from bench.regimes import REGIMES, SmallCatalogue, Wholesale, ensure_regime
from bench.report import table
from nbo.core.errors import QualityGateError
from nbo.data.mapping import ColumnMapping, load_mapping
from training.config import TrainingConfig
from training.pipeline import TrainResult, train
from training.served import SERVED, SIMPLE_METHODS

METRIC = "ndcg@10"
TRUTHS = ("all", "new")
# The targets: served against the best simple rule, per truth.
TARGETS = {"all": 0.0, "new": 0.10}
ORDER = (SERVED, "ranker", "als", "als_window", "als_cycles", *SIMPLE_METHODS, "stage_popularity")


@dataclass
class QualityResult:
    name: str
    policy: str
    published: bool
    seconds: float
    served: dict[str, float]
    best: dict[str, tuple[str, float]]  # truth -> (rule, figure)
    # truth -> NDCG of the regime's own odds (bench.ceilings); None: not a regime with odds.
    ceiling: dict[str, float] | None = None
    # truth -> NDCG of the odds a model could know from the data (the favourites inferred
    # from each customer's lines; bench.ceilings.ODDS_FROM_DATA); None: not computed.
    from_data: dict[str, float] | None = None

    def ceiling_change(self, truth: str) -> float | None:
        return self.against_rule(self.ceiling, truth)

    def from_data_change(self, truth: str) -> float | None:
        return self.against_rule(self.from_data, truth)

    def against_rule(self, figures: dict[str, float] | None, truth: str) -> float | None:
        """``figures`` (per truth) against the best simple rule's, as a change; None
        without figures or a rule that scored."""
        rule = self.best[truth][1]
        if figures is None or rule <= 0:
            return None
        return figures[truth] / rule - 1.0

    def change(self, truth: str) -> float | None:
        rule = self.best[truth][1]
        return None if rule <= 0 else self.served[truth] / rule - 1.0

    def met(self, truth: str) -> bool:
        change = self.change(truth)
        return change is not None and change >= TARGETS[truth]


def bench_quality(seed: int, online_retail: Path) -> list[QualityResult]:
    """Train on each regime (and Online Retail when present) and print its figures."""
    data: list[tuple[str, Path, ColumnMapping, int | None]] = []
    for name in REGIMES:
        path, generated = ensure_regime(name, seed)
        how = "reused from cache" if generated is None else f"generated in {generated:.1f} s"
        print(f"  {name}: {path.name} ({how})")
        data.append((name, path, load_mapping("canonical"), seed))
    if online_retail.is_file():
        data.append(("online-retail", online_retail, load_mapping("online-retail"), None))
    else:
        print(f"  online-retail: skipped, {online_retail} not found")
    results = [_one(name, path, mapping, seed) for name, path, mapping, seed in data]
    _print_summary(results)
    return results


def _one(name: str, path: Path, mapping: ColumnMapping, seed: int | None) -> QualityResult:
    """``seed``: the regime's, to score its odds (None: not a regime)."""
    with tempfile.TemporaryDirectory(prefix="nbo-quality-") as models:
        start = time.perf_counter()
        try:
            result = train(path, mapping, Path(models), TrainingConfig())
            published = True
        except QualityGateError:
            # Never with an empty models folder; kept so the bench says so if it happens.
            result = train(path, mapping, Path(models), TrainingConfig(), publish=False)
            published = False
        seconds = time.perf_counter() - start
    outcome = _result(name, result, published, seconds)
    if seed is not None and has_odds(name):
        outcome.ceiling, outcome.from_data = _ceiling(name, seed, path, result)
    _print_data_set(outcome, result)
    return outcome


def _ceiling(
    name: str, seed: int, path: Path, result: TrainResult
) -> tuple[dict[str, float], dict[str, float] | None]:
    """The regime's odds scored on the trainer's split, and the odds a model could know
    from the data where the regime has them (else None); popularity is scored beside them
    and must equal the trainer's figure, or the two did not rank the same customers."""
    regime = REGIMES[name]()
    assert isinstance(regime, SmallCatalogue | Wholesale)
    with threadpool_limits(limits=1, user_api="blas"):
        found = ceiling(regime, seed, path, TrainingConfig())
    for truth in TRUTHS:
        ours = found.metrics[truth][POPULARITY][METRIC]
        trainers = result.metrics[truth][POPULARITY][METRIC]
        if abs(ours - trainers) > 1e-9:
            print(
                f"  WARNING: the ceiling's popularity {ours:.4f} is not the trainer's "
                f"{trainers:.4f} on {truth}: the ceiling is not on the same customers"
            )
    odds = {truth: found.metrics[truth][ODDS][METRIC] for truth in TRUTHS}
    if ODDS_FROM_DATA not in found.metrics["all"]:
        return odds, None
    return odds, {truth: found.metrics[truth][ODDS_FROM_DATA][METRIC] for truth in TRUTHS}


def _result(name: str, result: TrainResult, published: bool, seconds: float) -> QualityResult:
    metrics = result.metrics
    best = {}
    for truth in TRUTHS:
        rule = max(SIMPLE_METHODS, key=lambda m: metrics[truth][m][METRIC])
        best[truth] = (rule, metrics[truth][rule][METRIC])
    return QualityResult(
        name,
        str(result.manifest["policy"]["name"]),
        published,
        seconds,
        {truth: metrics[truth][SERVED][METRIC] for truth in TRUTHS},
        best,
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _print_data_set(outcome: QualityResult, result: TrainResult) -> None:
    cleaning = result.cleaning
    policy: dict[str, Any] = result.manifest["policy"]
    print(
        f"\n== quality: {outcome.name} ==\n"
        f"  {cleaning.rows_kept:,} lines, {cleaning.customers:,} customers, "
        f"{cleaning.items:,} items; {int(result.manifest['split']['evaluated_customers']):,} "
        f"customers evaluated; nbo train {outcome.seconds:.0f} s, "
        f"{'published' if outcome.published else 'NOT published'}"
    )
    print(f"  policy served: {policy['name']} ({policy['reason']})")
    metrics = result.metrics
    methods = [m for m in ORDER if m in metrics["all"]]
    rows = []
    for method in methods:
        row: list[object] = [method]
        for truth in TRUTHS:
            value = metrics[truth][method][METRIC]
            best = outcome.best[truth][1]
            row += [f"{value:.4f}", _percent(None if best <= 0 else value / best - 1.0)]
        rows.append(row)
    for label, odds in (
        ("odds (ceiling)", outcome.ceiling),
        ("odds from the data", outcome.from_data),
    ):
        if odds is None:
            continue
        odds_row: list[object] = [label]
        for truth in TRUTHS:
            odds_row += [f"{odds[truth]:.4f}", _percent(outcome.against_rule(odds, truth))]
        rows.append(odds_row)
    headers = ["method", f"all {METRIC}", "vs best rule", f"new {METRIC}", "vs best rule"]
    print(table(headers, rows))
    if outcome.ceiling is not None:
        print(
            "  odds (ceiling): ranked by the generator's own chances at the cutoff, as well "
            "as a model can rank without seeing the future"
        )
    if outcome.from_data is not None:
        print(
            "  odds from the data: the same with each customer's favourites inferred from "
            "their lines before the cutoff (and the week's popularity known exactly): as "
            "well as a model can rank from the data it is given"
        )
    for truth in TRUTHS:
        rule, figure = outcome.best[truth]
        target = "at least" if TARGETS[truth] == 0 else f"{TARGETS[truth]:.0%} above"
        print(
            f"  target {truth}: served {target} the best simple rule ({rule} {figure:.4f}): "
            f"{outcome.served[truth]:.4f}, {_percent(outcome.change(truth))} "
            f"{'met' if outcome.met(truth) else 'MISSED'}{_reach(outcome, truth)}"
        )


def _reach(outcome: QualityResult, truth: str) -> str:
    """What the ceiling allows: its gain over the best rule, and the share of that gain
    what is served reaches (when the odds beat the rule at all)."""
    gain = outcome.ceiling_change(truth)
    if outcome.ceiling is None or gain is None or gain <= 0:
        return ""
    rule = outcome.best[truth][1]
    reached = (outcome.served[truth] - rule) / (outcome.ceiling[truth] - rule)
    known = outcome.from_data_change(truth)
    from_data = "" if known is None else f", the odds from the data {_percent(known)}"
    return f"; the odds reach {_percent(gain)}, served makes {reached:.0%} of that gain{from_data}"


def _print_summary(results: list[QualityResult]) -> None:
    if not results:
        return
    print("\n== quality summary (NDCG@10 of what is served against the best simple rule) ==")
    rows = []
    for r in results:
        row: list[object] = [r.name, r.policy]
        for truth in TRUTHS:
            rule, figure = r.best[truth]
            row += [
                f"{r.served[truth]:.4f}",
                f"{rule} {figure:.4f}",
                f"{_percent(r.change(truth))} {'ok' if r.met(truth) else 'MISS'}",
                _percent(r.ceiling_change(truth)),
                _percent(r.from_data_change(truth)),
            ]
        row.append("yes" if r.published else "NO")
        rows.append(row)
    headers = [
        "data set",
        "policy",
        "served all",
        "best rule all",
        "target >= +0%",
        "ceiling",
        "from data",
        "served new",
        "best rule new",
        "target >= +10%",
        "ceiling",
        "from data",
        "published",
    ]
    print(table(headers, rows))
    if any(r.ceiling is not None for r in results):
        print(
            "  ceiling: the regime's own odds against the best simple rule "
            "(bench/ceilings.py): no model can be expected above it; from data: the "
            "same with the favourites inferred from the customers' lines (small catalogue)"
        )
