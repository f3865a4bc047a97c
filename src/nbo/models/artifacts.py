"""Versioned, self-describing model artifacts: written atomically, checked at load.

Layout: ``<models_dir>/<version>/`` holds plain ``.npy`` arrays (memory-mappable, loaded
with ``allow_pickle=False``), optional JSON side files, optional binary side files (a
pickled estimator, a Parquet table, a plot: written and checksummed here, never opened
here, so whoever reads one does so only after its checksum passed) and ``manifest.json``
with the sha256 of every file. A version is written to a hidden temporary folder, renamed into
place, and only then does ``<models_dir>/CURRENT`` flip to it. Versions are immutable.
Whenever CURRENT moves, ``<models_dir>/PREVIOUS`` names the version it named before (the
rollback target, the alias ``previous``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from nbo.core.checksums import sha256_file
from nbo.core.errors import ArtifactError, TemporarilyUnavailable
from nbo.core.ids import VERSION_NAME, VERSION_RULE

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
PREVIOUS = "PREVIOUS"
TRACKED_LIBRARIES = (
    "nbo",
    "implicit",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
)


@dataclass
class Artifact:
    """A loaded, verified artifact: its manifest, arrays (memory-mapped), JSON files, and
    the paths of all its files (checksums verified; binary side files are not opened)."""

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    documents: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, for the manifest."""
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def new_version(fingerprint: str, now: datetime | None = None) -> str:
    """A sortable, unique-enough version: UTC time plus the data fingerprint's prefix."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{fingerprint[:8]}"


def unique_version(models_dir: Path, fingerprint: str, now: datetime | None = None) -> str:
    """A new version name not yet used in ``models_dir`` (a suffix when two land in a second)."""
    base = new_version(fingerprint, now)
    version, n = base, 1
    while (models_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def write_artifact(
    models_dir: Path,
    version: str,
    arrays: dict[str, np.ndarray],
    documents: dict[str, Any],
    manifest: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a version atomically and flip CURRENT to it; never overwrite a version.

    ``extra_files``: file name -> bytes, written as they are and checksummed like the
    rest (names without a folder, not ``.npy``/``.json``, which are the arrays' and
    documents' own, nor the manifest).
    """
    extra_files = extra_files or {}
    for name in extra_files:
        _check_extra_name(name)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / version
    if final.exists():
        raise ArtifactError(f"model version {version} already exists in {models_dir}")
    staging = models_dir / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    # Any failure before the rename (a full disk, a quota, MemoryError, Ctrl-C) takes
    # the half-written staging folder with it: hidden, it would hold the disk space
    # that ran out, and no one would see it.
    try:
        files: dict[str, str] = {}
        for name, array in arrays.items():
            path = staging / f"{name}.npy"
            # In its own layout when it has one (a column-major array stays column-major,
            # and loads so), else row-major.
            contiguous = array.flags.c_contiguous or array.flags.f_contiguous
            np.save(path, array if contiguous else np.ascontiguousarray(array), allow_pickle=False)
            files[path.name] = sha256_file(path)
        for name, document in documents.items():
            path = staging / f"{name}.json"
            path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
            files[path.name] = sha256_file(path)
        for name, content in extra_files.items():
            path = staging / name
            path.write_bytes(content)
            files[path.name] = sha256_file(path)
        full_manifest = {
            "version": version,
            "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "libraries": library_versions(),
            **manifest,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2), encoding="utf-8")
        _fsync_dir_files(staging)
        os.rename(staging, final)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if (
            isinstance(error, OSError)
            and error.errno is not None
            and not str(error.filename or "").startswith(str(final))
        ):
            # The version's path, not the hidden staging one that is gone (nbo.cli's line).
            error.filename = str(final)
        raise
    set_current(models_dir, version)
    return final


def _check_extra_name(name: str) -> None:
    if (
        not name
        or name != Path(name).name
        or name.startswith(".")
        or name.endswith((".npy", ".json"))
        or name in (MANIFEST, CURRENT, PREVIOUS)
    ):
        raise ArtifactError(
            f"side file name {name!r}: use a plain file name, not .npy/.json, hidden or {MANIFEST}"
        )


def is_version_name(name: str) -> bool:
    """Whether ``name`` can name a version: a plain folder name (``VERSION_NAME``)."""
    return VERSION_NAME.fullmatch(name) is not None


def check_version_name(name: str, source: str) -> str:
    """``name``, or ArtifactError saying that ``source`` (where the name was read) names
    something that is not a version in the models folder."""
    if not is_version_name(name):
        raise ArtifactError(f"{source}: {name!r} is not a model version ({VERSION_RULE})")
    return name


def set_current(models_dir: Path, version: str) -> None:
    """Point CURRENT at a version, atomically (write a temp file, then replace); when it
    moves from another published version, PREVIOUS names that one afterwards."""
    check_version_name(version, f"cannot point {CURRENT} at {version!r}")
    if not (models_dir / version / MANIFEST).is_file():
        raise ArtifactError(f"cannot point CURRENT at {version}: no such model in {models_dir}")
    before = None
    if has_current(models_dir):
        try:
            before = current_version(models_dir)
        except ArtifactError:
            before = None
    _write_pointer(models_dir, CURRENT, version)
    # Only a version that could serve becomes PREVIOUS: after a CURRENT edited by hand to
    # a broken copy (which every worker refused), `--current previous` in an incident
    # would otherwise lead back to it instead of to the last good one.
    if before is not None and before != version and version_problem(models_dir, before) is None:
        # After CURRENT: a PREVIOUS left behind by a failed flip would name CURRENT itself.
        _write_pointer(models_dir, PREVIOUS, before)


def _write_pointer(models_dir: Path, name: str, version: str) -> None:
    pointer = models_dir / f".{name}.{uuid.uuid4().hex[:8]}"
    pointer.write_text(version + "\n", encoding="utf-8")
    os.replace(pointer, models_dir / name)


def current_version(models_dir: Path) -> str:
    """The version CURRENT points at; ArtifactError when there is no CURRENT
    (``has_current`` tells that case apart) or it names no version."""
    if not has_current(models_dir):
        raise ArtifactError(
            f"no model in {models_dir} (no {CURRENT} file): train one with 'nbo train'"
        )
    return _read_pointer(models_dir / CURRENT)


def previous_version(models_dir: Path) -> str | None:
    """The version CURRENT named before it last moved (None when it never moved, as
    after the first publication); ArtifactError when PREVIOUS names no version."""
    if not os.path.lexists(models_dir / PREVIOUS):
        return None
    return _read_pointer(models_dir / PREVIOUS)


def _read_pointer(pointer: Path) -> str:
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ArtifactError(f"{pointer} is not UTF-8 text (it holds a version's name)") from None
    except OSError as exc:
        # A folder, a link to nowhere, a file nbo may not read: a pointer all the same.
        raise ArtifactError(f"{pointer} cannot be read ({exc.strerror or exc})") from None
    if not version:
        raise ArtifactError(f"{pointer} is empty")
    # '../other/<version>' or an absolute path would load a model from outside the folder.
    return check_version_name(version, str(pointer))


def current_or_problem(models_dir: Path) -> tuple[str | None, str | None]:
    """For a listing: the version CURRENT names, or None and why not (None, None when
    there is no CURRENT at all: nothing published yet). ``GET /v1/models`` and the
    dashboard's models page both list it; neither refuses to list for a bad CURRENT."""
    if not has_current(models_dir):
        return None, None
    try:
        version = current_version(models_dir)
    except ArtifactError as exc:  # empty, unreadable, naming no version
        return None, str(exc)
    if not (models_dir / version / MANIFEST).is_file():
        # A hand-edited CURRENT, or its version deleted: listed as the serving one, it
        # hid that a restart would find no model.
        return None, f"{CURRENT} names {version}, which is no model in {models_dir}"
    return version, None


def trained_until(manifest: dict[str, Any]) -> int:
    """The last purchase of a model's training data (unix seconds; 0 when unknown): a
    purchase posted after it is not in the model."""
    last = manifest.get("data", {}).get("last_purchase")
    if not last:
        return 0
    moment = datetime.fromisoformat(last)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def read_trained_until(models_dir: Path, version: str) -> int:
    """``trained_until`` of a published version, from its manifest alone (no arrays
    loaded, nothing checked but that the manifest reads)."""
    path = models_dir / check_version_name(version, "model") / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"model {version}: {path} cannot be read ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"model {version}: {path} is not a manifest")
    return trained_until(manifest)


def has_current(models_dir: Path) -> bool:
    """Whether the folder has a CURRENT at all (nothing published yet when not), whatever
    it holds: a link to nowhere or a folder named CURRENT counts, and is not readable."""
    return os.path.lexists(models_dir / CURRENT)


def list_versions(models_dir: Path) -> list[str]:
    """Published versions, oldest first: folders with a manifest and a version's name (a
    hidden folder is one being written or being removed, never a version)."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir() if is_version_name(p.name) and (p / MANIFEST).is_file()
    )


def version_problem(models_dir: Path, version: str) -> str | None:
    """What keeps a published version from loading that a look at its manifest can
    tell (not JSON, another schema, another version's manifest, a file it lists
    missing), or None; not the checksums, which ``load_artifact`` reads every file for."""
    path = models_dir / version / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{MANIFEST} is missing"
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        return f"{MANIFEST} cannot be read ({exc})"
    if not isinstance(manifest, dict):
        return f"{MANIFEST} is not an object"
    if manifest.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {manifest.get('schema_version')} is not supported"
    if manifest.get("version") != version:
        return f"its manifest names version {manifest.get('version')!r}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its manifest lists no files"
    missing = sorted(
        str(name)
        for name in files
        if str(name) != Path(str(name)).name or not (models_dir / version / str(name)).is_file()
    )
    if missing:
        return f"file {missing[0]} is missing" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        )
    for name in sorted(str(n) for n in files if str(n).endswith(".npy")):
        short = _cut_short(models_dir / version / name)
        if short is not None:
            return f"file {name} is {short}"
    return None


def _cut_short(path: Path) -> str | None:
    """Why an array file cannot hold the array its header describes (a half-written
    copy), from its header alone, or None: a few bytes read, not the checksum
    ``load_artifact`` reads the whole file for."""
    try:
        with path.open("rb") as handle:
            major, _minor = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except (OSError, ValueError) as exc:
        return f"not a readable array ({exc})"
    size = path.stat().st_size
    if size < expected:
        return f"cut short ({size:,} of {expected:,} bytes)"
    return None


# A version being removed is renamed to this hidden prefix first, then deleted: a removal
# cut short leaves a hidden folder (removed by the next), never half a version.
REMOVING_PREFIX = ".removing-"


def remove_version(models_dir: Path, version: str) -> None:
    """Remove a published version: renamed to a hidden name first (atomically: from then
    on no one lists or loads it), then deleted."""
    check_version_name(version, "model")
    hidden = models_dir / f"{REMOVING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(models_dir / version, hidden)
    except OSError as exc:
        raise ArtifactError(f"model {version}: cannot be removed ({exc.strerror or exc})") from None
    shutil.rmtree(hidden, ignore_errors=True)


# A version is written under this hidden prefix, then renamed to its name: a training
# killed while publishing leaves one behind (a model's size), never half a version.
STAGING_PREFIX = ".tmp-"
# The file a training locks (``lock_models_dir``); it holds the holder's pid.
LOCK_FILE = ".lock"
# A staging folder this old is no training's (a publication takes seconds), so it may be
# removed without the lock.
STALE_STAGING_S = 3600.0


class ModelsDirBusy(TemporarilyUnavailable):
    """Another training holds the models folder: try again once it is done."""


@contextmanager
def lock_models_dir(models_dir: Path) -> Iterator[None]:
    """Hold the models folder for one training, from before it reads CURRENT to after it
    publishes: two trainings at once each gated against the CURRENT they read before
    their fit, and the last to finish won. A second one is refused at once
    (``ModelsDirBusy``, naming the holder's pid), not queued: a nightly job that finds
    last night's still running should not pile up behind it. ``flock``: released by the
    kernel when the holder dies, so a killed training never leaves the folder locked."""
    made = not models_dir.exists()
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    published = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ModelsDirBusy(
                f"{models_dir} is held by another training (pid {holder}): one training "
                "publishes into a models folder at a time; try again when it is done"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
        published = True
    finally:
        # A training that failed in a folder it made (bad input found after it began)
        # leaves no empty models folder behind: bad input stores nothing.
        if made and not published and [p.name for p in models_dir.iterdir()] == [LOCK_FILE]:
            path.unlink(missing_ok=True)
            models_dir.rmdir()
        os.close(fd)


def models_dir_locked(models_dir: Path) -> bool:
    """Whether a training holds the folder now (``lock_models_dir``)."""
    path = models_dir / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_staging(models_dir: Path, locked: bool) -> list[str]:
    """Delete the staging folders trainings killed while publishing left behind; their
    names. ``locked``: the caller holds ``lock_models_dir``, so no training is writing
    one and every one is stale; else only those untouched for ``STALE_STAGING_S``."""
    if not models_dir.is_dir():
        return []
    now = time.time()
    found = []
    for path in sorted(models_dir.glob(f"{STAGING_PREFIX}*")):
        if not path.is_dir():
            continue
        if not locked and now - path.stat().st_mtime < STALE_STAGING_S:
            continue
        shutil.rmtree(path, ignore_errors=True)
        found.append(path.name)
    return found


def remove_leftovers(models_dir: Path) -> list[str]:
    """Delete the hidden folders removals cut short left behind; their names."""
    found = sorted(p.name for p in models_dir.glob(f"{REMOVING_PREFIX}*") if p.is_dir())
    for name in found:
        shutil.rmtree(models_dir / name, ignore_errors=True)
    return found


def load_artifact(models_dir: Path, version: str | None = None, mmap: bool = True) -> Artifact:
    """Load and verify a version (CURRENT when None); raise ArtifactError if it must not serve."""
    version = version or current_version(models_dir)
    check_version_name(version, "model")
    path = models_dir / version
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"model {version}: {manifest_path} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model {version}: manifest.json is not valid JSON ({exc})") from None
    schema = manifest.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"model {version}: schema version {schema} is not supported "
            f"(this nbo reads schema {SCHEMA_VERSION}); retrain with this version of nbo"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"model {version}: manifest lists no files")
    arrays: dict[str, np.ndarray] = {}
    documents: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for name, expected in files.items():
        file = path / name
        if name != Path(name).name:
            raise ArtifactError(f"model {version}: file name {name!r} points outside the model")
        if not file.is_file():
            raise ArtifactError(f"model {version}: file {name} is missing")
        if sha256_file(file) != expected:
            raise ArtifactError(f"model {version}: file {name} is corrupt (checksum mismatch)")
        try:
            if name.endswith(".npy"):
                arrays[name.removesuffix(".npy")] = np.load(
                    file, mmap_mode="r" if mmap else None, allow_pickle=False
                )
            elif name.endswith(".json"):
                documents[name.removesuffix(".json")] = json.loads(file.read_text("utf-8"))
        except (ValueError, OSError) as exc:
            raise ArtifactError(f"model {version}: file {name} cannot be read ({exc})") from None
        paths[name] = file
    return Artifact(path=path, manifest=manifest, arrays=arrays, documents=documents, files=paths)


def _fsync_dir_files(folder: Path) -> None:
    """Flush every file so a crash after the rename never leaves a half-written version."""
    for file in folder.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
