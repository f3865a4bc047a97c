"""The dashboard's charts, drawn by matplotlib as SVG images.

Imported only by the handlers that draw (never at start, never on the offers path: the
service must not load matplotlib until someone opens a page), and run in the thread
pool. Each chart is a ``data:`` URI for an ``<img>``: no request of its own, nothing
loaded from elsewhere, and its ids cannot clash with another chart's on the page.
Figures are built on their own canvas, never through pyplot, whose global state is not
safe in a server.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nbo.service.dashboard.figures import GoingOut, QualityTable, StageMix, scored

STAGE_COLOURS = {
    "new": "#4c78a8",
    "active": "#54a24b",
    "loyal": "#b279a2",
    "at_risk": "#f58518",
    "lapsed": "#e45756",
}
CHANNEL_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d")


def _labelled_bars(
    axes: Axes,
    names: Sequence[str],
    values: np.ndarray,
    colours: Sequence[str],
    label: Callable[[float], str],
    fontsize: int,
) -> None:
    """Horizontal bars top to bottom in ``names``' order, each value written at its end
    (a missing value, NaN, draws no bar and no label)."""
    ys = np.arange(len(names))
    axes.barh(ys, np.nan_to_num(values), color=list(colours))
    for y, value in zip(ys, values, strict=True):
        if np.isfinite(value):
            axes.annotate(
                label(value),
                (value, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=fontsize,
            )
    axes.set_yticks(ys, [n.replace("_", " ") for n in names], fontsize=fontsize)
    axes.invert_yaxis()


def stage_mix_svg(mix: StageMix) -> str:
    """Customers per lifecycle stage, as horizontal bars with their counts."""
    names = list(mix.stages)
    counts = np.array([mix.stages[name] for name in names], dtype=float)
    figure, axes = _figure(6.0, 2.6)
    colours = [STAGE_COLOURS.get(n, "#888888") for n in names]
    _labelled_bars(axes, names, counts, colours, lambda count: f"{int(count):,}", 9)
    axes.set_xlim(0, max(1.0, counts.max() * 1.15))
    axes.set_xlabel("customers", fontsize=9)
    _tidy(axes, "x")
    return _uri(figure)


def risk_histogram_svg(mix: StageMix) -> str:
    """How many customers fall in each tenth of churn risk."""
    figure, axes = _figure(6.0, 2.6)
    bins = mix.risk_bins
    lefts = np.array([low for low, _, _ in bins])
    counts = np.array([count for _, _, count in bins], dtype=float)
    colours = ["#54a24b" if low < 0.3 else "#f58518" if low < 0.5 else "#e45756" for low in lefts]
    axes.bar(lefts, counts, width=0.1, align="edge", color=colours, edgecolor="white")
    axes.set_xlim(0, 1)
    axes.set_xticks(np.linspace(0, 1, 11))
    axes.tick_params(labelsize=8)
    axes.set_xlabel("churn risk (probability of no purchase within the horizon)", fontsize=9)
    axes.set_ylabel("customers", fontsize=9)
    _tidy(axes, "y")
    return _uri(figure)


def offers_over_time_svg(out: GoingOut) -> str:
    """Offers delivered per day and channel (stacked), and conversions per day."""
    dates = [day["date"] for day in out.daily]
    channels = list(out.daily[0]["impressions"]) if out.daily else []
    figure = Figure(figsize=(8.0, 3.6), dpi=100, layout="constrained")
    FigureCanvasSVG(figure)
    shown, answered = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.3))
    xs = np.arange(len(dates))
    bottom = np.zeros(len(dates))
    for n, channel in enumerate(channels):
        values = np.array([day["impressions"].get(channel, 0) for day in out.daily], float)
        shown.bar(
            xs,
            values,
            0.8,
            bottom=bottom,
            label=channel,
            color=CHANNEL_COLOURS[n % len(CHANNEL_COLOURS)],
        )
        bottom += values
    shown.set_ylabel("offers delivered", fontsize=9)
    if channels:
        shown.legend(fontsize=8, loc="upper left", frameon=False)
    _tidy(shown, "y")
    conversions = np.array([day["conversions"] for day in out.daily], float)
    answered.bar(xs, conversions, 0.8, color="#54a24b")
    answered.set_ylim(0, max(1.0, float(conversions.max(initial=0.0)) * 1.15))
    answered.yaxis.set_major_locator(MaxNLocator(integer=True))
    shown.yaxis.set_major_locator(MaxNLocator(integer=True))
    answered.set_ylabel("conversions", fontsize=9)
    _tidy(answered, "y")
    step = max(1, len(dates) // 10)
    answered.set_xticks(xs[::step], [d[5:] for d in dates[::step]], fontsize=8)
    return _uri(figure)


def quality_svg(tables: Sequence[QualityTable], metric: str) -> str:
    """``metric`` of every method on each truth, what is served marked darker. A method
    scored on no customer has no bar (it was not evaluated; its table says so)."""
    drawn = [t for t in tables if metric in t.metrics and t.evaluated]
    figure = Figure(figsize=(8.0, 0.6 + 0.32 * _rows(drawn)), dpi=100, layout="constrained")
    FigureCanvasSVG(figure)
    panels = figure.subplots(1, max(1, len(drawn)), squeeze=False)[0]
    for axes, table in zip(panels, drawn, strict=False):
        column = table.metrics.index(metric)
        rows = [row for row in table.rows if scored(row[2])]
        names = [name for name, _, _ in rows]
        values = np.array([np.nan if v[column] is None else v[column] for _, v, _ in rows], float)
        colours = ["#1f4e79" if n in ("served", "ranker") else "#9ecae1" for n in names]
        _labelled_bars(axes, names, values, colours, lambda value: f"{value:.3f}", 8)
        top = np.nanmax(values) if np.isfinite(values).any() else 1.0
        axes.set_xlim(0, top * 1.25)
        axes.set_title(f"{metric}, truth: {table.truth}", fontsize=10)
        _tidy(axes, "x")
    return _uri(figure)


def _rows(tables: Sequence[QualityTable]) -> int:
    return max((len(t.rows) for t in tables), default=1)


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasSVG(figure)
    axes: Axes = figure.subplots()
    return figure, axes


def _tidy(axes: Axes, grid: str) -> None:
    axes.grid(True, axis=grid, linewidth=0.3)  # type: ignore[arg-type]
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    # No date in the file: the same figures give the same bytes.
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
