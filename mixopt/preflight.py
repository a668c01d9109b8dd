"""Preflight: a few steps of one trial at the search space's worst case, before a sweep spends GPU-hours.

``mixopt preflight EXPERIMENT.yaml`` (or ``sweep.preflight: true``) builds the trial the sweep
would run with the most memory-hungry values the search space allows (the largest ``batch_size``,
``max_seq_length`` and ``mini_batch_size`` if they are hyperparameters, checkpointing off if it is
one), feeds it **full-length** batches (every query, positive and hard negative exactly
``max_seq_length`` tokens of random ids: real texts are shorter, so real steps use less), runs
``1 + steps`` optimisation steps of :class:`trainers.training.Stepper` on the device a trial gets
(through Ray with the trial's resources when a cluster address is given, else in this process), and
reports:

- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident set size
  above the process's before the model was loaded;
- step time (mean after one warm-up step), tokens/s;
- MFU = ``6 · N · tokens/s ÷ peak``, ``N`` the non-embedding parameters (the token-embedding
  lookup does no matmul; attention's ``L²`` term and GradCache's second forward are not counted, so
  this is the useful-work MFU), against the device's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`);
- the projected trial time (training only) and the sweep's device-hours for ``max_trials``
  (+ verification trials when the experiment has ``verify.seeds``).

A trial that does not fit (CUDA out of memory, or a peak above the device's memory or
``--memory-limit-gb``) fails with the smallest change that makes it fit by :func:`estimate_memory`,
calibrated by the measured peak: ``set trainer.mini_batch_size: 16``, then with
``trainer.gradient_checkpointing: true``, else a shorter ``max_seq_length``.

The memory model (:func:`estimate_memory`) is measured at EmbeddingGemma-300m's shape on CPU in
float32 by ``bench/memory.py`` (bench/RESULTS.md, "Trainer memory"); bf16 activations are taken as
:data:`BF16_ACTIVATION_FACTOR` of float32 ones until a GPU run measures them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixopt.config import CategoricalParam, Experiment, IntParam

TARGET = "trainers.embedding:train"
# Dense bf16 tensor-core peaks (vendor specs, no sparsity), matched in order against the device name.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM / HBM3
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)
# bench/memory.py at EmbeddingGemma-300m's shape (24 layers, d 768), float32, CPU, seq 32: activation
# bytes per token of a training step, the largest of the measured estimates (no option: 1.16-1.49 MiB;
# checkpointing: 0.32-0.69 MiB), rounded up; the runs are small and RSS-noisy (bench/RESULTS.md,
# "Trainer memory"). The preflight on a GPU measures instead of estimating.
FP32_ACTIVATION_BYTES_PER_TOKEN = {"none": 1.5 * 2**20, "checkpointing": 0.7 * 2**20}
REFERENCE_LAYERS_X_HIDDEN = 24 * 768
# bf16 autocast stores matmul outputs in bf16 but Gemma's RMSNorms and the softmax inputs in float32:
# half of float32 would be the floor; 0.75 is a conservative guess until a GPU run measures it.
BF16_ACTIVATION_FACTOR = 0.75
# Allocator fragmentation and workspace (cuBLAS, attention kernels).
OVERHEAD_FACTOR = 1.15
# A trial must fit in this fraction of the device's memory to be called a fit with margin.
MARGIN = 0.85


class PreflightError(RuntimeError):
    """The experiment cannot be preflighted (wrong trainer, no device); the message says why."""


@dataclass(frozen=True)
class Shape:
    """What the memory model needs of the encoder."""

    n_params: int  # all trainable parameters
    n_embedding: int  # the token-embedding table's
    layers: int
    hidden: int

    @property
    def n_matmul(self) -> int:
        """Non-embedding parameters: the ``N`` of ``6·N`` FLOPs per token."""
        return self.n_params - self.n_embedding


def estimate_memory(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    sides: int = 3,
) -> float:
    """Bytes a training step needs at peak: fixed state + activations of the texts in the graph at once.

    .. math::

        M = 1.15 \\left[ 16 N + 4 N_E + (2 N \\text{ if bf16}) + a \\cdot \\frac{L d}{24 \\cdot 768}
            \\cdot T \\right], \\qquad T = \\begin{cases} s B \\ell & \\text{full batch} \\\\
            m \\ell & \\text{mini-batches of } m \\text{ texts} \\end{cases}

    ``16 N``: float32 weights, gradients, AdamW's two moments; ``4 N_E``: the dense gradient of the
    token embeddings is built once more before it is accumulated (measured); ``2 N``: autocast's
    bf16 weight copies; ``a``: activation bytes per token (:data:`FP32_ACTIVATION_BYTES_PER_TOKEN`,
    × :data:`BF16_ACTIVATION_FACTOR` in bf16); ``s`` sides of ``B`` texts of ``ℓ`` tokens.
    """
    fixed = 16 * shape.n_params + 4 * shape.n_embedding + (2 * shape.n_params if bf16 else 0)
    per_token = FP32_ACTIVATION_BYTES_PER_TOKEN["checkpointing" if gradient_checkpointing else "none"]
    per_token *= shape.layers * shape.hidden / REFERENCE_LAYERS_X_HIDDEN
    per_token *= BF16_ACTIVATION_FACTOR if bf16 else 1.0
    live_tokens = (min(mini_batch_size, batch_size) if mini_batch_size else sides * batch_size) * seq
    return OVERHEAD_FACTOR * (fixed + per_token * live_tokens)


def suggest_fix(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    limit: float,
    measured: float | None = None,
) -> str:
    """The smallest change that brings the step under ``MARGIN × limit`` bytes.

    When a peak was measured, what the model does not explain (``measured − estimate(current)``, if
    positive: the process, the allocator, a model error) is added to every candidate's estimate as a
    constant, which errs on the side of not fitting. Tries, in order: mini-batches (the largest power
    of two that fits, below the current one), then the same with gradient checkpointing, then says to
    shorten the texts.
    """
    current = estimate_memory(
        shape,
        batch_size=batch_size,
        seq=seq,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
    )
    unexplained = max(measured - current, 0.0) if measured else 0.0
    upper = min(mini_batch_size or batch_size, batch_size)
    sizes = [2**k for k in range(int(math.log2(upper)), -1, -1) if 2**k < upper or mini_batch_size is None]
    for checkpointing in sorted({gradient_checkpointing, True}):
        for m in sizes:
            need = unexplained + estimate_memory(
                shape,
                batch_size=batch_size,
                seq=seq,
                mini_batch_size=m,
                gradient_checkpointing=checkpointing,
                bf16=bf16,
            )
            if need <= MARGIN * limit:
                parts = [f"trainer.mini_batch_size: {m}"]
                if checkpointing and not gradient_checkpointing:
                    parts.append("trainer.gradient_checkpointing: true")
                return f"set {' and '.join(parts)} (estimated peak {need / 2**30:.1f} GiB)"
    return (
        "even mini-batches of 1 text with gradient checkpointing do not fit: lower "
        f"trainer.max_seq_length (now {seq}) or use a device with more memory"
    )


def peak_bf16_flops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def worst_case_options(exp: Experiment) -> tuple[dict[str, Any], list[str]]:
    """The trainer options of the most memory-hungry trial the search space allows, and notes saying so."""
    from mixopt.sweep.common import absolute_options

    options = absolute_options(exp.trainer.options)
    notes = []
    worst_high = {"batch_size", "max_seq_length", "mini_batch_size"}
    for name, param in exp.search.hyperparameters.items():
        value: Any = None
        if name in worst_high:
            if isinstance(param, IntParam):
                value = param.high
            elif isinstance(param, CategoricalParam):
                numbers = [c for c in param.choices if isinstance(c, int) and not isinstance(c, bool)]
                value = max(numbers) if numbers else None
        elif name == "gradient_checkpointing" and isinstance(param, CategoricalParam):
            value = False if False in param.choices else None
        elif param.default is not None:
            value = param.default
        if value is not None:
            options[name] = value
            if name in worst_high or name == "gradient_checkpointing":
                notes.append(f"{name} {value} (the search space's worst case)")
    return options, notes


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS(threading.Thread):
    """Samples this process's resident set size every millisecond; ``stop()`` returns the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = _rss(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, _rss())


def measure(
    options: Mapping[str, Any], steps: int = 3, seed: int = 0, memory_limit: float | None = None
) -> dict[str, Any]:
    """Run ``1 + steps`` trainer steps on full-length random batches here; return the figures (a dict).

    This is what runs on the trial's device (a Ray task with the trial's resources, or in-process).
    On CUDA an out-of-memory error is caught and reported. A CPU has no such error (the kernel kills
    the process), so there the steps run only if :func:`estimate_memory` projects the step within
    ``memory_limit`` bytes (default: the machine's memory); otherwise the projection is the figure.
    """
    import torch

    from trainers.embedding import _Threads, resolve_options
    from trainers.losses import LossWeights
    from trainers.model import check_bidirectional, load_encoder
    from trainers.training import (
        Stepper,
        autocast_dtype,
        compile_encoder,
        resolve_device,
    )

    opts = resolve_options(options)
    device = resolve_device(opts.device)
    amp = autocast_dtype(device, opts.dtype)
    cuda = device.type == "cuda"
    with _Threads(opts.cpu_threads):
        # Import what loading imports before the baseline: on CPU the peak is taken above it.
        import transformers  # noqa: F401
        from transformers import AutoTokenizer, Gemma3TextModel  # noqa: F401

        baseline = _rss()
        sampler = None if cuda else _PeakRSS()
        if sampler is not None:
            sampler.start()
        loaded = load_encoder(opts.model, seed=seed)
        encoder = loaded.encoder.to(device)
        check_bidirectional(encoder)
        if opts.compile:
            compile_encoder(encoder)
        config = encoder.transformer.config
        embedding = encoder.transformer.get_input_embeddings().weight
        shape = Shape(
            n_params=sum(p.numel() for p in encoder.parameters() if p.requires_grad),
            n_embedding=embedding.numel(),
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
        )
        stepper = Stepper(
            encoder,
            loaded.tokenizer,
            LossWeights(
                tuple(opts.matryoshka_dims),
                opts.temperature,
                opts.hardness_alpha,
                opts.spread_out_weight,
                opts.distill_weight,
            ),
            lr=opts.learning_rate,
            weight_decay=opts.weight_decay,
            warmup_steps=1,
            total_steps=steps + 1,
            grad_clip=opts.grad_clip,
            max_seq_length=opts.max_seq_length,
            device=device,
            amp=amp,
            mini_batch_size=opts.mini_batch_size,
            gradient_checkpointing=opts.gradient_checkpointing,
        )
        b, seq = opts.batch_size, opts.max_seq_length
        projected = estimate_memory(
            shape,
            batch_size=b,
            seq=seq,
            mini_batch_size=opts.mini_batch_size,
            gradient_checkpointing=opts.gradient_checkpointing,
            bf16=amp is not None,
        )
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        projected_oom = not cuda and projected > (memory_limit or machine)
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
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(device))
            total = int(torch.cuda.get_device_properties(device).total_memory)
            name = torch.cuda.get_device_name(device)
        else:
            assert sampler is not None
            peak = sampler.stop() - baseline
            total = machine
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
    }


def _full_length_inputs(pad: int, vocab: int, b: int, seq: int, seed: int, pin: bool) -> Any:
    """Queries, positives and hard negatives, all present, every text ``seq`` random non-pad ids."""
    import torch

    from trainers.training import Tokenized, prepare_inputs

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


def _verification_trials(exp: Experiment) -> int:
    """Trials of the verification stage, if the experiment has one (``verify.seeds``): the recommended
    and the baseline mixture, once per seed. 0 when absent."""
    verify = getattr(exp, "verify", None) or getattr(getattr(exp, "sweep", None), "verify", None)
    seeds = getattr(verify, "seeds", None) if verify is not None else None
    if not seeds or getattr(verify, "enabled", True) is False:
        return 0
    n = seeds if isinstance(seeds, int) else len(seeds)
    return 2 * n


@dataclass
class PreflightReport:
    """What :func:`run_preflight` measured and concluded; ``lines`` is the printed report."""

    figures: dict[str, Any]
    fits: bool
    fix: str | None
    lines: list[str] = field(default_factory=list)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_preflight(
    exp: Experiment,
    *,
    address: str | None = None,
    use_ray: bool = False,
    steps: int = 3,
    memory_limit_gb: float | None = None,
    model: str | None = None,
    echo: Callable[[str], None] = print,
) -> PreflightReport:
    """Measure one worst-case trial and report (:func:`report`); ``model`` overrides ``trainer.model``.

    With ``address`` (a Ray cluster to join) or ``use_ray`` (Ray already initialised, as in the
    sweep), the measurement runs as a Ray task with the trial's resources, so on the kind of node and
    device a trial gets; otherwise in this process.
    """
    if exp.trainer.target != TARGET:
        raise PreflightError(
            f"preflight measures the embedding trainer ({TARGET}); this experiment's trainer is "
            f"{exp.trainer.target!r}"
        )
    if steps < 1:
        raise PreflightError(f"--steps must be >= 1, got {steps}")
    options, notes = worst_case_options(exp)
    if model:
        options["model"] = os.path.abspath(model) if os.path.exists(model) else model
    limit = memory_limit_gb * 2**30 if memory_limit_gb else None
    if address or use_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=True)
        task = ray.remote(measure).options(
            num_cpus=exp.resources.cpus,
            num_gpus=exp.resources.gpus,
            resources=dict(exp.resources.custom) or None,
            max_retries=0,
        )
        figures = ray.get(task.remote(options, steps, exp.trainer.seed, limit))
    else:
        figures = measure(options, steps, exp.trainer.seed, limit)
    return report(exp, figures, notes, memory_limit_gb=memory_limit_gb, echo=echo)


def report(
    exp: Experiment,
    figures: dict[str, Any],
    notes: list[str],
    *,
    memory_limit_gb: float | None = None,
    echo: Callable[[str], None] = print,
) -> PreflightReport:
    """Print the figures of :func:`measure` and decide whether the trial fits."""
    shape = Shape(**figures["shape"])
    limit = memory_limit_gb * 2**30 if memory_limit_gb else figures["total_memory"]
    limit_source = "--memory-limit-gb" if memory_limit_gb else "the device's memory"
    b, seq = figures["batch_size"], figures["max_seq_length"]
    mb, ckpt, bf16 = figures["mini_batch_size"], figures["gradient_checkpointing"], figures["bf16"]
    gib = 2**30
    lines = [
        f"preflight {exp.name}: {TARGET} on {figures['device_name']}, {'bf16' if bf16 else 'float32'}",
        f"worst case: batch_size {b} x 3 sides (query, positive, hard negative) x {seq} tokens "
        f"(every text at max_seq_length), mini_batch_size {mb}, gradient_checkpointing {str(ckpt).lower()}"
        + (f"; {', '.join(notes)}" if notes else ""),
    ]
    estimate = estimate_memory(
        shape, batch_size=b, seq=seq, mini_batch_size=mb, gradient_checkpointing=ckpt, bf16=bf16
    )
    fix = None
    if figures["projected_oom"]:
        lines.append(
            f"  peak memory      projected {estimate / gib:.1f} GiB by the memory model, over the "
            f"{limit / gib:.1f} GiB limit: the steps were not run"
        )
        fits = False
    elif figures["oom"]:
        lines.append(
            f"  peak memory      out of memory ({figures['memory_kind']}; model estimate {estimate / gib:.1f} GiB)"
        )
        fits = False
    else:
        peak = figures["peak_memory"]
        lines.append(
            f"  peak memory      {peak / gib:.2f} GiB of {limit / gib:.1f} GiB ({limit_source}); "
            f"{figures['memory_kind']}; model estimate {estimate / gib:.2f} GiB"
        )
        fits = peak <= limit
    seconds = figures["step_seconds"]
    if math.isfinite(seconds):
        tokens_per_s = figures["tokens_per_step"] / seconds
        lines.append(f"  step time        {seconds:.3f} s (mean of {figures['steps']} steps after 1 warm-up)")
        lines.append(f"  tokens/s         {tokens_per_s:,.0f}")
        peak_flops = peak_bf16_flops(figures["device_name"]) if figures["device"] == "cuda" else None
        achieved = 6 * shape.n_matmul * tokens_per_s
        if peak_flops:
            lines.append(
                f"  MFU              {100 * achieved / peak_flops:.1f} % of {peak_flops / 1e12:.0f} TFLOP/s dense bf16 "
                f"(6·N·tokens/s, N = {shape.n_matmul / 1e6:.1f}M non-embedding parameters)"
            )
        else:
            lines.append(
                f"  MFU              n/a ({achieved / 1e12:.3f} TFLOP/s achieved by 6·N·tokens/s, "
                f"N = {shape.n_matmul / 1e6:.1f}M non-embedding parameters; no bf16 peak known for this device)"
            )
        trial = exp.trainer.steps * seconds
        n_trials = exp.optimizer.max_trials
        n_verify = _verification_trials(exp)
        per_trial = exp.resources.gpus if exp.resources.gpus > 0 else exp.resources.cpus
        unit = "GPU" if exp.resources.gpus > 0 else "CPU"
        total_hours = trial * (n_trials + n_verify) * per_trial / 3600
        lines.append(
            f"  trial time       {exp.trainer.steps} steps x {seconds:.3f} s = {_duration(trial)} "
            "(training at the worst case; evaluations not included)"
        )
        verify = f" + {n_verify} verification" if n_verify else ""
        lines.append(
            f"  sweep            {n_trials}{verify} trials x {_duration(trial)} x {per_trial:g} {unit} "
            f"= {total_hours:.1f} {unit}-hours"
        )
    if fits:
        lines.append(f"fits: peak {figures['peak_memory'] / gib:.2f} GiB <= {limit / gib:.1f} GiB")
    else:
        fix = suggest_fix(
            shape,
            batch_size=b,
            seq=seq,
            mini_batch_size=mb,
            gradient_checkpointing=ckpt,
            bf16=bf16,
            limit=limit,
            measured=None if figures["oom"] else figures["peak_memory"],
        )
        lines.append(f"does not fit in {limit / gib:.2f} GiB ({limit_source}): {fix}")
    for line in lines:
        echo(line)
    return PreflightReport(figures, fits, fix, lines)
