"""``python -m bench``'s command line: every section's options parse together.

Sections arrive from different branches and each adds its options to one parser; two that
add the same option break every bench run at start-up, which no section's own test sees.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_bench_command_line_parses_and_names_every_section() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    sections = (
        "synthetic",
        "online-retail",
        "events",
        "load",
        "workers",
        "workers-synthetic",
        "quality",
        "spark",
    )
    for section in (*sections, "train-scale"):
        assert section in done.stdout
