"""``mixopt report``: one self-contained HTML page of a sweep.

:func:`write_report` reads the sweep through :mod:`mixopt.tracking.store` (:mod:`.data`), computes
the figures' numbers (:mod:`.analysis`) and writes the page (:mod:`.html`) atomically. The sweep
writes it at its end and logs it on its parent run; ``mixopt report`` writes it any time, mid-sweep
included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt import atomic
from mixopt.report.data import SweepData, load_sweep
from mixopt.report.html import render

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer

REPORT_ARTIFACT = "report.html"
# The report's figures as PNG images, beside the page and under this artifact folder of the run: a
# store whose UI shows no HTML still shows them. Drawn by kaleido, with a Chrome or Chromium of the
# machine's; without one the page alone is logged (the reason is in the sweep's driver.log).
REPORT_IMAGES = "report"
log = logging.getLogger("mixopt.report")


def write_report(
    out: Path,
    uri: str,
    experiment: str | None = None,
    run_id: str | None = None,
    optimizer: MixtureOptimizer | None = None,
    status: str | None = None,
    figures: list[tuple[str, Any]] | None = None,
) -> SweepData:
    """Write the report of sweep run ``run_id`` (else the newest sweep of ``experiment``) to ``out``.

    ``optimizer``: the sweep's live optimizer, when the caller has it (else rebuilt from the
    recorded state); ``status``: the sweep run's status to show, when the caller is about to set it
    (the sweep's end writes the page before it closes the run); ``figures``: a list that collects
    the page's figures as ``(name, plotly figure)``. Returns what was read. Raises LookupError (see :func:`load_sweep`) or ValueError (``out``
    is a folder); nothing is written then.
    """
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give the HTML file to write")
    data = load_sweep(uri, experiment, run_id)
    if status is not None:
        data.run_status = status
    page = render(data, optimizer, figures)
    atomic.write_text(out, page, mode=0o644, fsync=False)  # a report is for reading
    return data


def log_report(
    tracker: Any, storage: Path, optimizer: MixtureOptimizer, status: str, warn: Callable[[str], None]
) -> None:
    """At a sweep's end: write ``report.html`` beside its optimizer state and log it on the parent
    run. A report that cannot be made is a warning: it must never cost the sweep its record."""
    figures: list[tuple[str, Any]] = []
    try:
        path = Path(storage) / REPORT_ARTIFACT
        write_report(
            path, tracker.uri, run_id=tracker.parent_id, optimizer=optimizer, status=status, figures=figures
        )
        tracker.log_artifact(tracker.parent_id, path)
    except Exception as e:
        warn(f"could not write the sweep report: {type(e).__name__}: {e}")
        return
    try:
        folder = write_images(figures, Path(storage) / REPORT_IMAGES)
        tracker.log_artifact(tracker.parent_id, folder, REPORT_IMAGES)
    except Exception as e:  # no kaleido or no browser: the page is logged, its figures as images not
        log.warning("the report's figures were not logged as images: %s: %s", type(e).__name__, e)


def write_images(figures: list[tuple[str, Any]], folder: Path) -> Path:
    """Each ``(name, plotly figure)`` as ``folder/<name>.png`` (one browser for all of them)."""
    import plotly.io as pio

    folder.mkdir(parents=True, exist_ok=True)
    if figures:
        pio.write_images([f for _, f in figures], [folder / f"{name}.png" for name, _ in figures], width=1100)
    return folder


__all__ = [
    "REPORT_ARTIFACT",
    "REPORT_IMAGES",
    "SweepData",
    "load_sweep",
    "log_report",
    "write_images",
    "write_report",
]
