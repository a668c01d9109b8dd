"""An analytic trial trainer: a closed-form learning curve instead of network training.

For fast orchestration tests (Ray, MLflow, resume, failures) and optimizer sanity checks, this
trainer turns the tasks' *shared vocabulary* into a score, mirroring the mechanism of
``mixopt.synth`` (training on task j teaches the words of j's view; task k benefits in proportion
to the words the two views share):

    V_k      = the set of words in task k's train texts (first ``max_rows`` rows)
    x_u(t)   = t · Σ_j w_j · [u ∈ V_j] / |V_j|          (steps spent on word u: a step on task j
                                                      is shared by the words of j's vocabulary)
    s_k(t)   = mean_{u ∈ V_k} (1 − exp(−rate · x_u(t)))  (the fraction of k's words learnt)
    objective = Σ_k c_k s_k(T)  (+ optional Gaussian noise; c_k: ``Trial.objective_weights``,
                                  else 1/K: the mean)

Each ``s_k`` is concave in the weights, so the best mixture for the mean is interior: neither
uniform (vocabulary sizes differ) nor a single task. The landscape depends on ``rate · steps``
only. When it is small, no task is near saturation and the optimum favours the tasks with the
fewest words (cheapest to learn); the default ``rate`` (10 per step) with the tiny experiment's
80 steps puts it where the real trainer's is: small-vocabulary tasks (classification, STS) saturate
on a small share of the steps, and the rest is worth more on retrieval, whose vocabulary is
largest. On ``mixopt synth``'s three tasks the optimum is about (retrieval 0.50, STS 0.28,
classification 0.22), 0.016 above uniform (tests/trainers/test_analytic.py checks it; the real
landscape is measured by ``bench/landscape.py``). Options can make chosen trials fail (raise,
return NaN, or kill the worker process) so the sweep's failure handling is tested for real.

Of the trainer contract (:mod:`mixopt.trial`) it provides :func:`train` and :class:`Options`; it
writes no checkpoint, so it has no ``evaluate_checkpoint`` (no soup), and no ``preflight``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mixopt.config import TaskConfig
from mixopt.data import ClassificationRow, PairClassificationRow, RetrievalRow, STSRow, iter_rows
from mixopt.optimizer.objective import check_objective, composed_value, equal_weights
from mixopt.trial import Report, Trial, TrialFailed, TrialResult, score_metrics


class Options(BaseModel):
    """Options of the analytic trainer (``trainer:`` keys besides target/steps/seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(10.0, gt=0, description="learning speed per step spent on a word")
    noise: float = Field(0.0, ge=0, description="sd of Gaussian noise added to the objective")
    max_rows: int = Field(500, ge=1, description="train rows read per task to build its vocabulary")
    seconds_per_step: float = Field(0.0, ge=0, description="sleep per step, to make trials take time")
    report_every: int = Field(5, ge=1)
    # Failure injection, keyed by task: a trial whose weight for the task exceeds the threshold...
    fail_above: dict[str, float] = {}  # ...raises TrialFailed
    nan_above: dict[str, float] = {}  # ...returns a NaN objective
    exit_above: dict[str, float] = {}  # ...kills its own process (os._exit), as an OOM kill would


def _texts(row) -> list[str]:
    if isinstance(row, RetrievalRow):
        return [row.query, row.positive, *row.negatives]
    if isinstance(row, (STSRow, PairClassificationRow)):
        return [row.text1, row.text2]
    assert isinstance(row, ClassificationRow)
    return [row.text]


@lru_cache(maxsize=64)
def _vocabulary(path: Any, kind: str, max_rows: int) -> frozenset[str]:
    words: set[str] = set()
    for i, row in enumerate(iter_rows(path, kind)):
        if i >= max_rows:
            break
        for t in _texts(row):
            words.update(t.split())
    return frozenset(words)


def scores(
    mixture: dict[str, float], tasks: Sequence[TaskConfig], steps: int, options: Options
) -> np.ndarray:
    """Per-task scores ``s_k(steps)`` of the closed form in the module docstring."""
    vocab = [_vocabulary(t.train_file, t.kind.value, options.max_rows) for t in tasks]
    words = sorted(set().union(*vocab))
    index = {u: i for i, u in enumerate(words)}
    exposure = np.zeros(len(words))
    for t, v in zip(tasks, vocab):
        if v:
            exposure[[index[u] for u in v]] += steps * mixture.get(t.name, 0.0) / len(v)
    learnt = 1.0 - np.exp(-options.rate * exposure)
    return np.array([learnt[[index[u] for u in v]].mean() if v else 0.0 for v in vocab])


def _exceeds(mixture: dict[str, float], thresholds: dict[str, float]) -> str | None:
    for task, limit in thresholds.items():
        if mixture.get(task, 0.0) > limit:
            return f"weight of {task} = {mixture.get(task, 0.0):.3f} > {limit}"
    return None


def _metrics(tasks: Sequence[TaskConfig], s: np.ndarray) -> dict[str, float]:
    """Per-task scores under the embedding trainer's metric keys, ``<task>/<metric>/d0``."""
    return {f"{t.name}/{(t.metric or '').replace('@', '_at_')}/d0": float(v) for t, v in zip(tasks, s)}


def train(trial: Trial, report: Report) -> TrialResult:
    """Run one analytic trial: report a learning curve, return closed-form per-task scores."""
    opts = Options.model_validate(dict(trial.options))
    mixture = dict(trial.mixture)
    if _exceeds(mixture, opts.exit_above) is not None:
        os._exit(17)  # a hard kill: no exception, no cleanup, as when the OOM killer strikes
    if (why := _exceeds(mixture, opts.fail_above)) is not None:
        raise TrialFailed(f"injected failure: {why}")

    tasks = list(trial.tasks)
    if trial.objective_weights:
        weights = check_objective(trial.objective_weights, "objective_weights")
    else:
        weights = equal_weights([t.name for t in tasks])

    def objective_of(s: np.ndarray) -> float:
        return composed_value(weights, {t.name: float(v) for t, v in zip(tasks, s)}, None, "train")

    for step in range(opts.report_every, trial.steps + 1, opts.report_every):
        if opts.seconds_per_step:
            time.sleep(opts.seconds_per_step * opts.report_every)
        s = scores(mixture, tasks, step, opts)
        # A task's loss falls as its score rises: 1 - score, as the trial's loss is 1 - their mean.
        losses = {f"loss.{t.name}": float(1.0 - v) for t, v in zip(tasks, s) if mixture.get(t.name, 0.0) > 0}
        scored = {t.name: float(v) for t, v in zip(tasks, s)}
        report(
            step,
            {
                "loss": float(1.0 - s.mean()),
                "objective": objective_of(s),
                **_metrics(tasks, s),
                **score_metrics(scored),
                **losses,
            },
        )
    s = scores(mixture, tasks, trial.steps, opts)

    if opts.noise:
        # One draw shared by every score: the objective, a weighted mean of them, gets exactly
        # this noise, and is still the composition of the scores it reports.
        key = json.dumps([trial.seed, sorted(mixture.items())]).encode()
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        s = s + float(rng.normal(0.0, opts.noise))
    objective = objective_of(s)
    if _exceeds(mixture, opts.nan_above) is not None:
        objective = math.nan
    task_metrics = _metrics(tasks, s)
    Path(trial.output_dir).mkdir(parents=True, exist_ok=True)
    return TrialResult(
        objective=objective,
        task_metrics=task_metrics,
        task_scores={t.name: float(v) for t, v in zip(tasks, s)},
        checkpoint=None,
    )
