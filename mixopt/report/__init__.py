"""``mixopt report``: one self-contained HTML page of a sweep.

:func:`write_report` reads the sweep through :mod:`mixopt.tracking.store` (:mod:`.data`), computes
the figures' numbers (:mod:`.analysis`) and writes the page (:mod:`.html`) atomically. The sweep
writes it at its end and logs it on its parent run; ``mixopt report`` writes it any time, mid-sweep
included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt import atomic
from mixopt.report.data import SweepData, load_sweep
from mixopt.report.html import render

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer

REPORT_ARTIFACT = "report.html"


def write_report(
    out: Path,
    uri: str,
    experiment: str | None = None,
    run_id: str | None = None,
    optimizer: MixtureOptimizer | None = None,
    status: str | None = None,
) -> SweepData:
    """Write the report of sweep run ``run_id`` (else the newest sweep of ``experiment``) to ``out``.

    ``optimizer``: the sweep's live optimizer, when the caller has it (else rebuilt from the
    recorded state); ``status``: the sweep run's status to show, when the caller is about to set it
    (the sweep's end writes the page before it closes the run). Returns what was read. Raises LookupError (see :func:`load_sweep`) or ValueError (``out``
    is a folder); nothing is written then.
    """
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give the HTML file to write")
    data = load_sweep(uri, experiment, run_id)
    if status is not None:
        data.run_status = status
    page = render(data, optimizer)
    atomic.write_text(out, page, mode=0o644, fsync=False)  # a report is for reading
    return data


def log_report(
    tracker: Any, storage: Path, optimizer: MixtureOptimizer, status: str, warn: Callable[[str], None]
) -> None:
    """At a sweep's end: write ``report.html`` beside its optimizer state and log it on the parent
    run. A report that cannot be made is a warning: it must never cost the sweep its record."""
    try:
        path = Path(storage) / REPORT_ARTIFACT
        write_report(path, tracker.uri, run_id=tracker.parent_id, optimizer=optimizer, status=status)
        tracker.log_artifact(tracker.parent_id, path)
    except Exception as e:
        warn(f"could not write the sweep report: {type(e).__name__}: {e}")


__all__ = ["REPORT_ARTIFACT", "SweepData", "load_sweep", "log_report", "write_report"]
