"""Domain errors: each carries a message a user can act on without reading code.

The command line prints them as one line with a non-zero exit; the service turns
them into 4xx responses in one exception handler.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# The command's exit status for each kind of outcome, so a script (a nightly cron job)
# can tell them apart by the status alone. The one table: the command line returns
# these, and docs/operations.md's "Exit status" table says the same (a test compares
# them).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USER_ERROR = 2
EXIT_REFUSED = 3
# The machine, not the input: out of memory (sysexits' EX_OSERR), an output the system
# refused (EX_IOERR). Distinct codes, so a scheduler can retry on a larger machine or
# page whoever owns the disk rather than whoever wrote the data.
EXIT_OUT_OF_MEMORY = 71
EXIT_OUTPUT_REFUSED = 74
# sysexits' EX_TEMPFAIL: try again later, nothing is wrong with the input.
EXIT_TEMPFAIL = 75
# Stopped from outside, as a shell reports a process a signal ended (128 + the signal's
# number): Ctrl-C (SIGINT), a scheduler's or kill's SIGTERM, a reader of the output gone
# (SIGPIPE, ``nbo models | head``). The command says which in one line (not SIGPIPE's:
# nobody reads it).
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


@dataclass(frozen=True)
class ExitStatus:
    """One exit status: its code, a short name and what it means to whoever reads it."""

    code: int
    name: str
    meaning: str


EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(EXIT_OK, "ok", "done as asked, or nothing to do"),
    ExitStatus(EXIT_CRASH, "crash", "a bug: a traceback"),
    ExitStatus(
        EXIT_USER_ERROR, "user error", "bad input or usage, the user's to fix (one line naming it)"
    ),
    ExitStatus(
        EXIT_REFUSED,
        "refused",
        "a well-formed request refused by a check that worked as meant (one line saying why)",
    ),
    ExitStatus(EXIT_OUT_OF_MEMORY, "out of memory", "the machine ran out of memory (EX_OSERR)"),
    ExitStatus(
        EXIT_OUTPUT_REFUSED,
        "output refused",
        "the system refused a write: a full disk, a quota, a read-only mount (EX_IOERR)",
    ),
    ExitStatus(
        EXIT_TEMPFAIL,
        "temporarily unavailable",
        "something needed is busy or away for now; the same command may succeed later "
        "(EX_TEMPFAIL)",
    ),
    ExitStatus(EXIT_INTERRUPTED, "interrupted", "stopped by Ctrl-C (SIGINT)"),
    ExitStatus(
        EXIT_BROKEN_PIPE,
        "output closed",
        "the reader of the output went first (SIGPIPE, as when piped into head)",
    ),
    ExitStatus(
        EXIT_TERMINATED, "terminated", "stopped by SIGTERM (a scheduler's time limit, kill)"
    ),
)


class NboError(Exception):
    """Base class for errors that are the user's to fix, not bugs."""

    exit_code = EXIT_USER_ERROR


class PurchaseDataError(NboError):
    """A purchase file that cannot be read or used, naming the file, column and problem."""

    def __init__(self, path: str, problem: str, column: str | None = None) -> None:
        self.path = path
        self.column = column
        self.problem = problem
        where = f"{path}: column '{column}'" if column else path
        super().__init__(f"{where}: {problem}")


class MappingError(NboError):
    """A column mapping that is missing or malformed."""


class ArtifactError(NboError):
    """A model artifact that is missing, corrupt or incompatible and must not be served."""


class Refused(NboError):
    """A well-formed request refused by a check that worked as meant (a purge cutoff the
    service still reads, the quality gate): not the input's fault, so not a usage error
    (exit 2); a script tells the two apart by the exit status."""

    exit_code = EXIT_REFUSED


class QualityGateError(Refused):
    """The trained model did not beat its baseline, so it is not published."""


class TemporarilyUnavailable(NboError):
    """Something the command needs is busy or away for now (a store server, a models
    folder another training holds): the same command may succeed later, unchanged."""

    exit_code = EXIT_TEMPFAIL


class ConfigError(NboError):
    """A training configuration that cannot be used."""


class StoreUrlError(ConfigError):
    """A store URL that names no usable store. ``setting`` is where the URL came from, so
    the message names what the user gave: ``NBO_STORE_URL`` by default, or a command's
    ``--store-url`` (``named``)."""

    def __init__(self, problem: str, setting: str = "NBO_STORE_URL") -> None:
        self.problem = problem
        self.setting = setting
        where = setting if setting.startswith("-") else f"setting {setting}"
        super().__init__(f"{where}: {problem}")

    def named(self, setting: str) -> StoreUrlError:
        """The same problem, said of ``setting``."""
        return StoreUrlError(self.problem, setting)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Rebuilt from its parts, not its message (a campaign worker's error crosses to
        # the parent pickled): from the message it read "setting NBO_STORE_URL: --store-url: ...".
        return type(self), (self.problem, self.setting)


class FileProblemsError(NboError):
    """A file (the offer catalogue, the experiments) refused for the problems found in it,
    ``lines`` one per problem, each naming the file: the message lists them one per line
    (``list_problems``); ``one_line`` says them on one line, for an API field that a
    client shows as it is."""

    def __init__(self, source: str, lines: Sequence[str]) -> None:
        self.source = source
        self.lines = list(lines)
        super().__init__(list_problems(source, self.lines))

    def listed(self) -> list[str]:
        """The message's lines: the first ``MAX_LISTED_PROBLEMS`` problems, then how many
        more."""
        return str(self).split("\n")

    def one_line(self) -> str:
        """The message on one line: the problem, or 'FILE: N problems: first; second;
        ...' (each without the file, named once in front)."""
        if len(self.lines) == 1:
            return self.lines[0]
        prefix = f"{self.source}: "
        said = "; ".join(line.removeprefix(prefix) for line in self.listed())
        return f"{prefix}{len(self.lines)} problems: {said}"


class CatalogError(FileProblemsError):
    """An offer catalogue that cannot be served, naming the file, the entry and the field.

    ``entry`` names the offending part in the marketer's words ("offer 'winback-15'",
    "item override '85123A'"), so the one-line message points at the line to edit.
    """

    def __init__(
        self,
        source: str,
        problem: str,
        entry: str | None = None,
        field: str | None = None,
        more: Sequence[tuple[str | None, str | None, str]] = (),
    ) -> None:
        self.entry = entry
        self.field = field
        self.problem = problem
        # Every problem found, the first included, as (entry, field, problem): a file with
        # five mistakes is fixed in one round, not five.
        self.problems = [(entry, field, problem), *more]
        super().__init__(source, [_catalog_line(source, *found) for found in self.problems])


# Problems of one file listed, one line each, before the rest are only counted: enough
# for any file edited by hand, few enough that a broken generated file stays readable.
MAX_LISTED_PROBLEMS = 20


def list_problems(source: str, lines: Sequence[str]) -> str:
    """The problems found in one file, one line each (each line names the file), the
    first MAX_LISTED_PROBLEMS listed and the rest counted: a file with five mistakes is
    fixed in one round, not five."""
    shown = list(lines[:MAX_LISTED_PROBLEMS])
    if len(lines) > MAX_LISTED_PROBLEMS:
        left = len(lines) - MAX_LISTED_PROBLEMS
        shown.append(f"{source}: and {left} more problem{'s' if left > 1 else ''}")
    return "\n".join(shown)


def _catalog_line(source: str, entry: str | None, field: str | None, problem: str) -> str:
    where = [source]
    if entry:
        where.append(f"{entry} field '{field}'" if field else entry)
    elif field:
        where.append(f"field '{field}'")
    where.append(problem)
    return ": ".join(where)


# Where ``note_step`` keeps the step on an exception (an attribute any exception takes).
_STEP = "nbo_step"


def note_step(error: BaseException, step: str) -> None:
    """Remember the step of a command ``error`` was raised in, the innermost only (the
    first noted): the command line's out-of-memory line names it, since what to give
    more memory to, or what data to cut, depends on which step ran out."""
    if getattr(error, _STEP, None) is None:
        setattr(error, _STEP, step)


@contextmanager
def during(step: str) -> Iterator[None]:
    """Within: running out of memory is said to be in ``step`` (``note_step``)."""
    try:
        yield
    except MemoryError as error:
        note_step(error, step)
        raise


def noted_step(error: BaseException) -> str | None:
    """The step ``note_step`` noted on ``error``, if any."""
    step = getattr(error, _STEP, None)
    return step if isinstance(step, str) else None
