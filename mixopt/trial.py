"""The contract between the service and a trainer: one trial in, one result out.

A trainer is a module named in the experiment YAML by its train function
(``trainer.target: "trainers.embedding:train"``). It provides (:class:`TrainerModule`):

- ``train(trial: Trial, report: Report) -> TrialResult``, the named function: one trial. It knows
  nothing of Ray, MLflow or the optimizer: the sweep builds the :class:`Trial`, passes a ``report``
  callback that forwards intermediate metrics, and records the :class:`TrialResult`;
- ``Options``, a pydantic model of its own options (the YAML's ``trainer:`` keys besides
  target/steps/seed), against which the config is validated before anything runs, with the
  experiment's tasks as the validation context (``{"tasks": {name: kind}}``, for checks of
  options that name tasks);
- optionally ``evaluate_checkpoint(checkpoint, tasks, options, dev_rows=None) -> TrialResult``,
  which scores a saved checkpoint exactly as a trial is scored (the soup needs it; a trainer that
  writes no checkpoints has none). ``dev_rows`` (optional; ``{task: positions}``, 0-based in the
  order the task's dev rows are read) limits each named task to those dev rows: the greedy soup
  selects on one half of them and reports on the other. One that takes no ``dev_rows`` still
  serves the soup, whose greedy score then says it was measured on the rows it selected on;
- optionally ``preflight(options, *, steps, seed, memory_limit[, tasks]) -> dict``, one worst-case
  trial's step (and, given ``tasks``, its load, evaluation and checkpoint write) measured on this device (``mixopt preflight`` needs it; :mod:`mixopt.preflight` says what
  the figures are);
- optionally ``memory_fix(figures, *, limit) -> (words, options or None)``: the trainer's memory
  model asked, after its preflight measured a trial that does not fit in ``limit`` bytes, for the
  smallest change of its options that fits (``mixopt preflight`` names it and measures it; without
  the hook the refusal names no fix);
- optionally ``write_synth_model(out_dir, words, *, seed) -> Path``: a small random-init model of
  the trainer's architecture whose tokenizer knows ``words``, written to ``out_dir`` (``mixopt
  synth`` writes it beside the synthetic tasks);
- optionally ``check_model(model) -> str | None``: whether the trainer can take ``trainer.model`` (a
  directory or hub id), decided from the model's configuration files, never its weights: None, or
  one line saying why not and which trainer can (``mixopt validate`` and the sweep's checks ask it
  before any trial).

:func:`load_trainer` imports the module and checks what it provides, once, with one error naming
the target and everything missing.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from mixopt.task import TaskConfig

# report(step, metrics): metrics are flat name -> float. A trainer may report the dev objective
# at intermediate steps under the key "objective" (used by early stopping), each task's dev score
# as "score.<task>" (score_metrics), its training loss as "loss" and each task's as "loss.<task>".
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
        objective_weights: score name -> weight (summing to 1): the objective to report is
            ``Σ w_k s_k`` over the task scores (the experiment's ``objective_weights``); None: the
            trainer's own (the mean over tasks by default).
    """

    mixture: Mapping[str, float]
    hyperparameters: Mapping[str, Any]
    seed: int
    steps: int
    output_dir: Path
    tasks: tuple[TaskConfig, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    trial_id: str = "trial"
    objective_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        names = {t.name for t in self.tasks}
        unknown = set(self.mixture) - names
        if unknown:
            raise ValueError(f"mixture names unknown tasks {sorted(unknown)}")
        if self.objective_weights is not None and set(self.objective_weights) - names:
            raise ValueError(
                f"objective_weights name unknown tasks {sorted(set(self.objective_weights) - names)}"
            )
        if any(not math.isfinite(w) or w < 0 for w in self.mixture.values()):
            raise ValueError(f"mixture weights must be finite and >= 0: {dict(self.mixture)}")
        if abs(sum(self.mixture.values()) - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must sum to 1: {dict(self.mixture)}")


def absolute_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer options that name an existing relative path become absolute: trials run elsewhere."""
    out = {}
    for k, v in options.items():
        if isinstance(v, str) and not os.path.isabs(v) and "://" not in v and Path(v).exists():
            v = str(Path(v).resolve())
        out[k] = v
    return out


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


def score_metrics(task_scores: Mapping[str, float]) -> dict[str, float]:
    """Each task's score as its own metric, ``score.<task>`` (what a trainer reports at an
    evaluation and the sweep logs with the result)."""
    return {f"score.{t}": float(v) for t, v in task_scores.items()}


class Train(Protocol):
    """``train(trial, report)``: run one trial, report intermediate metrics, return its result."""

    def __call__(self, trial: Trial, report: Report) -> TrialResult: ...


class EvaluateCheckpoint(Protocol):
    """``evaluate_checkpoint(checkpoint, tasks, options, dev_rows=None)``: a saved checkpoint scored
    as a trial is; ``dev_rows`` (optional to provide), per task, the positions of the dev rows to use."""

    def __call__(
        self,
        checkpoint: Path,
        tasks: Sequence[TaskConfig],
        options: Mapping[str, Any],
        dev_rows: Mapping[str, Collection[int]] | None = None,
    ) -> TrialResult: ...


class PreflightMeasure(Protocol):
    """``preflight(options, *, steps, seed, memory_limit, tasks)``: one worst-case trial measured here.

    ``options`` are the trainer's options at the search space's worst case; ``memory_limit`` (bytes
    or None) bounds what a CPU step may use; ``tasks`` are the experiment's, whose dev rows one
    evaluation is timed on. Returns :class:`mixopt.preflight.Figures`: ``1 + steps`` steps, the
    model load, the evaluation and a checkpoint write.
    """

    def __call__(
        self,
        options: Mapping[str, Any],
        *,
        steps: int,
        seed: int,
        memory_limit: float | None,
        tasks: Sequence[TaskConfig] = (),
    ) -> dict[str, Any]: ...


class MemoryFix(Protocol):
    """``memory_fix(figures, *, limit)``: the smallest change of the trainer's options that brings the
    trial its :class:`PreflightMeasure` measured (``figures``) under ``limit`` bytes, as words
    (``"set trainer.mini_batch_size: 16 (...)"``) and the options it sets (None: no setting fits)."""

    def __call__(self, figures: Mapping[str, Any], *, limit: float) -> tuple[str, dict[str, Any] | None]: ...


class WriteSynthModel(Protocol):
    """``write_synth_model(out_dir, words, *, seed)``: write a small random-init model of the trainer's
    architecture, drawn from ``seed``, with a tokenizer that knows every word of ``words``, to
    ``out_dir`` (a directory ``trainer.model`` can name); return the directory."""

    def __call__(self, out_dir: Path, words: Sequence[str], *, seed: int) -> Path: ...


class CheckModel(Protocol):
    """``check_model(model)``: None when the trainer can take ``model`` (a directory or hub id, or
    when its configuration cannot be read here); else one line saying why not and what can."""

    def __call__(self, model: str) -> str | None: ...


# The optional parts, with the signature an error names when one is needed and missing.
OPTIONAL = {
    "evaluate_checkpoint": "evaluate_checkpoint(checkpoint, tasks, options)",
    "preflight": "preflight measurement, preflight(options, *, steps, seed, memory_limit)",
    "memory_fix": "memory model, memory_fix(figures, *, limit)",
    "write_synth_model": "model for synthetic tasks, write_synth_model(out_dir, words, *, seed)",
    "check_model": "model check, check_model(model)",
}


class TrainerError(ImportError):
    """The trainer named by ``trainer.target`` cannot be imported or lacks a part; the message says which."""


@dataclass(frozen=True)
class TrainerModule:
    """What a trainer module provides, checked by :func:`load_trainer`.

    Attributes:
        target: the YAML's ``trainer.target``, ``"package.module:function"``.
        train: the named train function.
        options: the module's pydantic ``Options`` model.
        evaluate_checkpoint: the module's ``evaluate_checkpoint``, or None.
        preflight: the module's ``preflight`` measurement, or None.
        memory_fix: the module's ``memory_fix``, or None.
        write_synth_model: the module's ``write_synth_model``, or None.
        check_model: the module's ``check_model``, or None.
    """

    target: str
    train: Train
    options: type[BaseModel]
    evaluate_checkpoint: EvaluateCheckpoint | None = None
    preflight: PreflightMeasure | None = None
    memory_fix: MemoryFix | None = None
    write_synth_model: WriteSynthModel | None = None
    check_model: CheckModel | None = None

    def require(self, part: str, why: str) -> Callable[..., Any]:
        """The optional ``part`` (a key of ``OPTIONAL``); TrainerError if absent."""
        fn = getattr(self, part)
        if fn is None:
            raise TrainerError(f"the trainer {self.target!r} has no {OPTIONAL[part]}: {why}")
        return fn


def load_trainer(target: str) -> TrainerModule:
    """Import the module of ``"package.module:function"`` and check that it provides the contract."""
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TrainerError(f"cannot import {module_name!r}: {e}") from e
    train = getattr(module, func_name, None)
    options = getattr(module, "Options", None)
    missing = []
    if not callable(train):
        missing.append(f"no function {func_name!r}")
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        missing.append("no pydantic model 'Options' of the trainer's options")
    if missing:
        raise TrainerError(
            f"{module_name!r} has {' and '.join(missing)}; the trainer {target!r} must provide "
            f"{func_name}(trial, report) and Options (see mixopt.trial)"
        )
    hooks = {part: getattr(module, part, None) for part in OPTIONAL}
    return TrainerModule(
        target=target,
        train=train,
        options=options,
        **{part: hook if callable(hook) else None for part, hook in hooks.items()},
    )
