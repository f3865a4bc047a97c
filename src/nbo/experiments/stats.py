"""The A/B report of a model experiment: per-variant outcomes in, a plain document out.

An experiment splits customers between variants by configured weights; one variant may be
the control (non-personalized offers). This module turns each variant's counts and
per-customer revenue into the numbers a person decides on: conversion and revenue per
exposed customer, each variant against the control with a confidence interval and a
p-value, and a sample-ratio-mismatch (SRM) check, because a split that is not what was
configured means the groups differ by more than the treatment and every comparison is
suspect.

Everything is a pure function of its arguments (no store, no files), so the same outcomes
always give the same report, and the report is plain JSON (NaN becomes ``None``) so it can
be stored, served and read by anything. ``report_html`` draws the report as one
self-contained page: no script and no network, charts as base64 PNGs from matplotlib's
Agg canvas (never pyplot, whose global state is unsafe in a server).

Conventions, chosen so the numbers match what analysts compute by hand:

* conversion difference: the p-value is the two-proportion z-test with the *pooled*
  standard error (the null hypothesis says both rates are equal), the interval uses the
  *unpooled* (Wald) standard error (it describes the difference, not the null);
* revenue per exposed customer: Welch's t-test (unequal variances; revenue is skewed and
  the variants' spreads differ) and its interval for the difference of means;
* no correction for comparing several variants to one control: with many variants,
  read the p-values with that in mind.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

SRM_WARNING = "SAMPLE RATIO MISMATCH"


@dataclass(frozen=True)
class VariantOutcome:
    """What one variant of an experiment produced.

    ``revenue`` holds one value per exposed customer (zeros for non-converters), not just
    a total, because the revenue test needs the spread, not only the mean.
    """

    name: str
    control: bool  # the control group (non-personalized offers)
    weight: float  # configured traffic share, > 0 (shares need not sum to 1; normalised)
    assigned: int  # customers seen in the experiment for this variant
    exposed: int  # customers who got at least one recorded offer impression
    converted: int  # exposed customers with at least one conversion after their first exposure
    revenue: np.ndarray  # revenue per exposed customer (length == exposed; zeros for no sale)


# --- the report -----------------------------------------------------------------------


def experiment_report(
    name: str,
    outcomes: Sequence[VariantOutcome],
    alpha: float = 0.05,
    srm_p_threshold: float = 0.001,
) -> dict[str, Any]:
    """The A/B report of experiment ``name`` as a JSON-ready dict.

    Keys: ``experiment``, ``alpha``, ``control`` (its name or None), ``variants`` (input
    order), ``comparisons`` (each non-control variant against the control; empty without
    a control), ``srm`` and ``warnings``. Intervals are at level ``1 - alpha``; the SRM
    check flags a mismatch below ``srm_p_threshold`` (deliberately much stricter than
    ``alpha``: it runs on every report, and a false alarm stops a good experiment).

    Raises ValueError naming the variant and the field for inconsistent input, since a
    report built on impossible counts would look trustworthy and be wrong.
    """
    _validate(outcomes, alpha, srm_p_threshold)
    revenues = [np.asarray(o.revenue, dtype=float).reshape(-1) for o in outcomes]
    total_weight = math.fsum(float(o.weight) for o in outcomes)
    shares = [float(o.weight) / total_weight for o in outcomes]
    warnings: list[str] = []

    variants = [
        _variant_summary(o, share, revenue, alpha)
        for o, share, revenue in zip(outcomes, shares, revenues, strict=True)
    ]
    for o in outcomes:
        if o.exposed > o.assigned:
            warnings.append(
                f"{o.name}: {o.exposed} exposed but only {o.assigned} assigned; "
                "assignment and exposure may come from different windows"
            )

    srm = _srm(outcomes, shares, srm_p_threshold)
    if srm["mismatch"]:
        warnings.insert(0, _srm_warning(outcomes, srm))

    control_index = next((i for i, o in enumerate(outcomes) if o.control), None)
    comparisons: list[dict[str, Any]] = []
    if control_index is None:
        warnings.append("no control variant: variants are not compared")
    else:
        c = outcomes[control_index]
        for o, revenue in zip(outcomes, revenues, strict=True):
            if o.control:
                continue
            comparisons.append(
                {
                    "variant": o.name,
                    "against": c.name,
                    "conversion": _conversion_comparison(o, c, alpha, warnings),
                    "revenue_per_exposed": _revenue_comparison(
                        o.name, revenue, c.name, revenues[control_index], alpha, warnings
                    ),
                }
            )

    return {
        "experiment": str(name),
        "alpha": float(alpha),
        "control": None if control_index is None else outcomes[control_index].name,
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
        "revenue_per_exposed_ci": _mean_ci(revenue, alpha),
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


def _mean_ci(values: np.ndarray, alpha: float) -> list[float] | None:
    """Mean ± t-quantile × standard error; None with fewer than two values (no spread)."""
    n = len(values)
    if n < 2:
        return None
    mean = float(values.mean())
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
    return [mean - half, mean + half]


def _conversion_comparison(
    v: VariantOutcome, c: VariantOutcome, alpha: float, warnings: list[str]
) -> dict[str, Any]:
    """Two-proportion comparison of ``v`` against the control ``c``."""
    result: dict[str, Any] = {
        "difference": None,
        "relative_uplift": None,
        "ci_low": None,
        "ci_high": None,
        "z": None,
        "p_value": None,
        "significant": False,
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
    difference = pv - pc
    z = difference / pooled_se
    unpooled_se = math.sqrt(pv * (1 - pv) / nv + pc * (1 - pc) / nc)
    quantile = float(stats.norm.ppf(1 - alpha / 2))
    p_value = float(2 * stats.norm.sf(abs(z)))
    result.update(
        ci_low=difference - quantile * unpooled_se,
        ci_high=difference + quantile * unpooled_se,
        z=z,
        p_value=p_value,
        significant=p_value < alpha,
    )
    return result


def _revenue_comparison(
    v_name: str,
    v: np.ndarray,
    c_name: str,
    c: np.ndarray,
    alpha: float,
    warnings: list[str],
) -> dict[str, Any]:
    """Welch's t-test of revenue per exposed customer, ``v`` against the control ``c``."""
    result: dict[str, Any] = {
        "difference": None,
        "relative_uplift": None,
        "ci_low": None,
        "ci_high": None,
        "t": None,
        "p_value": None,
        "significant": False,
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
        significant=p_value < alpha,
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
        "p_value": None,
        "mismatch": False,
    }
    # One variant has nothing to mismatch with; zero exposed has nothing to test.
    if total == 0 or len(outcomes) < 2:
        return result
    test = stats.chisquare(np.asarray(observed, dtype=float), np.asarray(expected, dtype=float))
    chi2, p_value = _finite_or_none(test.statistic), _finite_or_none(test.pvalue)
    result.update(chi2=chi2, p_value=p_value, mismatch=p_value is not None and p_value < threshold)
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


# --- the page -------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2rem; font-size: 1.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
.srm { background: #fdecea; border: 2px solid #c62828; color: #8e0000; font-weight: 700;
       padding: 0.8rem 1rem; border-radius: 6px; margin: 1rem 0; font-size: 1.05rem; }
.warn { background: #fff8e1; border: 1px solid #ffb74d; padding: 0.5rem 1rem;
        border-radius: 6px; margin: 1rem 0; }
.yes { color: #1b5e20; font-weight: 600; }
.note { color: #555; font-size: 0.9rem; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 0.3rem; }
"""


def report_html(report: Mapping[str, Any], title: str | None = None) -> str:
    """The report as one self-contained HTML page (no script, no links, embedded PNG).

    Warnings come first, the SRM warning in a red box: someone who only glances at the
    page must not miss that the comparisons below it cannot be trusted.
    """
    heading = title or f"Experiment {report.get('experiment', '')}"
    level = _level(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        _warnings_html(report.get("warnings", [])),
        "<h2>Variants</h2>",
        _variants_table(report),
        "<h2>Against the control</h2>",
        _comparisons_table(report, level),
        "<h2>Charts</h2>",
        _figure_html(report, level),
        "</body></html>\n",
    ]
    return "\n".join(part for part in parts if part)


def _level(report: Mapping[str, Any]) -> str:
    return f"{(1 - float(report.get('alpha', 0.05))) * 100:g}%"


def _warnings_html(warnings: Sequence[str]) -> str:
    srm = [w for w in warnings if w.startswith(SRM_WARNING)]
    others = [w for w in warnings if not w.startswith(SRM_WARNING)]
    parts = [f'<div class="srm" role="alert">{_e(w)}</div>' for w in srm]
    if others:
        items = "".join(f"<li>{_e(w)}</li>" for w in others)
        parts.append(f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>')
    return "\n".join(parts)


def _variants_table(report: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>variant</th><th>traffic share</th><th>assigned</th><th>exposed</th>"
        "<th>converted</th><th>conversion rate</th><th>revenue</th>"
        "<th>revenue per exposed</th></tr>"
    )
    rows = []
    for v in report.get("variants", []):
        label = f"{v['name']} (control)" if v.get("control") else v["name"]
        cells = [
            label,
            _pct(v.get("weight")),
            str(v.get("assigned")),
            str(v.get("exposed")),
            str(v.get("converted")),
            _pct(v.get("conversion_rate"), 2),
            _money(v.get("revenue")),
            _money(v.get("revenue_per_exposed")),
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _comparisons_table(report: Mapping[str, Any], level: str) -> str:
    comparisons = report.get("comparisons", [])
    if not comparisons:
        return "<p>No comparisons (no control variant, or no other variant).</p>"
    head = (
        "<tr><th>variant</th><th>metric</th><th>difference</th><th>relative uplift</th>"
        f"<th>{_e(level)} CI of the difference</th><th>p-value</th><th>significant</th></tr>"
    )
    rows = []
    for comparison in comparisons:
        label = f"{comparison['variant']} vs {comparison['against']}"
        for key, metric, fmt in (
            ("conversion", "conversion rate", _pp),
            ("revenue_per_exposed", "revenue per exposed", _signed_money),
        ):
            s = comparison.get(key, {})
            ci = (
                "n/a"
                if s.get("ci_low") is None or s.get("ci_high") is None
                else f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
            )
            significant = bool(s.get("significant"))
            cells = [
                _e(label),
                _e(metric),
                _e(fmt(s.get("difference"))),
                _e(_pct(s.get("relative_uplift"), 1, signed=True)),
                _e(ci),
                _e(_p(s.get("p_value"))),
                '<span class="yes">yes</span>' if significant else "no",
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    alpha = float(report.get("alpha", 0.05))
    note = (
        f"Significant means p &lt; {_e(f'{alpha:g}')}. Conversion: two-proportion z-test "
        "(pooled standard error), Wald interval (unpooled); differences in percentage "
        "points. Revenue: Welch's t-test and its interval. Each variant is compared to the "
        "control separately, with no correction for multiple comparisons."
    )
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return f'{table}<p class="note">{note}</p>'


def _figure_html(report: Mapping[str, Any], level: str) -> str:
    variants = report.get("variants", [])
    if not variants:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(_variants_png(report)).decode("ascii")
    caption = (
        f"Error bars: {level} confidence intervals. Conversion rate: Wilson score interval. "
        "Revenue per exposed customer: mean ± t-quantile × standard error. "
        "Grey bars are the control."
    )
    alt = "conversion rate and revenue per exposed customer per variant"
    return f'<img src="{uri}" alt="{_e(alt)}">\n<p class="note">{_e(caption)}</p>'


def _variants_png(report: Mapping[str, Any]) -> bytes:
    """Two panels: conversion rate (Wilson interval) and revenue per exposed customer
    (t interval) per variant; a variant with no exposed customers has no bar."""
    variants = list(report.get("variants", []))
    names = [str(v["name"]) for v in variants]
    colours = np.array(["tab:gray" if v.get("control") else "tab:blue" for v in variants])
    figure = Figure(
        figsize=(max(7.0, 1.6 * len(variants) + 3.0), 3.8), dpi=100, layout="constrained"
    )
    FigureCanvasAgg(figure)
    rate_axes, revenue_axes = figure.subplots(1, 2)
    xs = np.arange(len(variants))
    panels = (
        (rate_axes, "conversion_rate", "conversion_rate_ci", "conversion rate", 100.0),
        (revenue_axes, "revenue_per_exposed", "revenue_per_exposed_ci", "revenue per exposed", 1.0),
    )
    for axes, value_key, ci_key, label, scale in panels:
        values = np.array([_nan(v.get(value_key)) * scale for v in variants])
        low = np.array([_nan((v.get(ci_key) or [None, None])[0]) * scale for v in variants])
        high = np.array([_nan((v.get(ci_key) or [None, None])[1]) * scale for v in variants])
        drawn = np.isfinite(values)
        axes.bar(xs[drawn], values[drawn], 0.6, color=colours[drawn])
        with_ci = drawn & np.isfinite(low) & np.isfinite(high)
        if with_ci.any():
            errors = np.vstack(
                [values[with_ci] - low[with_ci], high[with_ci] - values[with_ci]]
            ).clip(min=0)
            axes.errorbar(
                xs[with_ci], values[with_ci], yerr=errors, fmt="none", ecolor="black", capsize=4
            )
        for x in xs[~drawn]:
            axes.annotate(
                "no data",
                (x, 0),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="tab:gray",
            )
        axes.set_xlim(-0.6, len(variants) - 0.4)
        axes.set_xticks(xs)
        axes.set_xticklabels(names, fontsize=9)
        axes.set_title(label + (" (%)" if scale == 100.0 else ""), fontsize=11)
        axes.grid(True, axis="y", linewidth=0.3)
        axes.set_axisbelow(True)
    buffer = io.BytesIO()
    # No software/date metadata: the same report gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _pct(value: Any, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{float(value) * 100:{'+' if signed else ''}.{digits}f}%"


def _pp(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:+.2f} pp"


def _money(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):,.2f}"


def _signed_money(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):+,.2f}"


def _p(value: Any) -> str:
    if value is None:
        return "n/a"
    return "< 0.0001" if float(value) < 1e-4 else f"{float(value):.4f}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
