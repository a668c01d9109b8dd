"""Log every open of a task split file by any Python process that starts with this folder on PYTHONPATH.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that holds one,
so putting this folder first on ``PYTHONPATH`` reaches every process a run starts: the sweep's
driver, its Ray workers (they inherit the driver's environment), the soup, pool workers. With
``MIXOPT_READ_LOG`` set to a file, an audit hook (``sys.addaudithook``, PEP 578) appends one JSON
line per ``open`` of a file named in :data:`WATCHED` (``{"pid", "path", "mode", "argv"}``) to it;
without the variable it does nothing.

``bench/real.py`` runs the real-data experiment under it and checks the log: no ``test.jsonl``
opened by the sweep, the verification or the soup; ``test.jsonl`` opened by the final evaluation
(the hook works); ``dev.jsonl`` opened by processes other than the driver (it reaches the workers).
What it cannot see: a read by native code that bypasses Python's ``open`` (no reader of mixopt's
task files does that).
"""

from __future__ import annotations

import json
import os
import sys
import threading

WATCHED = frozenset({"train.jsonl", "dev.jsonl", "test.jsonl"})
ENV = "MIXOPT_READ_LOG"
_state = threading.local()
_installed: list[str] = []


def _hook(log: str):
    def hook(event: str, args: tuple) -> None:
        if event != "open" or getattr(_state, "busy", False):
            return
        path = args[0] if args else None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str) or os.path.basename(path) not in WATCHED:
            return
        _state.busy = True  # our own os.open below raises an "open" event too
        try:
            line = json.dumps(
                {
                    "pid": os.getpid(),
                    "path": os.path.abspath(path),
                    "mode": str(args[1]) if len(args) > 1 else "",
                    "argv": sys.argv[:3],
                }
            )
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())  # one write of one line: appends never interleave
            finally:
                os.close(fd)
        finally:
            _state.busy = False

    return hook


def install(log: str) -> None:
    """Install the hook for ``log`` in this process (once; a hook cannot be removed)."""
    if log in _installed:
        return
    sys.addaudithook(_hook(os.path.abspath(log)))
    _installed.append(log)


if os.environ.get(ENV):
    install(os.environ[ENV])
