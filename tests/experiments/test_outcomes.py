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
