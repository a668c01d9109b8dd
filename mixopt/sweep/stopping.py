"""Early stopping of running trials: Tune's ASHA, or the multi-fidelity GP's prediction.

``sweep.early_stopping.method: asha`` ranks trials at rungs (``grace_period`` steps, by default
half of ``trainer.steps``, then every ``reduction_factor``-fold); ``gp`` asks the optimizer after
every report, from ``grace_period`` steps on, whether the trial's predicted final value can still
beat the best finished trial (:meth:`mixopt.optimizer.MixtureOptimizer.should_stop`). Learning
curves of mixtures cross (small tasks are learnt first), so a rung's rank can stop the mixture that
would win at the end; the GP judges a curve by what it predicts at the end (bench/RESULTS.md,
"Multi-fidelity" and "Learning curves of the real trainer").
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from mixopt.config import Experiment
from mixopt.sweep.searcher import MixtureSearcher


def make_scheduler(exp: Experiment, searcher: MixtureSearcher) -> Any:
    """The Tune scheduler for ``exp.sweep.early_stopping`` (None when it is off)."""
    es = exp.sweep.early_stopping
    if not es.enabled:
        return None
    if es.method == "asha":
        return BudgetASHA(
            time_attr="mixopt_step",
            metric="objective",
            mode="max",
            max_t=exp.trainer.steps,
            grace_period=es.grace(exp.trainer.steps),
            reduction_factor=es.reduction_factor,
            # A trial that reaches the budget must still send its final report.
            stop_last_trials=False,
        )
    return PredictedStop(searcher)


class BudgetASHA(ASHAScheduler):
    """ASHA that lets a trial which has trained its whole budget finish.

    Its rungs run up to ``max_t`` (the step budget) and a trainer reports its last evaluation at
    that step before its final result: ASHA alone would stop a trial there that ranks low, after
    all its compute, and drop the final result and checkpoint it is about to send.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class PredictedStop(FIFOScheduler):
    """Stops a trial when the optimizer predicts it cannot beat the best finished one.

    Tune calls the scheduler before the searcher on each result, so the searcher's ``observe``
    tells the report to the optimizer here (once per report) and then decides.
    """

    def __init__(self, searcher: MixtureSearcher) -> None:
        super().__init__()
        self._searcher = searcher

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._searcher.observe(trial.trial_id, result, decide=True):
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE
