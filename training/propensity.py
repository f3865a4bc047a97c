"""Fit the propensity curves (``nbo.models.propensity``) on the time-split holdout.

For the evaluated customers, take what the service would propose at the cutoff: the
model's top candidates and the popular list, each minus the items suppressed at the
cutoff; label each (customer, item) pair 1 when the customer bought the item in the
holdout. An isotonic regression (scikit-learn) of the label on the ALS score, and one on
the popular rank, give probabilities of purchase within the holdout window.

Those customers all bought something in the holdout, so the curves give the chance of
buying an item given that the customer buys something within the window. The ``buying``
curve is the other factor (``with_buying_curve``): an isotonic map from the churn risk
at the cutoff to "bought anything in the holdout", fitted on every customer with an order
before the cutoff, buyers and non-buyers. The risk is the one the ranker's facts hold
(``training.lifecycle.customer_traits``): from the churn model fitted for evaluation,
whose labels end a churn horizon before the data does, and only when that is at or
before the cutoff (unknown otherwise, and then no curve), so nothing in it saw the
holdout. Its horizon (90 days by default) is not the holdout's, hence a fitted map, not
``1 - risk``.

Honesty: the curves are fitted on half of the customers and their Brier score reported on
the other half (against the constant base rate), then refitted on everyone for serving.
The served ALS model is the warm-started refit on all data, whose scores keep the scale
of the evaluated one; the curves carry over. The served buying curve is applied to the
published churn model's risks, calibrated like the evaluated model's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.topk import topk
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from nbo.data.sparse import RowIndices
from nbo.models.cf import FILTERED_SCORE
from nbo.models.popularity import popular_order
from nbo.models.propensity import BASIS_PLACE, BASIS_SCORE, Curve, Propensity
from training.methods import first_allowed
from training.split import TimeSplit

if TYPE_CHECKING:
    from training.ranker import RankerResult

# Breakpoints kept per curve: enough for a smooth map, small enough for a JSON file.
MAX_BREAKPOINTS = 256
# How much lower (relative) the place basis's held-out Brier score must be before a rule
# leaves its score (``rule_quality``): which half of the customers fits and which is read
# moves the two bases' difference by itself. On Online Retail's rule lists (one
# evaluation, the halves drawn with 20 seeds, ``bench/basis_noise.py``) the place basis
# won 5 of 20 draws by luck alone, by up to 3.9% (the difference's median +0.8%, its
# standard deviation 1.6%), where the trainer's one draw had switched to the place on a
# 0.0005 Brier margin (0.5%); a rule whose chance really follows the place wins by far
# more (24% on the tests' planted lists).
RULE_BASIS_MARGIN = 0.04


def fit_propensity(
    model: AlternatingLeastSquares,
    split: TimeSplit,
    customers: np.ndarray,
    popularity: np.ndarray,
    suppressed: sp.csr_matrix,
    candidates: int,
    horizon_days: int,
    seed: int,
) -> tuple[Propensity, dict[str, Any]]:
    """The propensity curves (probability of purchase within ``horizon_days``, the
    holdout's length) and a report of their quality on held-out customers."""
    n = min(candidates, model.item_factors.shape[0])
    exclude = suppressed[customers]
    ids, scores = topk(
        model.item_factors,
        model.user_factors[customers],
        n,
        filter_query_items=RowIndices(exclude),
        num_threads=model.num_threads,
    )
    valid = (ids >= 0) & (scores > FILTERED_SCORE)
    cf_labels = _bought(split.truth_all[customers], ids, valid)

    order = popular_order(popularity)
    popular_ids = first_allowed(order, exclude, n)
    popular_valid = popular_ids >= 0
    popular_labels = _bought(split.truth_all[customers], popular_ids, popular_valid)
    ranks = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), popular_ids.shape)

    rng = np.random.default_rng(seed)
    fit_half = rng.random(len(customers)) < 0.5
    report: dict[str, Any] = {
        "horizon_days": int(horizon_days),
        "candidates": int(n),
        "customers": len(customers),
        "cf": _list_quality(scores, cf_labels, valid, fit_half, increasing=True),
        "popular": _list_quality(ranks, popular_labels, popular_valid, fit_half, increasing=False),
    }
    cf_curve = fit_curve(scores, cf_labels, valid, increasing=True)
    popular_curve = fit_curve(ranks, popular_labels, popular_valid, increasing=False)
    return Propensity(cf_curve, popular_curve, horizon_days), report


def _bought(truth: sp.csr_matrix, ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1 where the row's customer bought the item in the holdout."""
    rows = np.arange(ids.shape[0])[:, None]
    n_items = truth.shape[1]
    keys = np.where(valid, rows * n_items + np.maximum(ids, 0), -1)
    coo = truth.tocoo()
    truth_keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
    return (np.isin(keys, truth_keys) & valid).astype(np.float64)


def fit_curve(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, increasing: bool, laplace: bool = False
) -> Curve:
    """The centered isotonic fit of ``y`` on ``x`` over the ``mask`` pairs. ``laplace``:
    the two end plateaus' rates smoothed by Laplace's rule (a plateau of 50 customers
    none of whom bought gives 1/52, not 0), for a curve whose ends are read as a
    customer's own chance (the buying curve: a certain 0 would say "will not buy")."""
    xs, ys = np.asarray(x, dtype=np.float64)[mask], y[mask]
    if len(xs) == 0 or len(np.unique(xs)) < 2:
        rate = float(ys.mean()) if len(ys) else 0.0
        if laplace:
            rate = (rate * len(ys) + 1.0) / (len(ys) + 2.0)
        return Curve(np.array([0.0, 1.0]), np.array([rate, rate]))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=increasing, out_of_bounds="clip")
    iso.fit(xs, ys)
    bx, by = _centered(xs, iso.predict(xs), increasing if laplace else None)
    if len(bx) > MAX_BREAKPOINTS:
        keep = np.unique(np.linspace(0, len(bx) - 1, MAX_BREAKPOINTS).round().astype(int))
        bx, by = bx[keep], by[keep]
    return Curve(np.asarray(bx, dtype=np.float64), np.clip(np.asarray(by), 0.0, 1.0))


def _centered(
    x: np.ndarray, fitted: np.ndarray, laplace_increasing: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centered isotonic regression (Oron and Flournoy, 2017): the isotonic fit's
    plateaus turned into one breakpoint each, at the mean score of the pairs in it (the
    first and last at the lowest and highest score), joined by straight lines.

    The isotonic fit is a step function: every candidate on one plateau gets the same
    probability, so a price or a lever, not the model, would decide between them. The
    centered curve keeps the plateaus' levels but is strictly monotone over the scores
    seen, so a higher score always means a higher propensity there: arbitration keeps
    the model's resolution. Beyond the scores seen it is flat (clipped), and equal
    priorities keep the candidates' order.

    ``laplace_increasing`` (the curve's direction; None: not smoothed): the first and
    last plateaus' rates smoothed by Laplace's rule, each kept on its side of its
    neighbour so the curve stays monotone.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], fitted[order]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    sizes = np.diff(np.r_[starts, len(xs)])
    centers = np.add.reduceat(xs, starts) / sizes
    levels = ys[starts].astype(np.float64)
    if laplace_increasing is not None:
        ends = (levels[[0, -1]] * sizes[[0, -1]] + 1.0) / (sizes[[0, -1]] + 2.0)
        if len(levels) > 1:
            low, high = (np.minimum, np.maximum) if laplace_increasing else (np.maximum, np.minimum)
            ends = np.array([low(ends[0], levels[1]), high(ends[1], levels[-2])])
        levels[0], levels[-1] = ends
    if len(starts) == 1:
        return np.array([xs[0], xs[-1]]), np.array([levels[0], levels[0]])
    centers[0], centers[-1] = xs[0], xs[-1]
    # Two plateaus whose pairs share one score cannot both keep it: keep x increasing.
    keep = np.r_[True, np.diff(centers) > 0]
    return centers[keep], levels[keep]


def _held_out_quality(
    x: np.ndarray,
    y: np.ndarray,
    fit_mask: np.ndarray,
    test_mask: np.ndarray,
    increasing: bool,
    laplace: bool = False,
) -> dict[str, float]:
    """Brier score of a curve fitted on the ``fit_mask`` pairs, on the ``test_mask`` pairs
    (other customers), against the constant base rate of the fitting half."""
    valid = fit_mask | test_mask
    quality = {
        "pairs": float(valid.sum()),
        "base_rate": float(y[valid].mean() if valid.any() else 0),
    }
    if not fit_mask.any() or not test_mask.any():
        return quality
    curve = fit_curve(x, y, fit_mask, increasing, laplace)
    truth = y[test_mask]
    predicted = curve(np.asarray(x, dtype=np.float64)[test_mask])
    base = float(y[fit_mask].mean())
    return {
        **quality,
        "brier": float(brier_score_loss(truth, predicted)),
        "brier_constant": float(brier_score_loss(truth, np.full(len(truth), base))),
        "mean_predicted": float(predicted.mean()),
        "observed": float(truth.mean()),
    }


def _list_quality(
    x: np.ndarray, y: np.ndarray, valid: np.ndarray, fit_rows: np.ndarray, increasing: bool
) -> dict[str, float]:
    """``_held_out_quality`` of customers x slots lists (``fit_rows``: the fitting
    customers), with the observed hit rate at the first slot."""
    quality = _held_out_quality(
        x, y, valid & fit_rows[:, None], valid & ~fit_rows[:, None], increasing
    )
    if "brier" in quality:
        quality["first_slot_rate"] = (
            float(y[:, 0][valid[:, 0]].mean()) if valid[:, 0].any() else 0.0
        )
    return quality


def with_ranker_curve(
    propensity: Propensity, report: dict[str, Any], ranker: RankerResult, seed: int
) -> tuple[Propensity, dict[str, Any]]:
    """Add the ranker's curve: its score on the candidates at the cutoff -> bought in the
    holdout; fitted on half the customers, checked on the other half, refitted on all."""
    scores = ranker.scores.astype(np.float64)
    labels = ranker.labels.astype(np.float64)
    customers = np.unique(ranker.rows)
    rng = np.random.default_rng(seed)
    fit_customers = customers[rng.random(len(customers)) < 0.5]
    fit_rows = np.isin(ranker.rows, fit_customers)
    quality = _held_out_quality(scores, labels, fit_rows, ~fit_rows, increasing=True)
    curve = ranker_curve(ranker, np.ones(len(scores), dtype=bool))
    return replace(propensity, ranker=curve), {**report, "ranker": quality}


def ranker_curve(ranker: RankerResult, pairs: np.ndarray) -> Curve:
    """The ranker's score -> bought in the holdout, fitted on its candidate ``pairs``
    (a mask over the candidates at the cutoff)."""
    scores = ranker.scores.astype(np.float64)
    labels = ranker.labels.astype(np.float64)
    return fit_curve(scores, labels, pairs, increasing=True)


def rule_curves(
    own: np.ndarray,
    filled: np.ndarray,
    bought: np.ndarray,
    valid: np.ndarray,
    basis: str,
) -> tuple[Curve, Curve]:
    """A simple rule's two curves (``Propensity.rule_score`` or ``rule_place``, and
    ``rule_fill``), from its lists at the cutoff (customers x places, best first;
    ``valid``: the pairs to fit): its own items' ``own`` figure (``basis``: the rule's
    score, or the place before suppression) -> bought in the holdout, and the 1-based
    place of the popular items that fill the lists -> bought. Never the place after
    suppression: an item that moves up when the one above it is suppressed keeps its own
    chance. Lists never filled at the cutoff (ItemKNN's often are not) give the fill the
    place curve of all their items: a list served shorter than any seen there is not
    told a certain 0."""
    places = np.broadcast_to(np.arange(1.0, own.shape[1] + 1.0), own.shape)
    mine = fit_curve(own, bought, valid & ~filled, increasing=basis == BASIS_SCORE)
    fills = valid & filled
    fill = fit_curve(places, bought, fills if fills.any() else valid, increasing=False)
    return mine, fill


def with_rule_basis(propensity: Propensity, basis: str, own: Curve, fill: Curve) -> Propensity:
    """``propensity`` serving a rule's lists by ``basis`` (``rule_curves``' two curves)."""
    if basis == BASIS_SCORE:
        return replace(propensity, rule=None, rule_place=None, rule_score=own, rule_fill=fill)
    return replace(propensity, rule=None, rule_score=None, rule_place=own, rule_fill=fill)


def rule_quality(
    scores: np.ndarray,
    places: np.ndarray,
    filled: np.ndarray,
    bought: np.ndarray,
    valid: np.ndarray,
    fit_rows: np.ndarray,
) -> dict[str, Any]:
    """The held-out quality of ``rule_curves`` on both bases, and the basis to serve:
    each fitted on the ``fit_rows`` customers' lists, read on the others' as the service
    reads them (``Propensity.of_rule_lists``, the running minimum included). ``basis``
    is the score unless the place's Brier score is lower by more than
    ``RULE_BASIS_MARGIN`` (relative; the score without two halves);
    ``brier`` is its figure, ``brier_score`` and ``brier_place`` each basis's, beside
    the single position curve artifacts before them were served by (``brier_position``:
    one curve over the place after suppression, fitted on the same pairs) and the base
    rate of the fitting half (``brier_constant``)."""
    fitting, testing = valid & fit_rows[:, None], valid & ~fit_rows[:, None]
    quality: dict[str, Any] = {
        "basis": BASIS_SCORE,
        "pairs": float(valid.sum()),
        "base_rate": float(bought[valid].mean() if valid.any() else 0.0),
        "own_pairs": float((valid & ~filled).sum()),
    }
    if not fitting.any() or not testing.any():
        return quality
    base = Propensity.uncalibrated()
    truth = bought[testing]
    predicted: dict[str, np.ndarray] = {}
    for basis, own in ((BASIS_SCORE, scores), (BASIS_PLACE, places)):
        curves = with_rule_basis(base, basis, *rule_curves(own, filled, bought, fitting, basis))
        predicted[basis] = curves.of_rule_lists(scores, filled, places)[testing]
    served = np.broadcast_to(np.arange(1.0, scores.shape[1] + 1.0), scores.shape)
    position = fit_curve(served, bought, fitting, increasing=False)
    by_position = replace(base, rule=position).of_rule_lists(scores, filled)[testing]
    brier = {basis: float(brier_score_loss(truth, p)) for basis, p in predicted.items()}
    margin = brier[BASIS_SCORE] * RULE_BASIS_MARGIN
    chosen = BASIS_PLACE if brier[BASIS_PLACE] < brier[BASIS_SCORE] - margin else BASIS_SCORE
    rate = float(bought[fitting].mean())
    first = testing[:, 0]
    return {
        **quality,
        "basis": chosen,
        "brier": brier[chosen],
        "brier_score": brier[BASIS_SCORE],
        "brier_place": brier[BASIS_PLACE],
        "brier_position": float(brier_score_loss(truth, by_position)),
        "brier_constant": float(brier_score_loss(truth, np.full(len(truth), rate))),
        "mean_predicted": float(predicted[chosen].mean()),
        "observed": float(truth.mean()),
        "first_slot_rate": float(bought[:, 0][first].mean()) if first.any() else 0.0,
    }


def bought_anything(split: TimeSplit) -> np.ndarray:
    """Per training customer, whether they bought anything in the holdout (items the
    training window does not know included): the event the product curves are
    conditional on, as ``training.methods.evaluation_customers`` selects them."""
    return (np.diff(split.truth_all.indptr) + split.unknown_all) > 0


def buying_curve(
    risk: np.ndarray | None, bought: np.ndarray, fitting: np.ndarray | None = None
) -> Curve | None:
    """Churn risk at the cutoff -> bought anything in the holdout, fitted on the training
    customers with a risk (``fitting``: only those marked); None without any risk."""
    if risk is None:
        return None
    known = np.isfinite(risk) if fitting is None else np.isfinite(risk) & fitting
    if not known.any():
        return None
    return fit_curve(
        np.nan_to_num(risk), bought.astype(np.float64), known, increasing=False, laplace=True
    )


def with_buying_curve(
    propensity: Propensity,
    report: dict[str, Any],
    split: TimeSplit,
    risk: np.ndarray | None,
    seed: int,
) -> tuple[Propensity, dict[str, Any]]:
    """Add the buying curve (``buying_curve``) of the training customers' churn ``risk``
    at the cutoff (NaN: unknown; None: no churn model honest there): fitted on half the
    customers, checked on the other half, refitted on all. Without risks the propensity
    stays conditional, and the report says why."""
    bought = bought_anything(split)
    known = np.zeros(len(bought), dtype=bool) if risk is None else np.isfinite(risk)
    if not known.any():
        reason = (
            "no churn risk at the cutoff (no churn model, or none whose labels end by "
            "then): product propensities are conditional on buying something"
        )
        return propensity, {**report, "buying": {"reason": reason}}
    assert risk is not None
    fit_half = np.random.default_rng(seed).random(len(bought)) < 0.5
    x, y = np.nan_to_num(risk), bought.astype(np.float64)
    quality = _held_out_quality(
        x, y, known & fit_half, known & ~fit_half, increasing=False, laplace=True
    )
    curve = buying_curve(risk, bought)
    section = {"customers": int(known.sum()), **quality}
    return replace(propensity, buying=curve), {**report, "buying": section}
