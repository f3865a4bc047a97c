"""What a campaign killed outright leaves behind, found and cleared by the next one.

``nbo batch`` writes its rows to a temporary file beside ``--out`` and, with
``--record``, records each chunk's impressions as it decides it. Ctrl-C, SIGTERM and any
failure take both back before the command exits (``nbo.campaigns.batch``). A process
that is killed outright (SIGKILL, the kernel's OOM killer, a lost machine) cannot: it
left the temporary file and the impressions of a campaign never written, and those
impressions would count against the customers' frequency caps although nobody was sent
anything.

So a delivered run is recorded in the store (``Store.begin_delivering``) before its first
impression, and the record is removed just before its file is put in place, or once its
impressions are taken back. Every ``nbo batch`` first looks for records left behind by a
process that has ended on this machine (``nbo.core.processes.process_gone``), takes that
run's impressions back and removes its temporary file. A record from another machine is
left alone: nothing here can tell whether that run still lives. A temporary file of an
undelivered run, left beside the same ``--out``, is removed too when its process is gone.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nbo.core.processes import pid_alive, process_gone, process_token
from nbo.store.base import DeliveringRun, Store

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Recovered:
    """A run whose process died while it delivered, as the next run cleared it."""

    run_id: str
    started_at: int  # unix seconds
    impressions: int  # taken back
    partial: str  # its temporary file or folder
    removed: bool  # whether that file was still there (and is no more)

    def line(self) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
        left = f"removed {self.partial}" if self.removed else "no partial file left"
        return (
            f"run {self.run_id} (started {started}) ended without its file: took back "
            f"{self.impressions:,} impressions, {left}"
        )


def partial_path(out: Path) -> Path:
    """The temporary file (or Spark's folder) a run of this process writes ``out`` to."""
    return out.with_name(f".{out.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def begin_delivering(store: Store, run_id: str, partial: Path) -> None:
    """Record a run about to deliver: from now until ``end_delivering``, a death of this
    process is found by the next run."""
    # Absolute: the next run may start in another folder.
    where = str(partial.absolute())
    store.begin_delivering(DeliveringRun(run_id, int(time.time()), process_token(), where))


def recover(store: Store) -> list[Recovered]:
    """Clear every delivered run whose process has ended on this machine: its impressions
    taken back, its temporary file removed, its record gone."""
    cleared = []
    for run in store.delivering_runs():
        if not process_gone(run.process):
            continue
        impressions = store.remove_run_impressions(run.run_id)
        removed = _remove(Path(run.partial))
        store.end_delivering(run.run_id)
        cleared.append(Recovered(run.run_id, run.started_at, impressions, run.partial, removed))
    return cleared


def sweep_partials(out: Path) -> list[Path]:
    """Remove the temporary files beside ``out`` of runs whose process has ended (the
    process id is in the name); those of live processes stay. Answers what was removed."""
    removed = []
    for path in sorted(out.parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}")):
        pid = path.name[len(out.name) + 2 : -len(PARTIAL_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and _remove(path):
            removed.append(path)
    return removed


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
