"""The sentence-transformers trainer target: one trial is one ``SentenceTransformerTrainer`` run.

Named in an experiment YAML as ``trainer: {target: "trainers.sentence_transformers:train", ...}``.
For users whose model, losses and data are sentence-transformers': it provides the trainer
contract of :mod:`mixopt.trial` (:func:`train`, :class:`Options`, :func:`evaluate_checkpoint`,
:func:`write_synth_model`: the tiny encoder of :mod:`trainers.tiny_model`, which it loads too;
:func:`check_model`: whether it takes a model, from its config alone), and
scores trials exactly as the built-in trainer (:mod:`trainers.embedding`) does, so the two can
share a sweep's objective, the soup and ``mixopt eval``.

One trial:

1. load the model, any sentence-transformers directory or hub id (EmbeddingGemma is one);
   training runs in bf16 autocast on CUDA (fp32 weights), fp32 on CPU, never fp16;
2. each task with a positive weight becomes one dataset of a ``DatasetDict``, in the columns its
   loss reads (:mod:`trainers.st_losses`), its prompts prepended as the built-in trainer does;
3. :class:`trainers.st_sampler.MixtureBatchSampler` draws the ``steps`` batches: each from one
   task, task ``k`` in exactly ``round(w_k · steps)`` of them (settled to sum to ``steps``), in the
   built-in trainer's stratified order; within a task, sentence-transformers'
   ``NoDuplicatesBatchSampler`` keeps a text from appearing twice in a batch;
4. every ``eval_every`` steps and at the end, every task is scored on dev by
   :func:`trainers.evaluation.evaluate_tasks` (the built-in trainer's metrics and objective),
   reported through ``report``;
5. the model is written as a sentence-transformers directory, atomically, with the tasks' prompts
   and ``mixopt_checksums.json``, to ``output_dir/model``.

A non-finite training loss ends the trial with :class:`mixopt.trial.TrialFailed` at the next log
(every ``log_every`` steps), and no checkpoint is written.

Run alone (a quick CPU trial on the synthetic tasks)::

    mixopt synth --out data/synthetic --tasks 3 --seed 0
    python -m trainers.sentence_transformers experiments/st_tiny.yaml runs/one-trial
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mixopt import atomic
from mixopt.checksums import write_checksums
from mixopt.config import TaskConfig
from mixopt.data import TRAINING_KIND, DataError, iter_rows, training_rows
from mixopt.one_trial import one_trial_main
from mixopt.trial import Report, Trial, TrialFailed, TrialResult, score_metrics

from .batching import classification_examples, retrieval_examples, sts_examples, sts_threshold
from .embedding import _prompts
from .evaluation import DevRowCache, DevRows, evaluate_tasks, score_checkpoint
from .model import DEFAULT_MODEL
from .model_support import sentence_transformers_check as check_model
from .options import Threads, validate_options
from .st_losses import FORMATS, KIND_DEFAULT, LossSpec, check_keys
from .st_sampler import MixtureBatchSampler
from .task_losses import TaskLosses
from .tiny_model import write_synth_model
from .training import autocast_dtype, resolve_device

__all__ = ["Options", "check_model", "evaluate_checkpoint", "resolve_options", "train", "write_synth_model"]

# Rows paired at a time into triplets, as trainers.batching.TaskStream pairs them.
PAIR_WINDOW = 1024


class Options(BaseModel):
    """The trainer's options (the YAML's ``trainer:`` keys other than target/steps/seed).

    Any scalar field may also be searched as a hyperparameter of the same name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="sentence-transformers directory or hub id")
    losses: dict[str, LossSpec] = Field(
        {},
        description="task name or task kind -> loss; a task named by neither gets its kind's default "
        "(MultipleNegativesRankingLoss; CoSENTLoss for sts), wrapped in MatryoshkaLoss over "
        "matryoshka_dims when those name more than one dim",
    )
    matryoshka_dims: list[int] | None = Field(
        None, description="dims scored at evaluation (the first: the full dim); None: the full dim only"
    )
    batch_size: int = Field(64, ge=2, description="examples per step, all from one task")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    lr_schedule: Literal["linear", "cosine"] = "linear"
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")
    max_seq_length: int | None = Field(None, ge=8, description="None: the model's own")
    eval_every: int = Field(0, ge=0, description="evaluate on dev every N steps; 0: only at the end")
    eval_batch_size: int = Field(128, ge=1)
    classifier_train_rows: int = Field(
        2000, ge=2, description="rows of the classification probe's train sample"
    )
    objective: Literal["mean_task", "mean_kind"] = "mean_task"
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA if available")
    dtype: Literal["auto", "bfloat16", "float32"] = Field("auto", description="'auto': bf16 autocast on CUDA")
    log_every: int = Field(10, ge=1, description="report loss / tokens/s / lr every N steps")
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads; None: torch's default")

    @field_validator("dtype", mode="before")
    @classmethod
    def _no_fp16(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in ("float16", "fp16", "half"):
            raise ValueError(
                "float16 is not supported for Gemma (its activations overflow it); use 'bfloat16' or 'float32'"
            )
        return v

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < 1 for d in v) or any(a <= b for a, b in zip(v, v[1:]))):
            raise ValueError(f"Matryoshka dims must be positive and strictly decreasing, got {v}")
        return v

    @field_validator("losses")
    @classmethod
    def _keys(cls, v: dict[str, LossSpec], info: ValidationInfo) -> dict[str, LossSpec]:
        # The experiment's tasks (name -> kind) come as the validation context when the config is
        # loaded (mixopt.config.loading); alone, the options' kind keys are still checked.
        check_keys(v, (info.context or {}).get("tasks"))
        return v

    def loss_for(self, task: TaskConfig) -> LossSpec:
        """The task's loss: by task name, else by kind, else the kind's default (module docstring)."""
        kind = task.kind.value
        spec = self.losses.get(task.name) or self.losses.get(kind)
        if spec is not None:
            return spec
        if self.matryoshka_dims and len(self.matryoshka_dims) > 1:
            return LossSpec(name="MatryoshkaLoss", matryoshka_dims=list(self.matryoshka_dims))
        return LossSpec(name=KIND_DEFAULT[kind])


def resolve_options(options: Mapping[str, Any], hyperparameters: Mapping[str, Any] | None = None) -> Options:
    """The YAML options with the optimizer's hyperparameters of the same names overriding them."""
    return validate_options(Options, "trainers.sentence_transformers", options, hyperparameters)


def task_columns(task: TaskConfig, inputs: Sequence[str], seed: Sequence[int]) -> dict[str, list[Any]]:
    """A task's train rows as the dataset columns its loss reads, prompts prepended.

    ``inputs``: the inputs (:data:`trainers.st_losses.FORMATS`) the task's kind gives its loss
    (:meth:`LossSpec.inputs`), the first being what the loss reads. ``pairs`` and ``triplets`` are
    paired as :class:`trainers.batching.TaskStream` pairs them, window by window of
    :data:`PAIR_WINDOW` rows, seeded by ``seed``; a loss that reads pairs and also takes triplets
    gets the ``negative`` column when every example has one (a dataset's columns are the same for
    every row), a loss that reads only triplets needs it.
    """
    kind = task.kind.value
    if not inputs:
        raise ValueError(f"task {task.name!r} ({kind}) gives none of the inputs its loss reads")
    q, d = task.prompt.query, task.prompt.document
    first = inputs[0]
    if first == "scores":
        cols: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
        for r in iter_rows(task.train_file, kind):
            cols["sentence1"].append(q + r.text1)
            cols["sentence2"].append(d + r.text2)
            cols["score"].append(float(r.score))
        return cols
    if first == "labelled_pairs":
        cols = {"sentence1": [], "sentence2": [], "label": []}
        for r in iter_rows(task.train_file, kind):
            cols["sentence1"].append(q + r.text1)
            cols["sentence2"].append(d + r.text2)
            cols["label"].append(int(r.label))
        return cols
    training = TRAINING_KIND[kind]
    rows = iter_rows(training_rows(task.train_file, task.kind), training)
    if first == "labels":
        pairs = [(q + r.text, r.label) for r in rows]
        ids = {label: i for i, label in enumerate(sorted({label for _, label in pairs}))}
        return {"sentence": [text for text, _ in pairs], "label": [ids[label] for _, label in pairs]}
    rng = np.random.default_rng([*seed, 11])
    threshold = sts_threshold(task.train_file) if training == "sts" else None
    examples = []
    window: list[Any] = []
    for row in [*rows, None]:
        if row is not None:
            window.append(row)
        if window and (row is None or len(window) == PAIR_WINDOW):
            if training == "retrieval":
                examples += retrieval_examples(window, rng)
            elif training == "sts":
                examples += sts_examples(window, threshold, rng)
            else:
                examples += classification_examples(window, rng)
            window = []
    cols = {"anchor": [q + e.query for e in examples], "positive": [d + e.positive for e in examples]}
    missing = sum(e.negative is None for e in examples)
    if first == "triplets" and missing:
        raise ValueError(
            f"task {task.name!r}: its loss reads {FORMATS['triplets']} and {missing} of its "
            f"{len(examples)} training examples have no negative (retrieval rows without negatives, "
            "or no other label or low score to draw one from); give the rows negatives or choose a "
            "loss that reads pairs"
        )
    if "triplets" in inputs and examples and not missing:
        cols["negative"] = [d + e.negative for e in examples]
    return cols


def _embed_fn(model: Any, batch_size: int, amp: torch.dtype | None):
    def embed(texts: Sequence[str]) -> torch.Tensor:
        was_training = model.training
        with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
            out = model.encode(
                list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
            )
        model.train(was_training)
        return out.float().cpu()

    return embed


def _check_dims(model: Any, dims: Sequence[int], name: str) -> None:
    full = model.get_embedding_dimension()
    if dims[0] != full:
        raise TrialFailed(
            f"matryoshka_dims starts with {dims[0]} but the model {name!r} embeds in {full} dimensions; "
            f"the first Matryoshka dim must be the full dimension (e.g. [{full}, ...])"
        )


def _load(name: str, device: torch.device, trial_id: str) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device=str(device))
    except (OSError, ValueError) as e:
        raise TrialFailed(
            f"trial {trial_id}: cannot load the sentence-transformers model {name!r}: {e}"
        ) from None


def train(trial: Trial, report: Report) -> TrialResult:
    """Train ``trial.mixture`` for ``trial.steps`` steps with SentenceTransformerTrainer; evaluate; save."""
    opts = resolve_options(trial.options, trial.hyperparameters)
    with Threads(opts.cpu_threads):
        return _train(trial, report, opts)


def _train(trial: Trial, report: Report, opts: Options) -> TrialResult:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import PrinterCallback, TrainerCallback

    device = resolve_device(opts.device)
    amp = autocast_dtype(device, opts.dtype)
    torch.manual_seed(trial.seed)
    model = _load(opts.model, device, trial.trial_id)
    if opts.max_seq_length is not None:
        model.max_seq_length = opts.max_seq_length
    dims = tuple(opts.matryoshka_dims or [model.get_embedding_dimension()])
    _check_dims(model, dims, opts.model)

    kinds = {t.name: t.kind.value for t in trial.tasks}
    try:
        check_keys(opts.losses, kinds)
    except ValidationError as e:
        reasons = "; ".join(f"{err['loc'][0]}: {err['msg']}" for err in e.errors())
        raise TrialFailed(f"trial {trial.trial_id}: trainer.losses: {reasons}") from None
    active = [t for t in trial.tasks if trial.mixture.get(t.name, 0.0) > 0]
    try:
        specs = {t.name: opts.loss_for(t) for t in active}
        data = {
            t.name: Dataset.from_dict(task_columns(t, specs[t.name].inputs(kinds[t.name]), [trial.seed, i]))
            for i, t in enumerate(active)
        }
    except (DataError, ValueError) as e:
        raise TrialFailed(f"trial {trial.trial_id}: {e}") from None
    small = {name: len(d) for name, d in data.items() if len(d) < opts.batch_size}
    if small:
        raise TrialFailed(
            f"trial {trial.trial_id}: task(s) {small} give fewer training examples than batch_size "
            f"{opts.batch_size}; lower trainer.batch_size or add rows"
        )
    loss = {name: specs[name].build(model, kinds[name]) for name in data}

    dev_cache = DevRowCache()
    embed = _embed_fn(model, opts.eval_batch_size, amp)

    def evaluate(step: int):
        try:
            result = evaluate_tasks(
                trial.tasks,
                embed,
                dims,
                objective=opts.objective,
                weights=trial.objective_weights,
                classifier_train_rows=opts.classifier_train_rows,
                dev_cache=dev_cache,
            )
        except (DataError, ValueError) as e:
            raise TrialFailed(f"trial {trial.trial_id}: evaluation at step {step} failed: {e}") from None
        report(
            step, {"objective": result.objective, **result.task_metrics, **score_metrics(result.task_scores)}
        )
        return result

    class CountingTrainer(SentenceTransformerTrainer):
        """Counts the non-padding tokens it trains on (every ``*attention_mask`` input) and sums each
        task's loss (its batches carry the task as ``dataset_name``), on the device; writes no model
        card (its callback would embed widget examples from the data before every trial)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tokens: torch.Tensor | float = 0.0
            self.task_losses = TaskLosses()

        def add_model_card_callback(self, default_args_dict):
            return None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            task = inputs.get("dataset_name")
            masks = [v.sum() for k, v in inputs.items() if k.endswith("attention_mask")]
            if masks:
                self.tokens = self.tokens + torch.stack(masks).sum()
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if task is not None:
                self.task_losses.add(task, out[0] if isinstance(out, tuple) else out)
            return out

    class Reporter(TrainerCallback):
        """Loss, tokens/s and lr every ``log_every`` steps; the dev objective every ``eval_every``."""

        def __init__(self) -> None:
            self.last_loss, self.t, self.tokens = float("nan"), time.perf_counter(), 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            self.last_loss = float(logs["loss"])
            if not math.isfinite(self.last_loss):
                raise TrialFailed(
                    f"trial {trial.trial_id}: the loss became non-finite by step {state.global_step} "
                    f"(loss={self.last_loss:.6g}); no checkpoint was written. Lower the learning rate "
                    "or check the data of the tasks"
                )
            now, tokens = time.perf_counter(), float(trainer.tokens)
            rate = (tokens - self.tokens) / max(now - self.t, 1e-9)
            report(
                state.global_step,
                {
                    "loss": self.last_loss,
                    "tokens_per_s": rate,
                    "lr": float(logs.get("learning_rate", 0.0)),
                    **trainer.task_losses.pop(),
                },
            )
            self.t, self.tokens = now, tokens

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if opts.eval_every and step % opts.eval_every == 0 and step != trial.steps:
                evaluate(step)

    reporter = Reporter()
    Path(trial.output_dir).mkdir(parents=True, exist_ok=True)
    # The Trainer's own output folder: it saves nothing there (save_strategy "no"), removed after.
    with tempfile.TemporaryDirectory(prefix="st-trainer-", dir=trial.output_dir) as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=trial.steps,
            per_device_train_batch_size=opts.batch_size,
            learning_rate=opts.learning_rate,
            warmup_steps=math.ceil(opts.warmup_ratio * trial.steps),
            lr_scheduler_type=opts.lr_schedule,
            weight_decay=opts.weight_decay,
            max_grad_norm=opts.grad_clip,  # 0: no clipping, as the built-in trainer
            bf16=amp is torch.bfloat16,
            use_cpu=device.type == "cpu",
            seed=trial.seed,
            data_seed=trial.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            multi_dataset_batch_sampler=partial(
                MixtureBatchSampler, weights=[trial.mixture[n] for n in data], steps=trial.steps
            ),
            dataloader_drop_last=True,
            logging_steps=opts.log_every,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = CountingTrainer(
            model=model, args=args, train_dataset=DatasetDict(data), loss=loss, callbacks=[reporter]
        )
        # Logs go to ``report``, not stdout.
        trainer.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - t0
    model.eval()
    t_eval = time.perf_counter()
    final = evaluate(trial.steps)
    eval_seconds = time.perf_counter() - t_eval
    checkpoint = save_checkpoint(model, Path(trial.output_dir) / "model", trial.tasks)
    return TrialResult(
        objective=final.objective,
        task_metrics=final.task_metrics,
        task_scores=final.task_scores,
        checkpoint=checkpoint.resolve(),
        extra={
            "tokens_per_s": float(trainer.tokens) / max(train_seconds, 1e-9),
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "final_loss": reporter.last_loss,
            "train_tokens": float(trainer.tokens),
        },
    )


def save_checkpoint(model: Any, out_dir: Path, tasks: Sequence[TaskConfig]) -> Path:
    """Write ``model`` as a sentence-transformers directory, atomically, with the tasks' prompts and checksums.

    Safetensors only; the prompts are those of the built-in trainer's checkpoints
    (``<task>/query``, ``<task>/document``, and ``query`` / ``document``), so ``encode_query`` and
    ``encode_document`` embed as the trial was scored; ``mixopt_checksums.json`` is written last.
    """
    model.prompts = _prompts(tasks, {k: v for k, v in (model.prompts or {}).items() if "/" not in k})
    with atomic.directory(Path(out_dir)) as tmp:
        model.save(str(tmp), safe_serialization=True, create_model_card=False)
        stray = [p.name for p in tmp.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
        if stray:
            raise RuntimeError(f"sentence-transformers wrote non-safetensors weights {stray}")
        write_checksums(tmp)
    return Path(out_dir)


def evaluate_checkpoint(
    checkpoint: Path,
    tasks: Sequence[TaskConfig],
    options: Mapping[str, Any],
    dev_rows: DevRows | None = None,
) -> TrialResult:
    """Score a saved sentence-transformers checkpoint (a trial's or a soup's) as a trial is scored.

    ``options`` are the trainer's YAML options: ``matryoshka_dims``, ``max_seq_length``,
    ``eval_batch_size``, ``classifier_train_rows``, ``objective``, ``device`` and ``dtype`` apply;
    ``model`` is ignored (the checkpoint is the model). ``dev_rows``: per task, the positions of the
    dev rows to score on; all rows by default.
    """
    opts = resolve_options(options)
    with Threads(opts.cpu_threads):
        device = resolve_device(opts.device)
        amp = autocast_dtype(device, opts.dtype)
        model = _load(str(checkpoint), device, "evaluate_checkpoint")
        if opts.max_seq_length is not None:
            model.max_seq_length = opts.max_seq_length
        dims = tuple(opts.matryoshka_dims or [model.get_embedding_dimension()])
        _check_dims(model, dims, str(checkpoint))
        model.eval()
        return score_checkpoint(
            checkpoint,
            tasks,
            _embed_fn(model, opts.eval_batch_size, amp),
            dims,
            objective=opts.objective,
            classifier_train_rows=opts.classifier_train_rows,
            dev_rows=dev_rows,
        )


if __name__ == "__main__":
    raise SystemExit(one_trial_main(train, sys.argv[1:], "sentence_transformers"))
