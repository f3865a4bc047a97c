"""Step 5, the quality gate: what is served may not be worse than what serves now.

That a shop never gets offers worse than a simple rule is settled before the gate: the
candidate policy is the best of the model and the simple rules on the window before the
test window (``training.policy``). The gate judges what is served (``served``, NDCG@k
against every holdout purchase) against the version ``models/CURRENT`` points at, served
by the same decision at the same cutoff to the same customers, with the purchases a
service would have been posted since it was trained (``training.served.model_metrics``).

Only a model that never saw the holdout can be scored on it: one trained on purchases
past the cutoff (retrained on the same data, or less than a holdout later) is not
compared, nor is one this nbo cannot load; the gate says which and passes. ``nbo train``
refuses a model worse than the current one unless --force; ``nbo evaluate`` publishes
nothing and compares with nothing.

With no ``models/CURRENT`` nothing is published yet and the gate passes. A CURRENT that
names no published version (empty, a path, unreadable, a version not in the folder) is
not taken for that: which model serves now is unknown, so ``nbo train`` refuses before
training (``check_current``), saying what is wrong with the file; --force trains and
publishes over it, and the gate records it as failed and forced, the file's problem in
its note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbo.catalog.terms import Catalog
from nbo.core.errors import ArtifactError, QualityGateError
from nbo.core.vocabulary import iso_utc
from nbo.models.artifacts import CURRENT, MANIFEST, current_version, has_current
from nbo.models.served import load_serving_model
from training.config import TrainingConfig
from training.load import TrainingData
from training.methods import Metrics
from training.served import SERVED, Cutoff, model_metrics, posted_since

GATE_METRIC_TEMPLATE = "ndcg@{k}"
GATE_TRUTH = "all"
# Why a model on data too short for a holdout has no figures: the evaluated customers are
# those who bought before the cutoff and again in the holdout, and there were none.
NOT_EVALUATED = (
    "too few customers bought in the holdout: none who bought before the cutoff bought "
    "in it, so there is nothing to judge a model by"
)


@dataclass(frozen=True)
class Current:
    """The version serving now, scored on the holdout; ``score`` None when it was not
    (``note`` says why)."""

    version: str | None
    score: float | None
    note: str
    metrics: Metrics | None = None  # its served figures, per truth
    # CURRENT is there but names no published version: the gate cannot pass.
    unknown: bool = False


def published_current(models_dir: Path) -> str | None:
    """The version ``models/CURRENT`` names; None when there is no CURRENT (nothing is
    published yet). ArtifactError naming the file when there is one that names no
    published version: empty, not a plain version name, unreadable, or a version that
    is not in the folder."""
    if not has_current(models_dir):
        return None
    version = current_version(models_dir)
    if not (models_dir / version / MANIFEST).is_file():
        raise ArtifactError(
            f"{models_dir / CURRENT} names {version}, which is not a model in {models_dir}"
        )
    return version


def check_current(models_dir: Path) -> None:
    """Before minutes of training: QualityGateError when ``models/CURRENT`` names no
    published version, so the gate could compare with nothing and publishing would
    replace the file unseen (``nbo train`` without --force)."""
    try:
        published_current(models_dir)
    except ArtifactError as exc:
        raise QualityGateError(
            f"quality gate: {exc}: which model serves now is unknown, so nothing can be "
            f"compared; write the serving version in {CURRENT}, remove the file, or use "
            "--force to publish over it"
        ) from None


def score_current(
    models_dir: Path, data: TrainingData, at: Cutoff, config: TrainingConfig, catalog: Catalog
) -> Current:
    """The current model of ``models_dir`` served at the cutoff ``at`` (when it can be)."""
    metric = GATE_METRIC_TEMPLATE.format(k=config.k)
    try:
        version = published_current(models_dir)
    except ArtifactError as exc:
        note = (
            f"{exc}: which model serves now is unknown (publishing points {CURRENT} at "
            "the new version)"
        )
        return Current(None, None, note, unknown=True)
    if version is None:
        return Current(None, None, f"no model is published in {models_dir} yet")
    try:
        model = load_serving_model(models_dir, version, compiled=False)
    except ArtifactError as exc:
        return Current(version, None, f"the current model {version} cannot be loaded ({exc})")
    if model.trained_until_s >= at.cutoff_s:
        return Current(
            version,
            None,
            f"the current model {version} learned purchases until "
            f"{iso_utc(model.trained_until_s)}, "
            f"past the cutoff {iso_utc(at.split.cutoff)}: it saw the holdout, so it "
            "cannot be scored on it",
        )
    ids = at.split.train.customers.ids[at.customers].tolist()
    recent = posted_since(data.purchases, ids, model.trained_until_s, at.cutoff_s)
    metrics = model_metrics(model, at, config, catalog, recent)
    return Current(
        version,
        metrics[GATE_TRUTH][SERVED][metric],
        "served at the same cutoff to the same customers, with the purchases since it "
        "was trained posted",
        metrics,
    )


@dataclass(frozen=True)
class QualityGate:
    """The gate's verdict: what is served (its ``policy``) against the ``current``
    version on ``metric`` (truth ``truth``)."""

    passed: bool
    metric: str
    truth: str
    policy: str
    score: float | None  # None: not evaluated
    current: str | None = None  # the version compared with
    current_score: float | None = None
    note: str = ""  # how the current model was scored, or why it was not
    forced: bool = False  # failed, and published all the same (--force)

    @property
    def evaluated(self) -> bool:
        """Whether anyone was evaluated: a shop with too little data for a holdout still
        gets a model, published unevaluated, and the gate says so."""
        return self.score is not None

    @property
    def comparison(self) -> str:
        """The comparison in words, e.g. "served ndcg@10 0.3012 (policy ranker) is not
        worse than the current model 2026...-ab12cd34, 0.2950, on the same holdout"."""
        if self.score is None:
            return f"served {self.metric} not evaluated (policy {self.policy}): {NOT_EVALUATED}"
        served = f"served {self.metric} {self.score:.4f} (policy {self.policy})"
        if self.current_score is None:
            return f"{served}; not compared with a current model: {self.note}"
        verdict = "is not worse than" if self.passed else "is worse than"
        return (
            f"{served} {verdict} the current model {self.current}, "
            f"{self.current_score:.4f}, on the same holdout"
        )

    @property
    def message(self) -> str:
        """What the trainer says: the comparison, and what became of a failed model: not
        published, or published because of --force."""
        if not self.evaluated:
            return f"quality gate: {self.comparison}; published unevaluated"
        if self.passed:
            return f"quality gate: {self.comparison}"
        if self.forced:
            return f"quality gate: {self.comparison}: published because of --force"
        return f"quality gate: {self.comparison}; not published (use --force to publish anyway)"

    def section(self) -> dict[str, Any]:
        """The manifest's ``quality_gate`` section (``forced``: published although it
        failed)."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "truth": self.truth,
            "method": SERVED,
            "policy": self.policy,
            "evaluated": self.evaluated,
            SERVED: self.score,
            "current_version": self.current,
            "current": self.current_score,
            "note": self.note,
            "message": self.message,
            "forced": self.forced,
        }

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QualityGate:
        """The gate a manifest's ``quality_gate`` section records."""
        current = section.get("current")
        version = section.get("current_version")
        score = section.get(SERVED)
        return cls(
            passed=bool(section["passed"]),
            metric=str(section["metric"]),
            truth=str(section["truth"]),
            policy=str(section["policy"]),
            score=None if score is None else float(score),
            current=None if version is None else str(version),
            current_score=None if current is None else float(current),
            note=str(section.get("note", "")),
            forced=bool(section.get("forced", False)),
        )


def quality_gate(metrics: Metrics, k: int, policy: str, current: Current) -> QualityGate:
    """What is served against the current model, on NDCG@k of truth ``all``: passed
    unless worse (and when the current model could not be scored); passed, not
    evaluated, when nobody was evaluated (no figure to be worse by); failed when which
    model serves now is unknown (``Current.unknown``)."""
    metric = GATE_METRIC_TEMPLATE.format(k=k)
    served = metrics[GATE_TRUTH][SERVED]
    if not served.get("customers"):
        return QualityGate(
            passed=not current.unknown,
            metric=metric,
            truth=GATE_TRUTH,
            policy=policy,
            score=None,
            current=current.version,
            note=current.note
            if current.unknown
            else f"not compared with a current model: {NOT_EVALUATED}",
        )
    score = served[metric]
    return QualityGate(
        passed=not current.unknown and (current.score is None or score >= current.score),
        metric=metric,
        truth=GATE_TRUTH,
        policy=policy,
        score=score,
        current=current.version,
        current_score=current.score,
        note=current.note,
    )
