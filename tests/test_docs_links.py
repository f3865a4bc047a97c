"""The links between the README and the docs pages: every relative link names a file
that is there and, with an anchor, a heading of that file (as GitHub makes the anchor of
a heading). A renumbered heading had left docs/benchmarks.md pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*```")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but '-' and '_'
    dropped, spaces as '-'; a repeated one gets -1, -2, ..."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z]+:", target) and not target.startswith("mailto")
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_a_heading_there(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = page if not path else (page.parent / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert broken == []


def test_every_dashboard_page_has_a_screenshot_in_the_readme() -> None:
    """Each page of the dashboard's menu is shot by docs/dashboard/screenshots.py (its
    PAGES), its picture is there and the README shows it: the Campaigns page had none."""
    import ast

    base = ROOT / "src" / "nbo" / "service" / "dashboard" / "templates" / "base.html"
    menu = re.findall(r'\("[^"]*", "(\w+)", "[^"]*"\)', base.read_text(encoding="utf-8"))
    assert "campaigns" in menu and len(menu) >= 6
    script = ast.parse((ROOT / "docs" / "dashboard" / "screenshots.py").read_text())
    [pages] = [
        node.value
        for node in script.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PAGES" for t in node.targets)
    ]
    assert isinstance(pages, ast.Dict)
    shot = {key.value for key in pages.keys if isinstance(key, ast.Constant)}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in menu:
        # The experiments menu entry is shot as one experiment's page.
        picture = "experiment" if name == "experiments" else name
        assert picture in shot, name
        assert (ROOT / "docs" / "dashboard" / f"{picture}.png").is_file(), name
        assert f"(docs/dashboard/{picture}.png)" in readme, name
