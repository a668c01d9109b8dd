"""Progress on the terminal: a line per trial event, a table, and the closing summary."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.common import SweepSummary, top_weights


class Printer:
    """Progress on the terminal: a line per event and a table of the trials so far."""

    def __init__(self, tasks: list[str], total: int, enabled: bool = True):
        self.tasks, self.total, self.enabled = tasks, total, enabled
        self.rows: dict[str, dict[str, Any]] = {}
        self.best: float | None = None

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
        done = sum(r["status"] in ("FINISHED", "FAILED") for r in self.rows.values())
        what = f"objective={objective:.4f}" if objective is not None else f"reason: {reason}"
        self._out(
            f"[mixopt] {trial_id} {status} {what}  (best so far {self.best if self.best is None else round(self.best, 4)}; "
            f"{done}/{self.total} done)"
        )
        self._out(self.table())

    def table(self) -> str:
        head = f"{'trial':<10} {'origin':<7} {'status':<9} {'objective':>9} {'best':>8}  top weights"
        lines = [head, "-" * len(head)]
        for tid, r in sorted(self.rows.items()):
            obj = "" if r["objective"] is None else f"{r['objective']:.4f}"
            best = "" if r.get("best") is None else f"{r['best']:.4f}"
            lines.append(f"{tid:<10} {r['origin']:<7} {r['status']:<9} {obj:>9} {best:>8}  {r['weights']}")
        return "\n".join(lines)


def print_summary(exp: Experiment, s: SweepSummary) -> None:
    out = sys.stdout
    print(
        f"\n[mixopt] sweep done in {s.wall_seconds:.0f}s: {s.finished} finished, {s.failed} failed.", file=out
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
        print(f"[mixopt] inspect: make ui   (or: mlflow ui --backend-store-uri {s.tracking_uri})", file=out)
    print("[mixopt] next: mixopt soup --runs top5   (the final model; or: make soup)", file=out, flush=True)
