"""Step 5, the quality gate: a model is published only if it beats what is simpler.

With a ranker (what the service then serves), the ranker must beat the best single
method on NDCG@k against every holdout purchase; without one (data too short for a
second window), ALS must beat popularity. ``nbo train`` refuses a model that fails
(unless --force); ``nbo evaluate`` only reports the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from training.methods import Metrics

GATE_METRIC_TEMPLATE = "ndcg@{k}"
GATE_TRUTH = "all"
# The single methods the ranker must beat (the best of them) to publish.
GATE_BASELINES = ("als", "itemknn", "buy_again", "popularity", "stage_popularity")


@dataclass(frozen=True)
class QualityGate:
    """The gate's verdict: ``method`` against ``baseline`` on ``metric`` (truth ``truth``)."""

    passed: bool
    metric: str
    truth: str
    method: str
    baseline: str
    score: float
    baseline_score: float

    @property
    def comparison(self) -> str:
        """The comparison in words, e.g. "ranker ndcg@10 0.3633 beats the best single
        method, buy_again 0.3362 on the holdout"."""
        verdict = "beats" if self.passed else "does not beat"
        best = "the best single method, " if self.method == "ranker" else ""
        return (
            f"{self.method} {self.metric} {self.score:.4f} {verdict} {best}{self.baseline} "
            f"{self.baseline_score:.4f} on the holdout"
        )

    @property
    def message(self) -> str:
        """What the trainer says: the comparison, and that a failed model is not published."""
        refused = "" if self.passed else "; not published (use --force to publish anyway)"
        return f"quality gate: {self.comparison}{refused}"

    def section(self, forced: bool) -> dict[str, Any]:
        """The manifest's ``quality_gate`` section; ``forced``: published although it failed."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "truth": self.truth,
            "method": self.method,
            "baseline": self.baseline,
            self.method: self.score,
            self.baseline: self.baseline_score,
            "message": self.message,
            "forced": forced,
        }

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QualityGate:
        """The gate a manifest's ``quality_gate`` section records."""
        method, baseline = str(section["method"]), str(section["baseline"])
        return cls(
            passed=bool(section["passed"]),
            metric=str(section["metric"]),
            truth=str(section["truth"]),
            method=method,
            baseline=baseline,
            score=float(section[method]),
            baseline_score=float(section[baseline]),
        )


def quality_gate(metrics: Metrics, k: int) -> QualityGate:
    """The ranker against the best single method when there is a ranker, else ALS
    against popularity, on NDCG@k of truth ``all``."""
    metric = GATE_METRIC_TEMPLATE.format(k=k)
    scores = metrics[GATE_TRUTH]
    if "ranker" in scores:
        method = "ranker"
        rivals = [name for name in GATE_BASELINES if name in scores]
        baseline = max(rivals, key=lambda name: scores[name][metric])
    else:
        method, baseline = "als", "popularity"
    score, baseline_score = scores[method][metric], scores[baseline][metric]
    return QualityGate(
        passed=score > baseline_score,
        metric=metric,
        truth=GATE_TRUTH,
        method=method,
        baseline=baseline,
        score=score,
        baseline_score=baseline_score,
    )
