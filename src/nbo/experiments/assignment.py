"""Which model answers a customer: the current one, or their experiment variant's.

A customer is in at most one experiment at a time: experiments of one file may not run
at the same time (``load_experiments`` refuses a file where they do), and should two
ever be active, the first in the file wins. Customers without
consent to personalization stay out of every experiment and get the current model's
non-personalized answer, as they would without experiments. The control variant is
answered with non-personalized offers (popular items, the catalogue's incentives), with
every rule still applied.

API calls and batch generation both ask ``ServingModels.assign``, so a customer gets the
same variant from either, across processes and restarts, with nothing stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from nbo.core.erased import ErasedList, erased_among
from nbo.core.errors import ArtifactError
from nbo.experiments.definitions import NO_EXPERIMENTS, ExperimentError, Experiments
from nbo.models.registry import resolve
from nbo.models.served import ServingModel, load_serving_model

# The decision's modules register their kernels' warm-up (``nbo.models.warmup``) when
# imported: imported here, every load of the models to serve (the service's master
# before it forks, its workers, ``nbo batch``) compiles them, whatever was imported first.
from nbo.offers import arbitration, profiles  # noqa: F401
from nbo.offers.state import Consent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """The model to answer with, and the experiment and variant to name in the answer."""

    model: ServingModel
    experiment: str | None = None
    variant: str | None = None
    # False for the control, and for a customer without consent to personalization:
    # non-personalized offers.
    personalize: bool = True


@dataclass(frozen=True)
class ServingModels:
    """The current model and every model an experiment's variants name, loaded together
    and swapped as one reference."""

    current: ServingModel
    experiments: Experiments = NO_EXPERIMENTS
    # model reference (alias or version, as written in the experiments file) -> model
    by_reference: dict[str, ServingModel] = field(default_factory=dict)

    def assign(self, customer_id: str, consent: Consent, now_s: int) -> Assignment:
        if not consent.personalization:
            return Assignment(self.current, personalize=False)
        for experiment in self.experiments.active(now_s):
            variant = experiment.assign(customer_id)
            if variant.control or variant.model is None:
                return Assignment(self.current, experiment.name, variant.name, personalize=False)
            return Assignment(self.by_reference[variant.model], experiment.name, variant.name)
        return Assignment(self.current)

    @property
    def signature(self) -> str:
        """What these models serve, as one short string: the current version, the
        experiments and the version each experiment's model reference (an alias, or a
        version) resolved to.
        Equal signatures answer every customer with the same model; workers compare
        theirs after a reload, as an alias moved under them changes no current version."""
        served = [
            self.current.version,
            sorted((r, m.version) for r, m in self.by_reference.items()),
            repr(self.experiments.experiments),  # the experiments file as it was read
        ]
        return hashlib.sha256(json.dumps(served).encode()).hexdigest()[:16]

    def models(self) -> list[ServingModel]:
        """Every distinct model loaded (the current one first)."""
        seen = {self.current.version: self.current}
        for model in self.by_reference.values():
            seen.setdefault(model.version, model)
        return list(seen.values())

    def forget(self, customer_id: str) -> bool:
        """Erase a customer from every loaded model; True when any knew them."""
        return any([model.forget(customer_id) for model in self.models()])

    def forget_erased(self, erased: ErasedList | Collection[str]) -> int:
        """Erase from every loaded model each of its customers ``erased`` holds (the
        store's erased list: each model's customer ids hashed and tested, as the list
        keeps no id); answers how many rows were forgotten."""
        forgotten = 0
        for model in self.models():
            for customer_id in erased_among(erased, model.customers.ids.tolist()):
                forgotten += model.forget(customer_id)
        return forgotten


class ExperimentModelMissing(ArtifactError):
    """A model an experiments file names (an alias or a version) that names nothing
    published: the experiments file is what to fix, so the message names it."""


def resolve_experiment_models(models_dir: Path, experiments: Experiments) -> dict[str, str]:
    """Each model reference of the experiments (as written) -> the version it names now;
    ExperimentModelMissing naming the file, the experiment, the variant and ``model``,
    as every other experiments-file error does, for one that names nothing published."""
    resolved: dict[str, str] = {}
    for reference in sorted(experiments.models()):
        try:
            resolved[reference] = resolve(models_dir, reference)
        except ArtifactError as exc:
            experiment, variant = next(
                (e.name, v.name)
                for e in experiments.experiments
                for v in e.variants
                if v.model == reference
            )
            where = ExperimentError(
                experiments.source or "experiments", str(exc), experiment, variant, "model"
            )
            raise ExperimentModelMissing(str(where)) from None
    return resolved


def same_model_warnings(experiments: Experiments, resolved: dict[str, str]) -> list[str]:
    """One line per experiment whose model variants name one version between them
    (``resolved``: each model reference -> its version now): the test would compare a
    model with itself. A retraining moves CURRENT, and ``production`` with it, so an
    experiment of ``production`` against a ``candidate`` alias pointed at the new
    version is one; said at load, before any customer is sent its offers."""
    lines: list[str] = []
    for experiment in experiments.experiments:
        by_version: dict[str, list[str]] = {}
        for variant in experiment.variants:
            if variant.control or variant.model is None or variant.model not in resolved:
                continue
            by_version.setdefault(resolved[variant.model], []).append(
                f"{variant.name} ({variant.model})"
            )
        for version, variants in by_version.items():
            if len(variants) > 1:
                lines.append(
                    f"{experiments.source or 'experiments'}: experiment '{experiment.name}': "
                    f"variants {' and '.join(variants)} are both served by model version "
                    f"{version}: the experiment would compare a model with itself; point "
                    "each alias at its own version (nbo models --alias)"
                )
    return lines


def load_serving_models(
    models_dir: Path,
    version: str | None,
    experiments: Experiments = NO_EXPERIMENTS,
    erased: ErasedList | Collection[str] = (),
    source: str | None = None,
) -> ServingModels:
    """The current model (``version``, a version or an alias, or CURRENT when None) and
    the models the experiments name, each checked like the current one; ArtifactError
    when any cannot serve. Erased customers are removed from all of them. ``source``:
    where ``version`` was read (``NBO_MODEL_VERSION``), named when it names nothing."""
    if version is not None:
        # An alias as well as a version, as a reload and an experiments file take it.
        version = resolve(models_dir, version, source)
    current = load_serving_model(models_dir, version)
    loaded = {current.version: current}
    by_reference: dict[str, ServingModel] = {}
    for reference, resolved in resolve_experiment_models(models_dir, experiments).items():
        if resolved not in loaded:
            loaded[resolved] = load_serving_model(models_dir, resolved)
        by_reference[reference] = loaded[resolved]
    for warning in same_model_warnings(
        experiments, {r: m.version for r, m in by_reference.items()}
    ):
        log.warning("%s", warning)
    models = ServingModels(current, experiments, by_reference)
    models.forget_erased(erased)
    return models
