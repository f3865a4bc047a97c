"""Removing old published versions (``nbo models --prune KEEP``) without removing one
that serves or may serve.

A version is kept when it is one of the newest ``keep`` that load (by name: versions are
named by their UTC publication time; a broken one, which ``version_problem`` tells from
its manifest and files, is not counted among them: keeping it would keep one good
version fewer), when CURRENT or PREVIOUS names it, when an alias names it, or when the
caller names it with a reason (the experiments file, the pinned ``NBO_MODEL_VERSION``, a
running service: ``nbo.reports.cli`` gathers those). Every other published version is
removed, each renamed to a hidden name first, then deleted (``remove_version``). What
CURRENT and the aliases name is read again just before each removal, so a flip made
meanwhile keeps the version it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nbo.core.errors import ArtifactError
from nbo.models.artifacts import (
    CURRENT,
    PREVIOUS,
    current_version,
    has_current,
    list_versions,
    previous_version,
    remove_version,
    version_problem,
)
from nbo.models.registry import read_aliases


@dataclass(frozen=True)
class PrunePlan:
    """Each version kept with why, newest first; the versions to remove, newest first;
    the broken ones among either, with why (``version_problem``)."""

    kept: dict[str, list[str]]
    removed: list[str]
    broken: dict[str, str] = field(default_factory=dict)


def pointed_at(models_dir: Path) -> dict[str, list[str]]:
    """version -> what in the models folder names it: CURRENT, and each alias.
    ArtifactError when CURRENT or ALIASES.json cannot be read: a prune that cannot tell
    what they name removes nothing."""
    named: dict[str, list[str]] = {}
    if has_current(models_dir):
        named.setdefault(current_version(models_dir), []).append(CURRENT)
    previous = previous_version(models_dir)
    if previous is not None:
        # The rollback target (`nbo models --current previous`).
        named.setdefault(previous, []).append(PREVIOUS)
    for alias, version in sorted(read_aliases(models_dir).items()):
        named.setdefault(version, []).append(f"alias {alias}")
    return named


def keep_problem(keep: int) -> str | None:
    """Why a prune cannot keep only the newest ``keep`` (None: it can). The one rule:
    ``plan_prune`` refuses by it, and ``nbo models --prune`` before it reads anything
    else, naming its flag."""
    return None if keep >= 1 else "keep at least the newest 1"


def plan_prune(
    models_dir: Path, keep: int, also: Mapping[str, Iterable[str]] | None = None
) -> PrunePlan:
    """What a prune keeping the newest ``keep`` would keep and remove. ``also``: reason
    -> versions to keep for it (besides CURRENT's and the aliases')."""
    problem = keep_problem(keep)
    if problem:
        raise ArtifactError(f"keep {keep}: {problem}")
    versions = list(reversed(list_versions(models_dir)))
    reasons = pointed_at(models_dir)
    for reason, named in (also or {}).items():
        for version in named:
            reasons.setdefault(version, []).append(reason)
    broken = {v: problem for v in versions if (problem := version_problem(models_dir, v))}
    kept: dict[str, list[str]] = {}
    removed = []
    loadable = 0
    for version in versions:
        newest = version not in broken and loadable < keep
        loadable += version not in broken
        why = ([f"newest {keep}"] if newest else []) + reasons.get(version, [])
        if why:
            kept[version] = why
        else:
            removed.append(version)
    return PrunePlan(kept, removed, broken)


def prune(
    models_dir: Path, keep: int, also: Mapping[str, Iterable[str]] | None = None
) -> PrunePlan:
    """Remove what ``plan_prune`` would; the plan as carried out (a version CURRENT or an
    alias came to name meanwhile is kept)."""
    plan = plan_prune(models_dir, keep, also)
    kept = dict(plan.kept)
    removed = []
    for version in plan.removed:
        now = pointed_at(models_dir).get(version)
        if now:
            kept[version] = now
            continue
        remove_version(models_dir, version)
        removed.append(version)
    return PrunePlan(kept, removed, plan.broken)
