"""Progress on the terminal: one line per trial event, the table once at the end, the summary.

A trial's end prints ``[mixopt] trial-011 FINISHED objective=0.6340 | 12/48 done, best 0.634,
elapsed 14m, ~40m left``; the estimate is the mean time per finished trial so far times the trials
left (trials run concurrently, so it already accounts for the slots).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from mixopt.config import Experiment
from mixopt.human import duration
from mixopt.sweep.common import SweepSummary, top_weights
from mixopt.tracking import ui_url

log = logging.getLogger("mixopt.sweep")


def warn(message: str) -> None:
    """A warning the user must see (even with --quiet): on stderr, and to the log."""
    log.debug("warning: %s", message)
    print(f"[mixopt] warning: {message}", file=sys.stderr, flush=True)


class Printer:
    """Progress on the terminal: a line per event; :meth:`table` of the trials for the end."""

    def __init__(
        self,
        tasks: list[str],
        total: int,
        enabled: bool = True,
        already_done: int = 0,
        best: float | None = None,
    ):
        self.tasks, self.total, self.enabled = tasks, total, enabled
        self.rows: dict[str, dict[str, Any]] = {}
        self.best = best  # the best objective recorded before a --resume, if any
        self.already_done = already_done  # recorded before a --resume
        self.t0 = time.monotonic()

    def _out(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def started(self, trial_id: str, origin: str, proposal: Mapping[str, Any]) -> None:
        self.rows[trial_id] = {
            "origin": origin,
            "weights": top_weights(proposal, self.tasks),
            "status": "RUNNING",
            "objective": None,
        }
        self._out(f"[mixopt] {trial_id} started ({origin}): {top_weights(proposal, self.tasks)}")

    def ended(self, trial_id: str, status: str, objective: float | None, reason: str | None = None) -> None:
        row = self.rows.setdefault(
            trial_id, {"origin": "?", "weights": "", "status": status, "objective": None}
        )
        row.update(status=status, objective=objective)
        if objective is not None and (self.best is None or objective > self.best):
            self.best = objective
        row["best"] = self.best
        self._out(f"[mixopt] {trial_id} {status} {self._what(objective, reason)} | {self.progress()}")

    def note(self, text: str) -> None:
        """A line about the sweep as a whole (not one trial), e.g. the optimizer changing its model."""
        self._out(f"[mixopt] {text}")

    @staticmethod
    def _what(objective: float | None, reason: str | None) -> str:
        return f"objective={objective:.4f}" if objective is not None else f"reason: {reason}"

    def progress(self, now: float | None = None) -> str:
        """``12/48 done, best 0.634, elapsed 14m, ~40m left``."""
        ended = sum(r["status"] in ("FINISHED", "FAILED") for r in self.rows.values())
        done = self.already_done + ended
        elapsed = (now if now is not None else time.monotonic()) - self.t0
        best = "-" if self.best is None else f"{self.best:.3f}"
        out = f"{done}/{self.total} done, best {best}, elapsed {duration(elapsed)}"
        left = self.total - done
        if ended and left > 0:
            out += f", ~{duration(elapsed / ended * left)} left"
        return out


_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def failure_counts(trials: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Distinct failure reasons of the failed trials, most frequent first.

    Reasons that differ only in their numbers (a weight, a step, a memory size) are one reason,
    shown by its first example.
    """
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for t in trials:
        if t.get("status") == "FAILED":
            reason = t.get("failure") or "unknown"
            key = _NUMBER.sub("#", reason)
            counts[key] += 1
            example.setdefault(key, reason)
    return [(example[k], n) for k, n in counts.most_common()]


# A failed trial's cause class, from the kind the sweep recorded on its run (the FAILURE_KIND tag:
# mixopt.sweep.common's DATA, INFRASTRUCTURE, TRIAL), in words. Another recorded kind is named as it is.
CAUSES = {
    "trial": "the trainer raised",
    "data": "bad data",
    "infrastructure": "infrastructure (worker or node lost, out of memory, storage)",
}


def failure_causes(trials: list[dict[str, Any]]) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """The failed trials by cause class: (the class in words, its trials, its distinct reasons with
    their counts as :func:`failure_counts` gives them), the most frequent class first."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        if t.get("status") == "FAILED":
            by_kind.setdefault(t.get("failure_kind") or "unrecorded", []).append(t)
    out = [(CAUSES.get(kind, f"cause {kind!r}"), len(ts), failure_counts(ts)) for kind, ts in by_kind.items()]
    return sorted(out, key=lambda c: -c[1])


def cause_line(trials: list[dict[str, Any]]) -> str:
    """One line: each cause class of the failed trials with its count and reasons (the exception's
    line, the bad row, or what happened to the worker), as recorded."""
    return " | ".join(
        f"{words} ({n}x): " + "; ".join(f"{k}x {reason}" for reason, k in reasons)
        for words, n, reasons in failure_causes(trials)
    )


def trials_table(exp: Experiment, trials: list[dict[str, Any]]) -> str:
    """Every trial of the sweep: status, objective, best so far, top weights (printed once, at the end)."""
    head = f"{'trial':<10} {'origin':<7} {'status':<9} {'objective':>9} {'best':>8}  top weights"
    lines = [head, "-" * len(head)]
    best: float | None = None
    for t in trials:
        obj = t.get("objective") if t.get("status") == "FINISHED" else None
        if obj is not None and (best is None or obj > best):
            best = obj
        lines.append(
            f"{t['trial_id'] or '?':<10} {t.get('origin') or '':<7} {t['status'] or '?':<9} "
            f"{'' if obj is None else f'{obj:.4f}':>9} {'' if best is None else f'{best:.4f}':>8}  "
            f"{top_weights(t['proposal'], exp.task_names)}"
        )
    return "\n".join(lines)


def print_summary(exp: Experiment, s: SweepSummary) -> None:
    out = sys.stdout
    if s.trials:
        print("\n" + trials_table(exp, s.trials), file=out)
    print(
        f"\n[mixopt] sweep done in {duration(s.wall_seconds)}: {s.finished} finished, {s.failed} failed.",
        file=out,
    )
    if s.best is not None:
        proposal, value = s.best
        weights = ", ".join(f"{t}={proposal[t]:.3f}" for t in exp.task_names)
        hps = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in proposal.items()
            if k not in exp.task_names
        )
        print(f"[mixopt] best objective {value:.4f}: {weights}" + (f"; {hps}" if hps else ""), file=out)
    if s.idle_fraction is not None:
        print(
            f"[mixopt] trial slots idle {100 * s.idle_fraction:.1f}% of the time between the first trial's "
            "start and the last one's end",
            file=out,
        )
    print(
        f"[mixopt] MLflow: {s.tracking_uri}, experiment {s.experiment_name!r}, sweep run {s.parent_run_id}",
        file=out,
    )
    if s.tracking_uri.startswith("sqlite:"):
        print(
            f"[mixopt] inspect: make ui   (or: mlflow ui --backend-store-uri {s.tracking_uri}), then open "
            f"{ui_url('http://127.0.0.1:5000', s.experiment_id)}",
            file=out,
        )
    elif s.tracking_uri.startswith("http"):
        print(f"[mixopt] inspect: {ui_url(s.tracking_uri, s.experiment_id)}", file=out)
    report = s.storage_dir / "report.html"
    if report.is_file():
        print(f"[mixopt] report: {report}   (also on the parent run; `mixopt report` rewrites it)", file=out)
    causes = failure_causes(s.trials)
    if causes:
        print(f"[mixopt] {s.failed} trial(s) failed, by cause:", file=out)
        for words, _, reasons in causes:
            for reason, n in reasons:
                print(f"  {words}: {n}x {reason}", file=out)
    if s.finished:
        print(
            "[mixopt] next: mixopt soup --runs top5   (the final model; or: make soup)", file=out, flush=True
        )
    else:
        print(
            "[mixopt] no trial finished: fix the failure above and run the sweep again", file=out, flush=True
        )
