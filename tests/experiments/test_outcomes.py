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
