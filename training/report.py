"""Evaluation reports as files: the JSON document and a self-contained HTML page.

The page embeds its charts as base64 PNGs and uses no script and no network, so it can
be mailed, attached to a ticket or opened from a file share years later as it was.
Charts are drawn on matplotlib's Agg canvas with no pyplot state (safe in a server).

Everything here reads a plain evaluation document (the dict written as
``evaluation.json``), never the trainer's objects, so any later report can reuse it.
Methods, truths and stages are drawn in the document's order and never listed here:
a new method shows up in every chart and table without touching this module.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.evaluate import CHURN_METRICS, case_variants, few_items
from training.lifecycle import ChurnTraining, calibration_png, loyal_rule, measured_model
from training.served import below_best_rule

EVALUATION_JSON = "evaluation.json"
REPORT_HTML = "report.html"
# Metrics where lower is better (the best value of a column is bolded).
LOWER_IS_BETTER = frozenset({"brier"})
# A per-method count, shown in the tables but not a quality measure.
COUNT_KEYS = frozenset({"customers", "positive_rate"})
# Colours of the lifecycle stages people know; any other stage is grey.
STAGE_COLOURS = {
    "new": "tab:blue",
    "active": "tab:green",
    "loyal": "tab:purple",
    "at_risk": "tab:orange",
    "lapsed": "tab:gray",
}


# --- files ----------------------------------------------------------------------------


def evaluation_json(document: Mapping[str, Any]) -> str:
    """``document`` as indented JSON text; NaN and infinities become null (they are not
    JSON, and a consumer in another language would reject the whole file). Written with
    its page by ``nbo.core.outputs.write_files_together``: both files or neither."""
    return json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


# --- charts ---------------------------------------------------------------------------


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, the same in every chart (by position: tab10, then tab20)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: palette(i % palette.N) for i, m in enumerate(methods)}


def grouped_bars_png(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    metric_names: Sequence[str],
    truth_titles: Mapping[str, str] | None = None,
    title: str | None = None,
    value_labels: bool = False,
) -> bytes:
    """One panel per metric; in each, a group of bars per truth, a bar per method.

    ``metrics`` is truth -> method -> metric -> value, methods in the order to draw.
    """
    truths = list(metrics)
    methods = _methods(metrics)
    colours = method_colours(methods)
    panels = len(metric_names)
    width_in = max(4.2 * panels, 2.0 + 0.55 * len(methods) * len(truths))
    figure = Figure(figsize=(width_in, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, panels, squeeze=False)[0]
    bar = 0.8 / max(len(methods), 1)
    for axes, metric in zip(axes_list, metric_names, strict=True):
        top = 0.0
        for j, method in enumerate(methods):
            xs, heights = [], []
            for i, truth in enumerate(truths):
                value = metrics[truth].get(method, {}).get(metric)
                if value is None or not math.isfinite(value):
                    continue
                xs.append(i - 0.4 + bar * (j + 0.5))
                heights.append(value)
            top = max([top, *heights])
            bars = axes.bar(xs, heights, bar * 0.92, color=colours[method], label=method)
            if value_labels:
                axes.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        axes.set_xticks(range(len(truths)))
        axes.set_xticklabels(
            [_wrap((truth_titles or {}).get(t, t), 28) for t in truths], fontsize=9
        )
        axes.set_ylim(0, top * 1.12 or 1.0)
        axes.set_title(metric, fontsize=11)
        axes.grid(True, axis="y", linewidth=0.3)
        axes.set_axisbelow(True)
    handles, labels = axes_list[0].get_legend_handles_labels()
    figure.legend(
        handles, labels, loc="outside lower center", ncols=min(len(methods), 8), fontsize=9
    )
    if title:
        figure.suptitle(title, fontsize=12)
    return _png(figure)


def stages_png(stages: Mapping[str, int], title: str) -> bytes:
    """Customers per lifecycle stage, with the count and share on each bar."""
    names = list(stages)
    counts = [int(stages[s]) for s in names]
    total = max(sum(counts), 1)
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    bars = axes.bar(names, counts, color=[STAGE_COLOURS.get(s, "tab:gray") for s in names])
    axes.bar_label(bars, labels=[f"{c:,}\n{c / total:.1%}" for c in counts], fontsize=8, padding=2)
    axes.set_ylim(0, max(counts, default=0) * 1.25 or 1.0)
    axes.set_ylabel("customers")
    axes.set_title(title, fontsize=11)
    axes.grid(True, axis="y", linewidth=0.3)
    axes.set_axisbelow(True)
    return _png(figure)


def importance_png(importance: Mapping[str, float], title: str) -> bytes:
    """The ranker's features by their share of the total gain, largest on top."""
    names = list(importance)[::-1]
    shares = [float(importance[n]) for n in names]
    figure = Figure(figsize=(6.4, 0.8 + 0.24 * len(names)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    bars = axes.barh(names, shares, color="tab:blue")
    axes.bar_label(bars, labels=[f"{v:.1%}" for v in shares], fontsize=7, padding=2)
    axes.set_xlim(0, max(shares, default=0) * 1.2 or 1.0)
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("share of the total gain")
    axes.set_title(title, fontsize=11)
    axes.grid(True, axis="x", linewidth=0.3)
    axes.set_axisbelow(True)
    return _png(figure)


def churn_calibration_png(churn: Mapping[str, Any], metrics: Mapping[str, Any]) -> bytes:
    """The trainer's calibration plot (the artifact's ``churn_calibration.png``), drawn
    from the report's churn section, so the two never disagree."""
    return calibration_png(ChurnTraining(model=None, metrics=dict(metrics), section=dict(churn)))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No software/date metadata: the same evaluation gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _methods(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every method of any truth, first seen first (a method one truth lacks still shows)."""
    seen: dict[str, None] = {}
    for by_method in metrics.values():
        seen.update(dict.fromkeys(by_method))
    return list(seen)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


# --- the page -------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; font-size: 1.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #666; font-size: 0.9rem; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.kv td:last-child { text-align: left; } caption { text-align: left; font-weight: 600;
     padding-bottom: 0.3rem; }
.verdict { padding: 0.7rem 1rem; border-radius: 6px; font-weight: 600; margin: 1rem 0; }
.pass { background: #e8f5e9; border: 1px solid #81c784; }
.fail { background: #fdecea; border: 1px solid #e57373; }
.warn { background: #fff8e1; border: 1px solid #ffb74d; padding: 0.5rem 1rem; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1rem; }
.notes li { margin: 0.2rem 0; } pre { background: #f6f6f6; padding: 0.8rem; overflow: auto; }
"""


def evaluation_html(document: Mapping[str, Any], title: str, notes: Sequence[str] = ()) -> str:
    """The whole page for an evaluation document; ``notes`` are one-line summaries shown
    under the split (repurchase cycles, propensity), already worded by the caller."""
    metrics = document.get("metrics", {})
    truths = {t: m for t, m in metrics.items() if t != CHURN_METRICS}
    truth_titles = document.get("truths", {})
    k = document.get("config", {}).get("k", 10)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(_meta_line(document))}</p>',
        _verdict_html(document.get("quality_gate")),
        *(
            f'<p class="warn"><b>Warning:</b> {_e(line)}</p>'
            for line in [
                *below_best_rule(document.get("served") or {}),
                *(document.get("churn") or {}).get("warnings", []),
                *few_items(dict(document)),
                *case_variants(dict(document)),
            ]
        ),
        "<h2>Data</h2>",
        _data_html(document.get("data", {})),
        "<h2>Time split</h2>",
        _split_html(document.get("split", {}), document.get("evaluated_customers", {})),
    ]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Recommendation quality</h2>")
    parts.append(_honesty_html(truths))
    charted = _scored_only(truths)
    if truths and not charted:
        parts.append(
            '<p class="warn">Not evaluated: nobody was scored on any truth (no customer who '
            "bought before the cutoff bought in the holdout): no figures, not zeros.</p>"
        )
    if charted:
        headline = f"ndcg@{k}"
        parts.append(
            _img(
                grouped_bars_png(charted, [headline], truth_titles, value_labels=True),
                f"{headline} per method",
            )
        )
        others = [m for m in (f"precision@{k}", f"recall@{k}", f"map@{k}") if _has(charted, m)]
        if others:
            parts.append(_img(grouped_bars_png(charted, others, truth_titles), ", ".join(others)))
    if truths:
        for truth, by_method in truths.items():
            caption = f"truth: {truth_titles.get(truth, truth)}"
            parts.append(_metrics_table(by_method, caption))
        parts.append(_glossary_html(truths, k))
    else:
        parts.append("<p>No recommendation metrics.</p>")
    if "policy" in document:
        parts.append("<h2>What is served</h2>")
        parts.append(_served_html(document["policy"], document.get("served", {})))
    if "ranker" in document:
        parts.append("<h2>Two-stage ranker</h2>")
        parts.append(_ranker_html(document["ranker"], k))
    parts.append("<h2>Churn: model against recency only</h2>")
    parts.append(_churn_html(document.get("churn", {}), metrics.get(CHURN_METRICS, {})))
    parts.append("<h2>Lifecycle stages</h2>")
    priced = document.get("data", {}).get("typical_line_value") is not None
    parts.append(_lifecycle_html(document.get("lifecycle"), priced))
    timings = document.get("timings")
    if timings:
        parts.append("<h2>Timings</h2>")
        rows = [(name, f"{seconds:.1f} s") for name, seconds in timings.items()]
        rows.append(("total", f"{sum(timings.values()):.1f} s"))
        parts.append(_kv_table(rows))
    if "config" in document:
        parts.append("<h2>Training config</h2>")
        parts.append(
            "<details><summary>as used (defaults, the config file, then the options)"
            "</summary><pre>"
            + _e(json.dumps(_jsonable(document["config"]), indent=2))
            + "</pre></details>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _meta_line(document: Mapping[str, Any]) -> str:
    bits = []
    if "created_at" in document:
        bits.append(f"created {document['created_at']}")
    if "nbo_version" in document:
        bits.append(f"nbo {document['nbo_version']}")
    if document.get("published") is False:
        bits.append("nothing was published")
    return " · ".join(bits)


def _verdict_html(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return ""
    css = "pass" if gate.get("passed") else "fail"
    if gate.get("evaluated") is False:
        css = "warn"  # passed for want of figures, not on them
    elif gate.get("passed") is None:
        css = "warn"  # nothing compared: neither passed nor failed
    return f'<div class="verdict {css}">{_e(gate.get("message", ""))}</div>'


def _data_html(data: Mapping[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for key, label in (("file", "file"), ("mapping", "column mapping"), ("sha256", "sha256")):
        if key in data:
            rows.append((label, str(data[key])))
    if data.get("columns"):
        columns = ", ".join(
            f"{canonical} = {source}" for canonical, source in data["columns"].items()
        )
        rows.append(("columns read", columns))
    rules = data.get("rules") or {}
    if rules.get("timestamp_format"):
        rows.append(("timestamp format", str(rules["timestamp_format"])))
    if rules.get("cancelled_order_prefix"):
        rows.append(("cancelled orders", f"order ids starting {rules['cancelled_order_prefix']}"))
    for key, label in (
        ("rows_read", "rows read"),
        ("rows_kept", "rows kept"),
        ("customers", "customers"),
        ("items", "items"),
        ("erased_customers", "erased customers left out"),
        ("withdrawn_customers", "customers left out: personalization withdrawn"),
    ):
        if data.get(key) is not None:
            rows.append((label, f"{data[key]:,}"))
    if "first_purchase" in data:
        rows.append(("purchases from", f"{data['first_purchase']} to {data['last_purchase']}"))
    if data.get("typical_line_value") is not None:
        rows.append(("typical line value", f"{data['typical_line_value']:,.2f}"))
    table = _kv_table(rows)
    dropped = {reason: n for reason, n in data.get("dropped", {}).items() if n}
    if dropped:
        table += _kv_table(
            [(reason, f"{n:,}") for reason, n in dropped.items()], caption="rows dropped"
        )
    else:
        table += "<p>No rows dropped in cleaning.</p>"
    filled = {reason: n for reason, n in (data.get("filled") or {}).items() if n}
    if filled:
        table += _kv_table(
            [(reason, f"{n:,}") for reason, n in filled.items()],
            caption="rows kept with a blank filled",
        )
    return table


def _split_html(split: Mapping[str, Any], evaluated: Mapping[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    labels = {
        "cutoff": "cutoff (training data ends)",
        "holdout_days": "holdout days",
        "suppression_days": "suppression window (days)",
        "holdout_rows": "holdout purchase lines",
        "evaluated_customers": "customers sampled for evaluation",
        "cold_start_customers_in_holdout": "new customers in the holdout (not evaluated)",
    }
    for key, label in labels.items():
        if key in split:
            value = split[key]
            rows.append((label, f"{value:,}" if isinstance(value, int) else str(value)))
    for truth, n in evaluated.items():
        rows.append((f"customers scored, truth {truth}", "–" if n is None else f"{n:,}"))
    return _kv_table(rows)


def _honesty_html(truths: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A warning when the methods of a truth were not scored on the same customers: then
    the comparison is not a comparison."""
    counts = {
        t: {m.get("customers") for m in by_method.values()} for t, by_method in truths.items()
    }
    unequal = [truth for truth, seen in counts.items() if len(seen) > 1]
    if not unequal:
        same = [
            f"{int(n):,} for truth {_e(t)}"
            for t, seen in counts.items()
            for n in seen
            if n is not None and math.isfinite(n)
        ]
        if not same:
            return ""
        return f"<p>Every method is scored on the same customers: {', '.join(same)}.</p>"
    return (
        '<p class="warn">Methods were scored on different numbers of customers for truth '
        + ", ".join(_e(t) for t in unequal)
        + ": their metrics are not comparable.</p>"
    )


# What each row of the metrics tables is, for a reader who has not read docs/training.md.
METHOD_GLOSSARY = {
    "served": "what the service would serve at the cutoff: the chosen policy through the "
    "serving decision (suppression, cycles, catalogue, popular fill)",
    "ranker": "the two-stage ranker alone (its candidates ordered by LightGBM), without "
    "the service's suppression",
    "als": "implicit's ALS alone, without the service's suppression",
    "als_window": "ALS less what the customer bought in the suppression window",
    "als_cycles": "ALS less what is still inside its learned dead time",
    "itemknn": "item-to-item neighbours (BM25 ItemKNN) of the customer's whole history",
    "buy_again": "the customer's most-ordered items (most recent first on ties), padded "
    "with popular items",
    "popularity": "the items most customers bought in the 90 days before the cutoff",
    "stage_popularity": "the items most bought by customers of the same lifecycle stage",
}


def _glossary_html(truths: Mapping[str, Mapping[str, Mapping[str, float]]], k: int) -> str:
    """What the rows and columns of the metrics tables mean (docs/training.md, "How the
    figures are computed")."""
    shown = {m for by_method in truths.values() for m in by_method}
    rows = [(name, text) for name, text in METHOD_GLOSSARY.items() if name in shown]
    metrics = (
        f"Binary relevance: an offer counts when the customer bought the item after the "
        f"cutoff. precision@{k} = hits / {k}; recall@{k} = hits / items bought (items the "
        f"training data never saw count too); NDCG@{k} = DCG / the DCG of min(items bought, "
        f"{k}) hits at the top; MAP@{k} = the mean precision at each hit / min(items "
        f"bought, {k}); coverage = distinct items offered to anyone / catalogue. Means over "
        f"the customers who bought after the cutoff and were known before it. On the new "
        f"truth, what a customer bought in the suppression window before the cutoff is "
        f"removed from their truth and from every method's list."
    )
    return _kv_table(rows, caption="methods") + f'<p class="notes">{_e(metrics)}</p>'


def _metrics_table(by_method: Mapping[str, Mapping[str, float]], caption: str) -> str:
    names = [n for n in _columns(by_method) if n not in COUNT_KEYS]
    counts = [n for n in _columns(by_method) if n in COUNT_KEYS]
    best: dict[str, float] = {}
    for name in names:
        finite = [v[name] for v in by_method.values() if _finite(v.get(name)) and _scored(v)]
        if finite:
            best[name] = (min if name in LOWER_IS_BETTER else max)(finite)
    head = "".join(f"<th>{_e(n)}</th>" for n in ["method", *names, *counts])
    body = []
    for method, values in by_method.items():
        cells = [f"<td>{_e(method)}</td>"]
        for name in names:
            value = values.get(name)
            text = f"{value:.4f}" if _finite(value) and _scored(values) else "–"
            cells.append(
                f"<td><b>{text}</b></td>" if value == best.get(name) else f"<td>{text}</td>"
            )
        for name in counts:
            count = values.get(name)
            if count is None or not math.isfinite(count):
                text = "–"
            else:
                text = f"{count:.1%}" if name == "positive_rate" else f"{int(count):,}"
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _served_html(policy: Mapping[str, Any], served: Mapping[str, Any]) -> str:
    """The candidate policy, why it was chosen (each candidate served on the validation
    window), and what is served against the best simple rule on the holdout."""
    parts = [f"<p>Policy <b>{_e(policy.get('name'))}</b>: {_e(policy.get('reason', ''))}</p>"]
    validation = policy.get("validation") or {}
    if validation:
        metric = policy.get("metric", "")
        truths = sorted({t for figures in validation.values() for t in figures})
        head = "".join(f"<th>{_e(t)}</th>" for t in truths)
        rows = "".join(
            f"<tr><td>{_e(name)}</td>"
            + "".join(f"<td>{figures.get(t, float('nan')):.4f}</td>" for t in truths)
            + "</tr>"
            for name, figures in validation.items()
        )
        parts.append(
            f"<table><caption>{_e(metric)} of each candidate served on the validation "
            f"window before {_e(policy.get('validation_cutoff'))} "
            f"({policy.get('validation_customers', 0):,} customers)</caption>"
            f"<tr><th>policy</th>{head}</tr>{rows}</table>"
        )
    against = served.get("against_best_rule") or {}
    against_rows = [
        (
            f"truth {truth}",
            f"served {entry['served']:.4f} vs {entry['best_rule']} "
            f"{entry['best_rule_score']:.4f}"
            + ("" if entry.get("change") is None else f" ({entry['change']:+.1%})"),
        )
        for truth, entry in against.items()
        if entry.get("best_rule") is not None
    ]
    if against_rows:
        caption = f"{served.get('metric', '')} on the holdout, against the best simple rule"
        parts.append(_kv_table(against_rows, caption=caption))
    return "\n".join(parts)


def _ranker_html(ranker: Mapping[str, Any], k: int) -> str:
    if not ranker.get("enabled"):
        return f"<p>No ranker: {_e(ranker.get('reason', 'not trained'))}; offers rank by ALS.</p>"
    parts = [
        f"<p>LightGBM LambdaRank, {ranker.get('rounds', 0)} rounds, trained on "
        f"{ranker.get('training_customers', 0):,} customers "
        f"({ranker.get('training_pairs', 0):,} candidate pairs) of "
        f"{_e(ranker.get('trained_on', 'an earlier window'))}; up to "
        f"{ranker.get('per_source', 0)} candidates per source.</p>"
    ]
    contributions = ranker.get("contributions", {})
    if contributions:
        rows = "".join(
            f"<tr><td>{_e(source)}</td><td>{figures['share']:.1%}</td>"
            f"<td>{figures['hit_rate']:.1%}</td></tr>"
            for source, figures in contributions.items()
        )
        parts.append(
            f"<table><caption>where the ranker's top {k} came from (truth: all; an item two "
            "sources proposed counts for both)</caption><thead><tr><th>source</th>"
            f"<th>share of slots</th><th>hit rate</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    importance = ranker.get("importance", {})
    if importance:
        parts.append(_img(importance_png(importance, "ranker features"), "feature importance"))
    return "\n".join(parts)


def _churn_html(churn: Mapping[str, Any], metrics: Mapping[str, Mapping[str, float]]) -> str:
    if not churn.get("enabled"):
        return f"<p>Churn model off: {_e(churn.get('reason', 'not trained'))}.</p>"
    intro = (
        f"<p>Churn = no order within {churn['horizon_days']} days. Trained on cutoffs "
        f"{_e(', '.join(c[:10] for c in churn.get('training_cutoffs', [])))} "
        f"({churn.get('training_rows', 0):,} rows), evaluated at "
        f"{_e(str(churn.get('evaluation_cutoff', ''))[:10])} on "
        f"{churn.get('evaluation_customers', 0):,} customers "
        f"({churn.get('evaluation_positive_rate', float('nan')):.1%} churned). "
        f"Model: {_e(churn.get('algorithm', ''))}; baseline: {_e(churn.get('baseline', ''))}."
        f" {_e(_sentence(measured_model(churn)))}.</p>"
    )
    parts = [intro]
    if metrics:
        parts.append(_metrics_table(metrics, "churn model against the recency baseline"))
    if churn.get("calibration"):
        parts.append(_img(churn_calibration_png(churn, metrics), "churn calibration curve"))
    return "\n".join(parts)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lifecycle_html(lifecycle: Mapping[str, Any] | None, priced: bool) -> str:
    if not lifecycle or not lifecycle.get("stages"):
        return "<p>No lifecycle stages.</p>"
    stages = lifecycle["stages"]
    as_of = str(lifecycle.get("as_of", ""))[:10]
    total = max(sum(stages.values()), 1)
    parts = [
        _img(stages_png(stages, f"Customers per stage as of {as_of}"), "lifecycle stages"),
        "<table><thead><tr><th>stage</th><th>customers</th><th>share</th></tr></thead><tbody>"
        + "".join(
            f"<tr><td>{_e(s)}</td><td>{n:,}</td><td>{n / total:.1%}</td></tr>"
            for s, n in stages.items()
        )
        + "</tbody></table>",
    ]
    if lifecycle.get("loyal_min_orders") is not None:
        parts.append(f"<p>Loyal: {_e(loyal_rule(lifecycle, priced))}.</p>")
    parts.extend(f"<p>Warning: {_e(line)}.</p>" for line in lifecycle.get("warnings", []))
    return "\n".join(parts)


def _kv_table(rows: Sequence[tuple[str, str]], caption: str | None = None) -> str:
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cap}<tbody>{body}</tbody></table>'


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{_e(alt)}">'


def _columns(by_method: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for values in by_method.values():
        seen.update(dict.fromkeys(values))
    return list(seen)


def _has(truths: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> bool:
    return any(metric in v for by_method in truths.values() for v in by_method.values())


def _scored(values: Mapping[str, Any]) -> bool:
    """Whether a method's figures rest on anyone: scored on no customer, it has none."""
    count = values.get("customers")
    return count is None or not _finite(count) or count > 0


def _scored_only(
    truths: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, Mapping[str, float]]]:
    """The truths and methods with figures to draw (scored on someone)."""
    kept = {
        truth: {method: values for method, values in by_method.items() if _scored(values)}
        for truth, by_method in truths.items()
    }
    return {truth: by_method for truth, by_method in kept.items() if by_method}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
