"""The trainer: load -> split -> fit -> evaluate -> gate -> refit -> publish.

Each step is a module of its own and hands the next a typed result; ``train`` only runs
them in order. ``nbo train`` and ``nbo evaluate`` (``publish=False``) run the same
steps, so the figures ``nbo evaluate`` shows are the ones ``nbo train`` acts on.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from nbo.catalog.loading import default_catalog
from nbo.catalog.terms import Catalog
from nbo.core.erased import ErasedList
from nbo.core.errors import QualityGateError
from nbo.data.mapping import ColumnMapping
from nbo.data.purchases import CleaningReport
from nbo.models.artifacts import lock_models_dir, remove_staging
from training.config import TrainingConfig
from training.evaluate import evaluate
from training.fit import fit_before_cutoff
from training.gate import (
    Current,
    check_against_current,
    check_current,
    quality_gate,
    score_current,
)
from training.load import load_data
from training.methods import Metrics
from training.progress import Progress, Steps
from training.publish import build_manifest, publish_model
from training.refit import refit
from training.split import time_split


@dataclass
class TrainResult:
    """A training's outcome: where it was published (None when not), its figures, and its
    manifest with the step timings added (the published manifest has none)."""

    version: str | None
    path: Path | None
    metrics: Metrics
    cleaning: CleaningReport
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    published: bool = True
    # Staging folders of trainings killed while publishing, removed under the lock.
    cleaned: list[str] = field(default_factory=list)


def train(
    data_path: Path,
    mapping: ColumnMapping,
    models_dir: Path,
    config: TrainingConfig,
    force: bool = False,
    progress: Progress | None = None,
    erased: ErasedList | Collection[str] = (),
    publish: bool = True,
    catalog: Catalog | None = None,
    withdrawn: Collection[str] = (),
) -> TrainResult:
    """Train, evaluate and publish a model; ``ModelRefused`` (a QualityGateError, with
    the training's result) if it fails the quality gate (``training.gate``: what it
    serves is worse than the current model's) and ``force`` is not set; QualityGateError
    before training when ``models/CURRENT`` names no published version and ``force`` is
    not set. Publishing holds the models folder (``ModelsDirBusy`` at once when another
    training does) and removes the staging folders killed trainings left; without
    ``force``, right after the data is read, ``StaleData`` (a QualityGateError) when it
    ends before the current model's data, ``Unchanged`` when the data, config and
    catalogue are the current model's own. ``catalog``: the offer catalogue what is
    served is evaluated under (the default catalogue when None).

    ``erased``: the service's store's erased list (or ids); every row of theirs is dropped
    right after reading (counted as ``training.load.DROP_ERASED``), so nothing of them is
    learned. ``withdrawn``: customer ids whose consent in the store withdraws
    personalization; dropped the same way (``training.load.DROP_WITHDRAWN``), so nothing
    of them is profiled or learned while the withdrawal stands.

    ``publish=False`` (``nbo evaluate``): everything is computed and reported, the quality
    gate only reports, and nothing is written (``version`` and ``path`` are None).
    """
    steps = Steps(progress)
    catalog = catalog or default_catalog()
    cleaned: list[str] = []
    with ExitStack() as held:
        if publish:
            # Held from before CURRENT is read to after the new version is published:
            # two trainings at once each gated against the CURRENT they read first.
            held.enter_context(lock_models_dir(models_dir))
            cleaned = remove_staging(models_dir, locked=True)
            if not force:
                check_current(models_dir)
        # One BLAS thread: implicit's ALS crawls with more (its own advice).
        held.enter_context(threadpool_limits(limits=1, user_api="blas"))
        data = load_data(data_path, mapping, erased, steps, withdrawn)
        if publish and not force:
            # Before minutes of fitting: older data than CURRENT's, or CURRENT's own.
            check_against_current(models_dir, data, config, catalog)
        with steps.step("time split"):
            split = time_split(data.encoded, config.holdout_days, config.suppression.days)
        fitted = fit_before_cutoff(data, split, config, steps)
        evaluation = evaluate(data, split, fitted, config, steps, catalog)
        if publish:
            with steps.step("current model (served at the cutoff)"):
                current = score_current(models_dir, data, evaluation.cutoff, config, catalog)
        else:
            current = Current(None, None, "`nbo evaluate` compares with no model")
        gate = quality_gate(evaluation.metrics, config.k, evaluation.policy.name, current)
        if publish and force and gate.passed is False:
            gate = replace(gate, forced=True)
        refused = publish and gate.passed is False and not force
        # A refused model is refitted all the same: its report is the one a published
        # model gets (the refit's cycles, stages and churn model among it), so the user
        # sees why it was refused; only publishing is skipped.
        model = refit(data, split, fitted, evaluation, config, steps)
        record = build_manifest(data, split, fitted, evaluation, model, gate, config, catalog)
        published = publish and not refused
        path = publish_model(models_dir, data, model, record, steps) if published else None
    record["timings"] = steps.timings
    result = TrainResult(
        version=None if path is None else path.name,
        path=path,
        metrics=evaluation.metrics,
        cleaning=data.cleaning,
        manifest=record,
        timings=steps.timings,
        published=published,
        cleaned=cleaned,
    )
    if refused:
        raise ModelRefused(gate.message, result)
    return result


class ModelRefused(QualityGateError):
    """The quality gate refused the model: nothing was published; ``result`` holds the
    training's figures for the report (``version`` and ``path`` None)."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result
