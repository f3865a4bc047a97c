"""What a campaign killed outright leaves behind, found and cleared by the next one.

``nbo batch`` writes its rows to a temporary file beside ``--out`` and, with
``--record``, records each chunk's impressions as it decides it. Ctrl-C, SIGTERM and any
failure take both back before the command exits (``nbo.campaigns.batch``). A process
that is killed outright (SIGKILL, the kernel's OOM killer, a lost machine) cannot: it
left the temporary file and the impressions of a campaign never written, and those
impressions would count against the customers' frequency caps although nobody was sent
anything.

So a delivered run is recorded in the store (``Store.begin_delivering``) before its first
impression, renewed by a heartbeat every ``HEARTBEAT_S`` seconds while it delivers
(``Heartbeat``), and removed just before its file is put in place, or once its
impressions are taken back. Every ``nbo batch`` first looks for records left behind and
takes such a run for dead when

- its process has ended on this machine (``nbo.core.processes.process_gone``): found at
  once;
- or it ran on another machine and has not been heard from for ``STALE_S`` seconds: a
  replica's campaign on a shared store, or one in a container whose host name changes
  from one run to the next. A process alive on this machine is never taken for dead.

A dead run's impressions are taken back, its temporary file removed (when nothing has
written to it for as long), and its record gone. A temporary file of an undelivered
run, left beside the same ``--out``, is removed too when its process is gone.

A run taken for dead that still lives (its heartbeat stalled for ``STALE_S``, e.g. a
machine suspended) finds its record gone at its next heartbeat or at the latest before
its file is put in place: it stops, takes back what it recorded since, and writes
nothing (``RunTakenOver``). No customer is sent a campaign whose impressions were taken
back.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nbo.core.errors import NboError
from nbo.core.processes import pid_alive, process_gone, process_token
from nbo.store.base import DeliveringRun, Store

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
# A delivering run renews its record this often, and is taken for dead by any other run
# once silent for STALE_S: twenty heartbeats missed, far beyond a busy store's stall.
HEARTBEAT_S = 30
STALE_S = 600


class RunTakenOver(NboError):
    """This run was taken for dead by another (its record gone, its impressions taken
    back): it must not put its file in place."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id} was taken for dead by another run (not heard from for "
            f"{STALE_S} s) and its impressions taken back: nothing written; run it again"
        )


@dataclass(frozen=True)
class Recovered:
    """A run taken for dead while it delivered, as the next run cleared it."""

    run_id: str
    started_at: int  # unix seconds
    impressions: int  # taken back
    partial: str  # its temporary file or folder
    removed: bool  # whether that file was still there (and is no more)
    silent_s: int | None = None  # not heard from for so long (None: its process ended here)

    def line(self) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
        left = f"removed {self.partial}" if self.removed else "no partial file removed"
        how = (
            "ended without its file"
            if self.silent_s is None
            else f"was not heard from for {self.silent_s:,} s: taken for dead"
        )
        return (
            f"run {self.run_id} (started {started}) {how}: took back "
            f"{self.impressions:,} impressions, {left}"
        )


def partial_path(out: Path) -> Path:
    """The temporary file (or Spark's folder) a run of this process writes ``out`` to."""
    return out.with_name(f".{out.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def begin_delivering(store: Store, run_id: str, partial: Path) -> Heartbeat:
    """Record a run about to deliver: from now until ``end_delivering``, a death of this
    process is found by the next run. Answers the record's heartbeat, started: stop it
    once the run has ended either way."""
    # Absolute: the next run may start in another folder.
    where = str(partial.absolute())
    now = int(time.time())
    store.begin_delivering(DeliveringRun(run_id, now, process_token(), where, now))
    heartbeat = Heartbeat(store, run_id)
    heartbeat.start()
    return heartbeat


class Heartbeat:
    """Renews a delivering run's record every ``every_s`` seconds from a thread of its
    own, while the run's work (forked workers, a Spark job) goes on. ``check`` raises
    ``RunTakenOver`` once a renewal found the record gone."""

    def __init__(self, store: Store, run_id: str, every_s: float = HEARTBEAT_S) -> None:
        self._store, self._run_id, self._every = store, run_id, every_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {run_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self._lost.is_set():
            raise RunTakenOver(self._run_id)

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            try:
                heard = self._store.hear_from_delivering(self._run_id, int(time.time()))
            except Exception as exc:  # a store hiccup: the next beat tries again
                log.warning("run %s: heartbeat not recorded (%s); trying again", self._run_id, exc)
                continue
            if not heard:
                self._lost.set()
                return


def end_delivering(store: Store, run_id: str) -> None:
    """The run is off the record, about to put its file in place; ``RunTakenOver`` when
    another run had taken it for dead (it must then write nothing)."""
    if not store.end_delivering(run_id):
        raise RunTakenOver(run_id)


def recover(store: Store, now_s: int | None = None) -> list[Recovered]:
    """Clear every delivered run taken for dead: its process ended on this machine, or
    not heard from for ``STALE_S`` seconds. Its impressions are taken back, its
    temporary file removed, its record gone."""
    now = int(time.time()) if now_s is None else now_s
    cleared = []
    for run, ended in _dead_runs(store, now):
        silent = now - run.heard_at
        impressions = store.remove_run_impressions(run.run_id)
        partial = Path(run.partial)
        removed = _may_remove(partial, ended, now) and _remove(partial)
        store.end_delivering(run.run_id)
        cleared.append(
            Recovered(
                run.run_id,
                run.started_at,
                impressions,
                run.partial,
                removed,
                None if ended else silent,
            )
        )
    return cleared


def _dead_runs(store: Store, now: int) -> list[tuple[DeliveringRun, bool]]:
    """The delivering runs on record taken for dead, each with whether its process
    ended on this machine (else: another machine's, silent for ``STALE_S``)."""
    dead = []
    for run in store.delivering_runs():
        # True: ended on this machine; False: alive on it; None: another machine's.
        ended = process_gone(run.process)
        if ended is False or (ended is None and now - run.heard_at < STALE_S):
            continue
        dead.append((run, bool(ended)))
    return dead


def _may_remove(partial: Path, ended: bool, now: int) -> bool:
    """A dead run's file may go: at once when its process ended here; a silent run's
    (on a folder other machines share, perhaps) only when nothing has written to it for
    ``STALE_S`` either."""
    return ended or _untouched_since(partial, now - STALE_S)


def clear_dead_partials(
    store: Store, folders: Iterable[Path], now_s: int | None = None
) -> list[str]:
    """Remove the temporary files that hold customers' rows of campaigns that died, for
    an erasure (which cannot take a customer out of a file being written): those of the
    delivering runs on record taken for dead (as ``recover`` would; their record and
    impressions are left to the next ``nbo batch``), and, in ``folders`` (those of the
    managed campaign files), any of a run whose process has ended on this machine (as
    ``sweep_partials``). A live run's file stays. Answers the paths removed."""
    now = int(time.time()) if now_s is None else now_s
    removed: list[str] = []
    dead = _dead_runs(store, now)
    for run, ended in dead:
        partial = Path(run.partial)
        if _may_remove(partial, ended, now) and _remove_quietly(partial):
            removed.append(str(partial))
    dead_ids = {run.run_id for run, _ in dead}
    live = {Path(run.partial) for run in store.delivering_runs() if run.run_id not in dead_ids}
    for folder in sorted({*folders, *(Path(run.partial).parent for run, _ in dead)}):
        for path in sorted(folder.glob(f".*{PARTIAL_SUFFIX}")):
            pid = path.name.removesuffix(PARTIAL_SUFFIX).rpartition(".")[2]
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            if path not in live and _remove_quietly(path):
                removed.append(str(path))
    return removed


def _remove_quietly(path: Path) -> bool:
    """``_remove``; False (logged) when it cannot be removed: an erasure goes on."""
    try:
        return _remove(path)
    except OSError as exc:
        log.warning("a dead campaign run's file %s not removed (%s)", path, exc)
        return False


def sweep_partials(out: Path) -> list[Path]:
    """Remove the temporary files beside ``out`` of runs whose process has ended (the
    process id is in the name); those of live processes stay. Answers what was removed."""
    removed = []
    for path in sorted(out.parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}")):
        pid = path.name[len(out.name) + 2 : -len(PARTIAL_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and _remove(path):
            removed.append(path)
    return removed


def _untouched_since(path: Path, since_s: int) -> bool:
    """Whether ``path`` (a file, or a folder of parts) was last written before
    ``since_s``; True when it is not there."""
    try:
        written = max(
            [path.stat().st_mtime]
            + ([p.stat().st_mtime for p in path.rglob("*")] if path.is_dir() else [])
        )
    except FileNotFoundError:
        return True
    return written < since_s


def _remove(path: Path) -> bool:
    """Remove a file or a folder; False when nothing was there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
