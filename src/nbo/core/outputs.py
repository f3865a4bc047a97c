"""Whether a command can write where it was told to, asked before it does any work.

A command that learns only at its last step that ``--out`` or ``--models-dir`` cannot be
written has wasted the run (training, a campaign, a comparison) and, worse, ends in a
traceback. These checks run first and name the flag and the problem in one line.

Permission bits are not asked (``os.access``): they say yes to root everywhere, also in
``/proc`` or on a read-only mount. A file is created in the folder and removed instead,
which is what the command will do (nbo writes every file beside its final name and
renames it).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from nbo.core.errors import NboError

# The mode of a file holding customers' data: its owner's alone, whatever the umask.
OWNER_ONLY = 0o600


class OutputError(NboError):
    """An output (a file or a folder) that cannot be written, naming the flag."""


def create_private(path: Path) -> None:
    """An empty file at ``path`` (emptied if there), readable and writable by its owner
    only whatever the umask: a writer that opens the path next (pyarrow, SQLite) keeps
    that mode, and so does the rename that puts it in place. For files holding
    customers' data (campaign files, the store)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY)
    try:
        os.fchmod(descriptor, OWNER_ONLY)
    finally:
        os.close(descriptor)


def check_output_file(path: Path, flag: str) -> None:
    """OutputError unless a file can be put at ``path``: an existing folder to put it in,
    no folder at the path itself, and files can be created beside it."""
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; name a file")
    check_output_parent(path, flag)


def check_output_parent(path: Path, flag: str) -> None:
    """OutputError unless the folder ``path`` is in exists and a new file or folder can
    be created in it (what is at ``path`` itself is the caller's to judge)."""
    where = f"{flag} {path}"
    folder = path.parent
    if not os.path.lexists(folder):
        raise OutputError(f"{where}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{where}: cannot be written ({folder} is not a folder)")
    _probe(folder, where)


def check_output_folder(folder: Path, flag: str) -> None:
    """OutputError unless ``folder`` is a folder files can be written in, or can be made
    one (with its missing parents)."""
    where = f"{flag} {folder}"
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{where}: exists and is not a folder")
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{where}: cannot be created ({existing} is not a folder)")
    _probe(existing, where)


def write_file(path: Path, text: str, flag: str, private: bool = False) -> Path:
    """Write a text file through a temporary one beside it, renamed over it once
    written, so a failure never leaves half of it; OutputError, naming ``flag``, when
    it cannot be written. ``private``: readable by its owner only (a person's data)."""
    check_output_file(path, flag)
    _write_all(path.parent, {path.name: text}, f"{flag} {path}", private)
    return path


def write_files_together(folder: Path, contents: Mapping[str, str], flag: str) -> list[Path]:
    """Write text files that belong together (a report's JSON and its page) into
    ``folder``, made if missing: each first under a temporary name, all renamed only
    once all are written, so a failure leaves the files there were before, never a new
    one beside an old or missing other. OutputError, naming ``flag``, when they cannot
    be written."""
    check_output_folder(folder, flag)
    for name in contents:
        if (folder / name).is_dir():
            raise OutputError(f"{flag} {folder}: {name} is a folder")
    _write_all(folder, contents, f"{flag} {folder}")
    return [folder / name for name in contents]


def _write_all(
    folder: Path, contents: Mapping[str, str], where: str, private: bool = False
) -> None:
    """``replace_files``, its failure as OutputError starting with ``where``."""
    try:
        replace_files(folder, contents, private)
    except OSError as exc:
        raise OutputError(f"{where}: cannot be written ({exc.strerror or exc})") from None


def replace_files(folder: Path, contents: Mapping[str, str], private: bool = False) -> None:
    """Each text to a temporary file in ``folder`` (made if missing), then each renamed
    to its name: a reader sees the old file or the new one, never half of one. OSError
    when that fails, with no temporary file left behind. ``private``: each file readable
    by its owner only, whatever the umask."""
    temporaries: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in contents.items():
            temporary = folder / f".{name}.{uuid.uuid4().hex[:8]}"
            temporaries.append(temporary)
            # A new file (O_EXCL), with the permissions the umask gives any other, or the
            # owner's alone.
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666
            )
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        for temporary, name in zip(temporaries, contents, strict=True):
            os.replace(temporary, folder / name)
    finally:
        for temporary in temporaries:
            with suppress(OSError):
                temporary.unlink(missing_ok=True)


def _probe(folder: Path, where: str) -> None:
    """Create a file in ``folder`` and remove it: OutputError, starting with ``where``
    (the flag and its value) and ending with the system's reason, when that fails."""
    try:
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=".nbo-probe-")
    except OSError as exc:
        raise OutputError(
            f"{where}: cannot be written (no file can be created in {folder}: "
            f"{exc.strerror or exc})"
        ) from None
    os.close(descriptor)
    with suppress(OSError):
        os.unlink(name)
