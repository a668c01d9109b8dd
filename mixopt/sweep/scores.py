"""A trial's per-task scores, read from what it reported: Tune results and MLflow metrics.

The optimizer models each score (``MixtureOptimizer.tell(..., scores=...)``) and composes the
objective from them, so what it is told must be the very scores the trainer composed its
objective from: a task's configured metric at the full Matryoshka dimension.

- A trial's final result carries them as ``score.<task>`` (:mod:`mixopt.sweep.worker`), and so
  does its MLflow run (the callback logs the final result's metrics).
- An intermediate report carries the trainer's metric keys ``<task>/<metric>/d<dim>``
  (:mod:`trainers.evaluation`): the score is the one at the largest dim, the full dimension
  (Matryoshka dims are truncations of it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

SCORE_PREFIX = "score."


def metric_key_prefix(task: str, metric: str) -> str:
    """``retrieval_0/ndcg_at_10/d`` for a task and its configured metric (``@`` is not MLflow-safe)."""
    return f"{task}/{metric.replace('@', '_at_')}/d"


def final_scores(metrics: Mapping[str, Any], tasks: Iterable[str]) -> dict[str, float] | None:
    """The ``score.<task>`` values of a final result or a finished MLflow run; None unless every
    task has a finite one (a trial that scored some tasks only is told by its objective)."""
    out = {t: metrics.get(SCORE_PREFIX + t) for t in tasks}
    return _complete(out)


def report_scores(metrics: Mapping[str, Any], tasks: Mapping[str, str]) -> dict[str, float] | None:
    """The scores in an intermediate report (``tasks``: task -> configured metric): per task the
    ``<task>/<metric>/d<dim>`` value at the largest dim, the full dimension; None unless every
    task has one (a report of the loss alone carries none)."""
    out: dict[str, Any] = {}
    for task, metric in tasks.items():
        prefix = metric_key_prefix(task, metric)
        dims = {
            int(k[len(prefix) :]): v
            for k, v in metrics.items()
            if k.startswith(prefix) and k[len(prefix) :].isdigit()
        }
        out[task] = dims[max(dims)] if dims else None
    return _complete(out)


def _complete(scores: Mapping[str, Any]) -> dict[str, float] | None:
    if not scores:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in scores.values()):
        return None
    return {k: float(v) for k, v in scores.items()}
