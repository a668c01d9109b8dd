"""Where a soup is written: what ``--force`` may replace, one soup at a time, the atomic write, and
what a killed soup left.

``--force`` replaces only an earlier soup, recognised by the marker file ``.mixopt-soup.json``
that every soup gets as it is renamed into place (:mod:`mixopt.owned`). Anything else (a directory
without the marker, a file, a symbolic link, the current directory or one above it, the filesystem
root) is refused before any work, and is left as it was.

A soup claims its ``--out`` before it writes (the claim file ``.<name>.soup-claim`` beside it,
:class:`mixopt.claim.Claim`): of two soups into one folder at once, the second is refused naming
the first, and writes nothing.

Temporary directories beside the target are named after their owner,
``.<name>.soup-tmp-<pid>@<host>-<random>`` (also ``soup-old``, ``soup-greedy``), so that the
next soup into the same folder can tell a leftover of a killed soup (its pid is dead on this
host) from the work of one still running, and remove only the former.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mixopt import atomic, owned
from mixopt.claim import Claim, Contended, Held
from mixopt.soup.ingredients import SoupError

MARKER = ".mixopt-soup.json"
_KEY = "mixopt_soup"
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"
_OWNED = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>soup-tmp|soup-old|soup-greedy)-(?P<pid>\d+)@(?P<host>[A-Za-z0-9._]+)-[a-z0-9_]+$"
)


def owned_prefix(target: Path, kind: str) -> str:
    """The ``mkdtemp`` prefix of a temporary directory of this process for ``target``."""
    return f".{Path(target).name}.{kind}-{os.getpid()}@{_HOST}-"


def claim_path(target: Path) -> Path:
    """The claim file of a soup writing ``target``."""
    return Path(target).parent / f".{Path(target).name}.soup-claim"


def is_soup(directory: Path) -> bool:
    """Whether ``directory`` holds the marker a soup gets when it is renamed into place."""
    return owned.has_marker(directory, MARKER, _KEY)


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse an ``out`` that exists, unless ``force`` and it is an earlier soup; writes nothing."""
    out = Path(out)
    if not os.path.lexists(out):
        return
    if not force:
        raise SoupError(
            f"{out} already exists; pass --force to replace an earlier soup, or choose another --out"
        )
    why = owned.refusal(out, MARKER, _KEY)
    if why is None:
        return
    if why == "a symbolic link":
        raise SoupError(
            f"--out {out} is a symbolic link; --force replaces only a soup directory mixopt wrote: "
            "remove the link or choose another --out"
        )
    if why == "a file":
        raise SoupError(
            f"--out {out} is a file, not an earlier soup; --force replaces only a soup directory "
            "mixopt wrote: choose another --out"
        )
    if why == "not marked":
        raise SoupError(
            f"--out {out} is not a soup mixopt wrote (no {MARKER} in it); --force replaces only an "
            "earlier soup: delete the directory yourself, or choose another --out"
        )
    raise SoupError(f"--out {out} is {why}; choose a new directory for the soup")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale(parent: Path, echo: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary directories that killed soups of this host left in ``parent``.

    Only names of this module's pattern whose pid is no longer running on this host; a
    ``soup-old`` directory holding the earlier soup of a target that no longer exists (killed
    between moving it aside and renaming the new one in) is put back first. Returns what was removed.
    """
    removed = []
    try:
        entries = sorted(Path(parent).iterdir())
    except FileNotFoundError:
        return removed
    for p in entries:
        m = _OWNED.match(p.name)
        if m is None or m["host"] != _HOST or not p.is_dir() or p.is_symlink():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        target = p.parent / m["name"]
        if m["kind"] == "soup-old" and (p / "d").is_dir() and not os.path.lexists(target):
            os.replace(p / "d", target)
            if echo:
                echo(f"{target}: put back the earlier soup a killed soup (pid {pid}) had moved aside")
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
        if echo:
            echo(f"removed {p}, left by a soup that was killed (pid {pid} is not running)")
    return removed


def write_marker(directory: Path, info: Mapping[str, Any]) -> None:
    """Write the soup marker into ``directory`` atomically (temp file, then rename)."""
    stamp = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname()}
    owned.write_marker(directory, MARKER, _KEY, {**stamp, **info})


@contextlib.contextmanager
def atomic_directory(
    target: Path,
    force: bool = False,
    info: Mapping[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success, mark it a soup and rename it.

    ``target`` is claimed first (:func:`claim_path`; :class:`SoupError` naming the soup that holds
    it), then checked (:func:`check_replaceable`), and stale temporary directories of killed soups
    in its folder are removed (:func:`clean_stale`). On an exception the temporary directory is
    removed and ``target`` is untouched. With ``force``, an earlier soup is replaced only once the
    new one is complete (moved aside, the new one renamed in, the old one deleted:
    :func:`mixopt.atomic.directory`); without, a ``target`` that appeared meanwhile is never
    replaced. ``info`` goes into the marker (which sweep, which runs). The claim is released at the end.
    """
    target = Path(target)
    check_replaceable(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    claim = Claim(claim_path(target), "written")
    try:
        stale = claim.acquire()
    except Held as e:
        h = e.holder
        who = "a soup that is starting" if h.pid < 0 else f"pid {h.pid} on {h.host} (since {h.since})"
        raise SoupError(
            f"--out {target} is being written by another soup, {who}; wait for it to end, or choose "
            f"another --out (its claim: {e.path})"
        ) from None
    except Contended as e:
        raise SoupError(f"--out {target}: {e}") from None
    try:
        if stale is not None and echo:
            echo(
                f"{target}: took over the claim of a soup that is gone (pid {stale.pid} on {stale.host}, "
                f"{stale.why_stale()})"
            )
        check_replaceable(target, force)  # again, now that no other soup can be writing it
        clean_stale(target.parent, echo)
        with atomic.directory(
            target,
            replace=force,
            tmp_prefix=owned_prefix(target, "soup-tmp"),
            old_prefix=owned_prefix(target, "soup-old"),
        ) as tmp:
            yield tmp
            write_marker(tmp, info or {})
    finally:
        claim.release()
