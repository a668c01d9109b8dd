"""Where a sweep's output goes: mixopt's own lines on the console, everything else in log files.

The console of a sweep shows one mixopt line per event (:mod:`mixopt.sweep.progress`). What the
libraries under it say goes to files:

- in the driver, :func:`driver_log` sends every log record (Ray's, MLflow's, alembic's, Python
  warnings through ``logging.captureWarnings``) to ``STORAGE/<name>/driver.log`` for the time of a
  sweep, and back as it was after; the file is created at its first record;
- each trial's own output (its stdout, stderr, warnings, progress bars) stays in Ray's worker log
  files: the driver joins Ray with ``log_to_driver=False`` (:func:`mixopt.sweep.tuner.ray_init`),
  and the sweep says where they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from mixopt.config import Experiment

# Loggers that print to the console with handlers of their own (not through the root logger). Ray's
# is one too until the sweep joins Ray (mixopt.sweep.tuner.ray_init), which leaves its records to
# propagate here.
OWN_HANDLERS = ("mlflow", "alembic")
LOG_FILE = "driver.log"


class _LazyFile(logging.FileHandler):
    """A log file (and its folder) created at its first record: a sweep refused before it logs
    anything writes nothing."""

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def log_path(exp: Experiment) -> Path:
    """The driver's log file of the experiment's sweeps."""
    return Path(exp.storage).expanduser().resolve() / exp.name / LOG_FILE


@contextlib.contextmanager
def driver_log(exp: Experiment) -> Iterator[Path]:
    """For the time of the block, every log record of this process goes to :func:`log_path` (at
    INFO and above, Ray's and MLflow's own levels kept), none to the console; Python warnings too."""
    path = log_path(exp)
    handler = _LazyFile(path, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = [(name, logging.getLogger(name)) for name in OWN_HANDLERS]
    before = [(log, list(log.handlers), log.propagate) for _, log in saved]
    for _, log in saved:
        log.handlers = [handler]
        log.propagate = False
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        for log, handlers, propagate in before:
            log.handlers = handlers
            log.propagate = propagate
        handler.close()


def logs_line(exp: Experiment, ray_logs: str | None) -> str:
    """Where the logs are, for the console: ``ray_logs`` is the folder of Ray's logs on this machine
    (None: on the cluster's nodes, which the Ray dashboard shows)."""
    trials = f"Ray's worker logs in {ray_logs}" if ray_logs else "Ray's worker logs (the Ray dashboard)"
    return f"logs: the trials' own output in {trials}; Ray's, MLflow's and warnings in {log_path(exp)}"
