"""SIGTERM (a cluster scheduler's pre-emption) ends the sweep as Ctrl-C does: :func:`trap_sigterm`.

Ray installs its own SIGTERM handler in ``ray.init``, so the sweep joins Ray through
:func:`init_ray`, which puts this one back.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.common import Terminated
from mixopt.sweep.tuner import ray_init

# Set by the SIGTERM handler of trap_sigterm (the interrupt may reach run_sweep re-raised by Ray).
SIGTERM = threading.Event()


def trap_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread, as SIGINT raises KeyboardInterrupt.

    Called again after every ``ray.init``: Ray installs its own handler there (``sys.exit`` from
    inside the signal handler, which leaves the sweep and its trials RUNNING). A second SIGTERM
    while the first is being handled is ignored, so the cleanup (runs marked KILLED) completes.
    Ray's C++ core turns an exception raised by a signal handler during ``ray.get``/``ray.wait``
    into a plain KeyboardInterrupt, so the handler also sets ``SIGTERM``, which says which
    signal it was.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # a sweep run from a thread (a notebook's executor): signals are the caller's

    def terminated(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        SIGTERM.set()
        raise Terminated()

    signal.signal(signal.SIGTERM, terminated)


def init_ray(address: str | None, exp: Experiment) -> str | None:
    """:func:`mixopt.sweep.tuner.ray_init` (the folder of Ray's logs, when it started Ray), then this
    driver's SIGTERM handler back in place."""
    logs = ray_init(address, exp)
    trap_sigterm()
    return logs
