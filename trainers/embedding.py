"""The trial trainer: finetune an encoder (a bidirectional Gemma3 or a BERT-family one) on a task mixture.

Named in an experiment YAML as ``trainer: {target: "trainers.embedding:train", ...options}``. The
module provides the trainer contract of :mod:`mixopt.trial`: :func:`train` (one call is one trial; it
knows nothing of Ray, MLflow or the optimizer), :class:`Options` (:mod:`trainers.options`, validated
when the config is loaded), :func:`evaluate_checkpoint` (the soup's scores), :func:`preflight`
(:mod:`trainers.preflight`, the measurement behind ``mixopt preflight``), :func:`memory_fix`
(:mod:`trainers.memory`, the change it names for a trial that does not fit), :func:`write_synth_model`
(:mod:`trainers.tiny_model`, the tiny encoder ``mixopt synth`` writes) and :func:`check_model`
(:mod:`trainers.model_support`: whether it takes a model, from its config alone).

The recipe (EmbeddingGemma, arXiv 2509.20354; Gemini Embedding, arXiv 2503.07891):

1. load the encoder (:mod:`trainers.model`: a Gemma3 made bidirectional, or a BERT-family encoder,
   with its own pooling and Dense layers), prove its attention is bidirectional;
2. each step draw one task with probability equal to its mixture weight and a whole batch from it
   (:mod:`trainers.batching`), prepend the task's prompts, and take one AdamW step on
   ``Σ_m [L_C + λ_S L_S + λ_D L_D]`` over the Matryoshka dims (:mod:`trainers.losses`,
   :mod:`trainers.training`);
3. every ``eval_every`` steps and at the end evaluate every task on dev at every dim
   (:mod:`trainers.evaluation`; each task's dev rows read once per trial) and report the objective;
4. write the model as a sentence-transformers directory, atomically, to ``output_dir/model``.

A non-finite loss or gradient norm ends the trial with :class:`mixopt.trial.TrialFailed` naming the
step, the loss parts and the gradient norm, and no checkpoint is written; so do non-finite
embeddings at an evaluation (a diverged model never scores) and bad data. Same seed and inputs give
the same result on CPU.

Run alone (a quick CPU trial on the synthetic tasks)::

    mixopt synth --out data/synthetic --tasks 3 --seed 0
    python -m trainers.embedding experiments/tiny_synthetic.yaml runs/one-trial
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mixopt.config import TaskConfig
from mixopt.data import TRAINING_KIND, DataError, training_rows
from mixopt.one_trial import one_trial_main
from mixopt.trial import Report, Trial, TrialFailed, TrialResult, score_metrics

from . import losses
from .batching import BatchError, MixtureSampler, TaskStream, teacher_targets
from .evaluation import DevRowCache, DevRows, evaluate_tasks, score_checkpoint
from .memory import memory_fix
from .model import Encoder, ModelLoadError, check_bidirectional, embed, load_encoder
from .model import save_sentence_transformer as _save
from .model_support import embedding_check as check_model
from .options import Options, Threads, resolve_options
from .prefetch import BatchLoader
from .preflight import preflight
from .task_losses import TaskLosses
from .tiny_model import write_synth_model

__all__ = [
    "Options",
    "check_model",
    "evaluate_checkpoint",
    "memory_fix",
    "preflight",
    "resolve_options",
    "train",
    "write_synth_model",
]
from .training import (
    StepInputs,
    Stepper,
    autocast_dtype,
    compile_encoder,
    prepare_inputs,
    resolve_device,
)


def _prompts(tasks: Sequence[TaskConfig], base: Mapping[str, str]) -> dict[str, str]:
    """Prompts saved with the checkpoint: the source model's, ``<task>/query`` and ``<task>/document``
    for every task, and ``query`` / ``document`` from the first retrieval task (else the first task).

    sentence-transformers' ``encode_query`` / ``encode_document`` use the prompts named ``query`` and
    ``document``, and fill in empty ones when a model has none: without them a checkpoint would
    embed queries with no prompt at all, unlike every text it was trained and scored on.
    """
    out = dict(base)
    for t in tasks:
        out[f"{t.name}/query"] = t.prompt.query
        out[f"{t.name}/document"] = t.prompt.document
    default = next((t for t in tasks if t.kind.value == "retrieval"), tasks[0] if tasks else None)
    if default is not None:
        out["query"], out["document"] = default.prompt.query, default.prompt.document
    return out


def _check_dims(encoder: Encoder, dims: Sequence[int], model: str) -> None:
    if dims[0] != encoder.dim:
        raise ValueError(
            f"matryoshka_dims starts with {dims[0]} but the model {model!r} embeds in {encoder.dim} "
            f"dimensions; the first Matryoshka dim must be the full dimension (e.g. [{encoder.dim}, ...])"
        )


def _show_progress(opts: Options) -> bool:
    return opts.progress if opts.progress is not None else sys.stderr.isatty()


class _LossWatch:
    """Keeps each step's loss and gradient norm on the device and checks them in bulk, so CUDA need
    not sync every step."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]] = []

    def add(
        self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], grad_norm: torch.Tensor
    ) -> None:
        self.pending.append((step, loss, parts, grad_norm))

    def check(self, trial_id: str) -> float:
        """Raise TrialFailed at the first step with a non-finite loss or grad norm; return the last loss."""
        last = float("nan")
        if not self.pending:
            return last
        values = torch.stack(
            [torch.stack([loss.float(), norm.float()]) for _, loss, _, norm in self.pending]
        ).cpu()  # [steps, 2]: one transfer for the whole interval
        bad = (~torch.isfinite(values)).any(dim=1).nonzero()
        if len(bad):
            step, loss, parts, norm = self.pending[int(bad[0])]
            detail = ", ".join(f"{k}={float(v):.6g}" for k, v in parts.items())
            what = "loss" if not math.isfinite(float(loss)) else "gradient norm"
            raise TrialFailed(
                f"trial {trial_id}: the {what} became non-finite at step {step} (loss={float(loss):.6g}, "
                f"grad norm={float(norm):.6g}; {detail}); no checkpoint was written. Lower the learning "
                "rate, raise the temperature, or check the data of that step's task"
            )
        last = float(values[-1, 0])
        self.pending.clear()
        return last


def _check_due(step: int, steps: int, on_cuda: bool, log_every: int, eval_every: int) -> bool:
    """Whether the loss watch must be checked after ``step``.

    On CPU reading the loss costs nothing, so every step; on CUDA (a sync) when logging, at the end,
    and before every intermediate evaluation, so a diverged model is never evaluated or reported.
    """
    evaluating = eval_every > 0 and step % eval_every == 0
    return not on_cuda or step % log_every == 0 or step == steps or evaluating


def train(trial: Trial, report: Report) -> TrialResult:
    """Finetune the encoder on ``trial.mixture`` for ``trial.steps`` steps; evaluate; save the checkpoint."""
    opts = resolve_options(trial.options, trial.hyperparameters)
    with Threads(opts.cpu_threads):
        return _train(trial, report, opts)


def _train(trial: Trial, report: Report, opts: Options) -> TrialResult:
    device = resolve_device(opts.device)
    amp = autocast_dtype(device, opts.dtype)
    dims = tuple(opts.matryoshka_dims)
    torch.manual_seed(trial.seed)
    try:
        loaded = load_encoder(opts.model, seed=trial.seed)
    except ModelLoadError as e:
        raise TrialFailed(f"trial {trial.trial_id}: {e}") from None
    encoder, tokenizer = loaded.encoder, loaded.tokenizer
    _check_dims(encoder, dims, opts.model)
    encoder.to(device)
    check_bidirectional(encoder)
    if opts.compile:
        compile_encoder(encoder)

    tasks = {t.name: t for t in trial.tasks}
    try:
        streams = {
            t.name: TaskStream(
                t.name,
                TRAINING_KIND[t.kind.value],
                training_rows(t.train_file, t.kind),
                seed=[trial.seed, i],
                shuffle_buffer=opts.shuffle_buffer,
            )
            for i, t in enumerate(trial.tasks)
            if trial.mixture.get(t.name, 0.0) > 0
        }
        sampler = MixtureSampler(
            streams, trial.mixture, opts.batch_size, seed=trial.seed, schedule=opts.task_sampling
        )
    except (DataError, BatchError) as e:
        raise TrialFailed(f"trial {trial.trial_id}: {e}") from None

    warmup = math.ceil(opts.warmup_ratio * trial.steps)
    stepper = Stepper.from_options(
        encoder, tokenizer, opts, warmup_steps=warmup, total_steps=trial.steps, device=device, amp=amp
    )

    def embed_fn(texts: Sequence[str]) -> torch.Tensor:
        return embed(
            encoder,
            tokenizer,
            texts,
            max_seq_length=opts.max_seq_length,
            batch_size=opts.eval_batch_size,
            autocast_dtype=amp,
        )

    # Every evaluation of this trial, the final one included, scores the same dev rows, read once.
    dev_cache = DevRowCache()

    def evaluate(step: int):
        try:
            result = evaluate_tasks(
                trial.tasks,
                embed_fn,
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

    from tqdm.auto import tqdm

    # The loader thread tokenises with its own copy: a fast tokenizer's padding/truncation state is
    # not safe to share with the evaluation's tokenising on this thread.
    loader_tokenizer = copy.deepcopy(tokenizer) if opts.prefetch else tokenizer
    pin = device.type == "cuda"

    def next_inputs() -> StepInputs:
        """Read, pair and tokenise the next batch; build its masks; pin it (on CUDA). Host only."""
        batch = sampler.next_batch()
        teacher = teacher_targets(batch)
        task = tasks[batch.task]
        return prepare_inputs(
            loader_tokenizer,
            [task.prompt.query + q for q in batch.queries],
            [task.prompt.document + p for p in batch.positives],
            [None if n is None else task.prompt.document + n for n in batch.negatives],
            max_seq_length=opts.max_seq_length,
            false_negatives=losses.false_negative_mask(batch.queries, batch.positives, batch.groups),
            teacher=teacher,
            pin=pin,
            task=batch.task,
        )

    watch = _LossWatch()
    task_losses = TaskLosses()
    bar = tqdm(total=trial.steps, desc=trial.trial_id, disable=not _show_progress(opts), leave=False)
    total_tokens = 0
    interval_tokens = 0
    t_start = t_interval = time.perf_counter()
    last_loss = float("nan")
    loader = BatchLoader(next_inputs, depth=opts.prefetch if trial.steps else 0)
    try:
        for step in range(1, trial.steps + 1):
            try:
                inputs = next(loader)
            except (DataError, BatchError) as e:
                raise TrialFailed(f"trial {trial.trial_id}: step {step}: {e}") from None
            out = stepper.run(inputs)
            watch.add(step, out.loss, out.parts, out.grad_norm)
            if inputs.task is not None:
                task_losses.add(inputs.task, out.loss)
            total_tokens += out.n_tokens
            interval_tokens += out.n_tokens
            bar.update(1)
            if _check_due(step, trial.steps, device.type == "cuda", opts.log_every, opts.eval_every):
                last_loss = watch.check(trial.trial_id)
            if step % opts.log_every == 0 or step == trial.steps:
                now = time.perf_counter()
                tokens_per_s = interval_tokens / max(now - t_interval, 1e-9)
                report(
                    step,
                    {"loss": last_loss, "tokens_per_s": tokens_per_s, "lr": stepper.lr, **task_losses.pop()},
                )
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tokens_per_s:.0f}")
                interval_tokens, t_interval = 0, now
            if opts.eval_every and step % opts.eval_every == 0 and step != trial.steps:
                evaluate(step)
    finally:
        loader.close()
        bar.close()
    train_seconds = time.perf_counter() - t_start

    t_eval = time.perf_counter()
    final = evaluate(trial.steps)
    eval_seconds = time.perf_counter() - t_eval
    checkpoint = _save(
        encoder,
        tokenizer,
        Path(trial.output_dir) / "model",
        prompts=_prompts(trial.tasks, loaded.prompts),
        max_seq_length=opts.max_seq_length,
    )
    return TrialResult(
        objective=final.objective,
        task_metrics=final.task_metrics,
        task_scores=final.task_scores,
        checkpoint=checkpoint.resolve(),
        extra={
            "tokens_per_s": total_tokens / max(train_seconds, 1e-9),
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "final_loss": last_loss,
            "train_tokens": float(total_tokens),
        },
    )


def evaluate_checkpoint(
    checkpoint: Path,
    tasks: Sequence[TaskConfig],
    options: Mapping[str, Any],
    dev_rows: DevRows | None = None,
) -> TrialResult:
    """Evaluate a saved sentence-transformers checkpoint (a trial's or a soup's) on every task's dev split.

    ``options`` are the trainer's YAML options: ``matryoshka_dims``, ``max_seq_length``,
    ``eval_batch_size``, ``classifier_train_rows``, ``objective``, ``device`` and ``dtype`` apply;
    ``model`` is ignored (the checkpoint is the model). ``dev_rows``: per task, the positions of
    the dev rows to score on (:func:`trainers.evaluation.evaluate_tasks`); all rows by default.
    """
    opts = resolve_options(options)
    with Threads(opts.cpu_threads):
        return _evaluate_checkpoint(Path(checkpoint), tasks, opts, dev_rows)


def _evaluate_checkpoint(
    checkpoint: Path, tasks: Sequence[TaskConfig], opts: Options, dev_rows: DevRows | None = None
) -> TrialResult:
    device = resolve_device(opts.device)
    amp = autocast_dtype(device, opts.dtype)
    dims = tuple(opts.matryoshka_dims)
    loaded = load_encoder(checkpoint)
    if loaded.drawn_dense:
        raise ModelLoadError(
            f"{checkpoint}: not a checkpoint: a plain Gemma3 folder, whose Dense layers would be drawn "
            "at random (a checkpoint is a sentence-transformers directory with modules.json)"
        )
    encoder = loaded.encoder
    _check_dims(encoder, dims, str(checkpoint))
    encoder.to(device)
    # The soup and re-evaluation must embed as the trial did: prove attention is bidirectional.
    check_bidirectional(encoder)
    return score_checkpoint(
        checkpoint,
        tasks,
        lambda texts: embed(
            encoder,
            loaded.tokenizer,
            texts,
            max_seq_length=opts.max_seq_length,
            batch_size=opts.eval_batch_size,
            autocast_dtype=amp,
        ),
        dims,
        objective=opts.objective,
        classifier_train_rows=opts.classifier_train_rows,
        dev_rows=dev_rows,
    )


if __name__ == "__main__":
    raise SystemExit(one_trial_main(train, sys.argv[1:], "embedding"))
