"""An experiment's outcomes: the window of events a report counts ends at the clock or at
the experiment's end."""

from __future__ import annotations

from pathlib import Path

import pytest


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


def test_only_the_runs_events_count(experiments_file: Path, isolated_store: Path) -> None:
    """An impression tagged with the experiment before its start (a test send, a clock
    set wrong) and a conversion after its end are not the experiment's: the report counts
    the window it states."""
    from datetime import datetime

    from nbo.data.events import parse_events
    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import experiment_outcomes
    from nbo.store import open_store

    def shown(event_id: str, customer: str, variant: str, when: str) -> dict:
        return {
            "event_id": event_id,
            "type": "offer_impression",
            "customer_id": customer,
            "timestamp": when,
            "item_id": "A01",
            "experiment": "ranker-test",
            "variant": variant,
        }

    def bought(event_id: str, customer: str, when: str) -> dict:
        return {
            "event_id": event_id,
            "type": "offer_conversion",
            "customer_id": customer,
            "timestamp": when,
            "item_id": "A01",
            "revenue": 10.0,
        }

    body = [
        shown("i1", "early", "candidate", "2026-05-20T00:00:00Z"),  # before the start
        bought("c1", "early", "2026-05-21T00:00:00Z"),
        shown("i2", "in", "candidate", "2026-06-10T00:00:00Z"),
        bought("c2", "in", "2026-06-11T00:00:00Z"),
        shown("i3", "late-buyer", "production", "2026-07-20T00:00:00Z"),
        bought("c3", "late-buyer", "2026-08-02T00:00:00Z"),  # after the end
    ]
    valid, rejected = parse_events({"events": body})
    assert rejected == []
    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    store = open_store(f"sqlite:///{isolated_store}")
    try:
        store.add_events([event for _, event in valid])
        now_s = int(datetime.fromisoformat("2026-09-01T00:00:00Z").timestamp())
        variants = {v.name: v for v in experiment_outcomes(store, experiment, now_s).variants}
    finally:
        store.close()
    assert (variants["candidate"].exposed, variants["candidate"].converted) == (1, 1)
    assert (variants["production"].exposed, variants["production"].converted) == (1, 0)
    assert variants["candidate"].revenue.tolist() == [10.0]


def test_each_customer_is_assigned_once(experiments_file: Path, isolated_store: Path) -> None:
    """A customer tagged with two variants (a reweight during the run) counted as
    assigned in both: 5,072 assigned against some 3,500 customers. Each counts once now,
    in the variant of their first exposure, else of their first tagged event."""
    from datetime import datetime

    from nbo.data.events import parse_events
    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import experiment_outcomes
    from nbo.store import open_store

    def tagged(event_id: str, kind: str, customer: str, variant: str, when: str) -> dict:
        return {
            "event_id": event_id,
            "type": kind,
            "customer_id": customer,
            "timestamp": when,
            "item_id": "A01",
            "experiment": "ranker-test",
            "variant": variant,
        }

    body = [
        tagged("c0", "offer_click", "x", "control", "2026-06-09T00:00:00Z"),  # no exposure yet
        tagged("i1", "offer_impression", "x", "production", "2026-06-10T00:00:00Z"),
        tagged("i2", "offer_impression", "x", "candidate", "2026-06-12T00:00:00Z"),
        tagged("c1", "offer_click", "y", "candidate", "2026-06-11T00:00:00Z"),
        tagged("c2", "offer_click", "y", "control", "2026-06-12T00:00:00Z"),
        tagged("i3", "offer_impression", "z", "control", "2026-06-10T00:00:00Z"),
    ]
    valid, rejected = parse_events({"events": body})
    assert rejected == []
    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    store = open_store(f"sqlite:///{isolated_store}")
    try:
        store.add_events([event for _, event in valid])
        now_s = int(datetime.fromisoformat("2026-07-01T00:00:00Z").timestamp())
        outcomes = experiment_outcomes(store, experiment, now_s)
    finally:
        store.close()
    assigned = {v.name: v.assigned for v in outcomes.variants}
    assert assigned == {"control": 1, "production": 1, "candidate": 1}
    assert {v.name: v.exposed for v in outcomes.variants} == {
        "control": 1,
        "production": 1,
        "candidate": 0,
    }


def test_an_arms_results_per_model_version(experiments_file: Path, store_url: str) -> None:
    """An arm's impressions name the model version that decided them: the report breaks
    the arm down by version (a customer under the version of their first exposure, with
    their conversions) and flags an arm whose model changed during the run, with a
    warning; impressions without a version (recorded before nbo kept it) count as
    unknown. On every store backend."""
    from datetime import datetime

    from nbo.data.events import parse_events
    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import report_for
    from nbo.store import open_store

    def shown(event_id: str, customer: str, variant: str, when: str, model: str | None) -> dict:
        version = {} if model is None else {"model_version": model}
        return {
            "event_id": event_id,
            "type": "offer_impression",
            "customer_id": customer,
            "timestamp": when,
            "item_id": "A01",
            "experiment": "ranker-test",
            "variant": variant,
            **version,
        }

    def bought(event_id: str, customer: str, when: str, revenue: float) -> dict:
        return {
            "event_id": event_id,
            "type": "offer_conversion",
            "customer_id": customer,
            "timestamp": when,
            "item_id": "A01",
            "revenue": revenue,
        }

    body = [
        shown("i0", "p3", "production", "2026-06-05T00:00:00Z", None),  # an older release's
        shown("i1", "p1", "production", "2026-06-10T00:00:00Z", "v1"),
        bought("b1", "p1", "2026-06-11T00:00:00Z", 10.0),
        # CURRENT moved: p1 is shown again, p2 for the first time, by v2.
        shown("i2", "p1", "production", "2026-06-20T00:00:00Z", "v2"),
        shown("i3", "p2", "production", "2026-06-20T00:00:00Z", "v2"),
        bought("b2", "p2", "2026-06-21T00:00:00Z", 5.0),
        shown("i4", "c1", "candidate", "2026-06-10T00:00:00Z", "v3"),
        shown("i5", "c2", "candidate", "2026-06-11T00:00:00Z", "v3"),
        shown("i6", "c2", "candidate", "2026-06-12T00:00:00Z", "v3"),
        bought("b3", "c1", "2026-06-12T00:00:00Z", 7.0),
    ]
    valid, rejected = parse_events({"events": body})
    assert rejected == []
    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    store = open_store(store_url)
    try:
        store.add_events([event for _, event in valid])
        now_s = int(datetime.fromisoformat("2026-07-01T00:00:00Z").timestamp())
        report = report_for(store, experiment, now_s)
    finally:
        store.close()
    rows = {v["name"]: v for v in report["variants"]}
    production = rows["production"]
    assert production["mixed_model_versions"] is True
    assert [
        (m["model_version"], m["impressions"], m["customers"], m["exposed"], m["converted"])
        for m in production["by_model_version"]
    ] == [(None, 1, 1, 1, 0), ("v1", 1, 1, 1, 1), ("v2", 2, 2, 1, 1)]
    v1, v2 = production["by_model_version"][1:]
    assert (v1["revenue"], v1["conversion_rate"], v1["revenue_per_exposed"]) == (10.0, 1.0, 10.0)
    assert (v2["revenue"], v2["first_shown"]) == (5.0, "2026-06-20T00:00:00+00:00")
    # The breakdown adds up to the arm.
    assert sum(m["exposed"] for m in production["by_model_version"]) == production["exposed"]
    assert sum(m["converted"] for m in production["by_model_version"]) == production["converted"]
    candidate = rows["candidate"]
    assert candidate["mixed_model_versions"] is False
    assert [(m["model_version"], m["impressions"]) for m in candidate["by_model_version"]] == [
        ("v3", 3)
    ]
    assert rows["control"]["by_model_version"] == []
    assert rows["control"]["mixed_model_versions"] is False
    (mixed,) = [w for w in report["warnings"] if "model versions" in w]
    assert mixed.startswith("production: its impressions came from 3 model versions: unknown")
    assert "v1 (1 impression, 2026-06-10T00:00:00+00:00 to 2026-06-10T00:00:00+00:00)" in mixed
    assert "unknown: recorded before nbo kept the model version" in mixed


def test_model_variants_served_by_one_version_are_warned_of(
    experiments_file: Path, store_url: str
) -> None:
    """A retraining moves CURRENT, and production with it, to the version the candidate
    alias names: both arms are then one model, and the report says so (the control,
    answered with the current version by design, is not counted)."""
    from datetime import datetime

    from nbo.data.events import parse_events
    from nbo.experiments.definitions import load_experiments
    from nbo.experiments.outcomes import report_for
    from nbo.store import open_store

    def shown(event_id: str, customer: str, variant: str, model: str) -> dict:
        return {
            "event_id": event_id,
            "type": "offer_impression",
            "customer_id": customer,
            "timestamp": "2026-06-10T00:00:00Z",
            "item_id": "A01",
            "experiment": "ranker-test",
            "variant": variant,
            "model_version": model,
        }

    experiment = load_experiments(experiments_file).get("ranker-test")
    assert experiment is not None
    now_s = int(datetime.fromisoformat("2026-07-01T00:00:00Z").timestamp())

    def warnings_of(body: list[dict]) -> list[str]:
        valid, rejected = parse_events({"events": body})
        assert rejected == []
        store = open_store(store_url)
        try:
            store.add_events([event for _, event in valid])
            return list(report_for(store, experiment, now_s)["warnings"])
        finally:
            store.close()

    apart = warnings_of(
        [shown("a1", "p1", "production", "v1"), shown("a2", "c1", "candidate", "v2")]
    )
    assert not [w for w in apart if "same model version" in w]
    one = warnings_of(
        [
            shown("b1", "p2", "production", "v2"),
            shown("b2", "c2", "candidate", "v2"),
            shown("b3", "k2", "control", "v2"),
        ]
    )
    # p1 (v1) and p2 (v2): production now mixes versions, unlike candidate: no warning.
    assert not [w for w in one if "same model version" in w]
    same = warnings_of(
        [shown("c1", "p3", "production", "v2"), shown("c0", "c3", "candidate", "v1")]
    )
    (line,) = [w for w in same if "same model version" in w]
    assert line.startswith("production and candidate were served by the same model version")
    assert "(v1, v2; production: production, candidate: candidate)" in line
    assert "control" not in line.split(":")[0]
