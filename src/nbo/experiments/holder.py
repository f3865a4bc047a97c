"""The experiments file as the service reads it again: on every reload, SIGHUP and
within a second of a change of the file (with or without ``NBO_WATCH_MODELS``), like the
offer catalogue.

The experiments decide which model answers each customer, so a new file takes effect
with the models it names, in the same swap (``nbo.service.reload``): this holder only
reads the file and remembers why the last read was refused. A bad edit (a typo, an
unknown model, two experiments at once) is refused, logged and kept in ``last_error``
while the experiments serving before serve on; the next good read clears it.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbo.experiments.definitions import ExperimentError, Experiments, load_experiments

log = logging.getLogger(__name__)


def file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    """mtime, size and inode: what tells an edited (or renamed-over) file apart with one
    ``os.stat``; None when there is no file."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ExperimentsFileHolder:
    """Reads ``NBO_EXPERIMENTS`` again when asked and says why a read was refused."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        # Why the file on disk was refused, on one line (an API field shown as it is),
        # and its problems one by one; None while it serves.
        self.last_error: str | None = None
        self.last_problems: list[str] | None = None
        self.last_error_at: float | None = None
        self.loaded_at: float = time.time()

    def read(self) -> Experiments | None:
        """The file as it is now, or None when it is refused (the reason is logged and
        kept in ``last_error``; the experiments serving stay). None too when the service
        has no experiments file: nothing to read again."""
        if self.path is None:
            return None
        try:
            return load_experiments(self.path)
        except ExperimentError as exc:
            self.refuse(exc.one_line(), exc.listed())
        except Exception as exc:  # an unreadable file must not make the reload a 500
            self.refuse(f"{self.path}: could not be read ({type(exc).__name__}: {exc})")
        return None

    def refuse(self, problem: str, problems: list[str] | None = None) -> None:
        """Keep why the file was refused: ``problem`` on one line, ``problems`` one by
        one (logged so, a line each)."""
        self.last_error = problem
        self.last_problems = [problem] if problems is None else problems
        self.last_error_at = time.time()
        log.error(
            "experiments file refused, the experiments serving stay: %s",
            "\n".join(self.last_problems),
        )

    def clear_refusal(self) -> None:
        """The file on disk is no longer refused (it serves, or there is none)."""
        self.last_error = self.last_error_at = self.last_problems = None

    def accepted(self, changed: bool) -> None:
        """The file as last read serves (``changed``: it differs from what served)."""
        self.clear_refusal()
        if changed:
            self.loaded_at = time.time()

    def status(self, serving: Experiments, changed: bool = False) -> dict[str, Any]:
        """What serves and whether the file on disk was refused, for operators."""
        return {
            "source": serving.source,
            "experiments": [e.name for e in serving.experiments],
            "loaded_at": _iso(self.loaded_at),
            "changed": changed,
            "last_error": self.last_error,
            "last_error_problems": self.last_problems,
            "last_error_at": _iso(self.last_error_at),
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
