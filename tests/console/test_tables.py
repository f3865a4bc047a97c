"""Tables never cut a cell: in a narrow terminal they wrap words or get wider, and
without a terminal they take the width their cells need."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from nbo.console.tables import UNBOUNDED, output_console, print_table

VERSIONS = ("20261205T170102Z-f25ca8fc", "20261205T171733Z-dbc8467f")


def _versions_table(title: str = "truth: all") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "version", "precision@10", "recall@10", "ndcg@10", "customers"):
        table.add_column(column, justify="left" if column in ("model", "version") else "right")
    for version in VERSIONS:
        table.add_row(version, version, "0.3034", "0.1714", "0.3511", "1,234")
    return table


def _terminal(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


@pytest.mark.parametrize("width", [30, 60, 80])
def test_a_narrow_terminal_gets_every_identifier_whole(width: int) -> None:
    console, out = _terminal(width)
    print_table(console, _versions_table())
    text = out.getvalue()
    assert "…" not in text
    for version in VERSIONS:
        assert text.count(version) == 2  # model and version columns, each whole


def test_a_wide_terminal_keeps_its_natural_table() -> None:
    console, out = _terminal(200)
    print_table(console, _versions_table())
    unbounded, natural = _terminal(UNBOUNDED)
    print_table(unbounded, _versions_table())
    widths = {len(line) for line in out.getvalue().splitlines()[1:]}
    assert widths == {len(line) for line in natural.getvalue().splitlines()[1:]}
    assert max(widths) < 200  # the cells' own width, not the terminal's


def test_words_wrap_in_their_cells_before_a_table_gets_wider() -> None:
    table = Table()
    table.add_column("item")
    table.add_column("name")
    table.add_row("85123A", "WHITE HANGING HEART T-LIGHT HOLDER")
    console, out = _terminal(24)
    print_table(console, table)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 24
    assert "85123A" in out.getvalue() and "…" not in out.getvalue()


def test_a_long_title_widens_the_table_instead_of_wrapping() -> None:
    title = "lifecycle stages as of 2011-12-09"
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_row("new")
    console, out = _terminal(100)
    print_table(console, table)
    assert out.getvalue().splitlines()[0].rstrip() == title


def test_without_a_terminal_nothing_is_fitted_to_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    console = output_console()
    assert not console.is_terminal and console.width == UNBOUNDED
    line = "a long line " * 12
    console.print(line.strip())
    print_table(console, _versions_table())
    out = capsys.readouterr().out
    assert line.strip() in out.splitlines()
    assert "…" not in out
    assert all(out.count(version) == 2 for version in VERSIONS)
