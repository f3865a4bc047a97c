"""Model aliases: names such as ``production`` and ``candidate`` that point at versions.

Aliases live in ``ALIASES.json`` beside the versions in the models folder, written
atomically like the CURRENT pointer. ``production`` (and ``current``) mean the version
CURRENT points at unless an alias of that name is set; ``previous`` likewise the
version CURRENT named before it last moved (the PREVIOUS pointer nbo keeps: the
rollback). Experiments and ``GET /v1/models`` refer to models by alias or by version;
``resolve`` turns either into a version, or says what exists.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from nbo.core.errors import ArtifactError
from nbo.core.outputs import replace_files
from nbo.models.artifacts import (
    MANIFEST,
    check_version_name,
    current_version,
    has_current,
    is_version_name,
    list_versions,
    previous_version,
)

ALIASES = "ALIASES.json"
PRODUCTION = "production"
# The setting that pins the version served instead of CURRENT (a version or an alias):
# named in the message when it names nothing.
MODEL_VERSION_SETTING = "NBO_MODEL_VERSION"
CURRENT_ALIASES = ("production", "current")
PREVIOUS_ALIAS = "previous"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def read_aliases(models_dir: Path) -> dict[str, str]:
    """alias -> version as stored (``production`` only when set explicitly)."""
    path = models_dir / ALIASES
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ArtifactError(f"{path}: expected an object of alias -> version strings")
    return dict(raw)


def aliases_with_current(models_dir: Path) -> dict[str, str]:
    """Every alias, with ``production`` pointing at CURRENT unless set (and CURRENT names
    a version) and ``previous`` at what CURRENT named before (once it has moved)."""
    aliases = read_aliases(models_dir)
    if PRODUCTION not in aliases and has_current(models_dir):
        # A listing, not a load: a CURRENT that names no version (empty, a path) has no
        # alias here, and loading it says why.
        with contextlib.suppress(ArtifactError):
            aliases[PRODUCTION] = current_version(models_dir)
    if PREVIOUS_ALIAS not in aliases:
        with contextlib.suppress(ArtifactError):
            previous = previous_version(models_dir)
            if previous is not None and (models_dir / previous / MANIFEST).is_file():
                aliases[PREVIOUS_ALIAS] = previous
    return aliases


def set_alias(models_dir: Path, name: str, version: str) -> None:
    """Point ``name`` at ``version`` (which must be published), atomically."""
    if not _NAME.match(name) or name == "current":
        raise ArtifactError(
            f"alias '{name}': use lower-case letters, digits, '-' or '_' (not 'current')"
        )
    if not is_version_name(version) or not (models_dir / version / MANIFEST).is_file():
        raise ArtifactError(f"alias '{name}': no model {version} in {models_dir}")
    aliases = read_aliases(models_dir)
    aliases[name] = version
    _write(models_dir, aliases)


def remove_alias(models_dir: Path, name: str) -> None:
    aliases = read_aliases(models_dir)
    if name not in aliases:
        raise ArtifactError(f"alias '{name}': not set")
    del aliases[name]
    _write(models_dir, aliases)


def resolve(models_dir: Path, reference: str, source: str | None = None) -> str:
    """The version an alias or a version string names. ``source``: where ``reference``
    was read (a setting, a flag), named in the message when it names nothing."""
    aliases = read_aliases(models_dir)
    if reference in aliases:
        # A target edited by hand must not lead outside the models folder.
        return check_version_name(
            aliases[reference], f"{models_dir / ALIASES}: alias '{reference}'"
        )
    if reference in CURRENT_ALIASES:
        return current_version(models_dir)
    subject = f"model '{reference}'" if source is None else f"{source} '{reference}'"
    if reference == PREVIOUS_ALIAS:
        previous = previous_version(models_dir)
        if previous is None:
            raise ArtifactError(
                f"{subject}: CURRENT has not moved since {models_dir} got its first model, "
                "so there is no previous version to go back to"
            )
        if not (models_dir / previous / MANIFEST).is_file():
            raise ArtifactError(
                f"{subject}: {previous} (what CURRENT named before) is no longer in {models_dir}"
            )
        return previous
    if is_version_name(reference) and (models_dir / reference / MANIFEST).is_file():
        return reference
    known = sorted({*aliases, *CURRENT_ALIASES, PREVIOUS_ALIAS})
    versions = list_versions(models_dir)
    raise ArtifactError(
        f"{subject}: no such alias or version in {models_dir} (aliases: "
        f"{', '.join(known)}; versions: {', '.join(versions[-5:]) or 'none'})"
    )


def _write(models_dir: Path, aliases: dict[str, str]) -> None:
    """Replace ALIASES.json through a temporary file, removed when the write fails."""
    path = models_dir / ALIASES
    if path.is_dir():
        raise ArtifactError(f"{path}: cannot be written (a folder is in its place)")
    try:
        replace_files(models_dir, {ALIASES: json.dumps(aliases, indent=2, sort_keys=True) + "\n"})
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be written ({exc.strerror or exc})") from None
