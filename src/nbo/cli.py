"""The ``nbo`` command. Sub-commands plug in through the ``nbo.commands`` entry points,
so the service package never imports the offline trainer (``training`` registers
``nbo train`` itself).

Every expected failure ends as one readable line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, MutableMapping, Sequence
from importlib.metadata import entry_points
from types import FrameType
from typing import Any, NoReturn

from nbo import __version__
from nbo.core.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OUT_OF_MEMORY,
    EXIT_OUTPUT_REFUSED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    NboError,
    noted_step,
)

COMMAND_GROUP = "nbo.commands"
__all__ = ["EXIT_USER_ERROR", "main"]
# What the system refuses a write for that the machine lacks or forbids (space, quota, a
# read-only mount, a file size limit, permissions): the user's to fix, never a bug. Any
# other OSError stays a traceback, which is what a bug's should be.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES})
# Where the out-of-memory line sends the reader.
SIZING = "docs/operations.md, Sizing"

Handler = Callable[[argparse.Namespace], int]

# BLAS thread pools, which nbo never wants: ALS crawls with them (implicit warns) and the
# service and batch pin them to one thread anyway. Set before a command imports numpy,
# since the libraries read them once, when they load; a value the user set is kept.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a hyphenated word (``online-retail``, a
    mapping's name) is never split across two lines, where it would read as two words."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.wrap(text, width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(
            text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the rule for every nbo error), exit 2;
    every sub-command's help is wrapped by ``HelpFormatter``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the sub-commands' options. Only the named sub-command's module is
    imported when ``argv`` names one (the trainer's pulls in scikit-learn and LightGBM:
    seconds that ``nbo batch`` or ``nbo serve`` should not wait for); all of them for
    ``--help`` or an unknown command, so the usage lists every command."""
    parser = OneLineParser(
        prog="nbo", description="Next-best-offer recommendations from purchase history."
    )
    parser.add_argument("--version", action="version", version=f"nbo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    entries = sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name)
    named = command_named(argv or [])
    chosen = [e for e in entries if e.name == named] or entries
    for entry in chosen:
        register = entry.load()
        register(commands)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def pin_blas_threads(environ: MutableMapping[str, str] = os.environ) -> None:
    """One BLAS thread for every command, before any library starts its pool."""
    for name in BLAS_THREAD_VARIABLES:
        environ.setdefault(name, "1")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Named from the start: Ctrl-C or SIGTERM while the command's modules load (the
    # trainer's pull in scikit-learn and LightGBM, a second or two) ends as the same
    # one line as later, not a traceback.
    prog = " ".join(["nbo", *filter(None, [command_named(argv)])])
    before = _on_sigterm(_terminate)
    try:
        pin_blas_threads()
        if argv[:1] == ["--version"]:
            print(f"nbo {__version__}")
            sys.stdout.flush()
            return 0
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        prog = f"nbo {args.command}"
        handler: Handler = args.handler
        code = handler(args)
        # Here, not at the interpreter's exit, where a reader gone would be a traceback.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader of the output went first (``nbo models | head``): stop quietly, as
        # a process SIGPIPE killed would. What is still buffered goes nowhere (the
        # interpreter flushes it at exit, which would fail again: Python's "Note on
        # SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        print(f"{prog}: error: {output_refused(exc)}", file=sys.stderr)
        return EXIT_OUTPUT_REFUSED
    except MemoryError as exc:
        # pyarrow's ArrowMemoryError is one too. Printed once the stack is unwound,
        # which freed what the step held: the line itself finds the memory it needs.
        print(out_of_memory_line(prog, exc), file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except NboError as exc:
        # 2 bad input, 3 refused by a check (the quality gate), 75 try again later
        # (``nbo.core.errors.EXIT_STATUSES``): a cron job tells them apart by the exit
        # status alone.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _on_sigterm(before)


def output_refused(error: OSError) -> str:
    """The path and the system's reason in its own words ("no space left on device"),
    not a library's wrapping of it (pyarrow's "Error writing bytes to file. Detail: ...")."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    reason = reason[:1].lower() + reason[1:]
    return f"{error.filename}: {reason}" if error.filename is not None else reason


def out_of_memory_line(prog: str, error: MemoryError) -> str:
    """One line for a command that ran out of memory: in which step, the allocator's
    words when there are some (pyarrow's "malloc of size ... failed"), and where sizing
    is written down."""
    step = noted_step(error)
    during = f" during {step}" if step else ""
    detail = f" ({error})" if str(error) else ""
    return (
        f"{prog}: out of memory{during}{detail}: give it a machine or a limit with more "
        f"memory, or less data; see {SIZING}"
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping a job, ``kill``), raised as Ctrl-C's interrupt is:
    a command cleans up the same way (``nbo batch`` leaves no partial file and takes a
    delivered campaign's impressions back) instead of dying where it stands."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM (only the main thread may), the one before back."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
