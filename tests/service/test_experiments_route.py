"""A/B tests of models through the real app: sticky variants answered with their model, the
control's non-personalized offers, customers without consent left out, the models and
experiments listed, and the report (JSON, HTML and ``nbo report experiment``) from posted
events with figures checked by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import CLOCK

from nbo.cli import main
from nbo.experiments.definitions import load_experiments
from nbo.experiments.outcomes import ATTRIBUTION

CUSTOMERS = [f"{g}{c:02d}" for g in "ab" for c in range(30)]


def test_variants_are_sticky_and_answer_with_their_model(
    experiment_client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    _, production, candidate = two_models
    seen = {}
    for customer_id in CUSTOMERS:
        answer = experiment_client.get(f"/v1/customers/{customer_id}/offers?k=5").json()
        assert answer["experiment"] == "ranker-test"
        seen[customer_id] = answer["variant"]
        if answer["variant"] == "control":
            assert answer["personalized"] is False and answer["profile"] == "none"
            # The current model (CURRENT: the later training), unpersonalized.
            assert answer["model_version"] == candidate
        else:
            assert answer["personalized"] is True
            expected = production if answer["variant"] == "production" else candidate
            assert answer["model_version"] == expected
    assert set(seen.values()) == {"control", "production", "candidate"}
    for customer_id in CUSTOMERS[:10]:  # the same variant on every call
        again = experiment_client.get(f"/v1/customers/{customer_id}/offers").json()
        assert again["variant"] == seen[customer_id]


def test_customers_without_personalization_consent_stay_out(experiment_client: TestClient) -> None:
    consent = {"personalization": False, "channels": {}}
    assert experiment_client.put("/v1/customers/a07/consent", json=consent).status_code == 200
    answer = experiment_client.get("/v1/customers/a07/offers").json()
    assert answer["experiment"] is None and answer["variant"] is None


def test_models_lists_versions_aliases_and_what_serves(
    experiment_client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    _, production, candidate = two_models
    body = experiment_client.get("/v1/models").json()
    assert body["current"] == candidate  # the later training moved CURRENT
    # previous: what CURRENT named before that training moved it.
    assert body["aliases"] == {
        "candidate": candidate,
        "production": production,
        "previous": production,
    }
    rows = {m["version"]: m for m in body["models"]}
    assert rows[production]["aliases"] == ["previous", "production"] and rows[production]["serving"]
    assert rows[candidate]["serving"] and rows[candidate]["current"]
    listed = experiment_client.get("/v1/experiments").json()["experiments"]
    assert [e["name"] for e in listed] == ["ranker-test"] and listed[0]["active"]


def _conversion(n: int, customer_id: str, revenue: float) -> dict[str, object]:
    return {
        "event_id": f"conv-{n}",
        "type": "offer_conversion",
        "customer_id": customer_id,
        "item_id": "A01",
        "timestamp": CLOCK,  # with the impressions the offers calls recorded
        "revenue": revenue,
    }


def test_the_report_counts_what_was_shown_and_bought(
    experiment_client: TestClient,
    experiments_file: Path,
    isolated_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    variant = {}
    for customer_id in CUSTOMERS:
        answer = experiment_client.get(f"/v1/customers/{customer_id}/offers?k=3&record=true").json()
        assert answer["recorded"] is True
        variant[customer_id] = answer["variant"]
    # Every third customer buys: 10.0 each, and a conversion before the experiment's
    # exposure (an older event) must not count.
    buyers = CUSTOMERS[::3]
    events = [_conversion(n, c, 10.0) for n, c in enumerate(buyers)]
    early = {**_conversion(999, CUSTOMERS[1], 50.0), "timestamp": "2026-06-29T00:00:00Z"}
    body = experiment_client.post("/v1/events", json={"events": [*events, early]}).json()
    assert len(body["accepted"]) == len(buyers) + 1

    report = experiment_client.get("/v1/experiments/ranker-test/report").json()
    exposed = Counter(variant.values())
    converted = Counter(variant[c] for c in buyers)
    rows = {v["name"]: v for v in report["variants"]}
    for name in ("control", "production", "candidate"):
        assert rows[name]["exposed"] == exposed[name]
        assert rows[name]["converted"] == converted[name]
        assert rows[name]["conversion_rate"] == pytest.approx(converted[name] / exposed[name])
        assert rows[name]["revenue_per_exposed"] == pytest.approx(
            10.0 * converted[name] / exposed[name]
        )
    assert report["control"] == "control"
    assert {c["variant"] for c in report["comparisons"]} == {"production", "candidate"}
    for comparison in report["comparisons"]:
        name = comparison["variant"]
        difference = converted[name] / exposed[name] - converted["control"] / exposed["control"]
        assert comparison["conversion"]["difference"] == pytest.approx(difference)
        assert 0.0 <= comparison["conversion"]["p_value"] <= 1.0
    # Its dates and the window of events counted (start to the clock plus the skew the
    # service accepts events at, NBO_CLOCK_SKEW_SECONDS: still running).
    assert report["start"] == "2026-06-01T00:00:00+00:00"
    assert report["end"] == "2026-08-01T00:00:00+00:00"
    assert report["status"] == "running" and report["as_of"] == "2026-06-30T12:00:00+00:00"
    assert report["window"] == {"start": report["start"], "end": "2026-06-30T12:05:00+00:00"}
    # What a conversion must be to count, in the report's own words (and below, on the
    # page and the command line).
    assert report["attribution"] == ATTRIBUTION
    assert "whatever experiment, variant, item or offer it names" in ATTRIBUTION
    # The sample-ratio test's result, even when it finds nothing, and the small variants.
    assert report["srm"]["p_value"] is not None and report["srm"]["mismatch"] is False
    assert report["srm"]["verdict"] == "no evidence of a mismatch: p >= 0.001"
    small = next(w for w in report["warnings"] if w.startswith("too few exposed customers"))
    assert f"control {exposed['control']}" in small and "fewer than 100 per variant" in small
    for row in report["variants"]:  # revenue per exposed customer is never negative
        assert row["revenue_per_exposed_ci"][0] >= 0.0
    html = experiment_client.get("/v1/experiments/ranker-test/report?format=html")
    assert html.status_code == 200 and "ranker-test" in html.text
    assert "2026-06-01 00:00 UTC to 2026-08-01 00:00 UTC (running)" in html.text
    assert "events from 2026-06-01 00:00 UTC to 2026-06-30 12:05 UTC" in html.text
    assert (
        "<h2>Sample ratio</h2>" in html.text
        and "no evidence of a mismatch: p &gt;= 0.001" in html.text
    )
    assert "too few exposed customers" in html.text
    assert "<th>What counts</th><td>A customer is exposed by their first" in html.text
    assert "<img" in html.text  # the chart, drawn by the lazily imported page module
    # The page's rules for a browser, as the dashboard's: its one style by its hash, the
    # chart's data URI, nothing else (there was no Content-Security-Policy at all).
    style = html.text.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
    policy = html.headers["content-security-policy"]
    assert policy.startswith(f"default-src 'none'; img-src data:; style-src 'sha256-{digest}';")
    assert html.text.count("<style>") == 1 and "<script" not in html.text
    assert 'src="data:' in html.text and "frame-ancestors 'none'" in policy
    missing = experiment_client.get("/v1/experiments/nope/report")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    # A name no experiments file could hold is refused, not looked up and echoed back.
    for bad, sent in (("q" * 65, "q" * 65), ("a\nb", "a%0Ab"), ("Ranker-Test", "Ranker-Test")):
        refused = experiment_client.get(f"/v1/experiments/{sent}/report")
        assert refused.status_code == 422 and refused.json()["details"][0]["field"] == "name"
        assert bad not in refused.json()["message"]

    # The command line reads the same store and file.
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{isolated_store}")
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    out = tmp_path / "report"
    assert main(["report", "experiment", "ranker-test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "production vs control" in printed and "candidate vs control" in printed
    assert (
        "experiment ranker-test: 2026-06-01T00:00:00+00:00 to 2026-08-01T00:00:00+00:00 "
        "(running); this report counts events from 2026-06-01T00:00:00+00:00 to "
        "2026-06-30T12:05:00+00:00"
    ) in printed
    assert "sample ratio: chi-square " in printed
    assert "; no evidence of a mismatch: p >= 0.001" in printed
    # Two variants against the control: the output says they are not corrected for.
    assert (
        "each of the 2 variants is compared with control separately, with no correction "
        "for multiple comparisons"
    ) in printed
    assert "warning too few exposed customers" in printed
    assert f"what counts: {ATTRIBUTION}" in printed
    # Each comparison with its relative uplift (the page's column) and what its sample
    # can detect, as the JSON says.
    for comparison in report["comparisons"]:
        conversion, size = comparison["conversion"], comparison["sample_size"]
        label = f"{comparison['variant']} vs control"
        relative = conversion["relative_uplift"]
        assert (
            f"{label}: conversion {conversion['difference'] * 100:+.2f} pp, "
            f"{relative * 100:+.1f}% relative (95% CI"
        ) in printed
        exposed = size["exposed"]
        assert (
            f"{label} sample size: with {exposed['variant']:,} and {exposed['against']:,} "
            f"exposed, a difference in conversion of "
            f"{size['minimum_detectable_difference'] * 100:.2f} pp"
        ) in printed
    written = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert written["variants"] == report["variants"]
    assert "<img" in (out / "report.html").read_text(encoding="utf-8")


def test_a_conversion_accepted_ahead_of_the_clock_is_counted(
    experiment_client: TestClient,
) -> None:
    """A conversion dated within NBO_CLOCK_SKEW_SECONDS (300) after the clock is
    accepted; the report ended its window at the clock and showed it nowhere."""
    shown = experiment_client.get("/v1/customers/a00/offers?k=3&record=true").json()
    ahead = {**_conversion(1, "a00", 25.0), "timestamp": "2026-06-30T12:04:00Z"}
    assert experiment_client.post("/v1/events", json=ahead).json()["accepted"] == ["conv-1"]
    report = experiment_client.get("/v1/experiments/ranker-test/report").json()
    row = next(v for v in report["variants"] if v["name"] == shown["variant"])
    assert (row["exposed"], row["converted"], row["revenue"]) == (1, 1, 25.0)
    assert report["window"]["end"] == "2026-06-30T12:05:00+00:00"


def test_an_arm_whose_model_changed_during_the_run_is_flagged(
    experiment_client: TestClient,
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    isolated_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CURRENT moved mid-test (a reload to another version): the control, answered by
    the current model, was decided by one model before and another after, and the report
    counted its customers as one arm all the same. Each recorded impression names its
    model version now: the report breaks the arms down by version and flags the control,
    in the JSON, the HTML page, the dashboard and the command line."""
    _, production, candidate = two_models
    variant = {}
    for customer_id in CUSTOMERS[:30]:
        answer = experiment_client.get(f"/v1/customers/{customer_id}/offers?k=2&record=true")
        variant[customer_id] = answer.json()["variant"]
    reloaded = experiment_client.post("/v1/admin/reload", json={"version": production})
    assert reloaded.status_code == 200 and reloaded.json()["version"] == production
    for customer_id in CUSTOMERS[30:]:
        answer = experiment_client.get(f"/v1/customers/{customer_id}/offers?k=2&record=true")
        variant[customer_id] = answer.json()["variant"]
    before = sum(1 for c in CUSTOMERS[:30] if variant[c] == "control")
    after = sum(1 for c in CUSTOMERS[30:] if variant[c] == "control")
    assert before and after

    report = experiment_client.get("/v1/experiments/ranker-test/report").json()
    rows = {v["name"]: v for v in report["variants"]}
    control = rows["control"]
    assert control["mixed_model_versions"] is True
    assert sorted(
        (m["model_version"], m["exposed"], m["impressions"]) for m in control["by_model_version"]
    ) == sorted([(candidate, before, 2 * before), (production, after, 2 * after)])
    for name, version in (("production", production), ("candidate", candidate)):
        assert rows[name]["mixed_model_versions"] is False
        assert [m["model_version"] for m in rows[name]["by_model_version"]] == [version]
    (warning,) = [w for w in report["warnings"] if "model versions" in w]
    assert warning.startswith("control: its impressions came from 2 model versions")
    html = experiment_client.get("/v1/experiments/ranker-test/report?format=html").text
    assert "<h2>Model versions</h2>" in html and "control (control) (model changed)" in html
    page = experiment_client.get("/dashboard/experiments/ranker-test").text
    assert 'id="model-versions"' in page and f"<td>{production}</td>" in page
    assert "control: its impressions came from 2 model versions" in page

    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{isolated_store}")
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    assert main(["report", "experiment", "ranker-test", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "warning control: its impressions came from 2 model versions" in printed
    assert "per model version" in printed and "control (model changed)" in printed
    assert production in printed and candidate in printed


def _impression(event_id: str, customer_id: str, variant: str, **extra: str) -> dict[str, str]:
    return {
        "event_id": event_id,
        "type": "offer_impression",
        "customer_id": customer_id,
        "item_id": "A01",
        "timestamp": "2026-06-30T11:00:00Z",
        "experiment": "ranker-test",
        "variant": variant,
        **extra,
    }


def test_a_planted_sample_ratio_mismatch_is_reported(
    experiment_client: TestClient, experiments_file: Path
) -> None:
    """Configured 20/40/40; impressions of 100/100/400 customers of each variant (each
    tagged with the customer's own): the report warns loudly."""
    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    wanted = {"control": 100, "production": 100, "candidate": 400}
    events = []
    for n in range(5_000):
        customer_id = f"srm-{n}"
        name = experiment.assign(customer_id).name
        if wanted[name] > 0:
            wanted[name] -= 1
            events.append(_impression(f"imp-{n}", customer_id, name))
    assert sum(wanted.values()) == 0
    for start in range(0, len(events), 500):
        assert (
            experiment_client.post(
                "/v1/events", json={"events": events[start : start + 500]}
            ).status_code
            == 200
        )
    report = experiment_client.get("/v1/experiments/ranker-test/report").json()
    assert report["srm"]["mismatch"] is True
    assert any(w.startswith("SAMPLE RATIO MISMATCH") for w in report["warnings"])


def test_posted_experiment_tags_must_be_the_customers_assignment(
    experiment_client: TestClient, experiments_file: Path
) -> None:
    """A posted impression or conversion tagged with another variant than the
    customer's, a variant the experiment does not have, an experiment not configured,
    or a time outside the run was stored and counted: exposure and revenue moved between
    arms. Each is refused naming the field, and nothing of it is stored."""
    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    own = experiment.assign("a00").name
    other = next(v.name for v in experiment.variants if v.name != own)
    conversion = {**_conversion(7, "a00", 99.0), "experiment": "ranker-test"}
    refused = [
        (
            _impression("t1", "a00", other),
            "variant: customer 'a00' is in variant "
            f"'{own}' of experiment 'ranker-test', not '{other}'",
        ),
        ({**conversion, "variant": other}, f"variant: customer 'a00' is in variant '{own}'"),
        (
            _impression("t2", "a00", "bogus"),
            "variant: 'bogus' is not a variant of "
            "experiment 'ranker-test' (its variants: control, production, candidate)",
        ),
        (
            _impression("t3", "a00", own, experiment="models-ab"),
            "experiment: 'models-ab' is not a configured experiment (configured: ranker-test)",
        ),
        (
            _impression("t4", "a00", own, timestamp="2026-05-31T23:59:59Z"),
            "experiment: "
            "'ranker-test' had not started at the event's time 2026-05-31T23:59:59+00:00",
        ),
        ({**_impression("t5", "a00", own), "experiment": None}, "experiment: missing"),
        ({**_impression("t6", "a00", own), "variant": None}, "variant: missing"),
    ]
    for event, reason in refused:
        answer = experiment_client.post("/v1/events", json=event)
        assert answer.status_code == 422, answer.text
        (rejection,) = answer.json()["rejected"]
        assert rejection["reason"].startswith(reason), rejection
    # In a batch, the others are stored, the rejections in the batch's order.
    batch = [_impression("ok", "a00", own), _impression("t1", "a00", other)]
    body = experiment_client.post("/v1/events", json={"events": batch}).json()
    assert body["accepted"] == ["ok"] and [r["index"] for r in body["rejected"]] == [1]
    assert experiment_client.post("/v1/events", json={**conversion, "variant": own}).json()[
        "accepted"
    ] == ["conv-7"]
    report = experiment_client.get("/v1/experiments/ranker-test/report").json()
    rows = {v["name"]: (v["exposed"], v["converted"], v["revenue"]) for v in report["variants"]}
    assert rows[own] == (1, 1, 99.0) and rows[other] == (0, 0, 0.0)
    assert rows.get("bogus") is None and report["warnings"] == [
        w for w in report["warnings"] if "events name variants" not in w
    ]


def test_the_service_does_not_load_matplotlib() -> None:
    """Plotting belongs to the report page, loaded only for an HTML report: importing the
    service (in a fresh interpreter) must not import matplotlib."""
    code = (
        "import sys, nbo.service.app, nbo.experiments.stats, nbo.experiments.outcomes; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_experiments_route_says_when_two_model_arms_are_one_version(
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    isolated_store: Path,
    experiment_client: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An alias and the version it names as two arms: one model against itself, said
    in the log at load and in GET /v1/experiments' warnings; two models: nothing."""
    from fastapi.testclient import TestClient as Client

    from nbo.service.app import create_app
    from nbo.settings import Settings

    assert not [
        w for w in experiment_client.get("/v1/experiments").json()["warnings"] if "itself" in w
    ]
    models, _, candidate = two_models
    experiments_file.write_text(
        experiments_file.read_text(encoding="utf-8").replace(
            "model: production", f"model: {candidate}"
        ),
        encoding="utf-8",
    )
    settings = Settings(
        models_dir=models,
        clock=CLOCK,
        store_url=f"sqlite:///{isolated_store}",
        experiments=experiments_file,
    )
    with caplog.at_level("WARNING"), Client(create_app(settings)) as client:
        warnings = client.get("/v1/experiments").json()["warnings"]
    expected = (
        f"{experiments_file}: experiment 'ranker-test': variants production ({candidate}) "
        f"and candidate (candidate) are both served by model version {candidate}: the "
        "experiment would compare a model with itself; point each alias at its own version "
        "(nbo models --alias)"
    )
    assert warnings == [expected]
    assert expected in caplog.messages
