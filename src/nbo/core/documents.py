"""Configuration documents a person writes (the offer catalogue, experiments): YAML or
JSON files read into a mapping, every failure one line naming the file and the place.
``read_text`` is the reading alone, for the TOML files (training configs, mappings).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from nbo.core.errors import NboError

SUFFIXES: Final = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}

# (the file, the problem) -> the error to raise: each document kind has its own class.
ErrorFactory = Callable[[str, str], NboError]


def read_document(
    path: Path, what: str, sections: str, error: ErrorFactory, missing_hint: str = ""
) -> tuple[dict[str, Any], bytes]:
    """The file's top-level mapping and its bytes. ``what`` names the kind of file in
    messages ("a catalogue"), ``sections`` its top-level keys ("version, experiments")."""
    source = str(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise error(source, f"{what} is a .yaml, .yml or .json file")
    text, content = read_text(path, what, error, missing_hint)
    empty = f"the file is empty; {what} starts with 'version: 1'"
    if not text.strip():
        raise error(source, empty)
    try:
        raw = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise error(
            source, f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(source, f"not valid YAML{at}: {problem}") from None
    if raw is None:
        raise error(source, empty)
    if not isinstance(raw, dict):
        raise error(
            source, f"{what} is a mapping of sections ({sections}), not a {type(raw).__name__}"
        )
    return raw, content


def read_text(
    path: Path, what: str, error: ErrorFactory, missing_hint: str = ""
) -> tuple[str, bytes]:
    """The file's text and its bytes, for any file a person writes (catalogues, training
    configs, column mappings): a missing file, a folder, an unreadable or a non-UTF-8 file
    is one line naming the file, never a traceback. ``what`` names the kind of file
    ("a catalogue")."""
    source = str(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise error(
            source, "no such file" + (f" ({missing_hint})" if missing_hint else "")
        ) from None
    except IsADirectoryError:
        raise error(source, f"is a directory, not {what}") from None
    except OSError as exc:
        raise error(source, f"cannot be read: {exc.strerror or exc}") from None
    try:
        # "utf-8-sig": a byte-order mark (Notepad's "UTF-8 with BOM") is not text; TOML
        # would call it an invalid statement at line 1.
        return content.decode("utf-8-sig"), content
    except UnicodeDecodeError as exc:
        raise error(source, f"not UTF-8 text (byte {exc.start})") from None
