"""A campaign's worker processes: forked from ``nbo batch`` where that is safe (its
models shared as loaded), spawned elsewhere, and the same file either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from nbo.campaigns import batch, workers
from nbo.campaigns.batch import BatchError, BatchRun, ChunkResult, RunSpec, open_run
from nbo.campaigns.workers import BatchWorkers
from nbo.cli import main
from nbo.core import openmp
from nbo.settings import Settings
from nbo.store import open_store

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)

# What a test run may set for itself (thread counts, terminal width): ``nbo batch`` and
# the child Python get their own.
THREAD_VARIABLES = {
    openmp.VARIABLE,
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "COLUMNS",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
}


def _nbo_batch(out: Path, processes: int, *more: str) -> str:
    """``nbo batch`` of every customer in a new process (as a user runs it), its output."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    command = ["batch", "--customers", "all", "--chunk", "10", "--workers", str(processes)]
    command += more
    done = subprocess.run(
        [sys.executable, "-m", "nbo.cli", *command, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nbo_batch_forks_its_workers_and_writes_what_one_process_writes(
    env: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    printed = _nbo_batch(two, 2)
    assert " on 2 forked worker processes: " in printed, printed
    assert " worker processes" not in _nbo_batch(one, 1)
    # The runs' ids differ (each run has its own); every other field is the same.
    first, second = (pd.read_parquet(path).drop(columns=["request_id"]) for path in (one, two))
    assert len(first) > 60 and first.equals(second)


def test_forked_workers_record_a_delivered_campaign_in_the_store(
    env: Path, tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On either store: PostgreSQL's pool is closed for the fork and opened again after,
    and the command goes on with it (taking stock of erasures, registering the file)."""
    monkeypatch.setenv("NBO_STORE_URL", store_url)
    out = tmp_path / "sent.parquet"
    assert " on 2 forked worker processes: " in _nbo_batch(out, 2, "--record")
    rows = pd.read_parquet(out)
    offered = rows[rows["rank"] > 0]
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        contacts = store.contacts_of_many(sorted(set(rows["customer_id"])), 0)
    finally:
        store.close()
    stored = sorted(
        (customer, contact.item_id)
        for customer, history in contacts.items()
        for contact in history.impressions
    )
    assert len(offered) > 0
    assert stored == sorted(zip(offered["customer_id"], offered["item_id"], strict=True))
    store = open_store(store_url)
    try:
        assert [o.path for o in store.batch_outputs()] == [str(out.resolve())]
    finally:
        store.close()


def test_a_fork_is_refused_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openmp, "runs_one_thread", lambda: True)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert workers.fork_refused() == "other threads are running"
    finally:
        release.set()
        other.join()
    # This test's process may run threads of its own (the test runner's): alone, it forks.
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert workers.fork_refused() is None


def test_a_fork_is_refused_where_openmp_runs_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(openmp, "runs_one_thread", lambda: False)
    reason = workers.fork_refused()
    assert reason is not None and "OMP_NUM_THREADS=1" in reason


def _openmp_threads(set_first: bool) -> str:
    code = (
        "from nbo.core import openmp\n"
        + ("openmp.one_thread()\n" if set_first else "")
        + "import lightgbm\nprint(openmp.runs_one_thread())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenMP runs one thread on one CPU")
def test_openmp_runs_one_thread_only_when_set_before_it_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _openmp_threads(set_first=True) == "True"
    assert _openmp_threads(set_first=False) == "False"
    # Loaded already (this process imported LightGBM): setting it would change nothing
    # here, and is not left for the children either.
    monkeypatch.delenv(openmp.VARIABLE, raising=False)
    openmp.one_thread()
    assert openmp.VARIABLE not in os.environ


def _die(customer_ids: list[str], stage: str | None) -> None:
    os._exit(9)


def test_a_worker_that_dies_is_one_clear_error(
    models_dir: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forked from this process, each worker dies at its first chunk, before any model
    # work (which a fork of a test process could not run safely).
    monkeypatch.setattr(workers, "fork_refused", lambda: None)
    monkeypatch.setattr(workers, "_adopt", lambda *args: None)
    monkeypatch.setattr(workers, "_worker_chunk", _die)
    settings = Settings(models_dir=models_dir, store_url=f"sqlite:///{env}")
    spec = RunSpec(settings, "email", 3, NOW, False, "run-1")
    run = open_run(spec)
    try:
        with BatchWorkers(run, spec, 2) as started:
            assert started.forked
            with pytest.raises(BatchError, match="a worker process stopped before its chunk"):
                list(started.decide([["a00"], ["a01"]], None))
    finally:
        run.store.close()


def _chunk_or_called_off(
    run: BatchRun, customer_ids: list[str], stage: str | None, stopping: Callable[[], bool]
) -> ChunkResult:
    return ChunkResult(None, customers=len(customer_ids), called_off=stopping())


def test_workers_call_their_chunks_off_once_told(
    models_dir: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C: the chunks queued for a worker or being decided are called off (no model
    work here: a fork of a test process could not run it safely)."""
    monkeypatch.setattr(workers, "fork_refused", lambda: None)
    monkeypatch.setattr(workers, "decide_chunk", _chunk_or_called_off)
    settings = Settings(models_dir=models_dir, store_url=f"sqlite:///{env}")
    spec = RunSpec(settings, "email", 3, NOW, True, "run-1")
    run = open_run(spec)
    chunks = [["a00"], ["a01", "a02"], ["a03"]]
    try:
        with BatchWorkers(run, spec, 2) as started:
            assert started.forked
            going = list(started.decide(chunks, None))
            assert [(r.customers, r.called_off) for r in going] == [
                (1, False),
                (2, False),
                (1, False),
            ]
            started.call_off()
            assert all(r.called_off for r in started.decide(chunks, None))
    finally:
        run.store.close()


def test_sigterm_leaves_no_file_and_takes_a_delivered_campaign_back(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scheduler stopping ``nbo batch --record`` midway: as Ctrl-C, not a dead process
    with a partial file and impressions of a campaign never written."""
    decided: list[int] = []
    decide = batch.decide_chunk

    def terminated_midway(run: BatchRun, customer_ids: list[str], stage: str | None) -> object:
        decided.append(len(customer_ids))
        if len(decided) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return decide(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", terminated_midway)
    folder = tmp_path / "campaigns"
    folder.mkdir()
    out = folder / "campaign.parquet"
    command = ["batch", "--customers", "all", "--chunk", "10", "--workers", "1", "--record"]

    # Had the command no handler of its own, this one's failure, not pytest's death.
    def unhandled(signum: int, frame: object) -> None:
        pytest.fail("SIGTERM reached the test process: nbo batch did not handle it")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main([*command, "--out", str(out)]) == 128 + signal.SIGTERM
        # The handler was the command's alone: the one before it is back.
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(decided) >= 3
    assert "nbo batch: terminated" in capsys.readouterr().err
    assert list(folder.iterdir()) == []  # no file, no partial one
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        ids = [f"{g}{c:02d}" for g in "ab" for c in range(30)]
        contacts = store.contacts_of_many(ids, 0)
    finally:
        store.close()
    assert sum(len(history.impressions) for history in contacts.values()) == 0
