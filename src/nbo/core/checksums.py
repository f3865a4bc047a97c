"""sha256 of files: data fingerprints for the trainer, integrity checks for artifacts."""

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large files do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(root: Path, files: list[Path]) -> str:
    """Hex sha256 of several files under ``root`` as one: each file's path relative to
    ``root`` and its bytes, in the order given. Renaming, moving (to another partition),
    adding or changing a file changes it; where ``root`` lives does not."""
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()
