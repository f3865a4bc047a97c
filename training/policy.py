"""Choose what is served: the model, unless a simple rule serves better.

A shop must always get the best offers nbo can make from its data, and never offers
worse than a rule a marketer would write. So before the test window is looked at, the
candidates are served on a validation window - the window before the test window, cut
the same way (sources fitted before its cutoff, the ranker trained one window earlier
still) - through the service's own decision (``training.served``), and scored on what
the customers bought in it:

- the model: the ranker, or ALS where no ranker could be trained there and at the test
  cutoff (data too short, nothing bought in its window, or the ranker turned off);
- the simple rules (``nbo.models.policy``): buy-again and ItemKNN, each with the popular
  fill, and popularity.

Each candidate is judged on NDCG@k against both truths of the validation window (every
purchase, and what was not bought in the suppression window: the shop wants both its
reorders and new items sold): its score is the mean, over the two truths, of its figure
as a share of the best candidate's there. The best score is the served model's
candidate policy; a tie goes to the model. (On every purchase alone a rule that gains a
few percent there could win while losing a third on new items.) The test window then
measures the chosen policy, never choosing it. Data too short for a validation window
serves the model, unvalidated, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from nbo.catalog.terms import Catalog
from nbo.core.errors import ConfigError
from nbo.core.vocabulary import iso_utc
from nbo.models.cycles import Repurchase
from nbo.models.policy import (
    POLICY_ALS,
    POLICY_BUY_AGAIN,
    POLICY_ITEMKNN,
    POLICY_POPULARITY,
    POLICY_RANKER,
    RULES,
)
from nbo.models.served import ServingModel
from training.config import TrainingConfig
from training.methods import evaluation_customers
from training.ranker import (
    DEFAULT_BOOSTER,
    BoosterSettings,
    EarlierWindow,
    FactsOf,
    PreparedRanker,
    RankerResult,
    WindowSettings,
    earlier_history_days,
    earlier_window,
    facts_within,
    finish_ranker,
    history_days,
    mature,
    prepare_ranker,
)
from training.search import SettingsSearch, search_settings, share_of_best
from training.served import SERVED, Cutoff, curves, served_metrics, served_model
from training.split import TimeSplit

# The truth the best simple rule's margin is quoted on (the quality gate's), and the
# truths the choice weighs equally.
POLICY_TRUTH = "all"
POLICY_TRUTHS = ("all", "new")
POLICY_METRIC_TEMPLATE = "ndcg@{k}"


@dataclass(frozen=True)
class PolicyChoice:
    """The served model's candidate policy, and the evidence it was chosen on."""

    name: str
    reason: str
    validated: bool
    model: str  # the model that competed with the rules: ranker or ALS
    metric: str
    truth: str = POLICY_TRUTH
    cutoff: str | None = None  # the validation window's cutoff (ISO)
    customers: int = 0  # customers evaluated there
    # policy -> truth -> the served figure (``metric``) on the validation window
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    # The ranker's settings searched on the validation window (None: not searched).
    search: SettingsSearch | None = None

    @property
    def booster(self) -> BoosterSettings:
        """The settings the test window's (and the published) ranker is trained with."""
        return DEFAULT_BOOSTER if self.search is None else self.search.winner

    def score(self, policy: str) -> float:
        """The choice's criterion: the mean, over ``POLICY_TRUTHS``, of ``policy``'s
        figure on the validation window as a share of the best candidate's (0 where
        nobody scored anything)."""
        return share_of_best(self.validation[policy], self.validation.values(), POLICY_TRUTHS)

    @property
    def best_rule(self) -> str | None:
        """The simple rule that served best on the validation window (``score``)."""
        rules = [name for name in RULES if name in self.validation]
        if not rules:
            return None
        return max(rules, key=self.score)

    def margin(self, policy: str, truth: str | None = None) -> float | None:
        """How much ``policy`` served above (below, negative) the best simple rule on
        the validation window, as a share of the rule's figure, on ``truth`` (default
        ``self.truth``)."""
        rule = self.best_rule
        if rule is None or policy not in self.validation:
            return None
        truth = truth or self.truth
        base = self.validation[rule][truth]
        if base <= 0:
            return None
        return self.validation[policy][truth] / base - 1.0

    def section(self) -> dict[str, Any]:
        """The manifest's ``policy`` section (``nbo.models.policy.SECTION``)."""
        return {
            "name": self.name,
            "reason": self.reason,
            "validated": self.validated,
            "model": self.model,
            "metric": self.metric,
            "truth": self.truth,
            "validation_cutoff": self.cutoff,
            "validation_customers": self.customers,
            "validation": self.validation,
            "criterion": "mean over the truths "
            f"{' and '.join(POLICY_TRUTHS)} of {self.metric} as a share of the best candidate's",
            "scores": {name: self.score(name) for name in self.validation},
            "best_rule": self.best_rule,
            "margin": self.margin(self.model),
            "margins": {truth: self.margin(self.model, truth) for truth in POLICY_TRUTHS},
        }


def choose_policy(
    split: TimeSplit,
    ranker: PreparedRanker,
    fit_als_on: Callable[[sp.csr_matrix], AlternatingLeastSquares],
    repurchase_of: Callable[[TimeSplit], Repurchase | None],
    facts_of: FactsOf,
    settings: WindowSettings,
    config: TrainingConfig,
    catalog: Catalog,
    typical_line_value: Callable[[int], float | None],
) -> PolicyChoice:
    """Serve the model and every simple rule on the window before ``split``'s cutoff and
    choose the best (``ranker``: the ranker prepared at the test cutoff, whose training
    window is that window; ``typical_line_value``: the median line value before a
    moment, unix s). Where the model is the ranker, its settings are searched there
    first (``training.search``), and the best competes with the rules."""
    metric = POLICY_METRIC_TEMPLATE.format(k=config.k)
    window: EarlierWindow | None = None
    if ranker.window is not None:
        window = EarlierWindow(
            ranker.window.split, ranker.window.als, ranker.window.items, ranker.window.facts
        )
    else:
        try:
            window = earlier_window(split, fit_als_on, repurchase_of, facts_of, settings)
        except ConfigError as exc:
            model = POLICY_RANKER if ranker.table is not None else POLICY_ALS
            return PolicyChoice(
                model,
                f"{model} served unvalidated: no window before the test window ({exc})",
                False,
                model,
                metric,
            )
    validation = window.split
    young = earlier_history_days(validation, settings)
    if (
        ranker.table is not None
        and mature(validation, settings)
        and young < settings.min_history_days
    ):
        # The served ranker learnt from windows with the history they need; the one a
        # window earlier still would not: its customers' habits too young to show (none
        # could reorder after the suppression window), it would stand for the served
        # ranker no better than a guess.
        return PolicyChoice(
            POLICY_RANKER,
            f"{POLICY_RANKER} served unvalidated: the ranker of the window before the test "
            f"window would learn from {young:.0f} days of purchases, fewer than the "
            f"{settings.min_history_days} a training window needs (the served ranker's "
            f"learnt from {history_days(validation):.0f})",
            False,
            POLICY_RANKER,
            metric,
        )
    customers = evaluation_customers(validation, settings.max_customers, settings.seed)
    if not len(customers):
        model = POLICY_RANKER if ranker.table is not None else POLICY_ALS
        return PolicyChoice(
            model,
            f"{model} served unvalidated: nobody the model knows bought anything in the "
            f"window before the test window (before {iso_utc(validation.cutoff)})",
            False,
            model,
            metric,
        )
    # The ranker at the validation cutoff, trained one window earlier still.
    facts = facts_within(split, facts_of)
    prepared = prepare_ranker(
        validation, window.als, fit_als_on, repurchase_of, facts, settings, config.k
    )
    model = POLICY_RANKER if ranker.table is not None and prepared.table is not None else POLICY_ALS
    line_value = typical_line_value(int(validation.cutoff.value // 1_000_000_000))
    everyone = np.ones(len(customers), dtype=bool)
    repurchase = repurchase_of(validation)

    def judge(booster: BoosterSettings) -> tuple[tuple[Cutoff, ServingModel], dict[str, float]]:
        """The model served on the validation window with its ranker trained with
        ``booster`` (ALS without one), and its figure per truth."""
        trained = None if prepared.table is None else prepared.train(booster)
        at = Cutoff(
            validation,
            window.als,
            repurchase,
            finish_ranker(prepared, trained, customers, config.k, measure=False),
            customers,
            line_value,
        )
        served = served_model(at, config, curves(at, model, everyone, config))
        metrics = served_metrics(served, at, model, config, catalog)
        return (at, served), {truth: metrics[truth][SERVED][metric] for truth in metrics}

    search = None
    if model == POLICY_RANKER:
        search, (at, served) = search_settings(judge, config.ranker, len(customers), metric)
        model_figures = search.trials[search.best].figures
    else:
        (at, served), model_figures = judge(DEFAULT_BOOSTER)
    at_validation = at.ranker
    candidates = [model, POLICY_BUY_AGAIN, POLICY_ITEMKNN, POLICY_POPULARITY]
    if served.item_side is None:
        candidates.remove(POLICY_ITEMKNN)
    figures: dict[str, dict[str, float]] = {model: model_figures}
    for policy in candidates[1:]:
        metrics = served_metrics(served, at, policy, config, catalog)
        figures[policy] = {truth: metrics[truth][SERVED][metric] for truth in metrics}
    choice = PolicyChoice(
        model,
        "",
        True,
        model,
        metric,
        cutoff=iso_utc(validation.cutoff),
        customers=len(customers),
        validation=figures,
        search=search,
    )
    # The first best wins: the model on a tie.
    choice = replace(choice, name=max(candidates, key=choice.score))
    return _with_reason(choice, ranker, at_validation)


def _with_reason(
    choice: PolicyChoice, ranker: PreparedRanker, validation: RankerResult
) -> PolicyChoice:
    """``choice`` with its reason in words."""
    rule = choice.best_rule
    assert rule is not None
    model, metric = choice.model, choice.metric
    figures = choice.validation

    def on_both(policy: str) -> str:
        return ", ".join(f"{figures[policy][t]:.4f} on {t}" for t in POLICY_TRUTHS)

    changes = [choice.margin(model, truth) for truth in POLICY_TRUTHS]
    change = "" if None in changes else " (" + ", ".join(f"{m:+.1%}" for m in changes) + ")"
    served = (
        f"{model} {metric} {on_both(model)} "
        f"{'beats' if choice.name == model else 'does not beat'} the best simple rule, "
        f"{rule} {on_both(rule)}{change}, served on the validation window "
        f"before {choice.cutoff}"
    )
    if choice.name != model:
        served += f": {choice.name} is served"
    why_not = ""
    if model == POLICY_ALS:
        reason = ranker.reason if ranker.table is None else validation.reason
        why_not = f"; no ranker competed ({reason})"
    return replace(choice, reason=served + why_not)
