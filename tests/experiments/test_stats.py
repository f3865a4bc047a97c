"""The A/B report: numbers checked against hand formulas, SRM, edge cases and the page."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
import statistics

import numpy as np
import pytest
from scipy import stats

from nbo.experiments.page import report_html
from nbo.experiments.stats import VariantOutcome, experiment_report

Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile


def outcome(
    name: str,
    exposed: int,
    converted: int,
    *,
    control: bool = False,
    weight: float = 1.0,
    assigned: int | None = None,
    revenue: list[float] | None = None,
) -> VariantOutcome:
    """An outcome whose revenue is 10.0 per converter unless given."""
    if revenue is None:
        revenue = [10.0] * converted + [0.0] * (exposed - converted)
    return VariantOutcome(
        name=name,
        control=control,
        weight=weight,
        assigned=exposed if assigned is None else assigned,
        exposed=exposed,
        converted=converted,
        revenue=np.asarray(revenue, dtype=float),
    )


def round_trip(report: dict[str, object]) -> dict[str, object]:
    """The report must be strict JSON (no NaN): the round trip fails otherwise."""
    loaded: dict[str, object] = json.loads(json.dumps(report, allow_nan=False))
    return loaded


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"data:image/png;base64,([^\"]+)", page)]


# --- conversion -----------------------------------------------------------------------


def test_conversion_matches_the_hand_formulas() -> None:
    report = experiment_report(
        "exp",
        [outcome("control", 1000, 100, control=True), outcome("model", 1000, 130)],
    )
    assert report["control"] == "control"
    (comparison,) = report["comparisons"]
    assert comparison["variant"] == "model" and comparison["against"] == "control"
    conversion = comparison["conversion"]

    pc, pv, n = 0.10, 0.13, 1000
    pooled = (100 + 130) / 2000
    z = (pv - pc) / math.sqrt(pooled * (1 - pooled) * (2 / n))
    p_value = math.erfc(abs(z) / math.sqrt(2))
    wald_se = math.sqrt(pv * (1 - pv) / n + pc * (1 - pc) / n)
    low, high = newcombe(130, 1000, 100, 1000, Z_975)

    assert conversion["difference"] == pytest.approx(0.03, abs=1e-12)
    assert conversion["relative_uplift"] == pytest.approx(0.3, rel=1e-12)
    assert conversion["z"] == pytest.approx(z, rel=1e-9)
    assert z == pytest.approx(2.1027, abs=1e-3)  # the formula itself, worked out on paper
    assert conversion["p_value"] == pytest.approx(p_value, rel=1e-6)
    assert conversion["ci_low"] == pytest.approx(low, rel=1e-9)
    assert conversion["ci_high"] == pytest.approx(high, rel=1e-9)
    # On a thousand customers a side it is all but the Wald interval analysts work out.
    assert low == pytest.approx(0.03 - Z_975 * wald_se, abs=1e-3)
    assert high == pytest.approx(0.03 + Z_975 * wald_se, abs=1e-3)
    assert conversion["significant"] is (p_value < 0.05) is True

    control, model = report["variants"]
    assert control["conversion_rate"] == pytest.approx(0.1)
    assert model["conversion_rate"] == pytest.approx(0.13)
    assert model["revenue"] == pytest.approx(1300.0)
    assert model["revenue_per_exposed"] == pytest.approx(1.3)
    assert control["weight"] == model["weight"] == pytest.approx(0.5)


def test_alpha_sets_the_interval_level_and_the_significance_cut() -> None:
    outcomes = [outcome("c", 1000, 100, control=True), outcome("v", 1000, 130)]
    report = experiment_report("exp", outcomes, alpha=0.01)
    conversion = report["comparisons"][0]["conversion"]
    z_995 = 2.5758293035489004
    assert conversion["ci_low"] == pytest.approx(newcombe(130, 1000, 100, 1000, z_995)[0])
    assert conversion["p_value"] > 0.01
    assert conversion["significant"] is False
    assert report["alpha"] == 0.01


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval, as in the textbooks."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(xv: int, nv: int, xc: int, nc: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for pv - pc (1998, method 10), by hand."""
    pv, pc = xv / nv, xc / nc
    (lv, uv), (lc, uc) = wilson(xv, nv, z), wilson(xc, nc, z)
    d = pv - pc
    return d - math.sqrt((pv - lv) ** 2 + (uc - pc) ** 2), d + math.sqrt(
        (uv - pv) ** 2 + (pc - lc) ** 2
    )


def test_a_small_sample_gets_an_interval_of_real_width_within_the_possible() -> None:
    """0 of 5 against 6 of 6 read +100 pp [+100, +100] under Wald, and 3 of 4 against 0
    of 5 reached above +100 pp: the score interval keeps a width and stays in [-1, 1]."""
    for control, variant in (((5, 0), (6, 6)), ((5, 0), (4, 3))):
        report = experiment_report(
            "exp", [outcome("c", *control, control=True), outcome("v", *variant)]
        )
        conversion = report["comparisons"][0]["conversion"]
        low, high = conversion["ci_low"], conversion["ci_high"]
        # (At +100 pp the difference is already the most there can be: the upper end.)
        assert -1.0 <= low < conversion["difference"] <= high <= 1.0 and high - low > 0.3
        assert (low, high) == pytest.approx(newcombe(*variant[::-1], *control[::-1], Z_975))
        assert any("fewer than 100" in w for w in report["warnings"])


def test_no_conversions_anywhere_is_untested_not_a_crash() -> None:
    report = experiment_report("exp", [outcome("c", 50, 0, control=True), outcome("v", 40, 0)])
    conversion = report["comparisons"][0]["conversion"]
    assert conversion["difference"] == 0.0
    assert conversion["relative_uplift"] is None  # control rate is 0
    assert conversion["z"] is None and conversion["p_value"] is None
    assert conversion["ci_low"] is None and conversion["significant"] is False
    assert any("conversion not tested" in w for w in report["warnings"])
    round_trip(report)


# --- revenue --------------------------------------------------------------------------


def test_revenue_is_welch_against_the_hand_formulas() -> None:
    v = [0.0, 0.0, 12.5, 30.0, 0.0, 7.25]
    c = [0.0, 5.0, 0.0, 0.0, 10.0]
    report = experiment_report(
        "exp",
        [
            outcome("c", 5, 2, control=True, revenue=c),
            outcome("v", 6, 3, revenue=v),
        ],
    )
    revenue = report["comparisons"][0]["revenue_per_exposed"]

    mv, mc = statistics.fmean(v), statistics.fmean(c)
    sv, sc = statistics.variance(v) / len(v), statistics.variance(c) / len(c)
    se = math.sqrt(sv + sc)
    t = (mv - mc) / se
    df = (sv + sc) ** 2 / (sv**2 / (len(v) - 1) + sc**2 / (len(c) - 1))
    p_value = 2 * stats.t.sf(abs(t), df)
    half = stats.t.ppf(0.975, df) * se

    assert revenue["difference"] == pytest.approx(mv - mc, rel=1e-12)
    assert revenue["relative_uplift"] == pytest.approx((mv - mc) / mc, rel=1e-12)
    assert revenue["t"] == pytest.approx(t, rel=1e-9)
    assert revenue["p_value"] == pytest.approx(p_value, rel=1e-6)
    assert revenue["ci_low"] == pytest.approx(mv - mc - half, rel=1e-6)
    assert revenue["ci_high"] == pytest.approx(mv - mc + half, rel=1e-6)
    assert revenue["significant"] is False  # tiny samples, wide interval
    assert revenue["ci_low"] < 0 < revenue["ci_high"]


def test_revenue_without_any_spread_is_untested() -> None:
    report = experiment_report(
        "exp", [outcome("c", 4, 0, control=True), outcome("v", 3, 0)]
    )  # all zero revenue in both
    revenue = report["comparisons"][0]["revenue_per_exposed"]
    assert revenue["difference"] == 0.0
    assert revenue["t"] is None and revenue["p_value"] is None and revenue["ci_low"] is None
    assert revenue["significant"] is False
    assert any("revenue not tested" in w and "does not vary" in w for w in report["warnings"])


def test_one_exposed_customer_gives_a_difference_but_no_test() -> None:
    report = experiment_report(
        "exp", [outcome("c", 100, 10, control=True), outcome("v", 1, 1, revenue=[20.0])]
    )
    comparison = report["comparisons"][0]
    assert comparison["conversion"]["difference"] == pytest.approx(0.9)
    assert comparison["conversion"]["p_value"] is None
    assert comparison["revenue_per_exposed"]["difference"] == pytest.approx(19.0)
    assert comparison["revenue_per_exposed"]["t"] is None
    assert sum("fewer than 2 exposed customers in v (1)" in w for w in report["warnings"]) == 2


# --- sample ratio mismatch ------------------------------------------------------------


def test_srm_flags_a_skewed_split_loudly() -> None:
    report = experiment_report(
        "exp",
        [
            outcome("control", 5000, 500, control=True, weight=0.5),
            outcome("model", 5600, 600, weight=0.5),
        ],
    )
    srm = report["srm"]
    assert srm["observed"] == [5000, 5600]
    assert srm["expected"] == pytest.approx([5300.0, 5300.0])
    assert srm["chi2"] == pytest.approx(2 * 300**2 / 5300, rel=1e-9)
    assert srm["p_value"] == pytest.approx(math.erfc(math.sqrt(srm["chi2"] / 2)), rel=1e-6)
    assert srm["mismatch"] is True
    first = report["warnings"][0]
    assert first.startswith("SAMPLE RATIO MISMATCH")
    assert "control 47.2% observed vs 50.0% expected" in first
    assert "model 52.8% observed vs 50.0% expected" in first


def test_srm_accepts_a_split_within_chance() -> None:
    report = experiment_report(
        "exp",
        [
            outcome("control", 5000, 500, control=True, weight=0.5),
            outcome("model", 5050, 600, weight=0.5),
        ],
    )
    assert report["srm"]["mismatch"] is False
    assert report["srm"]["p_value"] == pytest.approx(0.6177, abs=1e-3)
    assert not any(w.startswith("SAMPLE RATIO MISMATCH") for w in report["warnings"])


def test_weights_are_normalised_and_drive_the_expected_counts() -> None:
    report = experiment_report(
        "exp", [outcome("a", 250, 0, weight=1, control=True), outcome("b", 750, 0, weight=3)]
    )
    assert [v["weight"] for v in report["variants"]] == pytest.approx([0.25, 0.75])
    assert report["srm"]["expected"] == pytest.approx([250.0, 750.0])
    assert report["srm"]["chi2"] == pytest.approx(0.0)
    assert report["srm"]["mismatch"] is False


def test_srm_with_nobody_exposed_has_no_statistics() -> None:
    report = experiment_report("exp", [outcome("a", 0, 0, control=True), outcome("b", 0, 0)])
    assert report["srm"]["chi2"] is None and report["srm"]["p_value"] is None
    assert report["srm"]["mismatch"] is False
    round_trip(report)


def test_the_srm_result_is_reported_when_it_finds_nothing() -> None:
    report = experiment_report("exp", [outcome("a", 500, 50, control=True), outcome("b", 520, 50)])
    srm = report["srm"]
    assert srm["degrees_of_freedom"] == 1 and srm["threshold"] == 0.001
    assert srm["p_value"] == pytest.approx(stats.chisquare([500, 520]).pvalue, rel=1e-9)
    # Finding nothing does not show the split is as configured ("no mismatch ..., the
    # split is as configured" claimed it did).
    assert srm["verdict"] == "no evidence of a mismatch: p >= 0.001"
    page = report_html(report)
    assert "<h2>Sample ratio</h2>" in page
    assert (
        f"chi-square {srm['chi2']:.2f} (1 df), p = {srm['p_value']:.4f}; no evidence of a "
        "mismatch" in page
    )


def test_a_revenue_interval_without_any_spread_is_not_estimated() -> None:
    """Six exposed customers and no buyer: the t-interval was 0.00 .. 0.00, a certainty
    six customers cannot give. It is not estimated, and a warning says why."""
    report = experiment_report("exp", [outcome("c", 200, 20, control=True), outcome("v", 6, 0)])
    control, variant = report["variants"]
    assert variant["revenue_per_exposed"] == 0.0
    assert variant["revenue_per_exposed_ci"] is None
    assert variant["revenue_per_exposed_ci_clipped"] is False
    assert control["revenue_per_exposed_ci"] is not None
    assert (
        "v: revenue per exposed customer's interval cannot be estimated: all 6 exposed "
        "customers have the same revenue (0.00, no buyers)"
    ) in " ".join(report["warnings"])
    round_trip(report)


def test_an_untestable_srm_says_why() -> None:
    one = experiment_report("exp", [outcome("a", 10, 1)])
    nobody = experiment_report("exp", [outcome("a", 0, 0), outcome("b", 0, 0)])
    assert one["srm"]["verdict"] == "not tested: one variant only"
    assert nobody["srm"]["verdict"] == "not tested: nobody exposed yet"
    assert "sample ratio not tested: nobody exposed yet" in report_html(nobody)


def test_too_few_exposed_customers_are_warned_about() -> None:
    """4 and 12 exposed (the probe of issue 13): both named, with the minimum."""
    report = experiment_report("exp", [outcome("a", 4, 1, control=True), outcome("b", 12, 3)])
    assert report["min_exposed"] == 100
    (small,) = [w for w in report["warnings"] if w.startswith("too few exposed customers")]
    assert small.startswith("too few exposed customers: a 4, b 12 (fewer than 100 per variant)")
    enough = experiment_report("exp", [outcome("a", 100, 10, control=True), outcome("b", 150, 12)])
    assert not any(w.startswith("too few") for w in enough["warnings"])
    one_short = experiment_report(
        "exp", [outcome("a", 100, 10, control=True), outcome("b", 99, 12)], min_exposed=100
    )
    assert any(w.startswith("too few exposed customers: b 99 (") for w in one_short["warnings"])


def test_revenue_per_exposed_customer_never_has_a_negative_interval() -> None:
    """One buyer of 50.0 among 12: the symmetric t-interval reaches below 0, which revenue
    cannot; its lower bound is clipped at 0 and the report says so. Many buyers: the
    t-interval as computed by hand, unclipped."""
    few = [0.0] * 11 + [50.0]
    many = [10.0] * 300 + [0.0] * 700
    report = experiment_report(
        "exp",
        [outcome("a", 12, 1, control=True, revenue=few), outcome("b", 1000, 300, revenue=many)],
    )
    a, b = report["variants"]
    half_a = stats.t.ppf(0.975, 11) * statistics.stdev(few) / math.sqrt(12)
    assert statistics.fmean(few) - half_a < 0  # what the old interval showed
    assert a["revenue_per_exposed_ci"] == pytest.approx([0.0, statistics.fmean(few) + half_a])
    assert a["revenue_per_exposed_ci_clipped"] is True
    half_b = stats.t.ppf(0.975, 999) * statistics.stdev(many) / math.sqrt(1000)
    assert b["revenue_per_exposed_ci"] == pytest.approx([3.0 - half_b, 3.0 + half_b])
    assert b["revenue_per_exposed_ci_clipped"] is False
    # The difference between variants may be negative: it is not clipped.
    assert report["comparisons"][0]["revenue_per_exposed"]["ci_low"] < 0
    page = report_html(report)
    assert "[0.00*, " in page and "Lower bound clipped at 0" in page


def test_the_page_says_when_the_experiment_runs_and_what_it_counts() -> None:
    report = experiment_report("exp", [outcome("a", 100, 10, control=True), outcome("b", 100, 12)])
    report.update(
        start="2026-06-01T00:00:00+00:00",
        end="2026-07-01T00:00:00+00:00",
        status="ended",
        as_of="2026-07-05T08:00:00+00:00",
        window={"start": "2026-06-01T00:00:00+00:00", "end": "2026-07-01T00:00:00+00:00"},
    )
    page = report_html(report)
    assert "from 2026-06-01 00:00 UTC to 2026-07-01 00:00 UTC (ended)" in page
    assert (
        "events from 2026-06-01 00:00 UTC to 2026-07-01 00:00 UTC (as of 2026-07-05 08:00 UTC)"
    ) in page
    assert page.index('class="dates"') < page.index("<h2>Variants</h2>")


# --- structure and edge cases ---------------------------------------------------------


def test_without_a_control_the_first_variant_is_the_baseline() -> None:
    # Two models A/B tested against each other: compared as against a control, with
    # the same tests (no "variants are not compared").
    a, b = outcome("a", 1000, 100), outcome("b", 1000, 130)
    report = experiment_report("exp", [a, b])
    assert report["control"] is None
    assert report["baseline"] == "a" and report["baseline_is"] == "first variant"
    assert [v["baseline"] for v in report["variants"]] == [True, False]
    assert not any("not compared" in w for w in report["warnings"])
    (comparison,) = report["comparisons"]
    assert comparison["variant"] == "b" and comparison["against"] == "a"
    # The very numbers of b against a control a.
    as_control = experiment_report("exp", [dataclasses.replace(a, control=True), b])
    assert comparison == as_control["comparisons"][0]
    assert comparison["conversion"]["p_value"] is not None
    page = report_html(report)
    assert "Against a (the first variant: there is no control)" in page
    assert "a (baseline)" in page


def test_a_named_baseline_is_what_the_others_are_compared_against() -> None:
    outcomes = [
        outcome("control", 1000, 100, control=True),
        outcome("base", 1000, 120),
        outcome("cand", 1000, 130),
    ]
    report = experiment_report("exp", outcomes, baseline="base")
    assert report["control"] == "control"
    assert report["baseline"] == "base" and report["baseline_is"] == "configured"
    assert [(c["variant"], c["against"]) for c in report["comparisons"]] == [
        ("control", "base"),
        ("cand", "base"),
    ]
    assert "Against base (the experiment&#x27;s baseline)" in report_html(report)
    with pytest.raises(ValueError, match="baseline: 'nope' is not a variant"):
        experiment_report("exp", outcomes, baseline="nope")


def test_a_variant_with_nobody_exposed_does_not_crash() -> None:
    report = experiment_report(
        "exp",
        [outcome("control", 200, 20, control=True, assigned=210), outcome("model", 0, 0)],
    )
    model = report["variants"][1]
    assert model["conversion_rate"] is None and model["revenue_per_exposed"] is None
    assert model["revenue"] == 0.0 and model["assigned"] == 0
    comparison = report["comparisons"][0]
    assert comparison["conversion"]["difference"] is None
    assert comparison["revenue_per_exposed"]["difference"] is None
    assert comparison["conversion"]["significant"] is False
    assert report["srm"]["mismatch"] is True  # 200 against 0 on a 50/50 split
    loaded = round_trip(report)
    assert loaded["variants"][1]["conversion_rate"] is None  # type: ignore[index]
    page = report_html(report)
    # The variants' chart and the uplift chart.
    assert "model" in page and len(pngs(page)) == 2


def test_the_report_is_strict_json_with_plain_types() -> None:
    report = experiment_report(
        "exp",
        [
            outcome("c", 300, 30, control=True, revenue=[5.0] * 30 + [0.0] * 270),
            outcome("v", 300, 60, revenue=[4.0] * 60 + [0.0] * 240),
        ],
    )
    assert round_trip(report) == report
    assert type(report["comparisons"][0]["conversion"]["test"]) is str
    for key in ("difference", "z", "p_value", "ci_low"):
        assert type(report["comparisons"][0]["conversion"][key]) is float
    assert type(report["comparisons"][0]["revenue_per_exposed"]["t"]) is float
    assert type(report["variants"][0]["exposed"]) is int


@pytest.mark.parametrize(
    ("outcomes", "words"),
    [
        ([], ["outcomes"]),
        ([outcome("a", 10, 1), outcome("a", 10, 1)], ["'a'", "name"]),
        (
            [outcome("a", 10, 1, control=True), outcome("b", 10, 1, control=True)],
            ["control", "a", "b"],
        ),
        ([outcome("a", 10, 1, assigned=-1)], ["'a'", "assigned"]),
        ([outcome("a", 2, 3, revenue=[1.0, 1.0])], ["'a'", "converted"]),
        ([outcome("a", 3, 1, revenue=[1.0])], ["'a'", "revenue"]),
        ([outcome("a", 10, 1, weight=0)], ["'a'", "weight"]),
        ([outcome("a", 10, 1, weight=-0.5)], ["'a'", "weight"]),
        ([outcome("a", 2, 1, revenue=[1.0, float("nan")])], ["'a'", "revenue"]),
        ([outcome("a", 2, 1, revenue=[5.0, -1.0])], ["'a'", "negative"]),
    ],
)
def test_bad_input_names_the_variant_and_field(
    outcomes: list[VariantOutcome], words: list[str]
) -> None:
    with pytest.raises(ValueError) as raised:
        experiment_report("exp", outcomes)
    for word in words:
        assert word in str(raised.value)


def test_negative_exposed_is_rejected() -> None:
    bad = VariantOutcome("b", False, 1.0, 5, -1, 0, np.zeros(0))
    with pytest.raises(ValueError, match=r"'b'.*exposed"):
        experiment_report("exp", [outcome("a", 5, 1, control=True), bad])


# --- the page -------------------------------------------------------------------------


def test_the_page_is_self_contained_and_shows_the_srm_warning_first() -> None:
    report = experiment_report(
        "exp <1>",
        [
            outcome("control", 5000, 500, control=True, weight=0.5),
            outcome("<b>model</b>", 5600, 700, weight=0.5),
        ],
    )
    page = report_html(report, title="Spring & offers")
    assert "<title>Spring &amp; offers</title>" in page
    assert "control" in page and "&lt;b&gt;model&lt;/b&gt;" in page
    assert "<b>model</b>" not in page  # escaped, not markup
    assert "SAMPLE RATIO MISMATCH" in page
    assert page.index("SAMPLE RATIO MISMATCH") < page.index("<table")
    assert 'class="srm"' in page
    assert "Wilson" in page  # the caption says which interval the bars show
    assert "+2.50 pp" in page  # 12.5% against 10%
    assert "+25.0%" in page  # relative uplift as a percentage
    # The variants' chart, then the uplift of the variant over the control.
    variants, uplift = pngs(page)
    assert variants.startswith(b"\x89PNG") and uplift.startswith(b"\x89PNG")
    assert "uplift of each variant over the baseline" in page
    without_images = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert "<script" not in without_images.lower()
    assert "http" not in without_images.lower()
    assert report_html(report, title="Spring & offers") == page  # deterministic bytes


def test_the_page_without_a_control() -> None:
    report = experiment_report("exp", [outcome("a", 100, 10), outcome("b", 100, 12)])
    page = report_html(report)
    assert "<h1>Experiment exp</h1>" in page
    assert "No comparisons" not in page
    assert "SAMPLE RATIO MISMATCH" not in page
    # The variants' chart and the uplift of b over the baseline a.
    assert len(pngs(page)) == 2 and all(png.startswith(b"\x89PNG") for png in pngs(page))


def test_the_page_of_one_variant_has_no_comparisons() -> None:
    page = report_html(experiment_report("exp", [outcome("a", 100, 10)]))
    assert "No comparisons" in page
    (png,) = pngs(page)
    assert png.startswith(b"\x89PNG")


# --- few conversions ------------------------------------------------------------------


def test_a_handful_of_conversions_is_indicative_never_significant() -> None:
    """4 conversions of 156 against 0 of 146 read revenue +0.64 (p 0.045) "significant":
    the z-test and Welch's test lean on a normal approximation that a handful of buyers
    does not give, and a group with no buyer has no spread to estimate."""
    report = experiment_report(
        "exp",
        [outcome("control", 146, 0, control=True), outcome("model", 156, 4, revenue=None)],
    )
    conversion = report["comparisons"][0]["conversion"]
    revenue = report["comparisons"][0]["revenue_per_exposed"]
    assert revenue["p_value"] < 0.05  # Welch's alone would call it
    assert revenue["significant"] is False and revenue["indicative"] is True
    # Conversion by Fisher's exact test at this count, not the z-test.
    assert conversion["test"] == "Fisher's exact" and conversion["z"] is None
    expected = stats.fisher_exact([[4, 152], [0, 146]]).pvalue
    assert conversion["p_value"] == pytest.approx(expected, rel=1e-12)
    assert conversion["significant"] is False and conversion["indicative"] is True
    assert report["min_conversions"] == 10
    (warning,) = [w for w in report["warnings"] if w.startswith("too few conversions")]
    assert "control 0, model 4" in warning and "indicative" in warning
    page = report_html(report)
    assert "no, indicative only" in page and "Fisher" in page
    round_trip(report)


def test_fisher_even_significant_stays_indicative_below_the_minimum() -> None:
    """9 of 200 against 0 of 200 is significant by Fisher's exact test (p 0.004), yet
    nine buyers are not a result to act on: indicative; 40 of 1000 against 10 of 1000 is
    tested by the z-test and called significant."""
    few = experiment_report("exp", [outcome("c", 200, 0, control=True), outcome("v", 200, 9)])
    conversion = few["comparisons"][0]["conversion"]
    assert conversion["p_value"] < 0.01 and conversion["significant"] is False
    enough = experiment_report(
        "exp", [outcome("c", 1000, 10, control=True), outcome("v", 1000, 40)]
    )
    conversion = enough["comparisons"][0]["conversion"]
    assert conversion["test"] == "two-proportion z" and conversion["significant"] is True
    assert conversion["indicative"] is False
    assert enough["comparisons"][0]["revenue_per_exposed"]["significant"] is True
    assert not any(w.startswith("too few conversions") for w in enough["warnings"])


# --- sample size: what a comparison can detect, and the customers it would need -----


def test_the_customers_needed_match_the_textbook_figure_for_two_proportions() -> None:
    # 5% against 10% in equal groups, 5% two-sided, 80% power: 435 a group (Fleiss,
    # Levin and Paik's formula without continuity correction, the figure sample-size
    # calculators give).
    report = experiment_report(
        "e", [outcome("control", 200, 10, control=True), outcome("b", 200, 20)]
    )
    size = report["comparisons"][0]["sample_size"]
    assert size["exposed_needed"] == {"variant": 435, "against": 435}
    assert size["exposed_more"] == 2 * (435 - 200)
    assert size["power"] == 0.8 and size["reason"] is None


def test_the_customers_needed_find_the_difference_eight_times_in_ten() -> None:
    """Simulated experiments of the size the report asks for, at the configured 1:2 split,
    find the difference with the report's own test about 80% of the time."""
    report = experiment_report(
        "e",
        [outcome("control", 150, 9, control=True, weight=1), outcome("b", 300, 30, weight=2)],
    )
    needed = report["comparisons"][0]["sample_size"]["exposed_needed"]
    assert needed["variant"] == pytest.approx(2 * needed["against"], abs=1)
    rng = np.random.default_rng(7)
    runs, found = 300, 0
    for _ in range(runs):
        cv = int(rng.binomial(needed["variant"], 0.10))
        cc = int(rng.binomial(needed["against"], 0.06))
        simulated = experiment_report(
            "e",
            [
                outcome("control", needed["against"], cc, control=True, weight=1),
                outcome("b", needed["variant"], cv, weight=2),
            ],
        )
        conversion = simulated["comparisons"][0]["conversion"]
        found += bool(conversion["p_value"] < 0.05 and conversion["difference"] > 0)
    assert 0.72 <= found / runs <= 0.88


def test_the_minimum_detectable_difference_shrinks_with_the_square_root_of_the_sample() -> None:
    small = experiment_report(
        "e", [outcome("control", 400, 40, control=True), outcome("b", 400, 44)]
    )["comparisons"][0]["sample_size"]
    large = experiment_report(
        "e", [outcome("control", 1600, 160, control=True), outcome("b", 1600, 176)]
    )["comparisons"][0]["sample_size"]
    mde = small["minimum_detectable_difference"]
    # (1.96 + 0.84) * sqrt(0.1 * 0.9 * (1/400 + 1/400)) = 5.94 pp
    assert mde == pytest.approx((Z_975 + stats.norm.ppf(0.8)) * math.sqrt(0.09 * 2 / 400))
    assert large["minimum_detectable_difference"] == pytest.approx(mde / 2)
    assert small["minimum_detectable_relative_uplift"] == pytest.approx(mde / 0.1)


@pytest.mark.parametrize(
    ("control", "variant", "reason", "detectable", "needed"),
    [
        ((0, 0), (50, 3), "nobody exposed yet on one side", False, False),
        # No baseline rate to plan the smallest difference on; the one seen still sizes.
        ((40, 0), (50, 3), "no customer of control converted yet", False, True),
        ((40, 4), (50, 5), "no difference seen yet to size the test for", True, False),
    ],
)
def test_too_little_data_gives_a_reason_not_a_figure(
    control: tuple[int, int],
    variant: tuple[int, int],
    reason: str,
    detectable: bool,
    needed: bool,
) -> None:
    report = experiment_report(
        "e", [outcome("control", *control, control=True), outcome("b", *variant)]
    )
    size = report["comparisons"][0]["sample_size"]
    assert size["reason"] == reason
    assert (size["minimum_detectable_difference"] is not None) is detectable
    assert (size["exposed_needed"] is not None) is needed
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    page = report_html(report)
    assert "Sample size" in page and reason in page


def test_the_page_and_the_command_say_how_many_customers_are_needed() -> None:
    from nbo.experiments.page import sample_size_text

    report = experiment_report(
        "e", [outcome("control", 200, 10, control=True), outcome("b", 200, 20)]
    )
    text = sample_size_text(report["comparisons"][0])
    assert text.startswith("b vs control sample size: with 200 and 200 exposed")
    assert "to find the +5.00 pp seen, about 435 and 435 exposed customers are needed" in text
    assert "(470 more)" in text
    assert html.escape(text, quote=True) in report_html(report)
