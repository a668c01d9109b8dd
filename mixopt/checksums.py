"""SHA-256 of every file of a checkpoint directory, written beside it and verified before use.

A checkpoint travels through shared storage, copies and artifact stores before the soup reads
it; a flipped block in a weight file still parses as safetensors and averages into a model that
loads and runs, only wrong. So the writer of a checkpoint records, as its very last step, the
SHA-256 of each of its files in ``mixopt_checksums.json``:

    {"algorithm": "sha256", "files": {"<relative/posix/path>": "<hex digest>", ...}}

and a reader verifies every listed file (and that no weight file is unlisted) before using it.
Stdlib only, so the trainer (which knows nothing of the soup) and the soup share it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mixopt import atomic

CHECKSUMS_FILE = "mixopt_checksums.json"
ALGORITHM = "sha256"
# Files a reader must find listed: an unlisted weight file would be averaged unverified.
_WEIGHT_SUFFIXES = (".safetensors",)


class ChecksumError(ValueError):
    """A checkpoint's files do not match the checksums recorded when it was written."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != CHECKSUMS_FILE
    )


def digests(directory: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of every regular file under ``directory`` (its manifest included), by relative POSIX path."""
    directory = Path(directory)
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def write_checksums(directory: str | os.PathLike[str]) -> Path:
    """Record the SHA-256 of every file under ``directory`` in ``directory/mixopt_checksums.json``.

    Call it last, once every other file is written; the manifest itself is written atomically
    (temp file, fsync, rename), so a reader sees the whole manifest or none.
    """
    directory = Path(directory)
    manifest = {"algorithm": ALGORITHM, "files": {f: sha256_file(directory / f) for f in _files(directory)}}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic.write_text(directory / CHECKSUMS_FILE, text)
    return directory / CHECKSUMS_FILE


def manifest_sha256(directory: str | os.PathLike[str]) -> str | None:
    """SHA-256 of ``directory``'s ``mixopt_checksums.json`` (recorded with the run), or None if unreadable."""
    try:
        return sha256_file(Path(directory) / CHECKSUMS_FILE)
    except OSError:
        return None


def verify_checksums(
    directory: str | os.PathLike[str], label: str, manifest_digest: str | None = None
) -> bool:
    """Check every file of ``directory`` against its ``mixopt_checksums.json``.

    Returns False when there is no manifest (a checkpoint written before checksums existed, or by
    a trainer that does not write them); True when every listed file matches and every weight
    file is listed. ``manifest_digest`` (from the run's MLflow tag) must then be the manifest's
    own SHA-256, so that a manifest rewritten together with the files is caught too. Raises
    :class:`ChecksumError` naming ``label`` and the file otherwise.
    """
    directory = Path(directory)
    path = directory / CHECKSUMS_FILE
    if not path.exists():
        if manifest_digest:
            raise ChecksumError(
                f"{label}: {path} is missing, but its run recorded one; the checkpoint was altered — drop this run"
            )
        return False
    if manifest_digest and sha256_file(path) != manifest_digest:
        raise ChecksumError(
            f"{label}: {path} is not the one recorded on its MLflow run (tag mixopt.checkpoint_checksums); "
            "the checkpoint was rewritten after training — drop this run"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("algorithm") != ALGORITHM or not isinstance(files, dict):
            raise ValueError(f"expected algorithm {ALGORITHM!r} and a 'files' mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChecksumError(
            f"{label}: {path} is unreadable ({e}); the checkpoint cannot be verified — drop this run"
        ) from None
    for rel, digest in sorted(files.items()):
        f = directory / rel
        if not f.is_file():
            raise ChecksumError(
                f"{label}: {f} is missing but listed in {CHECKSUMS_FILE}; the checkpoint is incomplete — drop this run"
            )
        actual = sha256_file(f)
        if actual != digest:
            raise ChecksumError(
                f"{label}: {f} has SHA-256 {actual[:12]}…, but {digest[:12]}… was recorded when the "
                "checkpoint was written: the file is corrupted — drop this run or restore the file"
            )
    unlisted = [f for f in _files(directory) if f.endswith(_WEIGHT_SUFFIXES) and f not in files]
    if unlisted:
        raise ChecksumError(
            f"{label}: weight file {directory / unlisted[0]} is not in {CHECKSUMS_FILE} (added after the "
            "checkpoint was written?); remove it or drop this run"
        )
    return True
