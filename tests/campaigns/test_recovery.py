"""A campaign killed outright (SIGKILL): the next ``nbo batch`` takes its impressions
back and removes its temporary file; runs still alive, or on another machine, are left
alone (``nbo.campaigns.recovery``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from nbo.campaigns import batch
from nbo.campaigns.batch import BatchRun
from nbo.campaigns.recovery import recover, sweep_partials
from nbo.cli import main
from nbo.core.processes import process_token
from nbo.store import open_store
from nbo.store.base import DeliveringRun

# ``nbo batch`` in a process of its own that SIGKILLs itself as it decides its third
# chunk: two chunks delivered (their impressions recorded), the file never put in place.
KILLED_MIDWAY = textwrap.dedent(
    """
    import os, signal, sys
    from nbo.campaigns import batch
    from nbo.cli import main

    decide, chunks = batch.decide_chunk, []

    def killed_midway(run, customer_ids, stage):
        chunks.append(customer_ids)
        if len(chunks) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return decide(run, customer_ids, stage)

    batch.decide_chunk = killed_midway
    sys.exit(main(sys.argv[1:]))
    """
)
CUSTOMERS = [f"{g}{c:02d}" for g in "ab" for c in range(30)]
COMMAND = ["batch", "--customers", "all", "--chunk", "10", "--workers", "1", "--k", "3"]


def _impressions(store_path: Path) -> dict[str, int]:
    """Impressions per request id."""
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        contacts = store.contacts_of_many(CUSTOMERS, 0)
    finally:
        store.close()
    counted: dict[str, int] = {}
    for history in contacts.values():
        for impression in history.impressions:
            counted[impression.delivery] = counted.get(impression.delivery, 0) + 1
    return counted


def test_a_campaign_killed_outright_is_taken_back_by_the_next_one(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    out = folder / "campaign.parquet"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MIDWAY, *COMMAND, "--record", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = _impressions(env)
    assert len(left) == 20  # two chunks of ten customers delivered
    (partial,) = folder.iterdir()
    assert partial.name.startswith(".campaign.parquet.") and partial.name.endswith(".partial")

    # The next campaign, delivered too, to the same customers the same day.
    assert main([*COMMAND, "--record", "--out", str(out)]) == 0
    printed = capsys.readouterr().err
    run_id = next(iter(left)).rsplit("-", 1)[0]
    assert (
        f"nbo batch: run {run_id} (started " in printed
        and f"ended without its file: took back {sum(left.values())} impressions, removed {partial}"
        in printed
    ), printed
    assert list(folder.iterdir()) == [out]
    # No impression of the killed run counts: nobody was capped by a campaign never sent.
    rows = pd.read_parquet(out)
    assert "frequency_cap" not in set(rows["suppressed_reason"].dropna())
    assert not any(request.startswith(run_id) for request in _impressions(env))
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        assert store.delivering_runs() == []
    finally:
        store.close()


def test_runs_alive_or_on_another_machine_are_left_alone(env: Path, tmp_path: Path) -> None:
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        partial = tmp_path / ".c.csv.1.partial"
        partial.write_text("rows")
        alive = DeliveringRun("batch-alive", 100, process_token(), str(partial))
        elsewhere = DeliveringRun("batch-far", 100, "another-host/boot/1/2", str(partial))
        store.begin_delivering(alive)
        store.begin_delivering(elsewhere)
        assert recover(store) == []
        assert store.delivering_runs() == [alive, elsewhere]
        assert partial.exists()
    finally:
        store.close()


def test_a_delivered_run_is_on_record_until_its_file_is_in_place(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[DeliveringRun]] = []
    decide = batch.decide_chunk

    def looking(run: BatchRun, customer_ids: list[str], stage: str | None) -> object:
        seen.append(run.store.delivering_runs())
        return decide(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", looking)
    # --out relative to where the command ran: the record holds the partial file's
    # absolute path, for a next run started elsewhere.
    monkeypatch.chdir(tmp_path)
    assert main([*COMMAND, "--record", "--out", "sent.csv"]) == 0
    (first, *_), partial = seen[0], tmp_path / f".sent.csv.{os.getpid()}.partial"
    assert all(runs == [first] for runs in seen) and first.partial == str(partial)
    assert first.process == process_token()
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        assert store.delivering_runs() == []  # in place: off the record
    finally:
        store.close()
    # Not delivered: never on record.
    seen.clear()
    assert main([*COMMAND, "--out", str(tmp_path / "draft.csv")]) == 0
    assert seen and all(runs == [] for runs in seen)


def test_a_failed_delivery_is_taken_back_and_off_the_record(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decide, chunks = batch.decide_chunk, []

    def failing(run: BatchRun, customer_ids: list[str], stage: str | None) -> object:
        chunks.append(customer_ids)
        if len(chunks) == 3:
            raise OSError("disk full")
        return decide(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", failing)
    with pytest.raises(OSError, match="disk full"):
        main([*COMMAND, "--record", "--out", str(tmp_path / "sent.csv")])
    assert _impressions(env) == {}
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        assert store.delivering_runs() == []
    finally:
        store.close()


def test_partial_files_of_ended_processes_are_swept(tmp_path: Path) -> None:
    out = tmp_path / "campaign.csv"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f".campaign.csv.{ended.pid}.partial"
    dead_folder = tmp_path / f".campaign.csv.{ended.pid + 0}.partial.d"  # not ours: no match
    live = tmp_path / f".campaign.csv.{os.getppid()}.partial"
    other = tmp_path / f".other.csv.{ended.pid}.partial"
    for path in (dead, live, other):
        path.write_text("rows")
    dead_folder.mkdir()
    assert sweep_partials(out) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, other, dead_folder)
    )
