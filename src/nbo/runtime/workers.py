"""The workers' board: a folder where ``nbo serve``'s workers agree on the model to serve.

Each worker holds its own model, so a reload must reach them all. A reload that one
worker takes (the API, or the watcher) or that the master takes (SIGHUP) is written here
as a *generation*: a number that only grows, the version every worker must serve, and
whether to load it again even if already serving. Each worker follows the board (one
``os.stat`` every ``FOLLOW_EVERY_S``), reloads when a newer generation appears, and
writes what it serves now under its pid: its *status*. The worker that took an API
reload waits until every live worker's status has reached its generation, so the
answer says which worker serves what. A worker that starts later (a replacement for
one that died) loads the latest generation's version, not what the settings name.

Erasures ride the same board: a model row must leave every worker's model, not only
the one that took the ``DELETE``. The erasing worker records the erasure in the store,
then counts it here; each worker, seeing the count grow, forgets every erased id the
store lists and reports the count it has applied; the erasure answers once all have.

Files are small JSON documents replaced atomically (written beside, then renamed), and
a generation's number is taken under an ``flock``, so two reloads at once get two
numbers and the later one wins everywhere. The master makes the folder and removes it
at exit, and removes a worker's status when the worker exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbo.core.processes import pid_alive

# How often a worker looks for a new generation (one os.stat).
FOLLOW_EVERY_S = 0.1
# How long an API reload waits for the other workers before it answers without them.
WAIT_FOR_WORKERS_S = 60.0
# How often the waiting worker reads the statuses.
WAIT_EVERY_S = 0.05
# A worker's status before its first model is loaded.
STARTING = -1
# ``nbo serve``'s shared folder is made in the temporary folder under this prefix and its
# master's pid; the board is the folder BOARD inside it.
FOLDER_PREFIX = "nbo-serve-"
BOARD = "workers"

_GENERATION = "generation.json"
_ERASURES = "erasures.json"
_LOCK = "generation.lock"
_STATUS_PREFIX = "worker-"


@dataclass(frozen=True)
class Generation:
    """A reload asked of every worker: serve ``version`` (load it again when ``force``)."""

    number: int
    version: str
    force: bool
    trigger: str
    by: int  # the pid that published it (a worker, or the master for SIGHUP)


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker serves, as of the last generation it applied."""

    pid: int
    generation: int
    # (version, role) of each model serving: "current", then experiment variants'.
    models: list[tuple[str, str]] = field(default_factory=list)
    loaded_at: float | None = None
    load_seconds: float | None = None
    # Why the last generation was not served (refused, not found); None when it was.
    error: str | None = None
    # The erasures counted on the board that this worker's models have forgotten.
    erasures: int = 0
    # What serves, in one comparable string (``ServingModels.signature``: the current
    # version and the version each experiment's alias resolved to): two workers on the
    # same version may still answer an experiment's arm with different models.
    signature: str | None = None

    @property
    def version(self) -> str | None:
        """The current model's version; None before one is loaded."""
        return next((version for version, role in self.models if role == "current"), None)


class WorkerBoard:
    """The folder ``nbo serve`` shares with its workers (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._seen: tuple[int, int] | None = None
        self._latest: Generation | None = None
        self._erasures_seen: tuple[int, int] | None = None
        self._erasures = 0

    def publish(
        self, version: str, force: bool, trigger: str, unless_named: bool = False
    ) -> Generation:
        """The next generation, asking every worker to serve ``version``. With
        ``unless_named``, the latest generation instead when it already names
        ``version`` (a reload that changes nothing asks nothing of the others)."""
        with self._locked():
            latest = self._read_generation()
            if unless_named and latest is not None and latest.version == version:
                return latest
            generation = Generation(
                number=(latest.number if latest else 0) + 1,
                version=version,
                force=force,
                trigger=trigger,
                by=os.getpid(),
            )
            self._write(_GENERATION, asdict(generation))
        return generation

    def latest(self) -> Generation | None:
        """The newest generation, or None before any reload; read again only when the
        file changed (a stat per call)."""
        try:
            stat = os.stat(self.folder / _GENERATION)
        except FileNotFoundError:
            return None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._seen:
            self._latest = self._read_generation()
            self._seen = stamp
        return self._latest

    def count_erasure(self) -> int:
        """Count one more erasure (recorded in the store before); the new count."""
        with self._locked():
            data = _read_json(self.folder / _ERASURES)
            count = (int(data["count"]) if data else 0) + 1
            self._write(_ERASURES, {"count": count})
        return count

    def erasures(self) -> int:
        """How many erasures have been counted (a stat per call, read when changed)."""
        try:
            stat = os.stat(self.folder / _ERASURES)
        except FileNotFoundError:
            return 0
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._erasures_seen:
            data = _read_json(self.folder / _ERASURES)
            self._erasures = int(data["count"]) if data else 0
            self._erasures_seen = stamp
        return self._erasures

    def report(self, status: WorkerStatus) -> None:
        """Write this worker's status (replacing its previous one)."""
        self._write(f"{_STATUS_PREFIX}{status.pid}.json", asdict(status))

    def statuses(self) -> list[WorkerStatus]:
        """Every live worker's status, by pid (a status left by a process that is gone
        is skipped: the master removes them, this covers a master that could not)."""
        found = []
        for path in sorted(self.folder.glob(f"{_STATUS_PREFIX}*.json")):
            data = _read_json(path)
            if data is None or not pid_alive(int(data["pid"])):
                continue
            data["models"] = [tuple(pair) for pair in data["models"]]
            found.append(WorkerStatus(**data))
        return sorted(found, key=lambda status: status.pid)

    def wait(
        self, done: Callable[[WorkerStatus], bool], timeout: float = WAIT_FOR_WORKERS_S
    ) -> list[WorkerStatus]:
        """The live workers' statuses once ``done`` holds for every one (it applied a
        generation, or an erasure), or as they are when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.statuses()
            if all(done(status) for status in statuses):
                return statuses
            if time.monotonic() >= deadline:
                return statuses
            time.sleep(WAIT_EVERY_S)

    def forget(self, pid: int) -> None:
        """Remove a worker's status (it exited)."""
        (self.folder / f"{_STATUS_PREFIX}{pid}.json").unlink(missing_ok=True)

    def _read_generation(self) -> Generation | None:
        data = _read_json(self.folder / _GENERATION)
        return None if data is None else Generation(**data)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        temporary = self.folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.folder / name)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / _LOCK, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def served_on_this_machine(temporary: Path | None = None) -> dict[str, list[int]]:
    """version -> the pids of the ``nbo serve`` masters on this machine (their boards in
    the temporary folder) that serve it: a live worker's current or experiment model,
    or the latest generation's version (what a worker started in place of a dead one
    loads). Their models folders are not known here: a version of the same name in
    another folder counts too, which only keeps more. Boards that cannot be read
    (another user's) are skipped."""
    served: dict[str, list[int]] = {}
    root = Path(tempfile.gettempdir()) if temporary is None else temporary
    for folder in sorted(root.glob(f"{FOLDER_PREFIX}*")):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        board = folder / BOARD
        if not pid.isdigit() or not pid_alive(int(pid)) or not board.is_dir():
            continue
        try:
            reader = WorkerBoard(board)
            latest = reader.latest()
            versions = {version for s in reader.statuses() for version, _ in s.models}
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if latest is not None:
            versions.add(latest.version)
        for version in versions:
            served.setdefault(version, []).append(int(pid))
    return served
