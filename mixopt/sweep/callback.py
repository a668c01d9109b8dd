"""The Tune Callback: driver-side MLflow logging of every trial event (the store's single writer)."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.common import State
from mixopt.sweep.progress import Printer
from mixopt.tracking import CHECKPOINT, SweepTracker


def make_callback(tracker: SweepTracker, printer: Printer, exp: Experiment, state: State):
    from ray import tune

    class SweepCallback(tune.Callback):
        """Driver-side MLflow logging of every trial event (the single writer to the store)."""

        def __init__(self) -> None:
            self.node_logged: set[str] = set()
            self.attempts: dict[str, int] = {}
            self.busy_since: dict[str, float] = {}
            self.busy_total = 0.0
            self.first_start: float | None = None
            self.last_end: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            now = time.monotonic()
            self.first_start = self.first_start or now
            self.busy_since[trial.trial_id] = now

        def _busy_end(self, trial) -> None:
            t0 = self.busy_since.pop(trial.trial_id, None)
            self.last_end = time.monotonic()
            if t0 is not None:
                self.busy_total += self.last_end - t0

        def idle_fraction(self, slots: int) -> float | None:
            """Share of slot time, from the first trial's start to the last one's end, with no trial."""
            if self.first_start is None or self.last_end is None or self.last_end <= self.first_start:
                return None
            return max(0.0, 1.0 - self.busy_total / (slots * (self.last_end - self.first_start)))

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            run_id = trial.config["run_id"]
            metrics = result.get("mixopt") or {}
            step = int(result.get("mixopt_step", 0))
            if not result.get("mixopt_final"):
                tracker.log_metrics(run_id, metrics, step)
            node = result.get("mixopt_node")
            if node and run_id not in self.node_logged:
                self.node_logged.add(run_id)
                tracker.set_tags(
                    run_id,
                    {
                        "ray.node_id": node,
                        "ray.trial_id": trial.trial_id,
                        "ray.node_ip": str(result.get("node_ip", "")),
                    },
                )

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._busy_end(trial)
            run_id, trial_id = trial.config["run_id"], trial.config["trial_id"]
            last = trial.last_result or {}
            objective = last.get("objective")
            tags = {}
            if last.get("mixopt_final"):
                tracker.log_metrics(run_id, last.get("mixopt") or {}, int(last.get("mixopt_step", 0)))
                if last.get("mixopt_checkpoint"):
                    tags[CHECKPOINT] = last["mixopt_checkpoint"]
                    if exp.sweep.log_checkpoints:
                        tracker.log_artifact(run_id, last["mixopt_checkpoint"], "checkpoint")
            else:
                tags["mixopt.stopped_early"] = "true"
                if objective is not None:
                    tracker.log_metrics(run_id, {"objective": objective}, int(last.get("mixopt_step", 0)))
            tracker.finish_trial(run_id, "FINISHED", tags=tags)
            state.save()
            printer.ended(trial_id, "FINISHED", objective)

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            # Tune retries the trial (sweep.retries): keep a trace of the failed attempt.
            self._busy_end(trial)
            run_id = trial.config["run_id"]
            self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
            tracker.set_tags(
                run_id,
                {
                    f"mixopt.attempt_{self.attempts[run_id]}_failure": error_reason(trial)[:4000],
                    "mixopt.retries": str(self.attempts[run_id]),
                },
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._busy_end(trial)
            run_id, trial_id = trial.config["run_id"], trial.config["trial_id"]
            reason = error_reason(trial)
            tracker.finish_trial(run_id, "FAILED", reason=reason, tags={"ray.trial_id": trial.trial_id})
            state.save()
            printer.ended(trial_id, "FAILED", None, reason=reason.splitlines()[-1] if reason else "unknown")

    return SweepCallback()


def error_reason(trial: Any) -> str:
    try:
        err = trial.get_error()
    except Exception:
        err = None
    if err is not None:
        cause = getattr(err, "cause", None) or err
        text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        # Ray wraps worker exceptions; the last line is the trainer's own message.
        return text.splitlines()[-1] if "Traceback" in text else text
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()[-2000:].strip()
    return "the trial's worker died without an error message (killed or out of memory)"


def trial_name(trial: Any) -> str:
    return str(trial.config.get("trial_id", trial.trial_id))
