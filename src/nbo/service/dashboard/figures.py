"""What the dashboard's pages show, as plain data: read through the runtime, the store,
the models and the experiments like the API's routes, so a page and the API answer the
same for the same model and clock.

Nothing here draws (``plots``) or writes HTML (the templates); every function is a
plain ``def`` the routes run in the thread pool, through the page cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from nbo.catalog.terms import Catalog
from nbo.core.errors import ArtifactError
from nbo.core.vocabulary import CHANNELS, DAY, STAGES, iso_utc
from nbo.experiments.assignment import ServingModels
from nbo.experiments.outcomes import accepted_until
from nbo.models.artifacts import MANIFEST, current_or_problem, list_versions
from nbo.models.registry import aliases_with_current
from nbo.models.served import ServingModel
from nbo.runtime.decide import everyone, profiles_now
from nbo.store.base import Store

# Customers profiled per call: bounded memory for any number of customers.
PROFILE_CHUNK = 5000
# The churn-risk histogram's bins: tenths of a probability.
RISK_BINS = np.linspace(0.0, 1.0, 11)
# The metrics the quality tables show, in this order, when the manifest has them.
QUALITY_METRICS = ("ndcg", "precision", "recall", "map")
# Methods the trainer evaluates that serve nothing on their own: shown after the others.
SERVED = "served"
# The figure of a method scored on no customer, as the trainer's summary and report show
# it: not evaluated, not zero.
NOT_EVALUATED = "–"


# --- overview -------------------------------------------------------------------------


@dataclass(frozen=True)
class StageMix:
    """Every customer's stage and churn risk now, as ``GET /v1/customers/{id}`` answers
    them (customers without consent to personalization count in the stage the API gives
    them, and as unprofiled)."""

    customers: int
    stages: dict[str, int]
    unprofiled: int
    risk_counts: list[int]  # per RISK_BINS bin, of the customers with a churn risk
    with_risk: int
    mean_risk: float | None
    median_risk: float | None

    @property
    def risk_bins(self) -> list[tuple[float, float, int]]:
        return [
            (float(RISK_BINS[n]), float(RISK_BINS[n + 1]), count)
            for n, count in enumerate(self.risk_counts)
        ]


def stage_mix(
    model: ServingModel,
    store: Store,
    now_s: int,
    max_posted_lines: int | None,
    clock_skew_s: int = 0,
) -> StageMix:
    """The stage and churn risk of every customer ``runtime.everyone`` lists, profiled in
    chunks with ``runtime.profiles_now`` (what the profile route answers)."""
    customers = everyone(model, store)
    stages: dict[str, int] = dict.fromkeys(STAGES, 0)
    risks: list[float] = []
    unprofiled = 0
    for start in range(0, len(customers), PROFILE_CHUNK):
        chunk = customers[start : start + PROFILE_CHUNK]
        for profile in profiles_now(model, store, chunk, now_s, max_posted_lines, clock_skew_s):
            stages[profile.stage] = stages.get(profile.stage, 0) + 1
            unprofiled += not profile.profiled
            if profile.churn_risk is not None:
                risks.append(profile.churn_risk)
    values = np.asarray(risks, dtype=np.float64)
    counts, _ = np.histogram(values, bins=RISK_BINS)
    return StageMix(
        customers=len(customers),
        stages=stages,
        unprofiled=unprofiled,
        risk_counts=[int(c) for c in counts],
        with_risk=len(values),
        mean_risk=float(values.mean()) if len(values) else None,
        median_risk=float(np.median(values)) if len(values) else None,
    )


@dataclass(frozen=True)
class QualityTable:
    """One truth's holdout figures per method, as the trainer measured them."""

    truth: str
    metrics: list[str]  # column names, e.g. ndcg@10
    # method, values, customers; a method scored on no customer has no values (None,
    # shown "–": not evaluated), not the zeros its manifest holds.
    rows: list[tuple[str, list[float | None], int | None]]
    best: dict[str, float]  # per column, the best value (to mark it)

    @property
    def evaluated(self) -> bool:
        """Whether any method of this truth was scored on someone."""
        return any(scored(customers) for _, _, customers in self.rows)


def quality_tables(manifest: Mapping[str, Any]) -> list[QualityTable]:
    """The manifest's ``metrics``, one table per truth (``all``, ``new``): ``served``
    first when the trainer measured it, then the methods as the manifest lists them."""
    tables = []
    for truth, methods in (manifest.get("metrics") or {}).items():
        if not isinstance(methods, Mapping) or not methods:
            continue
        rows_in = [(name, m) for name, m in methods.items() if isinstance(m, Mapping)]
        if not rows_in or not any(_at_k(m) for _, m in rows_in):
            continue
        columns = _columns(m for _, m in rows_in)
        rows_in.sort(key=lambda row: row[0] != SERVED)
        rows = []
        for name, m in rows_in:
            customers = _count(m.get("customers"))
            values = [_number(m.get(c)) if scored(customers) else None for c in columns]
            rows.append((name, values, customers))
        best = {}
        for n, column in enumerate(columns):
            values = [v[n] for _, v, _ in rows if v[n] is not None]
            if values:
                best[column] = max(v for v in values if v is not None)
        tables.append(QualityTable(truth, columns, rows, best))
    return tables


def scored(customers: int | float | None) -> bool:
    """Whether a method's figures rest on anyone: the trainer writes a method scored on
    no customer with ``customers`` 0 and zeros it never measured (its summary and report
    show "–", not evaluated). A manifest without the count is taken at its word."""
    return customers is None or customers > 0


def churn_quality(manifest: Mapping[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """The churn model against recency alone, as the trainer measured them."""
    churn = (manifest.get("metrics") or {}).get("churn")
    if not isinstance(churn, Mapping):
        return []
    return [
        (name, {k: _number(v) for k, v in figures.items() if isinstance(v, int | float)})
        for name, figures in churn.items()
        if isinstance(figures, Mapping)
    ]


def _at_k(metrics: Mapping[str, Any]) -> bool:
    return any(str(key).split("@")[0] in QUALITY_METRICS for key in metrics)


def _columns(methods: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for metrics in methods:
        for key in metrics:
            if "@" in str(key) and str(key).split("@")[0] in QUALITY_METRICS:
                seen[str(key)] = None
    return sorted(seen, key=lambda c: (QUALITY_METRICS.index(c.split("@")[0]), c))


@dataclass(frozen=True)
class LiveOffer:
    id: str
    kind: str
    title: str
    value: float | None
    stages: list[str]
    channels: list[str]
    valid_to: str | None


def live_offers(catalog: Catalog, now_s: int) -> list[LiveOffer]:
    """The catalogue's offers valid now (``GET /v1/catalog``'s ``live``)."""
    return [
        LiveOffer(
            id=offer.id,
            kind=offer.kind,
            title=offer.title or offer.item_id or offer.category or offer.id,
            value=offer.value,
            stages=list(offer.stages),
            channels=list(offer.channels),
            valid_to=None if offer.valid_to is None else offer.valid_to.date().isoformat(),
        )
        for offer in catalog.offers
        if offer.is_valid_at(now_s)
    ]


# --- offers going out -----------------------------------------------------------------


@dataclass(frozen=True)
class Breakdown:
    """Impressions by one dimension, with how many were clicked and converted."""

    by: str
    rows: list[tuple[str, int, int, int]]  # value, impressions, clicked, converted


@dataclass(frozen=True)
class GoingOut:
    """The offers recorded as delivered in a period, and what came of them."""

    since: str
    until: str
    days: int
    impressions: int
    clicked: int
    converted: int
    breakdowns: list[Breakdown]
    # Per day (ISO date): impressions per channel, clicks, conversions, revenue.
    daily: list[dict[str, Any]]
    clicks: int
    conversions: int
    revenue: float
    # Since the service (all its workers) started: offers answered per source and
    # channel, and what each rule removed or withheld (the Prometheus counters).
    served_by_source: list[tuple[str, dict[str, int]]]
    suppressions: list[tuple[str, int]]
    metrics_on: bool

    @property
    def take_up(self) -> float | None:
        return None if not self.impressions else self.converted / self.impressions


NOT_STATED = "(not stated)"


def going_out(
    store: Store,
    now_s: int,
    days: int,
    counters: Mapping[str, list[tuple[dict[str, str], float]]],
    metrics_on: bool = True,
    clock_skew_s: int = 0,
) -> GoingOut:
    """The period of ``days`` days up to ``now_s`` from ``Store.offer_activity``, and the
    offers and suppressions counters (``counters``: ``metric_counters``; ``metrics_on``:
    the setting, since a counter has no samples before the first answer). The period
    ends where the experiment report's does, at the latest time ``POST /v1/events``
    accepts an event at (the clock plus ``clock_skew_s``, ``NBO_CLOCK_SKEW_SECONDS``):
    a conversion dated a few seconds ahead of the clock was accepted and shown nowhere."""
    since = now_s - days * DAY
    latest = accepted_until(now_s, clock_skew_s)
    activity = store.offer_activity(since, latest + 1)
    deliveries = pd.DataFrame(
        [vars(d) for d in activity.deliveries],
        columns=[
            "day",
            "channel",
            "kind",
            "source",
            "stage",
            "impressions",
            "clicked",
            "converted",
        ],
    )
    responses = pd.DataFrame(
        [vars(r) for r in activity.responses],
        columns=["day", "type", "channel", "events", "revenue"],
    )
    breakdowns = []
    for column in ("channel", "kind", "source", "stage"):
        grouped = (
            deliveries.fillna({column: NOT_STATED})
            .groupby(column)[["impressions", "clicked", "converted"]]
            .sum()
            .sort_values("impressions", ascending=False, kind="stable")
        )
        breakdowns.append(
            Breakdown(
                column,
                [
                    (str(value), int(row.impressions), int(row.clicked), int(row.converted))
                    for value, row in grouped.iterrows()
                ],
            )
        )
    # Per day, every day of the period (a day without events is zeros): one group-by
    # each, not a filter of the frames per day (366 of them cost a second).
    days_of = pd.RangeIndex(since // DAY, latest // DAY + 1)
    channels = _channels(deliveries)
    shown = (
        deliveries.pivot_table(
            index="day", columns="channel", values="impressions", aggfunc="sum", fill_value=0
        )
        .reindex(index=days_of, columns=channels, fill_value=0)
        .astype(int)
    )
    conversions = responses[responses["type"] == "offer_conversion"]
    per_day = pd.DataFrame(
        {
            "clicks": responses[responses["type"] == "offer_click"].groupby("day")["events"].sum(),
            "conversions": conversions.groupby("day")["events"].sum(),
            "revenue": conversions.groupby("day")["revenue"].sum(),
        }
    ).reindex(days_of, fill_value=0)
    per_day = per_day.fillna(0)
    daily = [
        {
            "date": datetime.fromtimestamp(int(day) * DAY, UTC).date().isoformat(),
            "impressions": {channel: int(shown.at[day, channel]) for channel in channels},
            "clicks": int(per_day.at[day, "clicks"]),
            "conversions": int(per_day.at[day, "conversions"]),
            "revenue": float(per_day.at[day, "revenue"]),
        }
        for day in days_of
    ]
    served: dict[str, dict[str, int]] = {}
    for labels, value in counters.get("nbo_offers_served", []):
        by_channel = served.setdefault(labels.get("source", ""), {})
        channel = labels.get("channel", "")
        by_channel[channel] = by_channel.get(channel, 0) + int(value)
    suppressions: dict[str, int] = {}
    for labels, value in counters.get("nbo_suppressions", []):
        rule = labels.get("rule", "")
        suppressions[rule] = suppressions.get(rule, 0) + int(value)
    return GoingOut(
        since=iso_utc(since),
        until=iso_utc(latest),
        days=days,
        impressions=int(deliveries["impressions"].sum()),
        clicked=int(deliveries["clicked"].sum()),
        converted=int(deliveries["converted"].sum()),
        breakdowns=breakdowns,
        daily=daily,
        clicks=int(responses.loc[responses["type"] == "offer_click", "events"].sum()),
        conversions=int(conversions["events"].sum()),
        revenue=float(conversions["revenue"].sum()),
        served_by_source=sorted(served.items(), key=lambda kv: -sum(kv[1].values())),
        suppressions=sorted(suppressions.items(), key=lambda kv: (-kv[1], kv[0])),
        metrics_on=metrics_on,
    )


def _channels(deliveries: pd.DataFrame) -> list[str]:
    """The channels in the vocabulary's order, then any other a client posted."""
    seen = [str(c) for c in deliveries["channel"].dropna().unique()]
    return [*(c for c in CHANNELS), *sorted(c for c in seen if c not in CHANNELS)]


def metric_counters(registry: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The offers and suppressions counters of the app's registry (the one ``/metrics``
    serves: with workers, every worker's added up): per metric, (labels, value)."""
    wanted = {"nbo_offers_served", "nbo_suppressions"}
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    if registry is None:
        return found
    for family in registry.collect():
        if family.name not in wanted:
            continue
        samples = found.setdefault(family.name, [])
        for sample in family.samples:
            if sample.name == f"{family.name}_total":
                samples.append((dict(sample.labels), float(sample.value)))
    return found


# --- models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedModel:
    version: str
    created_at: str
    aliases: list[str]
    # As GET /v1/models names them: ``serving`` the version this worker answers with
    # (outside experiments), ``experiment`` loaded for an experiment's variant only,
    # ``current`` the one models/CURRENT names (what a restart serves). NBO_MODEL_VERSION
    # or a reload to a version serves another than CURRENT.
    serving: bool
    experiment: bool
    current: bool
    data: dict[str, Any]
    gate: dict[str, Any]
    policy: str | None
    # truth -> method -> the gate's metric (ndcg@k); NOT_EVALUATED for a method scored
    # on no customer, None for one without the figure
    quality: dict[str, dict[str, float | str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelsView:
    serving: str | None
    current: str | None  # what models/CURRENT names (None: none, or current_problem)
    current_problem: str | None
    metric: str
    models: list[PublishedModel]
    # truth -> the methods any version measured, in a stable order
    methods: dict[str, list[str]]
    # Why no alias is listed: ALIASES.json cannot be read (GET /v1/models says the same)
    aliases_problem: str | None = None


def published_models(models_dir: Any, serving: ServingModels | None) -> ModelsView:
    """Every published version, newest first (``GET /v1/models``), with what its
    manifest says of its data, its gate and its quality."""
    aliases_problem = None
    try:
        aliases = aliases_with_current(models_dir)
    except ArtifactError as exc:  # the versions are still worth seeing (it was a 500)
        aliases, aliases_problem = {}, str(exc)
    loaded = {m.version for m in serving.models()} if serving is not None else set()
    answering = serving.current.version if serving is not None else None
    current, current_problem = current_or_problem(models_dir)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    manifests = {v: _manifest(models_dir, v) for v in list_versions(models_dir)}
    metric = _gate_metric(manifests.values())
    methods: dict[str, list[str]] = {}
    models = []
    for version in reversed(list(manifests)):
        manifest = manifests[version]
        quality: dict[str, dict[str, float | str | None]] = {}
        for truth, by_method in (manifest.get("metrics") or {}).items():
            if not isinstance(by_method, Mapping) or not any(
                isinstance(m, Mapping) and metric in m for m in by_method.values()
            ):
                continue
            quality[truth] = {
                name: _number(m.get(metric))
                if scored(_count(m.get("customers")))
                else NOT_EVALUATED
                for name, m in by_method.items()
                if isinstance(m, Mapping)
            }
            known = methods.setdefault(truth, [])
            known.extend(name for name in quality[truth] if name not in known)
        policy = manifest.get("policy")
        models.append(
            PublishedModel(
                version=version,
                created_at=str(manifest.get("created_at", "")),
                aliases=by_version.get(version, []),
                serving=version == answering,
                experiment=version in loaded and version != answering,
                current=version == current,
                data=dict(manifest.get("data") or {}),
                gate=dict(manifest.get("quality_gate") or {}),
                policy=str(policy.get("name")) if isinstance(policy, Mapping) else None,
                quality=quality,
            )
        )
    for names in methods.values():
        names.sort(key=lambda name: name != SERVED)
    return ModelsView(answering, current, current_problem, metric, models, methods, aliases_problem)


def _manifest(models_dir: Any, version: str) -> dict[str, Any]:
    """A version's manifest as published (a broken one shows as empty: listing the
    versions is no check of them; loading one is)."""
    try:
        loaded = json.loads((models_dir / version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _gate_metric(manifests: Iterable[Mapping[str, Any]]) -> str:
    for manifest in manifests:
        gate = manifest.get("quality_gate")
        if isinstance(gate, Mapping) and gate.get("metric"):
            return str(gate["metric"])
    return "ndcg@10"


# --- helpers --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
