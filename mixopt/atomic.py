"""Atomic writes: a file or a directory appears whole under its name, or not at all.

A reader (a resumed sweep, the soup, a second driver, a person) may look at any moment, and a
writer may die at any moment (SIGKILL, a full disk, a pre-empted node). So nothing is written in
place: a file is written to a temporary file beside it, optionally ``fsync``ed, then renamed over
the target (``os.replace``, atomic within one filesystem); a directory is filled as a temporary
directory beside it, then renamed into place. On any error the temporary file or directory is
removed and the target is as it was.

What appears has the permissions a plain ``open()`` or ``mkdir()`` would have given under the
process's umask (files ``0666 & ~umask``, directories ``0777 & ~umask``), not the private ``0600``
/ ``0700`` of ``mkstemp`` / ``mkdtemp``: checkpoints and soups on a shared filesystem are read by
the team's other jobs.

Stdlib only, so the trainers (which know nothing of the service) write their checkpoints with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask_mode(bits: int) -> int:
    """``bits`` less the process's umask: the permissions ``open()`` or ``mkdir()`` would give."""
    umask = os.umask(0)  # the only portable way to read the umask is to set it; restore at once
    os.umask(umask)
    return bits & ~umask


def write_text(
    path: str | os.PathLike[str], text: str, *, mode: int | None = None, fsync: bool = True
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and a rename.

    ``mode``: the file's permissions (None: those ``open()`` gives, ``0666`` less the umask);
    ``fsync``: flush the data to the disk before the rename, so that after a crash the file is the
    old one or the whole new one. The parent folder is created if missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode(0o666) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def usual_permissions(root: str | os.PathLike[str]) -> None:
    """Give ``root`` and everything under it the permissions ``mkdir()`` and ``open()`` give.

    Directories ``0777 & ~umask``; files ``0666 & ~umask``, or ``0777 & ~umask`` when their owner
    may execute them. Symbolic links are left as they are (a chmod would reach their target).
    Libraries that write through a temporary file of their own (transformers' weight shards)
    leave ``0600`` files behind; a directory from :func:`directory` gets this before it appears.
    """
    dirs, files, exe = umask_mode(0o777), umask_mode(0o666), umask_mode(0o777)
    os.chmod(root, dirs)
    for here, subdirs, names in os.walk(root):
        for name in subdirs:
            p = os.path.join(here, name)
            if not os.path.islink(p):
                os.chmod(p, dirs)
        for name in names:
            p = os.path.join(here, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, exe if st.st_mode & stat.S_IXUSR else files)


@contextlib.contextmanager
def directory(
    target: str | os.PathLike[str],
    *,
    replace: bool = True,
    tmp_prefix: str | None = None,
    old_prefix: str | None = None,
) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; when the block ends without an error,
    give it the usual permissions (:func:`usual_permissions`) and rename it to ``target``.

    ``replace``: an earlier ``target`` is replaced; False: if ``target`` exists when the block
    ends (another writer made it meanwhile), :class:`FileExistsError` and nothing is replaced.
    The caller decides beforehand whether ``target`` is its own to replace.

    ``rename()`` cannot replace a non-empty directory, so an earlier ``target`` is first moved into
    a second temporary directory, the new one renamed in, and only then the old one deleted: if the
    rename fails, the old one is put back and never deleted while it is the only copy. On an error
    in the block the temporary directory is removed and ``target`` is untouched.

    ``tmp_prefix`` and ``old_prefix``: the names of the two temporary directories (default
    ``.<name>.tmp-`` and ``.<name>.old-``), so that a caller can recognise what a killed writer left.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix or f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        usual_permissions(tmp)
        if not replace and os.path.lexists(target):
            raise FileExistsError(
                f"{target} appeared while it was being written (another process wrote it); it was "
                "left as it is and nothing was written"
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    try:
        if os.path.lexists(target):
            old = Path(tempfile.mkdtemp(prefix=old_prefix or f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "d")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if os.path.lexists(old / "d") and not os.path.lexists(target):
                os.replace(old / "d", target)
            if not os.path.lexists(old / "d"):  # never delete the only copy of the old target
                shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
