"""The Tune Callback: driver-side MLflow logging of every trial event (the store's single writer)."""

from __future__ import annotations

import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

import cloudpickle
from ray import exceptions as rex
from ray import tune

from mixopt.checksums import manifest_sha256
from mixopt.config import Experiment
from mixopt.sweep.common import DATA, INFRASTRUCTURE, TRIAL, State, failure_kind, no_space, out_of_memory
from mixopt.sweep.progress import Printer
from mixopt.sweep.retention import prune_during_sweep
from mixopt.tracking import CHECKPOINT, SweepTracker
from mixopt.tracking.tags import CHECKPOINT_CHECKSUMS, FAILURE_KIND


class SweepCallback(tune.Callback):
    """Driver-side MLflow logging of every trial event (the single writer to the store)."""

    def __init__(
        self,
        tracker: SweepTracker,
        printer: Printer,
        exp: Experiment,
        state: State,
        searcher: Any = None,
        verifier: Any = None,
    ) -> None:
        self.tracker, self.printer, self.exp, self.state = tracker, printer, exp, state
        # The search's MixtureSearcher: told each failure once its kind is known, stopped by bad
        # data. The verification's FixedSearcher tells nobody. Either stops on an infrastructure failure.
        self.searcher, self.verifier = searcher, verifier
        # The first trial that failed on bad data: (trial id, one-line reason); the search stops.
        self.data_error: tuple[str, str] | None = None
        # The first trial the infrastructure failed: (trial id, one-line reason); the sweep stops.
        self.infrastructure: tuple[str, str] | None = None
        self.node_logged: set[str] = set()
        # Per running trial: the step of its latest report and the metrics logged at that step.
        # The trainer reports its final evaluation at the last step and then returns it in its
        # result, so the final result repeats metrics already logged at that step.
        self.logged_at: dict[str, tuple[int, dict[str, float]]] = {}
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
            self.tracker.log_metrics(run_id, metrics, step)
            at, logged = self.logged_at.get(run_id, (step, {}))
            self.logged_at[run_id] = (step, {**logged, **metrics} if at == step else dict(metrics))
        node = result.get("mixopt_node")
        if node and run_id not in self.node_logged:
            self.node_logged.add(run_id)
            self.tracker.set_tags(
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
        logged = self.logged_at.pop(run_id, None)
        if last.get("mixopt_final"):
            step = int(last.get("mixopt_step", 0))
            self.tracker.log_metrics(run_id, not_yet_logged(last.get("mixopt") or {}, step, logged), step)
            if last.get("mixopt_checkpoint"):
                tags[CHECKPOINT] = last["mixopt_checkpoint"]
                digest = manifest_sha256(last["mixopt_checkpoint"])  # None: no manifest, or not readable here
                if digest:
                    tags[CHECKPOINT_CHECKSUMS] = digest
                if self.exp.sweep.log_checkpoints:
                    # Copied on the tracker's uploader thread: results and proposals do not wait.
                    self.tracker.upload_checkpoint(run_id, last["mixopt_checkpoint"])
        else:
            # Stopped early: its last report, objective included, is logged already (on_trial_result).
            tags["mixopt.stopped_early"] = "true"
        self.tracker.finish_trial(run_id, "FINISHED", tags=tags)
        self.state.save()
        self.printer.ended(trial_id, "FINISHED", objective)
        if self.exp.storage_keep is not None:
            prune_during_sweep(
                self.tracker,
                self.state.path.parent,
                self.exp.storage_keep,
                self.printer.enabled,
                self.exp.sweep.log_checkpoints,
            )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # Tune retries the trial (sweep.retries): keep a trace of the failed attempt.
        self._busy_end(trial)
        run_id = trial.config["run_id"]
        self.logged_at.pop(run_id, None)  # the retry reports from its first step again
        self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
        self.tracker.set_tags(
            run_id,
            {
                f"mixopt.attempt_{self.attempts[run_id]}_failure": error_reason(trial),
                "mixopt.retries": str(self.attempts[run_id]),
            },
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._busy_end(trial)
        run_id, trial_id = trial.config["run_id"], trial.config["trial_id"]
        self.logged_at.pop(run_id, None)
        reason, details, kind = error_reason(trial), error_details(trial), error_kind(trial)
        if self.searcher is not None:  # told before the state is saved below
            self.searcher.settle(trial.trial_id, tell=kind != INFRASTRUCTURE)
        if details:
            self.tracker.log_text(run_id, details, "failure.txt")
        self.tracker.finish_trial(
            run_id, "FAILED", reason=reason, tags={"ray.trial_id": trial.trial_id, FAILURE_KIND: kind}
        )
        self.state.save()
        self.printer.ended(trial_id, "FAILED", None, reason=reason)
        if kind == DATA and self.data_error is None:
            self.data_error = (trial_id, reason)
            if self.searcher is not None:
                self.searcher.stop()
        if kind == INFRASTRUCTURE:
            # Not the mixture's doing: nothing more starts, the trials running end, then the sweep
            # stops and --resume runs this trial again (its run is FAILED with this kind).
            self.infrastructure = self.infrastructure or (trial_id, reason)
            for searcher in (self.searcher, self.verifier):
                if searcher is not None:
                    searcher.stop()


def not_yet_logged(
    metrics: dict[str, float], step: int, logged: tuple[int, dict[str, float]] | None
) -> dict[str, float]:
    """``metrics`` less those a report already logged at ``step`` with the same value."""
    if logged is None or logged[0] != step:
        return dict(metrics)
    return {k: v for k, v in metrics.items() if logged[1].get(k) != v}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The last line of a traceback: "pkg.module.SomeError: message" (or a bare "SomeError").
_EXC_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Failed|Interrupt|Exit))(?::\s*(.*))?$"
)
DIED = "the trial's worker died without an error message (killed or out of memory)"
# Ray's own account of a dead worker runs to ~600 characters (kept in the run's failure.txt).
WORKER_DIED = (
    "the worker process died (killed, out of memory or crashed); Ray's report is in the run's failure.txt"
)


def _lost_worker(err: BaseException | None) -> bool:
    """Ray's errors for a trial whose process or node is gone (not an exception the trainer raised)."""
    lost = (
        rex.RayActorError,
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.OutOfMemoryError,
        rex.LocalRayletDiedError,
    )
    return isinstance(err, lost)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _trial_error(trial: Any) -> BaseException | None:
    """The exception the trial failed with, as Tune pickled it (RayTaskError wrapping the trainer's,
    or Ray's own for a dead worker); None when Tune kept only its text."""
    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                err = cloudpickle.load(f)
        except Exception:
            err = None
        if isinstance(err, BaseException):
            return err
    try:
        err = trial.get_error()
    except Exception:
        return None
    return err if isinstance(err, BaseException) else None


def error_details(trial: Any) -> str:
    """The full error of a failed trial (Ray's traceback, colour codes removed), for ``failure.txt``."""
    err = _trial_error(trial)
    if err is not None:
        return strip_ansi("".join(traceback.format_exception(type(err), err, err.__traceback__))).strip()
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return strip_ansi(Path(path).read_text(errors="replace")).strip()
    return ""


def one_line_reason(text: str) -> str:
    """The trainer's own message from a traceback text: its last ``SomeError: message`` line.

    Ray wraps a worker's exception (``ray::ImplicitFunc.train() (pid=…)``, the traceback, colour codes);
    the user needs the original exception's line, e.g. ``ValueError: task 'sts_1': ...``.
    """
    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _EXC_LINE.match(ln)
        if m:
            return f"{m.group(1)}: {m.group(2)}" if m.group(2) else m.group(1)
    return lines[-1] if lines else DIED


def _cause(err: BaseException) -> BaseException | None:
    """The exception the trainer raised, inside Ray's wrappers (None: Ray's own error)."""
    cause = getattr(err, "cause", None)
    while getattr(cause, "cause", None) is not None and cause is not cause.cause:
        cause = cause.cause  # nested Ray wrappers
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
        return cause
    return None


def error_kind(trial: Any) -> str:
    """``data``, ``infrastructure`` or ``trial`` (see :func:`mixopt.sweep.common.failure_kind`).

    The worker marks the trainer's exception with its kind; a worker or node that died is the
    infrastructure's failure.
    """
    err = _trial_error(trial)
    if err is None:
        return TRIAL
    if _lost_worker(err):
        return INFRASTRUCTURE
    cause = _cause(err)
    if cause is None:
        return INFRASTRUCTURE if no_space(err) is not None or out_of_memory(err) is not None else TRIAL
    return getattr(cause, "mixopt_failure_kind", None) or failure_kind(cause)


def error_reason(trial: Any) -> str:
    """One line: the exception the trainer raised, ``Type: message`` (for the tag and the terminal)."""
    err = _trial_error(trial)
    if _lost_worker(err):
        return WORKER_DIED
    if err is not None:
        cause = _cause(err)
        if cause is not None:
            message = strip_ansi(str(cause)).strip().splitlines()
            first = message[0] if message else ""
            return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
        return one_line_reason("".join(traceback.format_exception_only(type(err), err)))
    details = error_details(trial)
    return one_line_reason(details) if details else DIED
