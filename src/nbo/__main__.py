"""The ``nbo`` script's entry: the command line (``nbo.cli``) loaded under Ctrl-C's
one-line answer.

Importing ``nbo.cli`` (argparse, importlib.metadata) takes a tenth of a second or so
before its ``main`` can catch anything; a Ctrl-C there was a KeyboardInterrupt
traceback. This module imports nothing but ``sys`` first, so the window left is the
interpreter's own start.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130


def main() -> int:
    try:
        from nbo.cli import main as run
    except KeyboardInterrupt:
        named = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        print(" ".join(["nbo", *filter(None, [named])]) + ": interrupted", file=sys.stderr)
        return INTERRUPTED
    return run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
