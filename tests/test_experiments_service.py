"""A/B tests of models end to end: aliases, sticky variants in API answers and batch
rows, the control's non-personalized offers, consent, tagged impressions, and the report
from posted events with figures checked by hand; the offline comparison of two models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from support import END, make_planted_purchases, small_training_config

from nbo.cli import BLAS_THREAD_VARIABLES, main
from nbo.data.mapping import load_mapping
from nbo.models.registry import read_aliases, set_alias
from nbo.service.app import create_app
from nbo.settings import Settings
from training.config import RankerConfig
from training.pipeline import train

CLOCK = "2026-06-30T12:00:00Z"
EXPERIMENT = """
version: 1
experiments:
  - name: ranker-test
    salt: s1
    start: 2026-06-01T00:00:00Z
    end: 2026-08-01T00:00:00Z
    variants:
      - {name: control, control: true, weight: 20}
      - {name: production, model: production, weight: 40}
      - {name: candidate, model: candidate, weight: 40}
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two versions of the planted data's model: with the ranker (production) and
    without (candidate); CURRENT at production."""
    folder = tmp_path_factory.mktemp("two-models")
    data = folder / "purchases.csv"
    make_planted_purchases().to_csv(data, index=False)
    models = folder / "models"
    with_ranker = train(data, load_mapping("canonical"), models, small_training_config())
    config = small_training_config().model_copy(update={"ranker": RankerConfig(enabled=False)})
    without = train(data, load_mapping("canonical"), models, config)
    assert with_ranker.version and without.version
    set_alias(models, "production", with_ranker.version)
    set_alias(models, "candidate", without.version)
    return models, with_ranker.version, without.version


@pytest.fixture
def experiments_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    return path


@pytest.fixture
def client(
    two_models: tuple[Path, str, str], experiments_file: Path, isolated_store: Path
) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=two_models[0],
        clock=CLOCK,
        store_url=f"sqlite:///{isolated_store}",
        experiments=experiments_file,
    )
    with TestClient(create_app(settings)) as client:
        yield client


CUSTOMERS = [f"{g}{c:02d}" for g in "ab" for c in range(30)]


def test_variants_are_sticky_and_answer_with_their_model(
    client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    _, production, candidate = two_models
    seen = {}
    for customer_id in CUSTOMERS:
        answer = client.get(f"/v1/customers/{customer_id}/offers?k=5").json()
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
        again = client.get(f"/v1/customers/{customer_id}/offers").json()
        assert again["variant"] == seen[customer_id]


def test_customers_without_personalization_consent_stay_out(client: TestClient) -> None:
    consent = {"personalization": False, "channels": {}}
    assert client.put("/v1/customers/a07/consent", json=consent).status_code == 200
    answer = client.get("/v1/customers/a07/offers").json()
    assert answer["experiment"] is None and answer["variant"] is None


def test_models_lists_versions_aliases_and_what_serves(
    client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    _, production, candidate = two_models
    body = client.get("/v1/models").json()
    assert body["current"] == candidate  # the later training moved CURRENT
    assert body["aliases"] == {"candidate": candidate, "production": production}
    rows = {m["version"]: m for m in body["models"]}
    assert rows[production]["aliases"] == ["production"] and rows[production]["serving"]
    assert rows[candidate]["serving"] and rows[candidate]["current"]
    listed = client.get("/v1/experiments").json()["experiments"]
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
    client: TestClient,
    experiments_file: Path,
    isolated_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    variant = {}
    for customer_id in CUSTOMERS:
        answer = client.get(f"/v1/customers/{customer_id}/offers?k=3&record=true").json()
        assert answer["recorded"] is True
        variant[customer_id] = answer["variant"]
    # Every third customer buys: 10.0 each, and a conversion before the experiment's
    # exposure (an older event) must not count.
    buyers = CUSTOMERS[::3]
    events = [_conversion(n, c, 10.0) for n, c in enumerate(buyers)]
    early = {**_conversion(999, CUSTOMERS[1], 50.0), "timestamp": "2026-06-29T00:00:00Z"}
    body = client.post("/v1/events", json={"events": [*events, early]}).json()
    assert len(body["accepted"]) == len(buyers) + 1

    report = client.get("/v1/experiments/ranker-test/report").json()
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
    # Its dates and the window of events counted (start to the clock: still running).
    assert report["start"] == "2026-06-01T00:00:00+00:00"
    assert report["end"] == "2026-08-01T00:00:00+00:00"
    assert report["status"] == "running" and report["as_of"] == "2026-06-30T12:00:00+00:00"
    assert report["window"] == {"start": report["start"], "end": report["as_of"]}
    # The sample-ratio test's result, even when it finds nothing, and the small variants.
    assert report["srm"]["p_value"] is not None and report["srm"]["mismatch"] is False
    assert report["srm"]["verdict"].startswith("no mismatch: p >= 0.001")
    small = next(w for w in report["warnings"] if w.startswith("too few exposed customers"))
    assert f"control {exposed['control']}" in small and "fewer than 100 per variant" in small
    for row in report["variants"]:  # revenue per exposed customer is never negative
        assert row["revenue_per_exposed_ci"][0] >= 0.0
    html = client.get("/v1/experiments/ranker-test/report?format=html")
    assert html.status_code == 200 and "ranker-test" in html.text
    assert "2026-06-01 00:00 UTC to 2026-08-01 00:00 UTC (running)" in html.text
    assert "events from 2026-06-01 00:00 UTC to 2026-06-30 12:00 UTC" in html.text
    assert "<h2>Sample ratio</h2>" in html.text and "no mismatch: p &gt;= 0.001" in html.text
    assert "too few exposed customers" in html.text
    assert "<img" in html.text  # the chart, drawn by the lazily imported page module
    missing = client.get("/v1/experiments/nope/report")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]

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
        "2026-06-30T12:00:00+00:00"
    ) in printed
    assert "sample ratio: chi-square " in printed and "; no mismatch: p >= 0.001" in printed
    assert "warning too few exposed customers" in printed
    written = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert written["variants"] == report["variants"]
    assert "<img" in (out / "report.html").read_text(encoding="utf-8")


def test_a_planted_sample_ratio_mismatch_is_reported(client: TestClient) -> None:
    """Configured 20/40/40; impressions tagged 100/100/400: the report warns loudly."""
    events = []
    for name, count in (("control", 100), ("production", 100), ("candidate", 400)):
        for n in range(count):
            events.append(
                {
                    "event_id": f"imp-{name}-{n}",
                    "type": "offer_impression",
                    "customer_id": f"srm-{name}-{n}",
                    "item_id": "A01",
                    "timestamp": "2026-06-30T11:00:00Z",
                    "experiment": "ranker-test",
                    "variant": name,
                }
            )
    for start in range(0, len(events), 500):
        assert (
            client.post("/v1/events", json={"events": events[start : start + 500]}).status_code
            == 200
        )
    report = client.get("/v1/experiments/ranker-test/report").json()
    assert report["srm"]["mismatch"] is True
    assert any(w.startswith("SAMPLE RATIO MISMATCH") for w in report["warnings"])


def test_batch_rows_name_the_same_variants_as_the_api(
    client: TestClient,
    two_models: tuple[Path, str, str],
    experiments_file: Path,
    isolated_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBO_MODELS_DIR", str(two_models[0]))
    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{isolated_store}")
    monkeypatch.setenv("NBO_EXPERIMENTS", str(experiments_file))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(CUSTOMERS[:20]), encoding="utf-8")
    out = tmp_path / "campaign.csv"
    assert main(["batch", "--customers", str(ids), "--k", "3", "--out", str(out)]) == 0
    rows = pd.read_csv(out, dtype=str)
    for customer_id, mine in rows.groupby("customer_id"):
        api = client.get(f"/v1/customers/{customer_id}/offers?k=3").json()
        assert set(mine["variant"]) == {api["variant"]}
        assert set(mine["model_version"]) == {api["model_version"]}
        assert mine["offer_id"].tolist() == [o["offer_id"] for o in api["offers"]]


def test_models_command_sets_aliases(
    two_models: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    models, production, candidate = two_models
    assert main(["models", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert f"{production}  (production)" in listing and f"{candidate}  (candidate)" in listing
    assert main(["models", "--models-dir", str(models), "--alias", "next", "candidate"]) == 0
    assert read_aliases(models)["next"] == candidate
    assert main(["models", "--models-dir", str(models), "--alias", "next", "v-none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such alias or version" in err
    assert main(["models", "--models-dir", str(models), "--unalias", "next"]) == 0
    assert "next" not in read_aliases(models)


def test_a_bad_experiments_file_refuses_the_start(
    two_models: tuple[Path, str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXPERIMENT.replace("weight: 20", "weight: 0"), encoding="utf-8")
    with pytest.raises(Exception, match="weight"):
        create_app(Settings(models_dir=two_models[0], experiments=bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(EXPERIMENT.replace("model: candidate", "model: nightly"), encoding="utf-8")
    settings = Settings(models_dir=two_models[0], experiments=unknown, require_model=True)
    with pytest.raises(Exception, match="nightly"), TestClient(create_app(settings)):
        pass


def test_compare_scores_two_models_on_purchases_neither_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    purchases = make_planted_purchases()
    cutoff = END - pd.Timedelta(days=12)
    earlier = tmp_path / "earlier.csv"
    purchases[purchases["timestamp"] < cutoff].to_csv(earlier, index=False)
    full = tmp_path / "full.csv"
    purchases.to_csv(full, index=False)
    models = tmp_path / "models"
    config = small_training_config().model_copy(update={"holdout_days": 20})
    a = train(earlier, load_mapping("canonical"), models, config, force=True)
    off = config.model_copy(update={"ranker": RankerConfig(enabled=False)})
    b = train(earlier, load_mapping("canonical"), models, off, force=True)
    out = tmp_path / "compare.json"
    args = ["report", "compare", str(a.version), str(b.version), "--data", str(full)]
    assert (
        main([*args, "--models-dir", str(models), "--mapping", "canonical", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["holdout"]["customers"] > 0
    for truth in ("all", "new"):
        for name in (str(a.version), str(b.version)):
            assert 0.0 <= result["metrics"][truth][name]["ndcg@10"] <= 1.0
        assert "ndcg_difference" in result["difference"][truth]
    printed = capsys.readouterr().out
    assert "truth: all" in printed and "paired t-test" in printed
    # As a user runs it, piped (COLUMNS unset): both versions whole, not "20261205T17…",
    # and no OpenBLAS thread warning (with one CPU there is nothing to warn about anyway).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", *BLAS_THREAD_VARIABLES}
    }
    piped = subprocess.run(
        [sys.executable, "-m", "nbo.cli", *args, "--models-dir", str(models)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "…" not in piped.stdout
    words = re.split(r"[\s│]+", piped.stdout)
    for version in (a.version, b.version):
        assert words.count(str(version)) == 4  # 2 tables, 2 difference lines
    assert "OpenBLAS" not in piped.stderr and "Warning" not in piped.stderr, piped.stderr
    # Data that ends where the models' does has nothing to compare on: one line.
    assert (
        main(
            [
                *args[:4],
                "--data",
                str(earlier),
                "--models-dir",
                str(models),
                "--mapping",
                "canonical",
            ]
        )
        == 2
    )
    assert "compare on newer data" in capsys.readouterr().err


def test_the_service_does_not_load_matplotlib() -> None:
    """Plotting belongs to the report page, loaded only for an HTML report: importing the
    service (in a fresh interpreter) must not import matplotlib."""
    code = (
        "import sys, nbo.service.app, nbo.experiments.stats, nbo.experiments.outcomes; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    ("clock", "status", "window_end"),
    [
        ("2026-05-20T00:00:00Z", "not started", "2026-06-01T00:00:00+00:00"),
        ("2026-07-01T00:00:00Z", "running", "2026-07-01T00:00:00+00:00"),
        ("2026-09-01T00:00:00Z", "ended", "2026-08-01T00:00:00+00:00"),
    ],
)
def test_the_window_reported_ends_at_the_clock_or_the_experiments_end(
    experiments_file: Path, isolated_store: Path, clock: str, status: str, window_end: str
) -> None:
    from datetime import datetime

    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import report_for
    from nbo.store import open_store

    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    store = open_store(f"sqlite:///{isolated_store}")
    try:
        now_s = int(datetime.fromisoformat(clock).timestamp())
        report = report_for(store, experiment, now_s)
    finally:
        store.close()
    assert report["status"] == status
    assert report["window"] == {"start": "2026-06-01T00:00:00+00:00", "end": window_end}
