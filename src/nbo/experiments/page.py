"""The experiment report as one self-contained HTML page, with its chart.

Apart from the statistics (``nbo.experiments.stats``) because it draws with matplotlib,
which only the report commands and the report route's ``format=html`` need: the service
imports this module lazily, for an HTML report, and never at start. No script and no
network: the chart is a base64 PNG from matplotlib's Agg canvas (never pyplot, whose
global state is unsafe in a server).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nbo.experiments.outcomes import UNKNOWN_MODEL
from nbo.experiments.stats import SRM_WARNING

REPORT_CSS = """
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
.ok { background: #edf7ed; border: 1px solid #81c784; padding: 0.5rem 1rem;
      border-radius: 6px; margin: 1rem 0; }
.dates th { text-align: left; font-weight: 600; }
.yes { color: #1b5e20; font-weight: 600; }
.note { color: #555; font-size: 0.9rem; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 0.3rem; }
"""


# The page's rules for a browser (the service's Content-Security-Policy header for an
# HTML report): no script, no request anywhere; its one style element (by its hash) and
# the chart's data URI only; no frames, forms or base.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(REPORT_CSS.encode("utf-8")).digest()).decode("ascii")
    + "'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def report_html(report: Mapping[str, Any], title: str | None = None) -> str:
    """The report as one self-contained HTML page (no script, no links, embedded PNG).

    Warnings come first, the SRM warning in a red box: someone who only glances at the
    page must not miss that the comparisons below it cannot be trusted.
    """
    heading = title or f"Experiment {report.get('experiment', '')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(heading)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        report_sections(report),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def report_sections(report: Mapping[str, Any]) -> str:
    """The report's sections without a page around them (dates, warnings, variants, the
    sample ratio, the comparisons, the charts): the HTML file and the service's
    dashboard show the same (its classes are styled by ``REPORT_CSS``)."""
    level = _level(report)
    parts = [
        _dates_html(report),
        _warnings_html(report.get("warnings", [])),
        "<h2>Variants</h2>",
        _variants_table(report, level),
        _model_versions_html(report),
        _srm_html(report),
        f"<h2>{_e(_against(report))}</h2>",
        _comparisons_table(report, level),
        "<h2>Charts</h2>",
        _figure_html(report, level),
    ]
    return "\n".join(part for part in parts if part)


def _level(report: Mapping[str, Any]) -> str:
    return f"{(1 - float(report.get('alpha', 0.05))) * 100:g}%"


def _dates_html(report: Mapping[str, Any]) -> str:
    """When the experiment runs and which events this report counts: without them a
    reader cannot tell a finished experiment from one a day old."""
    start, end, window = report.get("start"), report.get("end"), report.get("window")
    if start is None:
        return ""
    rows = [
        (
            "Experiment",
            f"from {_when(start)} to {_when(end) if end else 'no end date'} "
            f"({report.get('status', 'status unknown')})",
        )
    ]
    if window:
        rows.append(
            (
                "This report",
                f"events from {_when(window['start'])} to {_when(window['end'])} "
                f"(as of {_when(report.get('as_of'))})",
            )
        )
    if report.get("attribution"):
        rows.append(("What counts", str(report["attribution"])))
    cells = "".join(f"<tr><th>{_e(label)}</th><td>{_e(text)}</td></tr>" for label, text in rows)
    return f'<table class="dates"><tbody>{cells}</tbody></table>'


def _srm_html(report: Mapping[str, Any]) -> str:
    """The sample-ratio test, always: its result, not only its alarm."""
    srm = report.get("srm")
    if not srm:
        return ""
    names = [v["name"] for v in report.get("variants", [])]
    total = sum(srm.get("observed", [])) or 1
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{observed:,}</td><td>{_e(f'{expected:,.1f}')}</td>"
        f"<td>{_e(_pct(observed / total))}</td></tr>"
        for name, observed, expected in zip(
            names, srm.get("observed", []), srm.get("expected", []), strict=False
        )
    )
    head = (
        "<tr><th>variant</th><th>exposed</th><th>expected from the weights</th>"
        "<th>observed share</th></tr>"
    )
    threshold = f"{float(srm.get('threshold', 0.001)):g}"
    css = "srm" if srm.get("mismatch") else "ok"
    return (
        "<h2>Sample ratio</h2>"
        f'<p class="{css}">{_e(srm_result(srm))}</p>'
        f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
        '<p class="note">Chi-square goodness of fit of the exposed counts to the configured '
        f"weights; a mismatch is flagged below p = {_e(threshold)}.</p>"
    )


def srm_result(srm: Mapping[str, Any]) -> str:
    """The sample-ratio test in one line: statistic, p-value and verdict."""
    if srm.get("chi2") is None:
        return f"sample ratio {srm.get('verdict') or 'not tested'}"
    return (
        f"sample ratio: chi-square {srm['chi2']:.2f} ({srm.get('degrees_of_freedom')} df), "
        f"p {_p_equals(srm.get('p_value'))}; {srm.get('verdict')}"
    )


def sample_size_text(comparison: Mapping[str, Any]) -> str:
    """What a comparison's sample can detect, in one sentence a marketer acts on: the
    smallest conversion difference it finds most of the time, and the exposed customers
    needed to find the difference seen (so "not significant" is not read as "no
    effect" when the test is merely too small)."""
    size = comparison.get("sample_size") or {}
    label = f"{comparison.get('variant')} vs {comparison.get('against')}"
    if not size:
        return f"{label} sample size: not computed"
    exposed = size.get("exposed") or {}
    power = f"{float(size.get('power', 0.8)):.0%}"
    level = f"{float(size.get('alpha', 0.05)):.0%}"
    parts: list[str] = []
    mde = size.get("minimum_detectable_difference")
    if mde is not None:
        parts.append(
            f"with {exposed.get('variant', 0):,} and {exposed.get('against', 0):,} exposed, "
            f"a difference in conversion of {float(mde) * 100:.2f} pp "
            f"({_pct(size.get('minimum_detectable_relative_uplift'), 0)} of "
            f"{comparison.get('against')}'s {_pct(size.get('baseline_rate'), 2)}) or more is "
            f"found {power} of the time at the {level} level"
        )
    needed = size.get("exposed_needed")
    if needed:
        difference = (comparison.get("conversion") or {}).get("difference")
        more = int(size.get("exposed_more") or 0)
        parts.append(
            f"to find the {_pp(difference)} seen, about {needed['variant']:,} and "
            f"{needed['against']:,} exposed customers are needed "
            + (f"({more:,} more)" if more else "(reached)")
        )
    if size.get("reason"):
        parts.append(f"not sized: {size['reason']}")
    return f"{label} sample size: " + "; ".join(parts)


def _p_equals(value: Any) -> str:
    text = _p(value)
    return text if text.startswith("<") else f"= {text}"


def _when(value: Any) -> str:
    """An ISO time as ``2026-06-30 12:00 UTC``."""
    if not value:
        return "-"
    return _time(value).strftime("%Y-%m-%d %H:%M UTC")


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _warnings_html(warnings: Sequence[str]) -> str:
    srm = [w for w in warnings if w.startswith(SRM_WARNING)]
    others = [w for w in warnings if not w.startswith(SRM_WARNING)]
    parts = [f'<div class="srm" role="alert">{_e(w)}</div>' for w in srm]
    if others:
        items = "".join(f"<li>{_e(w)}</li>" for w in others)
        parts.append(f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>')
    return "\n".join(parts)


def _variants_table(report: Mapping[str, Any], level: str) -> str:
    head = (
        "<tr><th>variant</th><th>traffic share</th><th>assigned</th><th>exposed</th>"
        "<th>converted</th><th>conversion rate</th><th>revenue</th>"
        f"<th>revenue per exposed</th><th>{_e(level)} CI</th></tr>"
    )
    rows = []
    clipped = False
    for v in report.get("variants", []):
        label = _variant_label(v)
        ci = v.get("revenue_per_exposed_ci")
        mark = "*" if v.get("revenue_per_exposed_ci_clipped") else ""
        clipped = clipped or bool(mark)
        cells = [
            label,
            _pct(v.get("weight")),
            str(v.get("assigned")),
            str(v.get("exposed")),
            str(v.get("converted")),
            _pct(v.get("conversion_rate"), 2),
            _money(v.get("revenue")),
            _money(v.get("revenue_per_exposed")),
            "n/a" if ci is None else f"[{_money(ci[0])}{mark}, {_money(ci[1])}]",
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    if not clipped:
        return table
    return (
        f'{table}<p class="note">* Lower bound clipped at 0: revenue is never negative, '
        "and with this few buyers the t-interval reached below 0.</p>"
    )


def _model_versions_html(report: Mapping[str, Any]) -> str:
    """Each variant's figures per model version that decided its impressions, a variant
    whose model changed during the run marked: its figures above mix the versions."""
    rows = []
    for v in report.get("variants", []):
        for m in v.get("by_model_version", []):
            cells = [
                _variant_label(v) + (" (model changed)" if v.get("mixed_model_versions") else ""),
                m.get("model_version") or UNKNOWN_MODEL,
                f"{m.get('impressions', 0):,}",
                f"{m.get('customers', 0):,}",
                f"{m.get('exposed', 0):,}",
                f"{m.get('converted', 0):,}",
                _pct(m.get("conversion_rate"), 2),
                _money(m.get("revenue_per_exposed")),
                f"{_when(m.get('first_shown'))} to {_when(m.get('last_shown'))}",
            ]
            rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    head = (
        "<tr><th>variant</th><th>model version</th><th>impressions</th><th>customers shown</th>"
        "<th>exposed first by it</th><th>converted</th><th>conversion rate</th>"
        "<th>revenue per exposed</th><th>shown</th></tr>"
    )
    return (
        "<h2>Model versions</h2>"
        f'<table id="model-versions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">The model version that decided each recorded impression. A customer '
        "counts under the version of their first exposure, with their conversions; "
        f"{_e(UNKNOWN_MODEL)}: impressions recorded before nbo kept the version, or posted "
        "without it. A variant shown by more than one version had its model changed during "
        "the run (CURRENT moved, a rollback, the experiments file edited): its figures mix "
        "them. No tests per version: read these as indicative.</p>"
    )


def _is_baseline(variant: Mapping[str, Any]) -> bool:
    # Reports written before the baseline was named compared with the control.
    return bool(variant.get("baseline", variant.get("control")))


def _variant_label(variant: Mapping[str, Any]) -> str:
    if variant.get("control"):
        return f"{variant['name']} (control)"
    return f"{variant['name']} (baseline)" if _is_baseline(variant) else str(variant["name"])


def _against(report: Mapping[str, Any]) -> str:
    """The heading of the comparisons: which variant they are against, and why that one."""
    baseline = report.get("baseline")
    if baseline is None or report.get("baseline_is") == "control":
        return "Against the control"
    if report.get("baseline_is") == "first variant":
        return f"Against {baseline} (the first variant: there is no control)"
    return f"Against {baseline} (the experiment's baseline)"


def _comparisons_table(report: Mapping[str, Any], level: str) -> str:
    comparisons = report.get("comparisons", [])
    if not comparisons:
        return "<p>No comparisons (no other variant).</p>"
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
            if significant:
                verdict = '<span class="yes">yes</span>'
            else:
                verdict = "no, indicative only" if s.get("indicative") else "no"
            cells = [
                _e(label),
                _e(metric),
                _e(fmt(s.get("difference"))),
                _e(_pct(s.get("relative_uplift"), 1, signed=True)),
                _e(ci),
                _e(_p(s.get("p_value"))),
                verdict,
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    alpha = float(report.get("alpha", 0.05))
    fewest = int(report.get("min_conversions", 10))
    note = (
        f"Significant means p &lt; {_e(f'{alpha:g}')} with at least {fewest} converted "
        "customers in both variants (fewer: indicative only, whatever the p-value). "
        "Conversion: two-proportion z-test (pooled standard error), or Fisher's exact test "
        f"when a group has fewer than {fewest} customers converted (or not converted); "
        "Newcombe's score interval; differences in percentage points. Revenue: Welch's "
        "t-test and its interval. Each variant is compared to the baseline separately, "
        "with no correction for multiple comparisons."
    )
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    sizes = "".join(f"<li>{_e(sample_size_text(c))}</li>" for c in comparisons)
    sizing = (
        f"<h3>Sample size</h3><ul>{sizes}</ul>"
        '<p class="note">Two-sided test of two proportions, normal approximation; the '
        "customers needed are at the configured split. Not significant with fewer than "
        "needed means too few customers to tell, not no effect: keep the experiment "
        "running, or accept that a smaller difference goes unseen.</p>"
    )
    return f'{table}<p class="note">{note}</p>{sizing}'


def _figure_html(report: Mapping[str, Any], level: str) -> str:
    variants = report.get("variants", [])
    if not variants:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(_variants_png(report)).decode("ascii")
    caption = (
        f"Error bars: {level} confidence intervals. Conversion rate: Wilson score interval. "
        "Revenue per exposed customer: mean ± t-quantile × standard error, the lower bound "
        "clipped at 0. "
        "Grey bars are the baseline."
    )
    alt = "conversion rate and revenue per exposed customer per variant"
    figure = f'<img src="{uri}" alt="{_e(alt)}">\n<p class="note">{_e(caption)}</p>'
    if not report.get("comparisons"):
        return figure
    uplift = "data:image/png;base64," + base64.b64encode(_uplift_png(report)).decode("ascii")
    note = (
        f"Each variant minus the baseline, with the {level} confidence interval of the "
        "difference (Newcombe for conversion, Welch for revenue): an interval that crosses 0 "
        "is no evidence of a difference."
    )
    alt = "uplift of each variant over the baseline with its confidence interval"
    return f'{figure}\n<img src="{uplift}" alt="{_e(alt)}">\n<p class="note">{_e(note)}</p>'


def _variants_png(report: Mapping[str, Any]) -> bytes:
    """Two panels: conversion rate (Wilson interval) and revenue per exposed customer
    (t interval) per variant; a variant with no exposed customers has no bar."""
    variants = list(report.get("variants", []))
    names = [str(v["name"]) for v in variants]
    colours = np.array(["tab:gray" if _is_baseline(v) else "tab:blue" for v in variants])
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


def _uplift_png(report: Mapping[str, Any]) -> bytes:
    """Two panels: each variant's difference from the baseline in conversion rate
    (percentage points) and in revenue per exposed customer, with the interval of the
    difference; a comparison without an interval has a point only."""
    comparisons = list(report.get("comparisons", []))
    names = [f"{c['variant']} vs {c['against']}" for c in comparisons]
    figure = Figure(
        figsize=(max(7.0, 1.6 * len(comparisons) + 3.0), 3.4), dpi=100, layout="constrained"
    )
    FigureCanvasAgg(figure)
    panels = zip(
        figure.subplots(1, 2),
        (
            ("conversion", "conversion rate (pp)", 100.0),
            ("revenue_per_exposed", "revenue per exposed", 1.0),
        ),
        strict=True,
    )
    ys = np.arange(len(comparisons))
    for axes, (key, label, scale) in panels:
        values = np.array([_nan(c.get(key, {}).get("difference")) * scale for c in comparisons])
        low = np.array([_nan(c.get(key, {}).get("ci_low")) * scale for c in comparisons])
        high = np.array([_nan(c.get(key, {}).get("ci_high")) * scale for c in comparisons])
        drawn = np.isfinite(values)
        axes.axvline(0.0, color="tab:gray", linewidth=1)
        with_ci = drawn & np.isfinite(low) & np.isfinite(high)
        if with_ci.any():
            errors = np.vstack(
                [values[with_ci] - low[with_ci], high[with_ci] - values[with_ci]]
            ).clip(min=0)
            axes.errorbar(
                values[with_ci], ys[with_ci], xerr=errors, fmt="none", ecolor="black", capsize=4
            )
        axes.plot(values[drawn], ys[drawn], "o", color="tab:blue")
        axes.set_yticks(ys)
        axes.set_yticklabels(names, fontsize=9)
        axes.set_ylim(-0.6, len(comparisons) - 0.4)
        axes.invert_yaxis()
        axes.set_title(f"uplift: {label}", fontsize=11)
        axes.grid(True, axis="x", linewidth=0.3)
        axes.set_axisbelow(True)
    buffer = io.BytesIO()
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
