"""What is served, evaluated: the service's own decision, run at a cutoff.

The methods and the ranker are scored as lists of items; a customer gets what the
service's decision (``nbo.offers.ranking.rank_offers``) makes of the model: its
candidate policy (``nbo.models.policy``), suppression of what was just bought (the
window and the learned dead times), the catalogue's eligibility and arbitration, and the
popular fill. So a served model is assembled at the cutoff from what the trainer knew
there (``Cutoff``: ALS, the repurchase cycles and dead times, the ranker and its sources,
the customers' facts),
written as an artifact by the code that publishes one (``ServedParts``), loaded by the
service's loader, and asked for every evaluated customer's offers with the clock at the
cutoff. The product offers, in served order (incentives skipped), are scored against
what the customer bought after it: on ``all``, the first k; on ``new``, the first k
that were not bought in the suppression window before the cutoff (as every method's
lists are scored there).

The propensity curves a served model ranks by are fitted on the holdout, as the
published model's are; here they are cross-fitted, so no customer's offers are ordered
by a curve that learned from their own purchases: the evaluated customers are split in
two seeded halves, and each half is served with curves fitted on the other (the buying
curve, fitted on non-buyers too, on the other half and half of the rest: ``buying_half``).
Each customer's churn risk at the cutoff reaches the decision as a profile's would, so
the products' propensities are unconditional there as in the service.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.catalog.terms import Catalog
from nbo.core import columns as col
from nbo.core.vocabulary import STAGES, iso_utc
from nbo.data.features import OrderTable
from nbo.data.history import PurchaseHistory, RecentOrders
from nbo.data.sparse import Rows
from nbo.evaluation.ranking_metrics import ranking_metrics
from nbo.models.artifacts import load_artifact, write_artifact
from nbo.models.candidates import NO_STAGE, shortlist_width
from nbo.models.cf import confidence_matrix
from nbo.models.cycles import Repurchase
from nbo.models.policy import (
    LISTED_RULES,
    POLICY_ALS,
    POLICY_ITEMKNN,
    POLICY_RANKER,
    SECTION,
    rule_lists,
)
from nbo.models.popularity import popular_order
from nbo.models.propensity import BASIS_SCORE, Propensity
from nbo.models.propensity import DOCUMENT as PROPENSITY_DOCUMENT
from nbo.models.ranker import lightgbm_version
from nbo.models.served import ServingModel, model_arrays, serving_model_from_artifact
from nbo.offers.ranking import MIN_CANDIDATES, OfferRequest, rank_offers
from nbo.offers.state import PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training.config import TrainingConfig
from training.methods import TRUTHS, Metrics, split_popularity, suppressed_at_cutoff
from training.propensity import (
    bought_anything,
    buying_curve,
    fit_propensity,
    ranker_curve,
    rule_curves,
    rule_quality,
    with_rule_basis,
)
from training.ranker import (
    RankerResult,
    ServedRanker,
    WindowFacts,
    cutoff_seconds,
    risk_at,
    served_ranker,
)
from training.split import TimeSplit

# The method name of what is served, beside the others in ``metrics``.
SERVED = "served"
# Offers asked per customer, as the measurement behind this evaluation asked the
# service (k=50): enough product offers remain after the "new" truth's removals.
SERVED_DEPTH = 50
# The offers asked beyond k for those removals: what 50 left for the default k = 10, so
# a larger k (the config allows up to 100) keeps the same room (``served_depth``).
NEW_TRUTH_ROOM = SERVED_DEPTH - 10
# The channel the offers are asked for: the service's default.
SERVED_CHANNEL = "email"
# Customers per rank_offers call (a campaign's chunk).
CHUNK = 1_000


def served_depth(k: int) -> int:
    """The offers asked per customer when k are scored: ``SERVED_DEPTH``, or k and the
    same room for the "new" truth's removals when k is larger (a list shorter than k
    would be scored as if the decision had nothing more to offer)."""
    return max(SERVED_DEPTH, k + NEW_TRUTH_ROOM)


@dataclass(frozen=True)
class ServedParts:
    """What a served model is made of at a moment: the artifact's serving arrays,
    documents and files come from here, for the published model and for the one the
    evaluation serves at a cutoff, so both are the same kind of artifact."""

    history: PurchaseHistory
    confidence: sp.csr_matrix
    als: AlternatingLeastSquares
    popularity: np.ndarray
    repurchase: Repurchase | None
    item_price: np.ndarray | None
    ranker: ServedRanker | None  # the booster (None: sources only) and its sources
    propensity: Propensity
    policy: str
    # The customers' recency-weighted orders as of the end of ``history`` (the ranker's
    # features); None when the policy reads none.
    recent: RecentOrders | None = None

    def contents(
        self,
        orders: OrderTable | None = None,
        send_hour_prior: np.ndarray | None = None,
        every_part: bool = False,
        shortlisted: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
        """The artifact's arrays, documents and side files for serving ``policy``: the
        ranker's booster only for the ranker, its sources for the ranker and ItemKNN;
        ``every_part``: both whatever the policy (the evaluation's model at a cutoff,
        served under each policy in turn); ``shortlisted``: the customers whose ALS
        shortlists to make (None: everyone), where the others are never served."""
        # ALS's shortlists, for the ranker's ALS source alone.
        width = 0
        ranker = self.ranker
        if (
            ranker is not None
            and ranker.booster is not None
            and (every_part or self.policy == POLICY_RANKER)
        ):
            width = shortlist_width(ranker.per_source)
        arrays: dict[str, Any] = model_arrays(
            self.als.user_factors,
            self.als.item_factors,
            self.history,
            self.confidence,
            self.popularity,
            repurchase=self.repurchase,
            orders=orders,
            item_price=self.item_price,
            send_hour_prior=send_hour_prior,
            recent=self.recent,
            shortlist_width=width,
            shortlisted=shortlisted,
        )
        files: dict[str, bytes] = {}
        if self.ranker is not None:
            if every_part or self.policy in (POLICY_RANKER, POLICY_ITEMKNN):
                arrays.update(self.ranker.arrays())
            if every_part or self.policy == POLICY_RANKER:
                files.update(self.ranker.files())
        documents: dict[str, Any] = {PROPENSITY_DOCUMENT: self.propensity.to_document()}
        return arrays, documents, files


@dataclass(frozen=True)
class Cutoff:
    """What the trainer knows at a cutoff, to serve a model there: ALS and the repurchase
    fitted before it, the ranker evaluated at it (its booster, sources, the customers'
    facts, the candidates' scores) and the customers evaluated there."""

    split: TimeSplit
    als: AlternatingLeastSquares
    repurchase: Repurchase | None
    ranker: RankerResult
    customers: np.ndarray  # rows of the split's training side
    typical_line_value: float | None

    @property
    def cutoff_s(self) -> int:
        return cutoff_seconds(self.split)

    @property
    def facts(self) -> WindowFacts:
        return self.ranker.facts

    def stage_codes(self) -> np.ndarray:
        """Every training customer's stage at the cutoff (``NO_STAGE`` unknown)."""
        traits = self.facts.traits
        if traits is None:
            return np.full(len(self.split.train.customers), NO_STAGE, np.int64)
        return np.asarray(traits.stage, np.int64)


def cutoff_parts(
    at: Cutoff, config: TrainingConfig, propensity: Propensity, policy: str
) -> ServedParts:
    """The served model at the cutoff: ALS, popularity, dead times, prices and the ranker's
    sources as known there, the evaluated booster."""
    split = at.split
    items = at.ranker.items
    sources = None
    if items is not None:
        sources = served_ranker(
            at.ranker.booster,
            split.train,
            at.cutoff_s,
            at.stage_codes(),
            config,
            similarity=items.similarity,
        )
    return ServedParts(
        history=split.train,
        confidence=confidence_matrix(split.train.counts, config.als.params()),
        als=at.als,
        popularity=split_popularity(split, config.popularity_days),
        repurchase=at.repurchase,
        item_price=at.facts.price,
        ranker=sources,
        propensity=propensity,
        policy=policy,
        recent=split.train_lines.recent_orders(at.cutoff_s, config.ranker.half_life_days),
    )


def served_model(at: Cutoff, config: TrainingConfig, propensity: Propensity) -> ServingModel:
    """The model served at the cutoff, with every part the trainer has there (the
    booster when one was trained, the sources when fitted), written as an artifact (in a
    throwaway folder) and loaded by the service's loader: exactly what the service would
    hold. It declares the ranker when it has one, else ALS; the evaluation serves it
    under each policy in turn (``served_metrics``)."""
    policy = POLICY_RANKER if at.ranker.booster is not None else POLICY_ALS
    parts = cutoff_parts(at, config, propensity, policy)
    # Shortlists for the evaluated customers alone: no one else is served there.
    arrays, documents, files = parts.contents(every_part=True, shortlisted=at.customers)
    manifest = {
        "config": config.model_dump(),
        "data": {
            "last_purchase": iso_utc(at.split.cutoff),
            "typical_line_value": at.typical_line_value,
        },
        "ranker": {
            "enabled": at.ranker.booster is not None,
            "lightgbm_version": lightgbm_version(),
            "per_source": config.ranker.per_source,
            "half_life_days": config.ranker.half_life_days,
        },
        SECTION: {"name": policy},
    }
    with tempfile.TemporaryDirectory(prefix="nbo-served-") as folder:
        version = f"cutoff-{at.cutoff_s}"
        write_artifact(Path(folder), version, arrays, documents, manifest, files)
        # Read into memory, not mapped: the folder goes when this returns. The ranker is
        # not compiled: one evaluation's rows cost LightGBM less than compiling its trees.
        return serving_model_from_artifact(
            load_artifact(Path(folder), version, mmap=False), compiled=False
        )


def serve(
    model: ServingModel,
    at: Cutoff,
    rows: np.ndarray,
    window: SuppressionWindow,
    catalog: Catalog,
    recent: Mapping[str, Sequence[PostedPurchase]] | None = None,
    depth: int = SERVED_DEPTH,
) -> np.ndarray:
    """Each customer's first ``depth`` product offers from ``rank_offers`` at the
    cutoff, in served order (incentives skipped), as the split's item rows (customers x
    ``depth``; -1 for empty slots and items the split does not know, which no truth
    holds). ``rows``: the customers' rows of the split (for their ids, and their stage,
    churn risk and value there); ``recent``: purchases posted since the model was
    trained, per customer."""
    out = np.full((len(rows), depth), -1, np.int64)
    if not len(rows):
        return out
    traits = at.facts.traits
    ids = at.split.train.customers.ids
    index = at.split.train.items.index
    # The model's catalogue -> the split's items (the same for a model served at the
    # cutoff, by external id for another).
    to_split = np.fromiter((index.get(i, -1) for i in model.item_ids), np.int64, len(model.items))
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        requests = []
        for row in chunk.tolist():
            customer_id = str(ids[row])
            stage = "active"
            risk = monetary = baskets = gap_days = None
            if traits is not None:
                code = int(traits.stage[row])
                stage = STAGES[code] if code != NO_STAGE else stage
                risk = _number(traits.churn_risk[row])
                monetary = _number(traits.monetary[row])
                baskets = _number(traits.baskets[row])
                gap_days = _number(traits.gap_days[row])
            requests.append(
                OfferRequest(
                    customer_id,
                    depth,
                    () if recent is None else recent.get(customer_id, ()),
                    stage=stage,
                    channel=SERVED_CHANNEL,
                    churn_risk=risk,
                    monetary=monetary,
                    baskets=None if baskets is None else int(baskets),
                    gap_days=gap_days,
                )
            )
        rankings = rank_offers(model, requests, at.cutoff_s, window, catalog)
        # One call, one table: every customer's choices, products with their item.
        choices = rankings[0].table.choices
        product = choices.item >= 0
        owner = choices.customer[product]
        place = np.arange(int(product.sum())) - np.searchsorted(owner, owner)
        out[start + owner, place] = to_split[choices.item[product]]
    return out


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def score(split: TimeSplit, served: np.ndarray, rows: np.ndarray, k: int) -> Metrics:
    """metrics[truth]["served"] of served lists (``served``: per customer of ``rows``):
    on ``all`` the first k, on ``new`` the first k not bought in the suppression window,
    for the customers with a purchase in that truth (as ``evaluate_methods`` does)."""
    out: Metrics = {}
    truths = {"all": split.truth_all, "new": split.truth_new}
    unknown = {"all": split.unknown_all, "new": split.unknown_new}
    for truth in TRUTHS:
        sizes = np.diff(truths[truth].indptr)[rows] + unknown[truth][rows]
        keep = sizes > 0
        lists = served[keep]
        if truth == "new":
            lists = _without(lists, split.suppressed[rows[keep]])
        out[truth] = {
            SERVED: ranking_metrics(lists[:, :k], truths[truth][rows[keep]], sizes[keep], k)
        }
    return out


def _without(lists: np.ndarray, banned: sp.csr_matrix) -> np.ndarray:
    """Each row of ``lists`` less the items of its ``banned`` row, moved up (-1 pads)."""
    out = np.full_like(lists, -1)
    for row in range(len(lists)):
        mine = lists[row][lists[row] >= 0]
        gone = banned.indices[banned.indptr[row] : banned.indptr[row + 1]]
        kept = mine[~np.isin(mine, gone)]
        out[row, : len(kept)] = kept
    return out


def curves(at: Cutoff, policy: str, fitting: np.ndarray, config: TrainingConfig) -> Propensity:
    """The propensity curves of ``policy`` at the cutoff, fitted on the purchases of the
    customers at positions ``fitting`` of ``at.customers`` alone (their holdout)."""
    split, seed = at.split, config.als.random_state
    if not fitting.any():
        fitting = ~fitting  # too few customers for two halves: fitted on all
    customers = at.customers[fitting]
    popularity = split_popularity(split, config.popularity_days)
    suppressed = suppressed_at_cutoff(split, at.repurchase, config.suppression.days)
    propensity, _ = fit_propensity(
        at.als,
        split,
        customers,
        popularity,
        suppressed,
        candidates=MIN_CANDIDATES,
        horizon_days=config.holdout_days,
        seed=seed,
    )
    if policy == POLICY_RANKER and at.ranker.booster is not None:
        fitted = np.isin(at.ranker.rows, np.flatnonzero(fitting))
        propensity = replace(propensity, ranker=ranker_curve(at.ranker, fitted))
    if policy in LISTED_RULES:
        pairs = rule_pairs(at, policy, customers, popularity, suppressed)
        halves = np.random.default_rng(seed).random(len(customers)) < 0.5
        propensity, _ = fit_rule_curves(propensity, pairs, halves)
    return replace(
        propensity,
        buying=buying_curve(
            risk_at(at.ranker), bought_anything(split), buying_half(at, fitting, seed)
        ),
    )


def buying_half(at: Cutoff, fitting: np.ndarray, seed: int) -> np.ndarray | None:
    """The training customers the buying curve of ``fitting`` (a mask over the evaluated
    customers) is fitted on: those evaluated customers, and a seeded half of everyone
    else (who bought nothing in the holdout, or was not sampled), so the curve keeps the
    share of buyers and never learns from the customers it serves. None: everyone."""
    if fitting.all():
        return None
    mask = np.random.default_rng(seed).random(len(at.split.train.customers)) < 0.5
    mask[at.customers] = fitting
    return mask


@dataclass(frozen=True)
class RulePairs:
    """A simple rule's lists at the cutoff (customers x places, best first), as the
    service makes them (its items, then popular, minus what is suppressed), with what
    the customers bought in the holdout."""

    scores: np.ndarray  # the rule's score (``RuleLists.scores``)
    places: np.ndarray  # the place before suppression (``RuleLists.places``)
    filled: np.ndarray  # True where the item is popular fill
    bought: np.ndarray  # 1.0 where the customer bought the item in the holdout
    valid: np.ndarray  # False where the list runs out


def rule_pairs(
    at: Cutoff,
    policy: str,
    customers: np.ndarray,
    popularity: np.ndarray,
    suppressed: sp.csr_matrix,
) -> RulePairs:
    """``policy``'s lists of ``customers`` (rows of the split's training side) at the
    cutoff, ``MIN_CANDIDATES`` long, labelled by their holdout."""
    split = at.split
    items = at.ranker.items
    lists = rule_lists(
        policy,
        Rows.of(split.train.counts[customers].tocsr()),
        Rows.of(split.train.last_purchase[customers].tocsr()),
        Rows.of(suppressed[customers].tocsr()),
        popularity,
        popular_order(popularity),
        MIN_CANDIDATES,
        None if items is None else items.similarity,
    )
    valid = lists.items >= 0
    truth = split.truth_all[customers]
    rows = np.repeat(np.arange(len(customers)), lists.items.shape[1]).reshape(lists.items.shape)
    labels = np.asarray(truth[rows[valid], lists.items[valid]]).ravel() > 0
    bought = np.zeros(lists.items.shape)
    bought[valid] = labels
    return RulePairs(lists.scores, lists.places.astype(np.float64), lists.filled, bought, valid)


def fit_rule_curves(
    propensity: Propensity, pairs: RulePairs, fit_half: np.ndarray
) -> tuple[Propensity, dict[str, Any]]:
    """A rule's curves on the basis that predicts better (``rule_quality``: both fitted
    on the ``fit_half`` customers, read on the others), then refitted on every pair of
    ``pairs``; with that quality."""
    quality = rule_quality(
        pairs.scores, pairs.places, pairs.filled, pairs.bought, pairs.valid, fit_half
    )
    basis = quality["basis"]
    own = pairs.scores if basis == BASIS_SCORE else pairs.places
    curves = rule_curves(own, pairs.filled, pairs.bought, pairs.valid, basis)
    return with_rule_basis(propensity, basis, *curves), quality


def with_rule_curves(
    propensity: Propensity,
    report: dict[str, Any],
    at: Cutoff,
    policy: str,
    config: TrainingConfig,
) -> tuple[Propensity, dict[str, Any]]:
    """Add the served rule's curves (``fit_rule_curves``: on the basis of lower held-out
    Brier score, fitted on every evaluated customer) and their held-out quality to the
    report (``rule_quality``: each basis fitted on half the customers, checked on the
    other half, against the position curve of artifacts before them and the base rate)."""
    split, seed = at.split, config.als.random_state
    popularity = split_popularity(split, config.popularity_days)
    suppressed = suppressed_at_cutoff(split, at.repurchase, config.suppression.days)
    pairs = rule_pairs(at, policy, at.customers, popularity, suppressed)
    fit_half = np.random.default_rng(seed).random(len(at.customers)) < 0.5
    propensity, quality = fit_rule_curves(propensity, pairs, fit_half)
    return propensity, {**report, "rule": {"policy": policy, **quality}}


def served_metrics(
    base: ServingModel,
    at: Cutoff,
    policy: str,
    config: TrainingConfig,
    catalog: Catalog,
) -> Metrics:
    """``policy`` served by ``base`` (``served_model``) at the cutoff to the evaluated
    customers, each half of them with curves fitted on the other half;
    metrics[truth]["served"]."""
    rng = np.random.default_rng(config.als.random_state)
    first = rng.random(len(at.customers)) < 0.5
    depth = served_depth(config.k)
    served = np.full((len(at.customers), depth), -1, np.int64)
    for half in (first, ~first):
        if not half.any():
            continue
        propensity = curves(at, policy, ~half, config)
        model = replace(base, policy=policy, propensity=propensity)
        served[half] = serve(
            model, at, at.customers[half], config.suppression, catalog, depth=depth
        )
    return score(at.split, served, at.customers, config.k)


def model_metrics(
    model: ServingModel,
    at: Cutoff,
    config: TrainingConfig,
    catalog: Catalog,
    recent: Mapping[str, Sequence[PostedPurchase]],
) -> Metrics:
    """Another model (a published one) served at the cutoff to the evaluated customers
    as it is, with the purchases posted since it was trained; metrics[truth]["served"]."""
    served = serve(
        model, at, at.customers, config.suppression, catalog, recent, served_depth(config.k)
    )
    return score(at.split, served, at.customers, config.k)


def posted_since(
    purchases: pd.DataFrame, customers: Sequence[str], since_s: int, until_s: int
) -> dict[str, list[PostedPurchase]]:
    """The purchase lines of ``customers`` in (``since_s``, ``until_s``), as the purchases
    a service would have been posted since a model trained until ``since_s``."""
    times = purchases[col.TIMESTAMP]
    window = purchases[
        (times > pd.Timestamp(since_s, unit="s")) & (times < pd.Timestamp(until_s, unit="s"))
    ]
    window = window[window[col.CUSTOMER_ID].astype(str).isin(set(customers))]
    out: dict[str, list[PostedPurchase]] = {}
    quantity = (
        window[col.QUANTITY].to_numpy(dtype=np.float64)
        if col.QUANTITY in window
        else np.ones(len(window))
    )
    order_ids = (
        window[col.ORDER_ID].astype(str).tolist()
        if col.ORDER_ID in window
        else [None] * len(window)
    )
    seconds = (window[col.TIMESTAMP].astype("int64") // 1_000_000_000).tolist()
    for n, (customer, item) in enumerate(
        zip(window[col.CUSTOMER_ID].astype(str), window[col.ITEM_ID].astype(str), strict=True)
    ):
        order = order_ids[n]
        event = f"{customer}-{seconds[n]}" if order is None else order
        out.setdefault(customer, []).append(
            PostedPurchase(item, float(quantity[n]), int(seconds[n]), order, event)
        )
    return out


# The simple rules the targets compare what is served with: the methods as the
# evaluation scores them (buy-again with the popular fill, ItemKNN, popularity).
SIMPLE_METHODS = ("buy_again", "itemknn", "popularity")


def below_best_rule(section: Mapping[str, Any]) -> list[str]:
    """A warning per truth where what is served scored below the best simple method on
    the holdout (the manifest's ``served`` section), naming both figures. The policy was
    chosen on the validation window and the gate judges what is served against the
    current model, so this passes both; it is said out loud, not silently."""
    metric = section.get("metric", "")
    policy = section.get("policy", "")
    out = []
    for truth, entry in (section.get("against_best_rule") or {}).items():
        rule, base = entry.get("best_rule"), entry.get("best_rule_score")
        if rule is None or base is None or entry[SERVED] >= base:
            continue
        change = "" if entry.get("change") is None else f" ({entry['change']:+.1%})"
        below = f"served {metric} {entry[SERVED]:.4f} is below {rule} {base:.4f}{change} on "
        if rule == policy:
            # The rule itself is served: what it lost is what the serving decision's
            # rules (suppression, the catalogue, the fill) cost its raw ranking here.
            why = (
                f"the holdout, truth {truth}: {policy} is what is served, and the serving "
                "decision's rules (suppression, the catalogue's eligibility and "
                "arbitration) cost its raw ranking this much here"
            )
        else:
            why = (
                f"the holdout, truth {truth}: the policy chosen on the validation window "
                f"({policy}) lost to a simple rule here"
            )
        out.append(
            f"{below}{why} (the quality gate does not judge this: it compares what is "
            "served with the current model)"
        )
    return out


def served_section(
    metrics: Metrics, config: TrainingConfig, policy: str, catalog: Catalog
) -> dict[str, Any]:
    """The manifest's ``served`` section: how the served lists were made and read, and
    per truth what is served against the best simple method on the holdout."""
    metric = f"ndcg@{config.k}"
    against: dict[str, Any] = {}
    for truth in TRUTHS:
        scores = metrics.get(truth, {})
        if SERVED not in scores or not scores[SERVED].get("customers"):
            continue  # nothing served to anyone there: nothing to compare
        rules = [name for name in SIMPLE_METHODS if name in scores]
        served = scores[SERVED][metric]
        entry: dict[str, Any] = {SERVED: served}
        if rules:
            best = max(rules, key=lambda name: scores[name][metric])
            base = scores[best][metric]
            entry.update(
                best_rule=best,
                best_rule_score=base,
                change=None if base <= 0 else served / base - 1.0,
            )
        against[truth] = entry
    return {
        "policy": policy,
        "catalog": "default" if catalog.source is None else str(catalog.source),
        "catalog_fingerprint": catalog.fingerprint,
        "channel": SERVED_CHANNEL,
        "offers_asked": served_depth(config.k),
        "metric": metric,
        "against_best_rule": against,
    }
