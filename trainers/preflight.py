"""The embedding trainer's preflight measurement: one worst-case trial's parts, measured here.

:func:`preflight` is the trainer contract's optional measurement (:class:`mixopt.trial.PreflightMeasure`),
called by ``mixopt preflight`` (:mod:`mixopt.preflight`, which chooses the worst-case options, runs
this on the trial's device, and reports). It loads the encoder as a trial does, builds the trial's
:class:`trainers.training.Stepper`, and feeds it **full-length** batches: every query, positive and
hard negative exactly ``max_seq_length`` tokens of random ids (real texts are shorter, so real steps
use less). Memory is read with the service's instruments (:class:`mixopt.preflight.PeakRSS` on CPU,
``torch.cuda.max_memory_allocated`` on CUDA), and a CPU step that the trainer's memory model projects
beyond the limit is not run (:func:`trainers.memory.project`).

Besides the steps, the same measurement times the other parts of a trial, so the projection is of a
whole trial: the model load (as :func:`trainers.embedding.train` loads it, onto the device), one real
evaluation of every task's dev rows (:func:`trainers.evaluation.evaluate_tasks`, as the trial
evaluates, after the steps so the model is a trained one), and one checkpoint write (the trial's
sentence-transformers directory, into a local temporary directory that is then removed: a shared
filesystem or a cloud store writes slower). When the steps were not run (out of memory, or
projected not to fit), neither the evaluation nor the write is.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mixopt.config import TaskConfig
from mixopt.preflight import Figures, PeakRSS, machine_memory, rss

from .evaluation import evaluate_tasks
from .memory import Shape, project
from .model import check_bidirectional, embed, load_encoder, save_sentence_transformer
from .options import Threads, resolve_options
from .training import (
    StepInputs,
    Stepper,
    Tokenized,
    autocast_dtype,
    compile_encoder,
    prepare_inputs,
    resolve_device,
)


def preflight(
    options: Mapping[str, Any],
    *,
    steps: int,
    seed: int,
    memory_limit: float | None,
    tasks: Sequence[TaskConfig] = (),
) -> Figures:
    """Load the model, run ``1 + steps`` trainer steps on full-length random batches, evaluate ``tasks``
    once and write one checkpoint, timing each; return the figures.

    Without ``tasks`` the evaluation is not measured (``eval_seconds`` NaN). The figures are :class:`mixopt.preflight.Figures`. On CUDA an out-of-memory error is caught and
    reported. A CPU has no such error (the kernel kills the process), so there the steps run only if
    the trainer's memory model projects the step within ``memory_limit`` bytes (default: the
    machine's memory); otherwise the projection is the figure.
    """
    opts = resolve_options(options)
    device = resolve_device(opts.device)
    amp = autocast_dtype(device, opts.dtype)
    cuda = device.type == "cuda"
    with Threads(opts.cpu_threads):
        # Import what loading imports before the baseline: on CPU the peak is taken above it.
        import transformers  # noqa: F401
        from transformers import AutoTokenizer, Gemma3TextModel  # noqa: F401

        baseline = rss()
        sampler = None if cuda else PeakRSS()
        if sampler is not None:
            sampler.start()
        t_load = time.perf_counter()
        loaded = load_encoder(opts.model, seed=seed)
        encoder = loaded.encoder.to(device)
        check_bidirectional(encoder)
        if opts.compile:
            compile_encoder(encoder)
        if cuda:
            torch.cuda.synchronize(device)
        load_seconds = time.perf_counter() - t_load
        config = encoder.transformer.config
        embedding = encoder.transformer.get_input_embeddings().weight
        shape = Shape(
            n_params=sum(p.numel() for p in encoder.parameters() if p.requires_grad),
            n_embedding=embedding.numel(),
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            intermediate=int(getattr(config, "intermediate_size", 0) or 0),
            heads=int(getattr(config, "num_attention_heads", 0) or 0),
            family="gemma3" if encoder.is_gemma3 else "encoder",
        )
        stepper = Stepper.from_options(
            encoder, loaded.tokenizer, opts, warmup_steps=1, total_steps=steps + 1, device=device, amp=amp
        )
        b, seq = opts.batch_size, opts.max_seq_length
        projected, projected_oom = project(
            shape,
            batch_size=b,
            seq=seq,
            mini_batch_size=opts.mini_batch_size,
            gradient_checkpointing=opts.gradient_checkpointing,
            bf16=amp is not None,
            cuda=cuda,
            memory_limit=memory_limit,
        )
        inputs = (
            None
            if projected_oom
            else _full_length_inputs(
                int(loaded.tokenizer.pad_token_id), int(config.vocab_size), b, seq, seed, cuda
            )
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        oom, seconds, loss = False, float("nan"), float("nan")
        try:
            if inputs is None:
                raise _Skip
            t0 = time.perf_counter()
            for i in range(steps + 1):
                if i == 1:
                    if cuda:
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                out = stepper.run(inputs)
            loss = float(out.loss)  # synchronises
            seconds = (time.perf_counter() - t0) / max(steps, 1)
        except torch.cuda.OutOfMemoryError:
            oom = True
        except _Skip:
            oom = True
        eval_seconds = save_seconds = float("nan")
        checkpoint_bytes = 0
        if not oom:
            if tasks:
                eval_seconds = _time_evaluation(encoder, loaded.tokenizer, opts, amp, tasks)
            save_seconds, checkpoint_bytes = _time_checkpoint_write(encoder, loaded.tokenizer, opts)
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(device))
            total = int(torch.cuda.get_device_properties(device).total_memory)
            name = torch.cuda.get_device_name(device)
        else:
            assert sampler is not None
            peak = sampler.stop() - baseline
            total = machine_memory()
            name = f"CPU ({torch.get_num_threads()} threads)"
    return {
        "device": device.type,
        "device_name": name,
        "total_memory": total,
        "peak_memory": peak,
        "memory_kind": "torch.cuda.max_memory_allocated"
        if cuda
        else "peak RSS above the process's before loading",
        "oom": oom,
        "projected_oom": projected_oom,
        "projected_memory": projected,
        "step_seconds": seconds,
        "tokens_per_step": 3 * b * seq,
        "loss": loss,
        "bf16": amp is not None,
        "shape": shape.__dict__,
        "batch_size": b,
        "max_seq_length": seq,
        "mini_batch_size": opts.mini_batch_size,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "steps": steps,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
        "save_seconds": save_seconds,
        "checkpoint_bytes": checkpoint_bytes,
        "eval_every": opts.eval_every,
    }


def _time_evaluation(encoder, tokenizer, opts, amp, tasks: Sequence[TaskConfig]) -> float:
    """Seconds of one evaluation of every task's dev rows, as :func:`trainers.embedding.train` runs it."""
    t0 = time.perf_counter()
    evaluate_tasks(
        tasks,
        lambda texts: embed(
            encoder,
            tokenizer,
            texts,
            max_seq_length=opts.max_seq_length,
            batch_size=opts.eval_batch_size,
            autocast_dtype=amp,
        ),
        tuple(opts.matryoshka_dims),
        objective=opts.objective,
        classifier_train_rows=opts.classifier_train_rows,
    )
    return time.perf_counter() - t0


def _time_checkpoint_write(encoder, tokenizer, opts) -> tuple[float, int]:
    """Seconds and bytes of one checkpoint write (the trial's layout), into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mixopt-preflight-") as tmp:
        t0 = time.perf_counter()
        out = save_sentence_transformer(
            encoder, tokenizer, Path(tmp) / "model", prompts={}, max_seq_length=opts.max_seq_length
        )
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return seconds, size


def _full_length_inputs(pad: int, vocab: int, b: int, seq: int, seed: int, pin: bool) -> StepInputs:
    """Queries, positives and hard negatives, all present, every text ``seq`` random non-pad ids."""
    generator = torch.Generator().manual_seed(seed)
    sides = []
    for _ in range(3):
        ids = torch.randint(0, vocab, (b, seq), generator=generator)
        ids[ids == pad] = (pad + 1) % vocab
        sides.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    texts = [str(i) for i in range(b)]
    return prepare_inputs(
        None,
        texts,
        texts,
        texts,
        max_seq_length=seq,
        tokens=Tokenized(sides, 3 * b * seq, joint=False),
        false_negatives=torch.zeros(b, b, dtype=torch.bool),
        pin=pin,
    )


class _Skip(Exception):
    """The CPU step is projected not to fit: not run."""
