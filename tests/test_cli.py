"""The ``nbo`` command itself: version, sub-command discovery, one-line usage errors."""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nbo.cli
from nbo import __version__
from nbo.cli import build_parser, main, pin_blas_threads
from nbo.core.errors import EXIT_STATUSES


def test_version_answers_without_loading_any_command(capsys: pytest.CaptureFixture[str]) -> None:
    before = set(sys.modules)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nbo {__version__}"
    assert "training.pipeline" not in set(sys.modules) - before


def test_a_named_command_loads_only_its_own_module() -> None:
    parser = build_parser(["batch", "--help"])
    choices = parser._subparsers._group_actions[0].choices
    assert list(choices) == ["batch"]


def test_help_and_unknown_commands_list_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["teleport"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for command in ("batch", "evaluate", "models", "report", "serve", "train"):
        assert f"'{command}'" in err


def _every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command's parser under it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_every_parser(sub))
    return found


@pytest.mark.parametrize("columns", ["200", "60"])
def test_every_help_reads_as_written(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    """Every command's --help: no printf slip left by argparse (``95%%``), every option
    explained, and no hyphenated name (``online-retail``) split across lines."""
    monkeypatch.setenv("COLUMNS", columns)
    parsers = _every_parser(build_parser())
    assert {p.prog for p in parsers} >= {
        "nbo train",
        "nbo evaluate",
        "nbo batch",
        "nbo serve",
        "nbo models",
        "nbo report experiment",
        "nbo report compare",
        "nbo keys create",
    }
    for parser in parsers:
        text = parser.format_help()
        assert "%%" not in text and "%(" not in text, parser.prog
        assert not re.search(r"\w-\n", text), (parser.prog, text)
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (parser.prog, action.option_strings)
    experiment = next(p for p in parsers if p.prog == "nbo report experiment")
    assert "95% confidence interval" in experiment.format_help()


def test_train_force_says_what_the_quality_gate_checks() -> None:
    """--force's help follows the gate in training/gate.py: what is served against what
    the current model serves."""
    train = next(p for p in _every_parser(build_parser()) if p.prog == "nbo train")
    force = next(a for a in train._actions if "--force" in a.option_strings)
    assert force.help is not None
    assert "quality gate" in force.help
    assert "worse" in force.help and "current model" in force.help
    assert "ranker does not beat" not in force.help


def test_blas_is_pinned_to_one_thread_unless_the_user_chose() -> None:
    environ = {"MKL_NUM_THREADS": "4"}
    pin_blas_threads(environ)
    assert environ == {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "4", "BLIS_NUM_THREADS": "1"}


# Ctrl-C (a real SIGINT, sent by the process to itself) while the named command's
# modules load: the moment the trainer spends a second or two importing scikit-learn
# and LightGBM, before the command runs.
CTRL_C_WHILE_LOADING = textwrap.dedent(
    """
    import os, signal, sys
    from importlib.metadata import EntryPoint
    from nbo import cli

    load = EntryPoint.load

    def interrupted_load(self):
        os.kill(os.getpid(), signal.SIGINT)
        return load(self)

    EntryPoint.load = interrupted_load
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_ctrl_c_while_the_command_loads_is_one_line_not_a_traceback(
    command: str, tmp_path: Path
) -> None:
    """In the first second or so of ``nbo train`` Ctrl-C printed a KeyboardInterrupt
    traceback: the handler was installed only once the command ran."""
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_LOADING, command, "--data", str(tmp_path / "p.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 130, done.stderr
    assert done.stderr == f"nbo {command}: interrupted\n"


# Ctrl-C while the script imports the command line itself (argparse,
# importlib.metadata: a tenth of a second before ``nbo.cli.main`` can catch it).
CTRL_C_WHILE_IMPORTING = textwrap.dedent(
    """
    import os, signal, sys

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "nbo.cli":
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, CtrlC())
    from nbo.__main__ import main
    sys.exit(main())
    """
)


def test_ctrl_c_while_the_script_imports_the_command_line_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_IMPORTING, "train", "--data", "p.csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 130, done.stderr
    assert done.stderr == "nbo train: interrupted\n"


def test_the_nbo_script_starts_from_the_guarded_entry() -> None:
    """The installed script runs ``nbo.__main__:main`` (the guard), not ``nbo.cli``."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="nbo")
    assert script.value == "nbo.__main__:main"


@pytest.mark.parametrize("command", ["--version", "models"])
def test_output_into_a_closed_pipe_ends_quietly(command: str, models_dir: Path) -> None:
    """``nbo models | head`` ended in a BrokenPipeError traceback when ``head`` had gone:
    the standard answer is to stop quietly, as a process killed by SIGPIPE does."""
    args = [command] if command == "--version" else [command, "--models-dir", str(models_dir)]
    read, write = os.pipe()
    os.close(read)  # the reader gone before a line is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nbo", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert done.stderr == ""


def _command_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """``nbo fake``, a command whose handler raises ``error``."""

    def build(_argv: object = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="nbo")
        commands = parser.add_subparsers(dest="command")

        def handler(_args: argparse.Namespace) -> int:
            raise error

        commands.add_parser("fake").set_defaults(handler=handler)
        return parser

    monkeypatch.setattr(nbo.cli, "build_parser", build)


def test_a_write_the_system_refuses_is_one_line_naming_the_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _command_raising(monkeypatch, OSError(errno.EROFS, "Read-only file system", "/srv/out.csv"))

    assert main(["fake"]) == 74
    assert capsys.readouterr().err == "nbo fake: error: /srv/out.csv: read-only file system\n"


def test_other_os_errors_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug's OSError (a descriptor closed twice) keeps its traceback."""
    _command_raising(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))

    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["fake"])


DOCS_OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def documented_exit_statuses() -> list[tuple[int, str, str]]:
    """docs/operations.md's exit-status table as (status, name, meaning), in its order."""
    text = DOCS_OPERATIONS.read_text(encoding="utf-8")
    table = text[text.index("**Exit status**") :].split("\n\n")[1]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append((int(cells[0]), cells[1], cells[2]))
    return rows


def test_the_documented_exit_statuses_are_the_ones_the_command_returns() -> None:
    documented = documented_exit_statuses()
    assert documented == [(s.code, s.name, s.meaning) for s in EXIT_STATUSES]
    # One code, one name: a script reads the status alone.
    assert len({code for code, _, _ in documented}) == len(documented)
    assert {nbo.cli.EXIT_USER_ERROR, 71, 74} <= {code for code, _, _ in documented}
    # The statuses of a command stopped by a signal (Ctrl-C, SIGPIPE, SIGTERM) too.
    assert {130, 141, 143} <= {code for code, _, _ in documented}
