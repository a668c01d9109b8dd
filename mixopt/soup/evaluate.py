"""How the soup is scored: the trainer's own ``evaluate_checkpoint``, one metric of its result, and
the split of the dev rows that keeps the greedy soup's reported score honest.

:func:`trainer_evaluator` is the one place that looks the trainer's evaluation up, so that the
soup scores exactly as the trials were scored.

The greedy soup keeps an ingredient when the soup's dev score does not drop, so its score on the
rows it was chosen on is the maximum of several noisy measurements: biased upward. It therefore
selects on one half of each task's dev rows and reports its score on the other half
(:func:`split_dev_rows`), as a held-out set would.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt.data import iter_rows
from mixopt.optimizer.objective import composed_value
from mixopt.quiet import no_weight_bars
from mixopt.soup.ingredients import SoupError
from mixopt.trial import TrainerError, TrialResult, load_trainer

if TYPE_CHECKING:
    from mixopt.config import Experiment, TaskConfig

# ``evaluate(checkpoint)``; a :class:`TrainerEvaluate` also takes ``dev_rows=``.
Evaluate = Callable[[Path], TrialResult]
DevRows = Mapping[str, Collection[int]]

SPLIT_RULE = (
    "each task's dev rows alternate, in file order, between a selection half (1st, 3rd, 5th, ...) "
    "and a report half (2nd, 4th, ...): retrieval rows by query (all rows of one query on one side), "
    "classification, clustering and pair-classification rows within each label, other rows one by one"
)


class TrainerEvaluate:
    """The experiment trainer's ``evaluate_checkpoint`` bound to its tasks and options.

    ``evaluate(checkpoint, dev_rows=None)``; ``takes_dev_rows`` says whether the trainer accepts
    ``dev_rows`` (an optional part of the contract, :mod:`mixopt.trial`).
    """

    def __init__(self, fn: Callable[..., TrialResult], exp: Experiment) -> None:
        self.fn, self.target = fn, exp.trainer.target
        self.tasks, self.options = tuple(exp.tasks), exp.trainer.options
        self.weights = exp.objective_weights if exp.objective is not None else None
        try:
            self.takes_dev_rows = "dev_rows" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a builtin or C function: no signature to read
            self.takes_dev_rows = False

    def __call__(self, checkpoint: Path, dev_rows: DevRows | None = None) -> TrialResult:
        with no_weight_bars():
            if dev_rows is None:
                result = self.fn(checkpoint, self.tasks, self.options)
            else:
                result = self.fn(checkpoint, self.tasks, self.options, dev_rows=dev_rows)
        if self.weights is None:
            return result
        # The objective the trials reported (objective.weights), not the trainer's own default.
        objective = composed_value(self.weights, result.task_scores, None, "evaluate_checkpoint")
        return dataclasses.replace(result, objective=objective)

    def on(self, dev_rows: DevRows) -> Evaluate:
        """This evaluation limited to ``dev_rows``."""
        return lambda checkpoint: self(checkpoint, dev_rows)


def trainer_evaluator(exp: Experiment) -> TrainerEvaluate:
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
    return TrainerEvaluate(fn, exp)


@dataclass(frozen=True)
class DevSplit:
    """Per task, the positions (0-based, in read order) of the dev rows of each half."""

    select: dict[str, tuple[int, ...]]
    report: dict[str, tuple[int, ...]]

    def describe(self) -> str:
        counts = ", ".join(f"{t} {len(self.select[t])}/{len(self.report[t])}" for t in self.select)
        return f"{SPLIT_RULE} (rows selected on / reported on: {counts})"


def _group_and_stratum(kind: str, index: int, row: Any) -> tuple[Any, Any]:
    if kind == "retrieval":
        return row.query, None
    if kind in ("classification", "clustering", "pair_classification"):
        return index, row.label
    return index, None


def split_dev_rows(tasks: Sequence[TaskConfig]) -> DevSplit:
    """Split every task's dev rows by :data:`SPLIT_RULE`; SoupError if a half could not be scored.

    A half must hold a query (retrieval), 2 rows (STS), a row (classification), 2 labels
    (clustering) or both labels (pair classification), as the trainer's evaluation needs.
    """
    select: dict[str, tuple[int, ...]] = {}
    report: dict[str, tuple[int, ...]] = {}
    for task in tasks:
        kind = task.kind.value
        side_of_group: dict[Any, int] = {}
        seen_in_stratum: dict[Any, int] = {}
        halves: tuple[list[int], list[int]] = ([], [])
        labels: tuple[set[Any], set[Any]] = (set(), set())
        for i, row in enumerate(iter_rows(task.dev_file, kind)):
            group, stratum = _group_and_stratum(kind, i, row)
            if group not in side_of_group:
                n = seen_in_stratum.get(stratum, 0)
                side_of_group[group] = n % 2
                seen_in_stratum[stratum] = n + 1
            side = side_of_group[group]
            halves[side].append(i)
            if stratum is not None:
                labels[side].add(stratum)
        for side, name in ((0, "selection"), (1, "report")):
            rows = halves[side]
            groups = len({g for g, s in side_of_group.items() if s == side})
            short = {
                "retrieval": groups < 1,
                "sts": len(rows) < 2,
                "classification": len(rows) < 1,
                "clustering": len(labels[side]) < 2,
                "pair_classification": len(labels[side]) < 2,
            }[kind]
            if short:
                raise SoupError(
                    f"--method greedy: task {task.name!r} has too few dev rows ({len(halves[0]) + len(halves[1])}) "
                    f"to leave its {name} half scoreable once split ({SPLIT_RULE}); add dev rows "
                    "or use --method uniform"
                )
        select[task.name], report[task.name] = tuple(halves[0]), tuple(halves[1])
    return DevSplit(select, report)


def metric_problem(metric: str, tasks: Sequence[TaskConfig]) -> str | None:
    """Why the soup's evaluation cannot give MLflow metric ``metric`` (one line), or None when it can.

    The evaluation (the trainer's ``evaluate_checkpoint``) gives what :func:`metric_of` reads:
    ``objective``, ``score.<task>`` and the tasks' dev metrics ``<task>/<key>/d<dim>``; a trial's
    other metrics (``loss``, ``tokens_per_s``...) describe its training, which a soup has none of.
    """
    names = [t.name for t in tasks]
    task, slash, _ = metric.partition("/")
    if metric == "objective" or (metric.startswith("score.") and metric[len("score.") :] in names):
        return None
    if slash and task in names:
        return None
    return (
        f"--metric {metric!r}: the soup's evaluation gives objective, score.<task> and the tasks' dev "
        f"metrics (<task>/<key>/d<dim>), not {metric!r}, so the soup could not be compared with its "
        f"ingredients; rank by one of those (e.g. --metric score.{names[0]})"
        if names
        else f"--metric {metric!r}: the soup's evaluation gives objective and score.<task> only"
    )


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
