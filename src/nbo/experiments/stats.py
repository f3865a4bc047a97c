"""The A/B report of a model experiment: per-variant outcomes in, a plain document out.

An experiment splits customers between variants by configured weights; one variant may be
the control (non-personalized offers). This module turns each variant's counts and
per-customer revenue into the numbers a person decides on: conversion and revenue per
exposed customer, each variant against the baseline (the control, or without one the
first variant or the one the experiment names, so two models are compared with each
other) with a confidence interval and a p-value, and a sample-ratio-mismatch (SRM)
check, because a split that is not what was configured means the groups differ by more
than the treatment and every comparison is suspect.

Everything is a pure function of its arguments (no store, no files), so the same outcomes
always give the same report, and the report is plain JSON (NaN becomes ``None``) so it can
be stored, served and read by anything. The page that draws it lives apart, in
``nbo.experiments.page`` (matplotlib), so the service, which serves the JSON, never loads
a plotting library.

Conventions, chosen so the numbers match what analysts compute by hand:

* conversion difference: the p-value is the two-proportion z-test with the *pooled*
  standard error (the null hypothesis says both rates are equal), or, when any cell of
  the 2x2 table (converted or not, per variant) holds fewer than ``MIN_CONVERSIONS``
  customers, Fisher's exact test (``scipy.stats.fisher_exact``: the z-test's normal
  approximation needs about ten of each; Fisher's is conservative, which is the side
  to err on with a handful of buyers); the interval is
  Newcombe's hybrid score interval (Newcombe 1998, method 10: from each rate's Wilson
  interval). The Wald interval (difference ± z × unpooled standard error), which it
  matches on large samples, collapses to a point at 0% or 100% and leaves [-1, 1] on
  small ones (0 of 5 against 6 of 6 read +100 pp [+100, +100]);
* revenue per exposed customer: Welch's t-test (unequal variances; revenue is skewed and
  the variants' spreads differ) and its interval for the difference of means;
* revenue per exposed customer of one variant: mean ± t-quantile × standard error, with
  the lower bound clipped at 0 (revenue is never negative; on few or rare buyers the
  symmetric interval reaches below 0, and the report says where it was clipped);
* no correction for comparing several variants to one baseline: with many variants,
  read the p-values with that in mind (the page, the command's output and the docs say
  so);
* a variant's revenue interval is not estimated (None, with a warning) when every
  exposed customer has the same revenue (no buyers, say): there is no spread to
  estimate it from;
* the sample-ratio test is always reported (chi-square, p-value, verdict), not only when
  it fails, so a reader can see it was run;
* a variant with fewer than ``MIN_EXPOSED`` (100) exposed customers is warned about: the
  z-test, Welch's test and their intervals are large-sample approximations, and below
  about 100 customers (fewer still converting, revenue skewed by a few large orders)
  their p-values and intervals can be far off; such comparisons are indicative only;
* a comparison in which either variant has fewer than ``MIN_CONVERSIONS`` (10)
  converted customers is warned about and marked ``indicative``, and is never called
  ``significant`` whatever its p-value: revenue per exposed customer is zero for every
  non-buyer, so its mean and spread rest on the buyers alone, and a handful of them (4
  of 156 against 0 of 146 gave p = 0.045 for revenue) says little; with no buyer at all
  a variant's spread is not estimable. Ten is the usual rule of thumb for the normal
  approximation of a binomial count (n·p >= 10), which both the z-test and Welch's test
  lean on here;
* every comparison says what its sample can detect (``sample_size``): the smallest
  difference in conversion rate found 80% of the time (``POWER``) at level ``alpha``
  with the exposed customers each side has now, and how many exposed customers each
  side would need, at the configured split, to find the difference seen. Without it a
  "not significant" reads as "no effect", when it is as often "too few customers to
  tell": a marketer needs the figure to decide whether to keep the test running. The
  formulas are the textbook normal approximations for two proportions (Fleiss, Levin
  and Paik, *Statistical Methods for Rates and Proportions*, 3rd ed., 4.2), with
  ``scipy.stats.norm`` for the quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

SRM_WARNING = "SAMPLE RATIO MISMATCH"
# Exposed customers a variant needs before its intervals and p-values are trusted (see
# the module docstring); fewer are reported with a warning, not hidden.
MIN_EXPOSED = 100
# Converted customers each variant of a comparison needs before it may be called
# significant (see the module docstring); fewer: Fisher's exact test for conversion, a
# warning, and ``indicative`` rather than ``significant``.
MIN_CONVERSIONS = 10
SRM_P_THRESHOLD = 0.001
# The chance of finding a true difference the size guidance plans for: 80%, the usual
# planning figure (a 1-in-5 chance of missing a real effect of that size).
POWER = 0.8


@dataclass(frozen=True)
class VariantOutcome:
    """What one variant of an experiment produced.

    ``revenue`` holds one value per exposed customer (zeros for non-converters), not just
    a total, because the revenue test needs the spread, not only the mean.
    """

    name: str
    control: bool  # the control group (non-personalized offers)
    weight: float  # configured traffic share, > 0 (shares need not sum to 1; normalised)
    assigned: int  # customers seen in the experiment, counted in this variant (each once)
    exposed: int  # customers who got at least one recorded offer impression
    converted: int  # exposed customers with at least one conversion after their first exposure
    revenue: np.ndarray  # revenue per exposed customer (length == exposed; zeros for no sale)


# --- the report -----------------------------------------------------------------------


def experiment_report(
    name: str,
    outcomes: Sequence[VariantOutcome],
    alpha: float = 0.05,
    srm_p_threshold: float = SRM_P_THRESHOLD,
    min_exposed: int = MIN_EXPOSED,
    baseline: str | None = None,
    min_conversions: int = MIN_CONVERSIONS,
) -> dict[str, Any]:
    """The A/B report of experiment ``name`` as a JSON-ready dict.

    Keys: ``experiment``, ``alpha``, ``min_exposed``, ``min_conversions``, ``control``
    (its name or None),
    ``baseline`` (the variant the others are compared against: ``baseline`` when given,
    else the control, else the first variant, so two models A/B tested without a
    control are compared too), ``baseline_is`` (``"configured"``, ``"control"`` or
    ``"first variant"``), ``variants`` (input order), ``comparisons`` (each other
    variant against the baseline), ``srm`` and ``warnings``. Intervals are at level
    ``1 - alpha``; the SRM check flags a mismatch below ``srm_p_threshold`` (deliberately
    much stricter than ``alpha``: it runs on every report, and a false alarm stops a good
    experiment); a variant with fewer than ``min_exposed`` exposed customers is warned
    about; a comparison with fewer than ``min_conversions`` converted customers on
    either side is warned about and marked indicative, never significant.

    Raises ValueError naming the variant and the field for inconsistent input, since a
    report built on impossible counts would look trustworthy and be wrong.
    """
    _validate(outcomes, alpha, srm_p_threshold)
    names = [o.name for o in outcomes]
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline: '{baseline}' is not a variant ({', '.join(names)})")
    revenues = [np.asarray(o.revenue, dtype=float).reshape(-1) for o in outcomes]
    total_weight = math.fsum(float(o.weight) for o in outcomes)
    shares = [float(o.weight) / total_weight for o in outcomes]
    warnings: list[str] = []

    variants = [
        _variant_summary(o, share, revenue, alpha)
        for o, share, revenue in zip(outcomes, shares, revenues, strict=True)
    ]
    for o, revenue in zip(outcomes, revenues, strict=True):
        if len(revenue) >= 2 and float(np.ptp(revenue)) == 0:
            warnings.append(
                f"{o.name}: revenue per exposed customer's interval cannot be estimated: "
                f"all {len(revenue)} exposed customers have the same revenue "
                f"({float(revenue[0]):.2f}{', no buyers' if o.converted == 0 else ''}), so "
                "the sample shows no spread to estimate it from"
            )
    for o in outcomes:
        if o.exposed > o.assigned:
            warnings.append(
                f"{o.name}: {o.exposed} exposed but only {o.assigned} assigned; "
                "assignment and exposure may come from different windows"
            )

    srm = _srm(outcomes, shares, srm_p_threshold)
    if srm["mismatch"]:
        warnings.insert(0, _srm_warning(outcomes, srm))
    small = [o for o in outcomes if o.exposed < min_exposed]
    if small:
        counts = ", ".join(f"{o.name} {o.exposed}" for o in small)
        warnings.append(
            f"too few exposed customers: {counts} (fewer than {min_exposed} per variant): "
            "the tests and intervals below are large-sample approximations and can be far "
            "off at this size; read the comparisons as indicative only"
        )
    few = [o for o in outcomes if o.converted < min_conversions]
    if few and len(outcomes) > 1:
        counts = ", ".join(f"{o.name} {o.converted}" for o in few)
        warnings.append(
            f"too few conversions: {counts} (fewer than {min_conversions} per variant): "
            "conversion is tested with Fisher's exact test, and no comparison with such a "
            "variant is called significant, whatever its p-value; read it as indicative only"
        )

    control_index = next((i for i, o in enumerate(outcomes) if o.control), None)
    if baseline is not None:
        base_index, baseline_is = names.index(baseline), "configured"
    elif control_index is not None:
        base_index, baseline_is = control_index, "control"
    else:
        base_index, baseline_is = 0, "first variant"
    for index, summary in enumerate(variants):
        summary["baseline"] = index == base_index
    comparisons: list[dict[str, Any]] = []
    c = outcomes[base_index]
    for index, (o, revenue) in enumerate(zip(outcomes, revenues, strict=True)):
        if index == base_index:
            continue
        comparisons.append(
            {
                "variant": o.name,
                "against": c.name,
                "conversion": _conversion_comparison(o, c, alpha, min_conversions, warnings),
                "revenue_per_exposed": _revenue_comparison(
                    o, revenue, c, revenues[base_index], alpha, min_conversions, warnings
                ),
                "sample_size": _sample_size(o, c, shares[index] / shares[base_index], alpha),
            }
        )

    return {
        "experiment": str(name),
        "alpha": float(alpha),
        "min_exposed": int(min_exposed),
        "min_conversions": int(min_conversions),
        "control": None if control_index is None else outcomes[control_index].name,
        "baseline": c.name,
        "baseline_is": baseline_is,
        "variants": variants,
        "comparisons": comparisons,
        "srm": srm,
        "warnings": warnings,
    }


def _validate(outcomes: Sequence[VariantOutcome], alpha: float, srm_p_threshold: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0.0 < srm_p_threshold < 1.0:
        raise ValueError(f"srm_p_threshold must be between 0 and 1, got {srm_p_threshold}")
    if len(outcomes) == 0:
        raise ValueError("outcomes: an experiment needs at least one variant")
    seen: set[str] = set()
    controls: list[str] = []
    for o in outcomes:
        if o.name in seen:
            raise ValueError(f"variant '{o.name}': name is used by more than one variant")
        seen.add(o.name)
        if o.control:
            controls.append(o.name)
        if not (math.isfinite(float(o.weight)) and float(o.weight) > 0):
            raise ValueError(f"variant '{o.name}': weight must be a number > 0, got {o.weight}")
        for field in ("assigned", "exposed", "converted"):
            value = getattr(o, field)
            if value < 0:
                raise ValueError(f"variant '{o.name}': {field} must be >= 0, got {value}")
        if o.converted > o.exposed:
            raise ValueError(
                f"variant '{o.name}': converted ({o.converted}) is more than exposed ({o.exposed})"
            )
        revenue = np.asarray(o.revenue, dtype=float)
        if revenue.ndim != 1 or len(revenue) != o.exposed:
            raise ValueError(
                f"variant '{o.name}': revenue must hold one value per exposed customer "
                f"({o.exposed}), got shape {revenue.shape}"
            )
        if not np.all(np.isfinite(revenue)):
            raise ValueError(f"variant '{o.name}': revenue has NaN or infinite values")
        if np.any(revenue < 0):
            raise ValueError(f"variant '{o.name}': revenue has negative values")
    if len(controls) > 1:
        raise ValueError(f"control: more than one variant is the control ({', '.join(controls)})")


def _variant_summary(
    o: VariantOutcome, share: float, revenue: np.ndarray, alpha: float
) -> dict[str, Any]:
    """The variant's own numbers, plus the intervals the page draws (so the page needs
    only the report, never the raw revenue)."""
    n = int(o.exposed)
    rate = o.converted / n if n else None
    mean = float(revenue.mean()) if n else None
    revenue_ci = _mean_ci(revenue, alpha)
    clipped = revenue_ci is not None and revenue_ci[0] < 0
    if revenue_ci is not None and clipped:
        revenue_ci = [0.0, revenue_ci[1]]
    return {
        "name": o.name,
        "control": bool(o.control),
        "weight": share,
        "assigned": int(o.assigned),
        "exposed": n,
        "converted": int(o.converted),
        "conversion_rate": rate,
        "conversion_rate_ci": _wilson(int(o.converted), n, alpha),
        "revenue": float(math.fsum(revenue.tolist())),
        "revenue_per_exposed": mean,
        "revenue_per_exposed_ci": revenue_ci,
        "revenue_per_exposed_ci_clipped": clipped,
    }


def _wilson(successes: int, n: int, alpha: float) -> list[float] | None:
    """Wilson score interval: unlike Wald it stays inside [0, 1] and is not zero-width at
    0% or 100%, which matters for small or rarely converting variants."""
    if n == 0:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _newcombe(v: VariantOutcome, c: VariantOutcome, alpha: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the difference of two conversion rates (both
    variants exposed): each side's distance from the difference is the two Wilson
    intervals' distances from their rates, combined, so it stays within [-1, 1] and
    keeps a width at 0% or 100%."""
    v_low, v_high = _wilson(int(v.converted), int(v.exposed), alpha) or [0.0, 1.0]
    c_low, c_high = _wilson(int(c.converted), int(c.exposed), alpha) or [0.0, 1.0]
    pv, pc = v.converted / v.exposed, c.converted / c.exposed
    difference = pv - pc
    low = difference - math.sqrt((pv - v_low) ** 2 + (c_high - pc) ** 2)
    high = difference + math.sqrt((v_high - pv) ** 2 + (pc - c_low) ** 2)
    return low, high


def _mean_ci(values: np.ndarray, alpha: float) -> list[float] | None:
    """Mean ± t-quantile × standard error; None with fewer than two values, or values
    that are all the same (six customers and no buyer): the sample shows no spread, and
    an interval of zero width (0.00 .. 0.00) would claim a certainty it does not have."""
    n = len(values)
    if n < 2 or float(np.ptp(values)) == 0:
        return None
    mean = float(values.mean())
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
    return [mean - half, mean + half]


def _conversion_comparison(
    v: VariantOutcome, c: VariantOutcome, alpha: float, min_conversions: int, warnings: list[str]
) -> dict[str, Any]:
    """Two-proportion comparison of ``v`` against the baseline ``c``: the z-test, or
    Fisher's exact test when a cell of the 2x2 table is below ``min_conversions``."""
    indicative = min(v.converted, c.converted) < min_conversions
    result: dict[str, Any] = {
        "difference": None,
        "relative_uplift": None,
        "ci_low": None,
        "ci_high": None,
        "test": None,
        "z": None,
        "p_value": None,
        "significant": False,
        "indicative": indicative,
    }
    nv, nc = int(v.exposed), int(c.exposed)
    if nv > 0 and nc > 0:
        pv, pc = v.converted / nv, c.converted / nc
        result["difference"] = pv - pc
        result["relative_uplift"] = (pv - pc) / pc if pc > 0 else None
    small = [f"{o.name} ({o.exposed})" for o in (v, c) if o.exposed < 2]
    if small:
        warnings.append(
            f"{v.name} vs {c.name}: conversion not tested, fewer than 2 exposed customers "
            f"in {', '.join(small)}"
        )
        return result
    pv, pc = v.converted / nv, c.converted / nc
    pooled = (v.converted + c.converted) / (nv + nc)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / nv + 1 / nc))
    if pooled_se == 0:
        warnings.append(
            f"{v.name} vs {c.name}: conversion not tested, the rate is {pooled:.0%} in both "
            "(no variation)"
        )
        return result
    cells = (v.converted, nv - v.converted, c.converted, nc - c.converted)
    ci_low, ci_high = _newcombe(v, c, alpha)
    if min(cells) < min_conversions:
        table = [[v.converted, nv - v.converted], [c.converted, nc - c.converted]]
        p_value = float(stats.fisher_exact(table).pvalue)
        result.update(test="Fisher's exact")
    else:
        z = (pv - pc) / pooled_se
        p_value = float(2 * stats.norm.sf(abs(z)))
        result.update(test="two-proportion z", z=z)
    result.update(
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        significant=p_value < alpha and not indicative,
    )
    return result


def _sample_size(
    v: VariantOutcome, c: VariantOutcome, ratio: float, alpha: float
) -> dict[str, Any]:
    """What the comparison of ``v`` against the baseline ``c`` can detect in conversion.

    ``minimum_detectable_difference``: the smallest difference in conversion rate (a
    share, as ``difference``) that a two-sided test at level ``alpha`` finds with
    probability ``POWER`` with the customers exposed now, both sides at the baseline's
    rate (the null's spread): ``(z_{1-alpha/2} + z_power) * sqrt(p(1-p)(1/n_v + 1/n_c))``.
    ``exposed_needed``: the exposed customers each side needs to find the difference
    seen with that probability, at the configured split (``ratio``: the variant's
    weight over the baseline's), the pooled rate's spread under the null and each
    rate's own under the alternative. Null fields with a ``reason`` when a figure has
    nothing to rest on (nobody exposed, no conversion or every customer converting on
    the baseline, no difference seen), never a zero or an infinity.
    """
    nv, nc = int(v.exposed), int(c.exposed)
    result: dict[str, Any] = {
        "power": POWER,
        "alpha": float(alpha),
        "exposed": {"variant": nv, "against": nc},
        "baseline_rate": None,
        "minimum_detectable_difference": None,
        "minimum_detectable_relative_uplift": None,
        "exposed_needed": None,
        "exposed_more": None,
        "reason": None,
    }
    if nv < 1 or nc < 1:
        result["reason"] = "nobody exposed yet on one side"
        return result
    pc, pv = c.converted / nc, v.converted / nv
    result["baseline_rate"] = pc
    z_alpha, z_power = float(stats.norm.isf(alpha / 2)), float(stats.norm.ppf(POWER))
    if 0 < pc < 1:
        mde = (z_alpha + z_power) * math.sqrt(pc * (1 - pc) * (1 / nv + 1 / nc))
        result["minimum_detectable_difference"] = mde
        result["minimum_detectable_relative_uplift"] = mde / pc
    else:
        result["reason"] = (
            f"no customer of {c.name} converted yet"
            if pc == 0
            else f"every customer of {c.name} converted"
        )
    difference = pv - pc
    pooled = (pc + ratio * pv) / (1 + ratio)
    if difference == 0 or not 0 < pooled < 1:
        result["reason"] = result["reason"] or "no difference seen yet to size the test for"
        return result
    null_spread = z_alpha * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
    alternative_spread = z_power * math.sqrt(pc * (1 - pc) + pv * (1 - pv) / ratio)
    needed_c = math.ceil((null_spread + alternative_spread) ** 2 / difference**2)
    needed_v = math.ceil(needed_c * ratio)
    result["exposed_needed"] = {"variant": needed_v, "against": needed_c}
    result["exposed_more"] = max(0, needed_v - nv) + max(0, needed_c - nc)
    return result


def _revenue_comparison(
    v_outcome: VariantOutcome,
    v: np.ndarray,
    c_outcome: VariantOutcome,
    c: np.ndarray,
    alpha: float,
    min_conversions: int,
    warnings: list[str],
) -> dict[str, Any]:
    """Welch's t-test of revenue per exposed customer, ``v`` against the baseline ``c``.
    Never significant with fewer than ``min_conversions`` buyers on a side, nor when a
    side's revenue has no spread (no buyers): that side's variance is not estimable, and
    the test would rest on the other side's alone."""
    v_name, c_name = v_outcome.name, c_outcome.name
    no_spread = any(len(x) >= 1 and float(np.ptp(x)) == 0 for x in (v, c))
    indicative = min(v_outcome.converted, c_outcome.converted) < min_conversions or no_spread
    result: dict[str, Any] = {
        "difference": None,
        "relative_uplift": None,
        "ci_low": None,
        "ci_high": None,
        "t": None,
        "p_value": None,
        "significant": False,
        "indicative": indicative,
    }
    if len(v) > 0 and len(c) > 0:
        mv, mc = float(v.mean()), float(c.mean())
        result["difference"] = mv - mc
        result["relative_uplift"] = (mv - mc) / mc if mc != 0 else None
    small = [f"{n} ({len(x)})" for n, x in ((v_name, v), (c_name, c)) if len(x) < 2]
    if small:
        warnings.append(
            f"{v_name} vs {c_name}: revenue not tested, fewer than 2 exposed customers "
            f"in {', '.join(small)}"
        )
        return result
    # Checked before scipy: with no spread at all the statistic is 0/0 (scipy warns, NaN).
    if float(np.ptp(v)) == 0 and float(np.ptp(c)) == 0:
        warnings.append(
            f"{v_name} vs {c_name}: revenue not tested, revenue per customer does not vary "
            "in either group"
        )
        return result
    test = stats.ttest_ind(v, c, equal_var=False)
    t, p_value = _finite_or_none(test.statistic), _finite_or_none(test.pvalue)
    if t is None or p_value is None:
        warnings.append(f"{v_name} vs {c_name}: revenue test undefined")
        return result
    interval = test.confidence_interval(1 - alpha)
    result.update(
        ci_low=_finite_or_none(interval.low),
        ci_high=_finite_or_none(interval.high),
        t=t,
        p_value=p_value,
        significant=p_value < alpha and not indicative,
    )
    return result


def _srm(
    outcomes: Sequence[VariantOutcome], shares: Sequence[float], threshold: float
) -> dict[str, Any]:
    """Chi-square goodness of fit of the exposed counts to the configured shares.

    On *exposed*, not assigned, counts: a variant that fails to show offers to some of
    its customers (a crash, a timeout, a filter) skews exactly these, and the comparisons
    are computed on them.
    """
    observed = [int(o.exposed) for o in outcomes]
    total = sum(observed)
    expected = [total * s for s in shares]
    result: dict[str, Any] = {
        "observed": observed,
        "expected": expected,
        "chi2": None,
        "degrees_of_freedom": len(outcomes) - 1,
        "p_value": None,
        "threshold": threshold,
        "mismatch": False,
        "verdict": "",
    }
    # One variant has nothing to mismatch with; zero exposed has nothing to test.
    if len(outcomes) < 2:
        result["verdict"] = "not tested: one variant only"
        return result
    if total == 0:
        result["verdict"] = "not tested: nobody exposed yet"
        return result
    test = stats.chisquare(np.asarray(observed, dtype=float), np.asarray(expected, dtype=float))
    chi2, p_value = _finite_or_none(test.statistic), _finite_or_none(test.pvalue)
    mismatch = p_value is not None and p_value < threshold
    if p_value is None:
        verdict = "not tested: the statistic is undefined"
    elif mismatch:
        verdict = f"mismatch: p < {threshold:g}, the split is not what was configured"
    else:
        # A test that finds nothing cannot show the split is right, only that this many
        # customers give no evidence it is wrong.
        verdict = f"no evidence of a mismatch: p >= {threshold:g}"
    result.update(chi2=chi2, p_value=p_value, mismatch=mismatch, verdict=verdict)
    return result


def _srm_warning(outcomes: Sequence[VariantOutcome], srm: Mapping[str, Any]) -> str:
    total = sum(srm["observed"])
    p_value = f"p = {srm['p_value']:.2g}" if srm["p_value"] > 0 else "p < 1e-300"
    shares = ", ".join(
        f"{o.name} {observed / total:.1%} observed vs {expected / total:.1%} expected"
        for o, observed, expected in zip(outcomes, srm["observed"], srm["expected"], strict=True)
    )
    return (
        f"{SRM_WARNING}: exposed shares {shares} (chi2 = {srm['chi2']:.2f}, "
        f"{p_value}). The split is not what was configured, so the groups "
        "differ by more than the treatment: do not trust the comparisons until the cause "
        "is found."
    )


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
