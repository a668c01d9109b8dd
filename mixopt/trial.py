"""The contract between the sweep and a trainer: one trial in, one result out.

A trainer is a plain function ``train(trial: Trial, report: Report) -> TrialResult`` named in
the experiment YAML (``trainer.target: "trainers.embedding:train"``). It knows nothing of Ray,
MLflow or the optimizer: the sweep builds the :class:`Trial`, passes a ``report`` callback that
forwards intermediate metrics, and records the :class:`TrialResult`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixopt.config import TaskConfig

# report(step, metrics): metrics are flat name -> float. A trainer may report the dev objective
# at intermediate steps under the key "objective" (used by early stopping).
Report = Callable[[int, Mapping[str, float]], None]


class TrialFailed(RuntimeError):
    """A trial that cannot produce a result (NaN loss, bad data...). The message is the reason."""


@dataclass(frozen=True)
class Trial:
    """Everything one trial needs.

    Attributes:
        mixture: task name -> weight, all >= 0, summing to 1.
        hyperparameters: scalar hyperparameters proposed by the optimizer (may be empty).
        seed: random seed for data order and initialisation of new layers.
        steps: the step budget.
        output_dir: where the trainer writes its checkpoint (created by the trainer).
        tasks: the experiment's tasks (kind, files, prompts, metric), in config order.
        options: the trainer's own options from the YAML (``trainer:`` minus target/steps/seed).
        trial_id: a label for logs and progress output.
    """

    mixture: Mapping[str, float]
    hyperparameters: Mapping[str, Any]
    seed: int
    steps: int
    output_dir: Path
    tasks: tuple[TaskConfig, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    trial_id: str = "trial"

    def __post_init__(self) -> None:
        names = {t.name for t in self.tasks}
        unknown = set(self.mixture) - names
        if unknown:
            raise ValueError(f"mixture names unknown tasks {sorted(unknown)}")
        if any(not math.isfinite(w) or w < 0 for w in self.mixture.values()):
            raise ValueError(f"mixture weights must be finite and >= 0: {dict(self.mixture)}")
        if abs(sum(self.mixture.values()) - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must sum to 1: {dict(self.mixture)}")


@dataclass(frozen=True)
class TrialResult:
    """What a trial returns.

    Attributes:
        objective: the value the optimizer maximises (mean dev score over tasks by default).
        task_metrics: flat per-task dev metrics, e.g. ``{"retrieval_0/ndcg@10@dim64": 0.71}``.
        task_scores: task name -> the task's primary dev score (its configured metric at full dim).
        checkpoint: the sentence-transformers directory, or None for trainers that write none.
    """

    objective: float
    task_metrics: Mapping[str, float]
    task_scores: Mapping[str, float]
    checkpoint: Path | None = None
    extra: Mapping[str, float] = field(default_factory=dict)


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``."""
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, func_name)
    except AttributeError:
        raise ImportError(f"{module_name!r} has no attribute {func_name!r}") from None
