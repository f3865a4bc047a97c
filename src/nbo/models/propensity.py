"""Propensity: turn a ranking score into a probability of purchase, so it means something.

Arbitration multiplies propensity by an offer's value; that product is an expected value
only if the propensity is a probability. A raw ALS score is not one (its scale depends on
the factors and the regularization), so the trainer fits, on the time-split holdout, an
isotonic map from score to "bought the item within the holdout window" for the model's
candidates, and one from popularity rank to the same for the popular list (what cold-start
and non-personalized customers get); one from the ranker's score for its candidates; and
when the model serves a simple rule (``nbo.models.policy``), one from the rule's score
for its own items (the customer's order count of the item for buy-again, the summed
similarity for ItemKNN) and one from the position in the list for the popular items
that fill it. Each is stored as the isotonic fit's breakpoints and applied here
with ``np.interp``: no pickle, microseconds per request, and exactly the
isotonic fit's own prediction (piecewise linear between breakpoints, clipped outside).

Those curves are fitted on the customers who bought something in the holdout (the only
ones whose lists can be scored), so each gives P(buys the item | buys anything within
the window). The ``buying`` curve supplies the other factor: P(buys anything within the
window) from the customer's churn risk, fitted at the same cutoff on every customer with
an order before it, buyers or not. The decision multiplies a customer's product
propensities by it (``of_buying``), so a propensity is the chance of buying the item,
comparable with an incentive's unconditional ``response_rate``. Where it does not apply
(no curve: an older artifact or no churn model; no risk: a customer without purchases,
or without consent to personalization) the factor is 1 and the figures stay conditional.

A rule's propensities are read along each customer's list, best first, and never rise
down it (a running minimum, ``of_rule_lists``): the served order is the rule's, and a
lower place never claims a higher chance. The rule's curves follow the item, not where
suppression moved it: when what tops a subscriber's list (their monthly box) is
suppressed, the mug that moves up keeps the mug's propensity. The trainer reads a
rule's own items on one of two bases, whichever predicts the held-out half better
(``rule_basis``): the rule's score of the item (``rule_score``) or the item's place in
the list before suppression (``rule_place``); the popular fill by its place in the list
(``rule_fill``) on both. Artifacts from before (a single ``rule`` curve over the 1-based
position in the served list, whatever the item) are read and served as they were.

An artifact without calibration (older ones) gets ``Propensity.uncalibrated``: a
monotone squash of the score, labelled as uncalibrated in the manifest view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nbo.core.errors import ArtifactError

DOCUMENT = "propensity"
# What a simple rule's own items are read from (``Propensity.rule_basis``): the rule's
# score, the place in the list before suppression, or (an older artifact) the place in
# the served list, for every item.
BASIS_SCORE = "score"
BASIS_PLACE = "place"
BASIS_POSITION = "position"


@dataclass(frozen=True)
class Curve:
    """A monotone map given by breakpoints (x increasing), clipped outside them."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(values, dtype=np.float64), self.x, self.y)

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> Curve:
        x = np.asarray(data.get("x", []), dtype=np.float64)
        y = np.asarray(data.get("y", []), dtype=np.float64)
        if x.ndim != 1 or len(x) == 0 or x.shape != y.shape:
            raise ArtifactError(f"propensity curve '{name}': x and y must be equal, non-empty")
        if np.any(np.diff(x) < 0) or np.any((y < 0) | (y > 1)) or not np.all(np.isfinite(y)):
            raise ArtifactError(f"propensity curve '{name}': x must increase, y lie in 0..1")
        return cls(x, y)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}


@dataclass(frozen=True)
class Propensity:
    """Probability of purchase within ``horizon_days``, per candidate source."""

    cf: Curve  # ALS score -> probability
    popular: Curve  # 1-based rank in the popular list -> probability
    horizon_days: int
    calibrated: bool = True
    ranker: Curve | None = None  # the ranker's score -> probability, when trained
    # 1-based position in the served simple rule's list (its items, then the popular
    # fill) -> probability: an artifact's from before ``rule_score`` (no longer fitted).
    rule: Curve | None = None
    # The customer's churn risk -> bought anything within ``horizon_days``: the factor
    # that turns the curves above (conditional on buying something) into the chance of
    # buying the item. None: an artifact trained before it, or without a churn model.
    buying: Curve | None = None
    # When the model serves buy_again or itemknn: its own items -> probability, by the
    # rule's score (``RuleLists.scores``) or by their 1-based place in the list before
    # suppression (``RuleLists.places``), one of the two; and the 1-based position in
    # the list of the popular items that fill it -> probability, with either.
    rule_score: Curve | None = None
    rule_fill: Curve | None = None
    rule_place: Curve | None = None

    def __post_init__(self) -> None:
        if self.rule_score is not None and self.rule_place is not None:
            raise ValueError("propensity: rule_score or rule_place, not both")
        if (self._own is None) != (self.rule_fill is None):
            raise ValueError("propensity: rule_fill goes with rule_score or rule_place")

    @property
    def _own(self) -> Curve | None:
        return self.rule_score if self.rule_score is not None else self.rule_place

    @property
    def serves_rules(self) -> bool:
        """Whether a simple rule's lists can be given propensities (``of_rule_lists``)."""
        return self._own is not None or self.rule is not None

    @property
    def rule_basis(self) -> str | None:
        """What a rule's own items' propensity is read from: ``score`` (the rule's score
        of the item) or ``place`` (its place in the list before suppression), the popular
        fill by its place on both; ``position`` (an older artifact's curve over the
        served list's position alone), or None (no rule curve)."""
        if self.rule_score is not None:
            return BASIS_SCORE
        if self.rule_place is not None:
            return BASIS_PLACE
        return None if self.rule is None else BASIS_POSITION

    def of_scores(self, scores: np.ndarray) -> np.ndarray:
        return self.cf(scores)

    def of_ranker_scores(self, scores: np.ndarray) -> np.ndarray:
        if self.ranker is None:
            raise ValueError("this model has no ranker curve")
        return self.ranker(scores)

    def of_popular_ranks(self, ranks: np.ndarray) -> np.ndarray:
        return self.popular(ranks)

    def of_rule_lists(
        self, scores: np.ndarray, filled: np.ndarray, places: np.ndarray | None = None
    ) -> np.ndarray:
        """The propensities of simple rules' lists (customers x places, best first, as
        ``nbo.models.policy.rule_lists`` gives them: the rule's ``scores``, ``filled``
        where the item is popular fill, the own items' ``places`` before suppression;
        None: nothing was suppressed, the places are the list's): each own item's from
        its score or its place (``rule_basis``), each fill item's from its place in the
        list, then the running minimum along each list, so a propensity never rises down
        it. An older artifact's position curve reads the place in the list alone."""
        scores = np.asarray(scores, dtype=np.float64)
        served = np.broadcast_to(np.arange(1.0, scores.shape[-1] + 1.0), scores.shape)
        if self.rule_fill is not None and self.rule_score is not None:
            chance = np.where(filled, self.rule_fill(served), self.rule_score(scores))
        elif self.rule_fill is not None and self.rule_place is not None:
            before = served if places is None else places
            chance = np.where(filled, self.rule_fill(served), self.rule_place(before))
        elif self.rule is not None:
            chance = self.rule(served)
        else:
            raise ValueError("this model has no curve for a simple rule")
        return np.minimum.accumulate(chance, axis=-1)

    def of_buying(self, risks: np.ndarray) -> np.ndarray:
        """P(buys anything within the horizon) of customers with these churn risks: 1
        where the risk is unknown (NaN) or the model has no ``buying`` curve."""
        risks = np.asarray(risks, dtype=np.float64)
        if self.buying is None:
            return np.ones(len(risks))
        # np.interp maps NaN to NaN: those become 1 (a few microseconds per decision).
        chance = np.interp(risks, self.buying.x, self.buying.y)
        chance[np.isnan(chance)] = 1.0
        return chance

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Propensity:
        try:
            horizon = int(document["horizon_days"])
            cf, popular = document["cf"], document["popular"]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(
                "propensity.json: needs horizon_days, cf and popular curves"
            ) from None
        ranker, rule = document.get("ranker"), document.get("rule")
        buying = document.get("buying")
        rule_score, rule_fill = document.get("rule_score"), document.get("rule_fill")
        rule_place = document.get("rule_place")
        if rule_score is not None and rule_place is not None:
            raise ArtifactError("propensity.json: rule_score or rule_place, not both")
        if (rule_score is None and rule_place is None) != (rule_fill is None):
            raise ArtifactError("propensity.json: rule_fill goes with rule_score or rule_place")
        return cls(
            Curve.from_dict(cf, "cf"),
            Curve.from_dict(popular, "popular"),
            horizon,
            ranker=None if ranker is None else Curve.from_dict(ranker, "ranker"),
            rule=None if rule is None else Curve.from_dict(rule, "rule"),
            buying=None if buying is None else Curve.from_dict(buying, "buying"),
            rule_score=None if rule_score is None else Curve.from_dict(rule_score, "rule_score"),
            rule_fill=None if rule_fill is None else Curve.from_dict(rule_fill, "rule_fill"),
            rule_place=None if rule_place is None else Curve.from_dict(rule_place, "rule_place"),
        )

    @classmethod
    def uncalibrated(cls) -> Propensity:
        """For artifacts trained before calibration: monotone, in 0..1, not a probability.

        Scores clipped to 0..1 keep the CF order (ALS scores of good candidates mostly lie
        there); popular ranks decay as 1/rank from 0.1. Marked ``calibrated=False``.
        """
        return cls(
            cf=Curve(np.array([0.0, 1.0]), np.array([0.0, 1.0])),
            popular=Curve(np.arange(1.0, 101.0), 0.1 / np.arange(1.0, 101.0)),
            horizon_days=0,
            calibrated=False,
        )

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "horizon_days": self.horizon_days,
            "cf": self.cf.to_dict(),
            "popular": self.popular.to_dict(),
        }
        if self.ranker is not None:
            document["ranker"] = self.ranker.to_dict()
        if self.rule is not None:
            document["rule"] = self.rule.to_dict()
        if self.buying is not None:
            document["buying"] = self.buying.to_dict()
        if self.rule_score is not None:
            document["rule_score"] = self.rule_score.to_dict()
        if self.rule_place is not None:
            document["rule_place"] = self.rule_place.to_dict()
        if self.rule_fill is not None:
            document["rule_fill"] = self.rule_fill.to_dict()
        return document
