"""Step 5, the quality gate: what is served may not be worse than what serves now.

That a shop never gets offers worse than a simple rule is settled before the gate: the
candidate policy is the best of the model and the simple rules on the window before the
test window (``training.policy``). The gate judges what is served (``served``, NDCG@k
against every holdout purchase) against the version ``models/CURRENT`` points at, served
by the same decision at the same cutoff to the same customers, with the purchases a
service would have been posted since it was trained (``training.served.model_metrics``).

A current model that never saw the holdout is served on it. One trained on purchases
past the cutoff (retrained nightly, or on the same data) saw the holdout and cannot be
scored on it: the gate then compares with the figure its manifest records (``served``
NDCG@k, truth ``all``, on its own holdout window). On the same data file and cutoff that
figure was measured on this very holdout, so it compares exactly; on another window a
new model may be up to ``TrainingConfig.gate_tolerance`` worse before it is refused: a
healthy nightly retrain's figure moves by that much (``training.config.RECORDED_TOLERANCE``
says what was measured), a broken model's falls far past it. A current model this nbo
cannot load, or whose manifest records no comparable figure, is not compared: the gate
records ``passed`` null ("not compared"), never true, and publishes. ``nbo train``
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

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbo.catalog.terms import Catalog
from nbo.core.errors import ArtifactError, NboError, QualityGateError
from nbo.core.vocabulary import iso_utc
from nbo.models.artifacts import (
    CURRENT,
    MANIFEST,
    current_version,
    has_current,
    library_versions,
    trained_until,
)
from nbo.models.served import load_serving_model
from training.config import TrainingConfig
from training.load import TrainingData
from training.methods import Metrics
from training.served import SERVED, Cutoff, model_metrics, posted_since

GATE_METRIC_TEMPLATE = "ndcg@{k}"
GATE_TRUTH = "all"
# The libraries whose upgrade makes a rerun on CURRENT's own data and config another
# model (nbo itself, and what fits and scores it): ``Unchanged`` only when all match, so
# a retrain after an upgrade publishes without --force. pandas, scipy and pyarrow only
# read and hold the data, which the data section's fingerprint and counts already cover.
UNCHANGED_LIBRARIES = ("nbo", "implicit", "lightgbm", "scikit-learn", "numpy")
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
    # ``score`` is the figure the current model's manifest records for its own holdout
    # (it saw this one): compared within ``tolerance`` (relative; 0: the same holdout).
    recorded: bool = False
    tolerance: float = 0.0


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


class StaleData(QualityGateError):
    """The data ends before the current model's did: publishing would replace a newer
    model with an older one (a file from last month given by mistake)."""


class Unchanged(NboError):
    """The data and config are the current model's own: publishing would add a twin
    version (and PREVIOUS would name it, so a rollback rolled back to the same model).
    Not a failure: a night with no new purchases has nothing to publish."""


def check_against_current(
    models_dir: Path, data: TrainingData, config: TrainingConfig, catalog: Catalog
) -> None:
    """Right after the data is read, before minutes of fitting: ``StaleData`` when the
    data ends before the current model's did, ``Unchanged`` when the data (file, how it
    was read and cleaned, the customers left out), the config and the catalogue are the
    ones the current model was trained on (the same customers left out, by a digest of
    their ids, not their count) by the same versions of nbo and its key libraries
    (``UNCHANGED_LIBRARIES``). Nothing when there is no readable current
    model (the gate says what it makes of that)."""
    try:
        version = published_current(models_dir)
    except ArtifactError:
        return
    if version is None:
        return
    try:
        manifest = json.loads((models_dir / version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(manifest, dict):
        return
    until = trained_until(manifest)
    if until > data.last_s:
        raise StaleData(
            f"quality gate: the data ends {iso_utc(data.last_s)}, before the data of the "
            f"current model {version}, which ends {iso_utc(until)}: publishing would "
            "replace a newer model with an older one (use --force to publish anyway)"
        )
    same = (
        manifest.get("data") == _as_json(data.section())
        and manifest.get("config") == _as_json(config.model_dump())
        and (manifest.get(SERVED) or {}).get("catalog_fingerprint") == catalog.fingerprint
        and _key_libraries(manifest.get("libraries")) == _key_libraries(library_versions())
    )
    if same:
        raise Unchanged(
            f"unchanged: CURRENT already is this data and config ({version}); nothing "
            "published (use --force to publish a new version anyway)"
        )


def percent(fraction: float) -> str:
    """A relative tolerance as the gate's messages give it: 0.05 -> "5%", 0.035 -> "3.5%"."""
    return f"{fraction * 100:.3g}%"


def _key_libraries(libraries: object) -> dict[str, object]:
    """The ``UNCHANGED_LIBRARIES`` versions of a manifest's ``libraries`` section."""
    found = libraries if isinstance(libraries, dict) else {}
    return {name: found.get(name) for name in UNCHANGED_LIBRARIES}


def _as_json(value: object) -> object:
    """``value`` as a manifest reads back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value))


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
        saw = (
            f"the current model {version} learned purchases until "
            f"{iso_utc(model.trained_until_s)}, past the cutoff {iso_utc(at.split.cutoff)}: "
            "it saw the holdout"
        )
        return recorded_current(
            version, model.manifest, metric, data, at, saw, config.gate_tolerance
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


def recorded_current(
    version: str,
    manifest: Mapping[str, Any],
    metric: str,
    data: TrainingData,
    at: Cutoff,
    saw: str,
    tolerance: float,
) -> Current:
    """The current model by the served figure its manifest records, for a model that saw
    this holdout (``saw`` says so): exact when it was measured on the same data file,
    the same lines kept, at the same cutoff, else within ``tolerance`` (relative); not
    compared (score None) when the manifest records no figure on ``metric``."""
    try:
        figures = manifest["metrics"][GATE_TRUTH][SERVED]
        score = float(figures[metric]) if figures.get("customers") else None
        split = manifest["split"]
        cutoff, days = str(split["cutoff"]), int(split["holdout_days"])
    except (KeyError, TypeError, ValueError):
        score = None
    if score is None:
        return Current(
            version,
            None,
            f"{saw}, and its manifest records no served {metric} to compare with",
        )
    # The same holdout: the same file, the same lines kept (no customer erased or
    # withdrawn since), the same cutoff.
    recorded_data = manifest.get("data", {})
    same = (
        recorded_data.get("sha256") == data.sha256
        and recorded_data.get("rows_kept") == data.cleaning.rows_kept
        and recorded_data.get("erased_digest") == data.erased_digest
        and recorded_data.get("withdrawn_digest") == data.withdrawn_digest
        and cutoff == iso_utc(at.split.cutoff)
    )
    window = f"its own holdout, {days} days from {cutoff}"
    if same:
        note = (
            f"{saw}, so it is compared by the figure its manifest records on {window}: "
            "the same data file and cutoff, compared exactly"
        )
    else:
        note = (
            f"{saw}, so it is compared by the figure its manifest records on {window}: "
            f"another window, so up to {percent(tolerance)} worse passes"
        )
    return Current(
        version,
        score,
        note,
        recorded=True,
        tolerance=0.0 if same else tolerance,
    )


@dataclass(frozen=True)
class QualityGate:
    """The gate's verdict: what is served (its ``policy``) against the ``current``
    version on ``metric`` (truth ``truth``). ``passed`` None: nothing was compared (no
    current model, one that cannot be loaded or records no figure, or nobody evaluated),
    so the gate neither passed nor failed; only False refuses."""

    passed: bool | None
    metric: str
    truth: str
    policy: str
    score: float | None  # None: not evaluated
    current: str | None = None  # the version compared with
    current_score: float | None = None
    note: str = ""  # how the current model was scored, or why it was not
    forced: bool = False  # failed, and published all the same (--force)
    # ``current_score`` is the current model's recorded figure on its own holdout
    # (``Current.recorded``), and how much worse (relative) passes.
    recorded: bool = False
    tolerance: float = 0.0

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
        if not self.recorded:
            return (
                f"{served} {verdict} the current model {self.current}, "
                f"{self.current_score:.4f}, on the same holdout"
            )
        margin = f" by more than {percent(self.tolerance)}" if self.tolerance else ""
        verdict = f"is {'not ' if self.passed else ''}worse{margin} than"
        return (
            f"{served} {verdict} the current model {self.current}, "
            f"{self.current_score:.4f} as its manifest records ({self.note})"
        )

    @property
    def message(self) -> str:
        """What the trainer says: the comparison, and what became of a failed model: not
        published, or published because of --force."""
        if not self.evaluated:
            return f"quality gate: {self.comparison}; published unevaluated"
        if self.passed is not False:
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
            "recorded": self.recorded,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QualityGate:
        """The gate a manifest's ``quality_gate`` section records."""
        current = section.get("current")
        version = section.get("current_version")
        score = section.get(SERVED)
        passed = section["passed"]
        return cls(
            passed=None if passed is None else bool(passed),
            metric=str(section["metric"]),
            truth=str(section["truth"]),
            policy=str(section["policy"]),
            score=None if score is None else float(score),
            current=None if version is None else str(version),
            current_score=None if current is None else float(current),
            note=str(section.get("note", "")),
            forced=bool(section.get("forced", False)),
            recorded=bool(section.get("recorded", False)),
            tolerance=float(section.get("tolerance", 0.0)),
        )


def quality_gate(metrics: Metrics, k: int, policy: str, current: Current) -> QualityGate:
    """What is served against the current model, on NDCG@k of truth ``all``: passed
    unless worse (beyond ``current.tolerance`` of a recorded figure); not compared
    (``passed`` None) when the current model has no figure or nobody was evaluated (no
    figure to be worse by); failed when which model serves now is unknown
    (``Current.unknown``)."""
    metric = GATE_METRIC_TEMPLATE.format(k=k)
    served = metrics[GATE_TRUTH][SERVED]
    if not served.get("customers"):
        return QualityGate(
            passed=False if current.unknown else None,
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
    passed: bool | None
    if current.unknown:
        passed = False
    elif current.score is None:
        passed = None
    else:
        passed = score >= current.score * (1.0 - current.tolerance)
    return QualityGate(
        passed=passed,
        metric=metric,
        truth=GATE_TRUTH,
        policy=policy,
        score=score,
        current=current.version,
        current_score=current.score,
        note=current.note,
        recorded=current.recorded,
        tolerance=current.tolerance,
    )
