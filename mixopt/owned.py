"""Folders a mixopt command writes whole and may later replace: only its own, by a marker file.

A command that writes a folder (``mixopt synth``, ``mixopt soup``) builds it beside its target and
renames it into place (:func:`mixopt.atomic.directory`), replacing the earlier one. So that it
never replaces a folder it did not write, every folder it writes holds a marker file, a small JSON
object with the command's key set (``{"mixopt_soup": 1, ...}``), and the command replaces only a
folder that holds its marker. Anything else is refused before any work and left as it was: a
folder without the marker, a file, a symbolic link, the current directory or one above it, and
the filesystem root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mixopt import atomic


def has_marker(directory: str | os.PathLike[str], marker: str, key: str) -> bool:
    """Whether ``directory/marker`` is a regular file holding a JSON object with ``key`` set."""
    path = Path(directory) / marker
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get(key))
    except (OSError, ValueError, AttributeError):
        return False


def write_marker(directory: str | os.PathLike[str], marker: str, key: str, info: dict[str, Any]) -> None:
    """Write ``directory/marker``: ``{key: 1, **info}`` as sorted JSON, atomically."""
    text = json.dumps({key: 1, **info}, indent=1, sort_keys=True) + "\n"
    atomic.write_text(Path(directory) / marker, text, fsync=False)


def refusal(out: str | os.PathLike[str], marker: str, key: str, *, empty_ok: bool = False) -> str | None:
    """Why ``out`` may not be replaced by the command whose marker is ``marker``; None when it may.

    None: ``out`` does not exist, or is a folder holding the marker (or, ``empty_ok``, an empty
    folder). Otherwise what ``out`` is, as the end of a sentence starting ``--out OUT is ...``:
    ``"a symbolic link"``, ``"a file"``, ``"the filesystem root"``, ``"the current directory or one
    above it (REAL)"``, or ``"not marked"`` (a folder without the marker).
    """
    out = Path(out)
    if not os.path.lexists(out):
        return None
    if out.is_symlink():
        return "a symbolic link"
    if not out.is_dir():
        return "a file"
    real, cwd = out.resolve(), Path.cwd().resolve()
    if real == Path(real.anchor):
        return "the filesystem root"
    if real == cwd or real in cwd.parents:
        return f"the current directory or one above it ({real})"
    if has_marker(out, marker, key):
        return None
    if empty_ok and not any(out.iterdir()):
        return None
    return "not marked"
