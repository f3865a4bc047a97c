"""The ``nbo`` command itself: version, sub-command discovery, one-line usage errors."""

from __future__ import annotations

import sys

import pytest

from nbo import __version__
from nbo.cli import build_parser, main


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
