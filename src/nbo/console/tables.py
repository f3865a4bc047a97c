"""What the commands print on: consoles whose tables never cut a cell.

Rich fits a table to the console's width, and where a cell cannot wrap (a model version,
a customer or item id, a number) it cuts it to ``2026120…``; without a terminal (a pipe,
a file, a CI log) that width is 80 columns whatever the reader's screen. Identifiers that
are cut are useless, so:

* without a terminal, nothing is fitted to a width at all: tables take the width their
  cells need and lines are never wrapped (a log is read by ``grep`` as much as by eye);
* in a terminal, a table gets the terminal's width, but at least the width at which every
  cell is whole: words wrap inside their cells, and only when even that does not fit
  does the table get wider than the terminal (which then folds the lines: ugly, but
  every id can still be read and copied).
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# The width of a console that is not a terminal: wide enough that nothing is wrapped.
UNBOUNDED = 1_000_000


def output_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width in a terminal, unbounded
    otherwise."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=UNBOUNDED)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with every cell whole (see the module docstring)."""
    measured = Measurement.get(console, console.options.update_width(UNBOUNDED), table)
    title = table.title
    title_width = len(Text.from_markup(title).plain) if isinstance(title, str) else 0
    natural = max(measured.maximum, title_width)
    table.width = min(natural, max(console.width, measured.minimum))
    console.print(table, crop=False)
