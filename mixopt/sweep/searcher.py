"""The Tune Searchers: over the MixtureOptimizer (the search), over a fixed list (the verification).

:class:`MixtureSearcher` asks the optimizer on suggest and tells it on completion: the trial's
per-task scores (``tell(proposal, value, scores=...)``; the optimizer composes the objective from
them), or its objective alone when it reported no complete set of scores. A failed trial is told
(None) only once the sweep's callback has read why it failed (:meth:`MixtureSearcher.settle`): a
failure of the infrastructure (no space, a dead worker, out of memory) says nothing of the
mixture, so it is never told; it stays pending, the sweep stops, and ``--resume`` runs it again.

With a multi-fidelity optimizer (``Experiment.multi_fidelity``: ``optimizer.multi_fidelity``, by
default on exactly when early stopping is; after ``--resume`` the saved state's) it also tells
the optimizer every intermediate objective a trial reports (``tell_partial`` at ``step /
trainer.steps``, with the report's per-task scores when it carries them,
:mod:`mixopt.sweep.scores`), and a trial stopped early by ASHA as a partial result at the
fraction it reached; without, a stopped trial's last value is told as its result (the
single-fidelity GP has no other place for it). With ``sweep.early_stopping.method: gp`` the
scheduler of :mod:`mixopt.sweep.stopping` asks :meth:`observe` whether to stop a trial.

:class:`FixedSearcher` runs the verification plan's unfinished trials and tells nobody.

Tune pickles its search algorithm with the experiment (``tuner.pkl``); both classes live at
module level, so they pickle by reference, with their parts (state, tracker, printer) as
attributes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ray.tune.search import Searcher

from mixopt import atomic
from mixopt.config import Experiment
from mixopt.optimizer import MixtureOptimizer
from mixopt.sweep.common import State
from mixopt.sweep.progress import Printer
from mixopt.sweep.scores import final_scores, report_scores
from mixopt.sweep.verify import PlannedTrial
from mixopt.tracking import SweepTracker, mixture_params

log = logging.getLogger("mixopt.sweep")


def search_seed(base: int, trial_id: str) -> int:
    """Trial ``trial-NNN`` trains with seed ``base + NNN``: every trial draws its own seed noise,
    so the GP's noise term absorbs it instead of the optimizer climbing one seed's landscape."""
    return base + int(trial_id.rsplit("-", 1)[-1])


class MixtureSearcher(Searcher):
    """Tune Searcher over the MixtureOptimizer: ask on suggest, tell on completion.

    Trials still running are pending in the optimizer, so the next worker to free up gets a
    proposal away from them at once (asynchronous, no batch barrier).
    """

    def __init__(
        self,
        state: State,
        tracker: SweepTracker,
        exp: Experiment,
        n_to_run: int,
        reruns: list[tuple[str, str, dict]],
        next_index: int,
        printer: Printer,
    ) -> None:
        super().__init__(metric="objective", mode="max")
        self.state, self.tracker, self.exp, self.printer = state, tracker, exp, printer
        self.n_to_run = n_to_run
        # Trials interrupted before a --resume: (trial id, MLflow run id, proposal), run first.
        self.reruns = reruns
        self.issued = 0
        self.index = next_index
        self.live: dict[str, tuple[str, str, dict]] = {}
        # The last (fraction, value) told per running trial, so a report is told once.
        self.reported: dict[str, tuple[float, float]] = {}
        self.metrics = {t.name: t.metric or "" for t in exp.tasks}
        self.stopped = False
        # Failed trials waiting for the callback to say why (Tune calls the searcher first).
        self.failed: dict[str, dict] = {}

    def stop(self) -> None:
        """Propose nothing more (a trial hit bad data: every later trial would read it too; or the
        infrastructure failed a trial: the sweep stops for ``--resume``)."""
        self.stopped = True

    def settle(self, tune_trial_id: str, tell: bool) -> None:
        """A failed trial's end, once its kind is known: told to the optimizer as a failure
        (``tell``), or left pending (an infrastructure failure, run again by ``--resume``)."""
        proposal = self.failed.pop(tune_trial_id, None)
        if proposal is not None and tell:
            self.state.optimizer.tell(proposal, None)

    def suggest(self, tune_trial_id: str) -> dict | None:
        if self.stopped or self.issued >= self.n_to_run:
            return Searcher.FINISHED
        opt = self.state.optimizer
        if self.reruns:
            trial_id, run_id, proposal = self.reruns.pop(0)
            origin = "rerun"
            try:
                first_origin = opt.origin(proposal)
            except ValueError:  # a run MLflow has and the saved state does not
                first_origin = origin
            self.tracker.restart_trial(
                run_id,
                mixture_params(proposal, self.exp.task_names)
                | {"origin": first_origin, "seed": str(search_seed(self.exp.trainer.seed, trial_id))},
            )
        else:
            proposal = opt.ask(1)[0]
            self.state.save()
            trial_id = f"trial-{self.index:03d}"
            self.index += 1
            origin = opt.origin(proposal)
            run_id = self.tracker.start_trial(
                trial_id,
                proposal,
                self.exp.task_names,
                origin,
                search_seed(self.exp.trainer.seed, trial_id),
            )
        self.issued += 1
        self.live[tune_trial_id] = (trial_id, run_id, proposal)
        self.printer.started(trial_id, origin, proposal)
        seed = search_seed(self.exp.trainer.seed, trial_id)
        return {"proposal": proposal, "trial_id": trial_id, "run_id": run_id, "seed": seed}

    def on_trial_result(self, tune_trial_id: str, result: dict) -> None:
        self.observe(tune_trial_id, result)

    def observe(self, tune_trial_id: str, result: dict, decide: bool = False) -> bool:
        """Tell a running trial's intermediate report to the optimizer (once per report:
        the ``gp`` early-stopping scheduler calls this before Tune calls on_trial_result);
        with ``decide``, whether ``sweep.early_stopping.method: gp`` stops the trial now."""
        if not self.state.optimizer.multi_fidelity or result.get("mixopt_final"):
            return False  # the final report is told by on_trial_complete
        live = self.live.get(tune_trial_id)
        value, fraction = _value(result), _fraction(result, self.exp.trainer.steps)
        if live is None or value is None or fraction is None:
            return False
        proposal = live[2]
        opt = self.state.optimizer
        if proposal not in opt.pending:
            return False
        report = (fraction, value)
        if self.reported.get(tune_trial_id) != report:
            scores = report_scores(_metrics(result), self.metrics)
            # With scores the optimizer composes the objective itself (the value is the same).
            opt.tell_partial(proposal, None if scores else value, fraction, scores=scores)
            self.reported[tune_trial_id] = report
        es = self.exp.sweep.early_stopping
        if not (decide and es.enabled and es.method == "gp") or fraction >= 1.0:
            return False
        if result["mixopt_step"] < es.grace(self.exp.trainer.steps):
            return False
        try:
            return opt.should_stop(proposal)
        except Exception as err:  # numerical trouble in the forecast must not end the sweep
            log.warning(
                "early stopping: no forecast for %s (%s: %s); it continues",
                live[0],
                type(err).__name__,
                err,
            )
            return False

    def on_trial_complete(self, tune_trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial_id, run_id, proposal = self.live.pop(tune_trial_id)
        self.reported.pop(tune_trial_id, None)
        if error:  # the callback's on_trial_error, which Tune calls next, settles it
            self.failed[tune_trial_id] = proposal
            return
        value = scores = None
        if not error and result is not None:
            value = _value(result)
            scores = final_scores(_metrics(result), self.exp.task_names)
        # Saved by the callback once MLflow has recorded the trial's end (Tune calls it next), so
        # "told in the saved state" always implies "closed in MLflow".
        stopped = not error and result is not None and not result.get("mixopt_final")
        fraction = _fraction(result or {}, self.exp.trainer.steps)
        if stopped and self.state.optimizer.multi_fidelity and fraction is not None and fraction < 1:
            # ASHA stopped it: its last value is a partial result at the fraction it reached, with
            # that report's own scores (Tune does not show a searcher the report that stops a trial
            # before on_trial_complete, so the last observed report's may be a step behind).
            here = report_scores(_metrics(result), self.metrics) if result is not None else None
            told, with_scores = _told(value, here)
            self.state.optimizer.tell(proposal, told, fraction=fraction, scores=with_scores)
        else:
            told, with_scores = _told(value, scores)
            self.state.optimizer.tell(proposal, told, scores=with_scores)

    # Tune checkpoints its search algorithm with the experiment. The optimizer state is the
    # searcher's whole memory (the driver also saves it after every ask and tell, which is what
    # --resume reads), so save/restore write and read that same state.
    def save(self, checkpoint_path: str) -> None:
        atomic.write_text(Path(checkpoint_path), json.dumps(self.state.optimizer.state_dict()))

    def restore(self, checkpoint_path: str) -> None:
        self.state.optimizer = MixtureOptimizer.from_state_dict(json.loads(Path(checkpoint_path).read_text()))


class FixedSearcher(Searcher):
    """A Tune Searcher over a fixed list of trials: the verification plan's unfinished ones.

    ``todo``: each planned trial with its MLflow run id (None: it has no run yet, one is started).
    """

    def __init__(
        self,
        todo: list[tuple[PlannedTrial, str | None]],
        tracker: SweepTracker,
        tasks: list[str],
        printer: Printer,
    ) -> None:
        super().__init__(metric="objective", mode="max")
        self.tracker, self.tasks, self.printer = tracker, tasks, printer
        self.queue = list(todo)
        # Running trials (trial id, MLflow run id, proposal): marked KILLED if the driver is stopped.
        self.live: dict[str, tuple[str, str, dict]] = {}
        self.stopped = False

    def stop(self) -> None:
        """Run nothing more (the infrastructure failed a trial: the sweep stops for ``--resume``)."""
        self.stopped = True

    def suggest(self, tune_trial_id: str) -> dict | None:
        if self.stopped or not self.queue:
            return Searcher.FINISHED
        t, run_id = self.queue.pop(0)
        if run_id is not None:
            self.tracker.restart_trial(
                run_id,
                mixture_params(t.proposal, self.tasks)
                | {"origin": "verify", "seed": str(t.seed), "verify.arm": t.arm},
            )
        else:
            run_id = self.tracker.start_trial(
                t.trial_id,
                t.proposal,
                self.tasks,
                "verify",
                t.seed,
                stage="verify",
                extra_tags={"mixopt.verify_arm": t.arm},
            )
            self.tracker.log_params(run_id, {"verify.arm": t.arm})
        self.printer.started(t.trial_id, t.arm[:4], t.proposal)
        self.live[tune_trial_id] = (t.trial_id, run_id, t.proposal)
        return {"proposal": t.proposal, "trial_id": t.trial_id, "run_id": run_id, "seed": t.seed}

    def on_trial_complete(self, tune_trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # Not told to the optimizer: the recommendation under test must not move.
        self.live.pop(tune_trial_id, None)

    # Tune checkpoints its searcher; resume itself reads verify_plan.json and MLflow, so the
    # checkpoint only has to hold the trials still queued.
    def save(self, checkpoint_path: str) -> None:
        queue = [{**t.to_json(), "run_id": run_id} for t, run_id in self.queue]
        atomic.write_text(Path(checkpoint_path), json.dumps(queue))

    def restore(self, checkpoint_path: str) -> None:
        queue = json.loads(Path(checkpoint_path).read_text())
        self.queue = [(PlannedTrial.from_json(d), d["run_id"]) for d in queue]


def _told(value: float | None, scores: dict[str, float] | None) -> tuple[float | None, dict | None]:
    """``(value, scores)`` for ``tell``: the scores alone when the trial has a value and scores
    (the optimizer composes the objective), else the value alone (None: a failed trial)."""
    return (None, scores) if value is not None and scores else (value, None)


def _metrics(result: dict) -> dict:
    """The trainer's metrics of a report: ``result["mixopt"]``, which Tune hands a searcher
    flattened into ``mixopt/<key>`` entries (in report order)."""
    if isinstance(result.get("mixopt"), dict):
        return result["mixopt"]
    return {k[len("mixopt/") :]: v for k, v in result.items() if k.startswith("mixopt/")}


def _value(result: dict) -> float | None:
    v = result.get("objective")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fraction(result: dict, steps: int) -> float | None:
    """The share of the step budget a report was made at (``mixopt_step / steps``), or None."""
    step = result.get("mixopt_step")
    if not isinstance(step, (int, float)) or step <= 0:
        return None
    return min(float(step) / steps, 1.0)
