"""An experiment's outcomes per variant, from the events in the store.

Exposed: customers with at least one recorded offer impression tagged with the
experiment (API answers with ``record=true``, ``nbo batch --record``). Converted: exposed
customers with a conversion event after their first exposure and before the experiment's
end; their revenue is the sum of those conversions' revenue (``ATTRIBUTION`` says what
counts in the report's own words). Assigned: customers with any event tagged with the
experiment (an answer that was not recorded leaves no trace, so "assigned" counts the
customers the experiment is known to have reached), each once: in the variant of their
first exposure, or, never exposed, of their first tagged event (so the variants'
assigned add up to the customers, even when a reweight tagged some with two).

A customer is counted in the variant of their first exposure; one tagged with two
variants (the salt or the weights changed during the run) is reported in a warning.

Each recorded impression names the model version that decided it, so a variant's results
are also broken down by model version (``ModelOutcome``): a customer counts under the
version of their first exposure, with their conversions. A variant whose impressions
came from more than one version (CURRENT moved during the run, a rollback, a variant's
model changed in the experiments file) is flagged and warned about: its figures mix
models. Impressions recorded before nbo kept the version (or posted without it) count
under an unknown version (None; "unknown" in the report's words).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nbo.core.vocabulary import iso_utc
from nbo.data.events import IMPRESSION
from nbo.experiments.definitions import Experiment
from nbo.experiments.stats import VariantOutcome, experiment_report
from nbo.store.base import ModelShown, Store

ATTRIBUTION = (
    "A customer is exposed by their first offer impression tagged with this experiment "
    "inside the window, and counts in that impression's variant. Every offer_conversion "
    "event of an exposed customer from that first impression to the end of the window "
    "counts as theirs, with its revenue, whatever experiment, variant, item or offer it "
    "names or whether it names any; there is no other attribution window (a conversion "
    "a minute or a month after the exposure counts alike, one after the end does not). "
    "Posted purchases are not conversions and do not count."
)
"""What a conversion must be to count for an arm, in the report's own words."""


UNKNOWN_MODEL = "unknown"
"""How the report names the model version of impressions that do not say it."""


@dataclass(frozen=True)
class ModelOutcome:
    """What one model version did in one variant: its impressions and the customers
    shown them, and the variant's exposed customers whose first exposure it decided
    (they add up to the variant's), with their conversions and revenue."""

    model_version: str | None  # None: not known (recorded before nbo kept it)
    impressions: int
    customers: int  # customers shown at least one of its impressions in the variant
    exposed: int
    converted: int
    revenue: float
    first_at: int  # its first and last impression in the variant (unix seconds)
    last_at: int


@dataclass(frozen=True)
class Outcomes:
    variants: list[VariantOutcome]
    warnings: list[str]
    # Per variant name, its model versions in the order they first decided an impression.
    by_model: dict[str, list[ModelOutcome]] = field(default_factory=dict)


def accepted_until(now_s: int, skew_s: int = 0) -> int:
    """The latest time the service accepts an event at, at ``now_s``: the clock plus
    ``skew_s`` (``NBO_CLOCK_SKEW_SECONDS``: clients' clocks run a little ahead). A report
    counts the events up to it (and to the experiment's end), as the service took them."""
    return now_s + skew_s


def experiment_outcomes(
    store: Store, experiment: Experiment, now_s: int, skew_s: int = 0
) -> Outcomes:
    # The run: from the start to the end, or while it runs up to the latest time an
    # event is accepted at (the window ``report_for`` states).
    latest = accepted_until(now_s, skew_s)
    end = experiment.end_s if experiment.end_s is not None else latest + 1
    end = min(end, latest + 1)
    log = store.experiment_log(experiment.name, experiment.start_s, max(end, experiment.start_s))
    first_tagged: dict[str, tuple[int, str]] = {}
    first_exposure: dict[str, tuple[int, str]] = {}
    variants_of: dict[str, set[str]] = defaultdict(set)
    for event in log.tagged:
        tag = event.variant or ""
        tagged = first_tagged.get(event.customer_id)
        if tagged is None or (event.first_at, tag) < tagged:
            first_tagged[event.customer_id] = (event.first_at, tag)
        if event.type == IMPRESSION:
            variants_of[event.customer_id].add(tag)
            seen = first_exposure.get(event.customer_id)
            if seen is None or (event.first_at, tag) < seen:
                first_exposure[event.customer_id] = (event.first_at, tag)
    revenue: dict[str, float] = defaultdict(float)
    converted: set[str] = set()
    for customer_id, when, amount in log.conversions:
        exposure = first_exposure.get(customer_id)
        if exposure is not None and exposure[0] <= when < end:
            converted.add(customer_id)
            revenue[customer_id] += amount
    exposed: dict[str, list[str]] = defaultdict(list)
    for customer_id, (_, tag) in sorted(first_exposure.items()):
        exposed[tag].append(customer_id)
    # Each customer once: the variant they are counted in when exposed, else their first.
    assigned: dict[str, int] = defaultdict(int)
    for customer_id, (_, tag) in first_tagged.items():
        assigned[first_exposure.get(customer_id, (0, tag))[1]] += 1

    warnings = []
    both = sum(1 for names in variants_of.values() if len(names) > 1)
    if both:
        warnings.append(
            f"{both} customers were exposed in more than one variant (the salt or the "
            "weights changed during the run?); each counts in the variant of their first "
            "exposure"
        )
    configured = {v.name for v in experiment.variants}
    unknown = sorted(set(exposed) - configured)
    if unknown:
        warnings.append(
            f"events name variants the experiments file does not: {', '.join(unknown)} "
            "(left out of the report)"
        )
    by_model = _by_model(log.shown, first_exposure, converted, revenue)
    for variant in experiment.variants:
        versions = by_model.get(variant.name, [])
        if len(versions) > 1:
            warnings.append(_mixed_models_warning(variant.name, versions))
    outcomes = []
    for variant in experiment.variants:
        customers = exposed.get(variant.name, [])
        outcomes.append(
            VariantOutcome(
                name=variant.name,
                control=variant.control,
                weight=variant.weight,
                assigned=assigned.get(variant.name, 0),
                exposed=len(customers),
                converted=sum(1 for c in customers if c in converted),
                revenue=np.array([revenue.get(c, 0.0) for c in customers], dtype=np.float64),
            )
        )
    return Outcomes(outcomes, warnings, by_model)


def _version_key(version: str | None) -> tuple[bool, str]:
    """Sorts an unknown version (None) first, then by name."""
    return (version is not None, version or "")


def _by_model(
    shown: list[ModelShown],
    first_exposure: dict[str, tuple[int, str]],
    converted: set[str],
    revenue: dict[str, float],
) -> dict[str, list[ModelOutcome]]:
    """Each variant's outcomes per model version (``ModelOutcome``). A customer's exposure
    is credited to the version of their first impression in the variant they count in
    (of two at the same second, the first by name)."""
    impressions: dict[tuple[str, str | None], int] = defaultdict(int)
    customers: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    span: dict[tuple[str, str | None], tuple[int, int]] = {}
    first_model: dict[str, tuple[int, tuple[bool, str], str | None]] = {}
    for row in shown:
        tag = row.variant or ""
        key = (tag, row.model_version)
        impressions[key] += row.impressions
        customers[key].add(row.customer_id)
        low, high = span.get(key, (row.first_at, row.last_at))
        span[key] = (min(low, row.first_at), max(high, row.last_at))
        exposure = first_exposure.get(row.customer_id)
        if exposure is None or exposure[1] != tag:
            continue
        candidate = (row.first_at, _version_key(row.model_version), row.model_version)
        seen = first_model.get(row.customer_id)
        if seen is None or candidate[:2] < seen[:2]:
            first_model[row.customer_id] = candidate
    exposed: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for customer_id, (_, _, version) in sorted(first_model.items()):
        exposed[(first_exposure[customer_id][1], version)].append(customer_id)
    by_model: dict[str, list[ModelOutcome]] = defaultdict(list)
    for key in sorted(impressions, key=lambda k: (k[0], span[k][0], _version_key(k[1]))):
        tag, version = key
        who = exposed.get(key, [])
        by_model[tag].append(
            ModelOutcome(
                model_version=version,
                impressions=impressions[key],
                customers=len(customers[key]),
                exposed=len(who),
                converted=sum(1 for c in who if c in converted),
                revenue=math.fsum(revenue.get(c, 0.0) for c in who),
                first_at=span[key][0],
                last_at=span[key][1],
            )
        )
    return dict(by_model)


def _mixed_models_warning(variant: str, versions: list[ModelOutcome]) -> str:
    """The warning for a variant whose impressions came from more than one model version:
    each version with its impressions and when, oldest first."""
    parts = ", ".join(
        f"{one.model_version or UNKNOWN_MODEL} ({one.impressions:,} "
        f"impression{'' if one.impressions == 1 else 's'}, "
        f"{iso_utc(one.first_at)} to {iso_utc(one.last_at)})"
        for one in versions
    )
    unknown = any(one.model_version is None for one in versions)
    why = (
        f"; {UNKNOWN_MODEL}: recorded before nbo kept the model version, or posted without it"
        if unknown
        else ""
    )
    return (
        f"{variant}: its impressions came from {len(versions)} model versions: {parts}{why}. "
        "The model changed during the run (CURRENT moved, a rollback, the variant's model "
        "edited in the experiments file?): the variant's figures mix them; see its "
        "results per model version"
    )


def _same_model_warning(
    experiment: Experiment, by_model: dict[str, list[ModelOutcome]]
) -> str | None:
    """The warning for model variants whose impressions all came from the same model
    version(s): the experiment compared a model with itself. The usual way there: a
    retraining moved CURRENT (and so ``production``) to the new version, which the
    ``candidate`` alias names too. The control is left out: it answers with the current
    model's version, non-personalized, by design."""
    served: dict[frozenset[str], list[str]] = defaultdict(list)
    for variant in experiment.variants:
        if variant.control:
            continue
        versions = frozenset(
            one.model_version
            for one in by_model.get(variant.name, [])
            if one.model_version is not None
        )
        if versions:
            served[versions].append(variant.name)
    for versions, variants in served.items():
        if len(variants) > 1:
            names = ", ".join(sorted(versions))
            models = ", ".join(
                f"{v.name}: {v.model}" for v in experiment.variants if v.name in variants
            )
            return (
                f"{' and '.join(variants)} were served by the same model version ({names}; "
                f"{models}): the experiment compares a model with itself, and any difference "
                "between them is chance. Did a retraining move CURRENT, and with it "
                "production, to the version the other alias names? Point each alias at its "
                "version (nbo models --alias) and start a new experiment"
            )
    return None


def model_outcome_report(one: ModelOutcome) -> dict[str, Any]:
    """One model version's figures in a variant, as the report's JSON gives them."""
    return {
        "model_version": one.model_version,
        "impressions": one.impressions,
        "customers": one.customers,
        "exposed": one.exposed,
        "converted": one.converted,
        "conversion_rate": one.converted / one.exposed if one.exposed else None,
        "revenue": one.revenue,
        "revenue_per_exposed": one.revenue / one.exposed if one.exposed else None,
        "first_shown": iso_utc(one.first_at),
        "last_shown": iso_utc(one.last_at),
    }


def report_for(store: Store, experiment: Experiment, now_s: int, skew_s: int = 0) -> dict[str, Any]:
    """The experiment's report (``nbo.experiments.stats.experiment_report``) from the
    store's events as of ``now_s``, with the experiment's dates and variants' models.
    ``skew_s``: how far after the clock the service accepts an event's time
    (``NBO_CLOCK_SKEW_SECONDS``): such events are counted too, as the service took them."""
    outcomes = experiment_outcomes(store, experiment, now_s, skew_s)
    report = experiment_report(experiment.name, outcomes.variants, baseline=experiment.baseline)
    report["warnings"] = [*report["warnings"], *outcomes.warnings]
    models = {v.name: v.model for v in experiment.variants}
    for variant in report["variants"]:
        variant["model"] = models.get(variant["name"])
        versions = outcomes.by_model.get(variant["name"], [])
        # The model versions that decided its impressions (null: not known), and whether
        # there were several: the model changed under the variant.
        variant["by_model_version"] = [model_outcome_report(one) for one in versions]
        variant["mixed_model_versions"] = len(versions) > 1
    same = _same_model_warning(experiment, outcomes.by_model)
    if same is not None:
        report["warnings"].append(same)
    report["start"] = iso_utc(experiment.start_s)
    report["end"] = None if experiment.end_s is None else iso_utc(experiment.end_s)
    report["active"] = experiment.active(now_s)
    report["status"] = experiment.status(now_s)
    report["as_of"] = iso_utc(now_s)
    report["attribution"] = ATTRIBUTION
    # The events counted: from the start to the end, or while it runs to the latest time
    # the service accepts an event at (nothing before the start: the window is empty
    # then).
    latest = accepted_until(now_s, skew_s)
    last = latest if experiment.end_s is None else min(experiment.end_s, latest)
    report["window"] = {
        "start": iso_utc(experiment.start_s),
        "end": iso_utc(max(last, experiment.start_s)),
    }
    return report
