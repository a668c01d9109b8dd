"""How the soup is scored: the trainer's own ``evaluate_checkpoint``, and one metric of its result.

:func:`trainer_evaluator` is the one place that looks the trainer's evaluation up, so that the
soup scores exactly as the trials were scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mixopt.soup.ingredients import SoupError
from mixopt.trial import TrainerError, TrialResult, load_trainer

if TYPE_CHECKING:
    from mixopt.config import Experiment

Evaluate = Callable[[Path], TrialResult]


def trainer_evaluator(exp: Experiment) -> Evaluate:
    """The experiment trainer's ``evaluate_checkpoint(checkpoint, tasks, options)``, bound to ``exp``.

    Imported lazily from the module of ``trainer.target``, so the soup evaluates exactly as the
    trials were evaluated.
    """
    try:
        fn = load_trainer(exp.trainer.target).require(
            "evaluate_checkpoint",
            "the soup cannot be evaluated with it (does this trainer write checkpoints?)",
        )
    except TrainerError as e:
        raise SoupError(str(e)) from e
    tasks, options = tuple(exp.tasks), exp.trainer.options

    def evaluate(checkpoint: Path) -> TrialResult:
        return fn(checkpoint, tasks, options)

    return evaluate


def metric_of(result: TrialResult, metric: str) -> float:
    """The value of MLflow metric name ``metric`` in a :class:`TrialResult`.

    ``objective`` -> ``result.objective``; ``score.<task>`` -> ``result.task_scores[task]``;
    anything else -> ``result.task_metrics[metric]``.
    """
    if metric == "objective":
        return float(result.objective)
    if metric.startswith("score.") and metric[len("score.") :] in result.task_scores:
        return float(result.task_scores[metric[len("score.") :]])
    if metric in result.task_metrics:
        return float(result.task_metrics[metric])
    raise SoupError(
        f"the evaluation has no metric {metric!r}; it has objective, "
        f"{', '.join('score.' + t for t in result.task_scores)} and {', '.join(result.task_metrics)}"
    )
