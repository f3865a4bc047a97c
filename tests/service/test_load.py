"""The load test, small enough for CI: two real servers on loopback, one with API keys,
/metrics and JSON access logs on, one with them off, take turns answering concurrent
offers calls. Every call must answer 200 with a model version on both; the throughput
ratio and latencies are printed (timing is the benchmark's job: ``python -m bench
--only load`` runs the same harness longer and checks the 10% target)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CLOCK

from bench.load_bench import LoadBench, print_load, run_load
from nbo.models.served import load_serving_model


def test_hardened_and_bare_servers_answer_every_offers_call(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customers = [str(c) for c in load_serving_model(models_dir).customers.ids.tolist()]
    result = run_load(
        models_dir,
        tmp_path,
        customers,
        {"NBO_CLOCK": CLOCK},
        rounds=2,
        calls_per_round=60,
        clients=3,
        warmup=10,
    )
    for load in (result.hardened, result.bare):
        assert load.calls == 2 * 60
        assert load.failures == []
        assert len(load.versions) == 1
    assert result.hardened.versions == result.bare.versions
    with capsys.disabled():
        print()
        print_load(LoadBench(result, "the planted test model", len(customers)))
