"""A campaign killed outright (SIGKILL): the next ``nbo batch`` takes its impressions
back and removes its temporary file; runs still alive, or on another machine, are left
alone (``nbo.campaigns.recovery``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from support import app_for

from nbo.campaigns import batch, recovery
from nbo.campaigns.batch import BatchRun
from nbo.campaigns.recovery import STALE_S, Heartbeat, RunTakenOver, recover, sweep_partials
from nbo.cli import EXIT_USER_ERROR, main
from nbo.core.processes import process_token
from nbo.data.events import Event, parse_events
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


def impression(event_id: str, customer: str, request_id: str) -> Event:
    body = {
        "event_id": event_id,
        "type": "offer_impression",
        "customer_id": customer,
        "timestamp": "2011-12-01T10:00:00Z",
        "item_id": "85123A",
        "channel": "email",
        "request_id": request_id,
    }
    ((_, event),), rejected = parse_events(body)
    assert not rejected, rejected
    return event


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


def test_runs_alive_or_heard_from_on_another_machine_are_left_alone(
    env: Path, tmp_path: Path
) -> None:
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        partial = tmp_path / ".c.csv.1.partial"
        partial.write_text("rows")
        now = int(time.time())
        # Alive here: never taken for dead, however long since its last heartbeat.
        alive = DeliveringRun("batch-alive", 100, process_token(), str(partial), 100)
        heard = now - STALE_S + 60
        elsewhere = DeliveringRun("batch-far", 100, "another-host/boot/1/2", str(partial), heard)
        store.begin_delivering(alive)
        store.begin_delivering(elsewhere)
        assert recover(store) == []
        assert store.delivering_runs() == [alive, elsewhere]
        assert partial.exists()
    finally:
        store.close()


def test_a_run_on_another_machine_not_heard_from_is_taken_for_dead(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica's campaign, or one in a container whose host name was its own: nothing
    here can see its process, so its silence decides."""
    store = open_store(os.environ["NBO_STORE_URL"])
    now = int(time.time())
    # The command's recovery at the moment the runs were planted: on a slow machine the
    # clock had moved a second on by the time the command looked ("601 s").
    recover_at_planting = recovery.recover
    monkeypatch.setattr(recovery, "recover", lambda store: recover_at_planting(store, now))
    try:
        # Two runs of other machines, silent for STALE_S: the first's file is as old, the
        # second's was written to since (a folder other machines share): kept.
        for run_id in ("batch-old", "batch-new"):
            partial = tmp_path / f".{run_id}.csv.7.partial"
            partial.write_text("rows")
            store.begin_delivering(
                DeliveringRun(run_id, now - 900, "gone-host/boot/7/8", str(partial), now - STALE_S)
            )
            delivered = [
                impression(f"{run_id}-{c}-1", c, request_id=f"{run_id}-{c}") for c in ("a00", "b01")
            ]
            assert len(store.add_events(delivered).accepted) == 2
        old = tmp_path / ".batch-old.csv.7.partial"
        os.utime(old, (now - STALE_S - 1, now - STALE_S - 1))
        store.add_events([impression("api-1", "a00", request_id="api-1")])
    finally:
        store.close()

    assert main([*COMMAND, "--out", str(tmp_path / "next.csv")]) == 0
    printed = capsys.readouterr().err
    for run_id, left in (("batch-old", f"removed {old}"), ("batch-new", "no partial file removed")):
        assert (
            f"nbo batch: run {run_id} (started " in printed
            and f"was not heard from for {STALE_S:,} s: taken for dead: took back 2 "
            f"impressions, {left}"
            in printed
        ), printed
    assert not old.exists() and (tmp_path / ".batch-new.csv.7.partial").exists()
    assert _impressions(env) == {"api-1": 1}
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        assert store.delivering_runs() == []
    finally:
        store.close()


def test_the_heartbeat_renews_the_record_until_it_is_gone(env: Path, tmp_path: Path) -> None:
    store = open_store(os.environ["NBO_STORE_URL"])
    try:
        store.begin_delivering(DeliveringRun("batch-1", 100, process_token(), "/p", 100))
        heartbeat = Heartbeat(store, "batch-1", every_s=0.02)
        heartbeat.start()
        try:
            deadline = time.monotonic() + 30
            while store.delivering_runs()[0].heard_at == 100:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            heartbeat.check()  # still on record
            assert store.delivering_runs()[0].heard_at >= int(time.time()) - 5
            store.end_delivering("batch-1")  # as another run taking it for dead does
            while True:
                try:
                    heartbeat.check()
                except RunTakenOver as taken:
                    assert "run batch-1 was taken for dead by another run" in str(taken)
                    break
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            heartbeat.stop()
    finally:
        store.close()


def test_a_run_taken_for_dead_while_it_delivers_writes_nothing(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Taken for dead by another run mid-way (its heartbeat stalled): what it recorded
    before was taken back by that run, what it records after by itself, and no file."""
    decide, chunks = batch.decide_chunk, []

    def taken_over(run: BatchRun, customer_ids: list[str], stage: str | None) -> object:
        chunks.append(customer_ids)
        if len(chunks) == 3:
            run.store.remove_run_impressions(run.run_id)
            run.store.end_delivering(run.run_id)
        return decide(run, customer_ids, stage)

    monkeypatch.setattr(batch, "decide_chunk", taken_over)
    folder = tmp_path / "campaigns"
    folder.mkdir()
    assert main([*COMMAND, "--record", "--out", str(folder / "sent.csv")]) == EXIT_USER_ERROR
    assert len(chunks) == 6  # every chunk decided: the record is checked at the rename
    printed = capsys.readouterr().err
    assert "was taken for dead by another run" in printed and "nothing written" in printed
    assert "Traceback" not in printed
    assert _impressions(env) == {} and list(folder.iterdir()) == []


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


def test_an_erasure_removes_the_partial_files_of_runs_that_died(
    env: Path, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed outright leaves its .partial file, full of customers' rows, which no
    erasure could take anyone out of (only a later run to the same --out removed it).
    An erasure now removes the files of dead runs it can find: beside the managed
    campaign files, and those of delivering runs taken for dead. A live run's stays."""
    folder = tmp_path / "campaigns"
    folder.mkdir()
    assert main([*COMMAND, "--out", str(folder / "last-week.csv")]) == 0  # registered
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MIDWAY, *COMMAND, "--out", str(folder / "new.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (partial,) = folder.glob(".new.csv.*.partial")
    assert "a00" in set(pd.read_csv(partial, dtype=str)["customer_id"])
    live = folder / f".other.csv.{os.getppid()}.partial"  # a run still writing
    live.write_text("rows")
    # A delivering run of another machine, silent for long: its file elsewhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    far = elsewhere / ".far.csv.7.partial"
    far.write_text("rows")
    os.utime(far, (time.time() - 2 * STALE_S,) * 2)
    store = open_store(os.environ["NBO_STORE_URL"])
    now = int(time.time())
    store.begin_delivering(
        DeliveringRun("batch-far", now - 900, "gone-host/boot/7/8", str(far), now - STALE_S)
    )
    store.close()
    capsys.readouterr()

    assert main(["customers", "erase", "a00", "--models-dir", str(models_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"nbo customers: removed {partial}, left by a campaign run that died\n" in printed
    assert f"nbo customers: removed {far}, left by a campaign run that died\n" in printed
    assert not partial.exists() and not far.exists() and live.exists()
    assert (folder / "last-week.csv").exists()

    # The API's receipt says the same.
    again = partial  # as the killed run named it, left again
    again.write_text("rows")
    with app_for(models_dir) as client:
        receipt = client.delete("/v1/customers/a01").json()
    assert receipt["partial_files_removed"] == [str(again)]
    assert live.exists()
