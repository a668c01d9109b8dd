"""Preflight: a few steps of one trial at the search space's worst case, before a sweep spends GPU-hours.

``mixopt preflight EXPERIMENT.yaml`` (or ``sweep.preflight: true``) builds the trial the sweep
would run with the most memory-hungry values the search space allows (the largest ``batch_size``,
``max_seq_length`` and ``mini_batch_size`` if they are hyperparameters, checkpointing off if it is
one), and asks the trainer to measure ``1 + steps`` optimisation steps of it on full-length batches
(its ``preflight`` measurement, :class:`mixopt.trial.PreflightMeasure`; the embedding trainer's is
:func:`trainers.preflight.preflight`) on the device a trial gets (through Ray with the trial's
resources when a cluster address is given, else in this process). A trainer without one is refused
with a line saying so. This module keeps the service's side: what to measure, the memory model and
its projection, the report, and refusing what won't fit. It reports:

- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident set size
  above the process's before the model was loaded;
- step time (mean after one warm-up step), tokens/s;
- MFU = ``6 · N · tokens/s ÷ peak``, ``N`` the non-embedding parameters (the token-embedding
  lookup does no matmul; attention's ``L²`` term and GradCache's second forward are not counted, so
  this is the useful-work MFU), against the device's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`);
- the projected trial time, as the sum of its measured parts: the model load, ``trainer.steps``
  steps at the measured step time, the trial's evaluations (``1 + (steps - 1) // eval_every``, each
  timed by one real evaluation of every task's dev rows) and one checkpoint write;
- the sweep's device-hours for ``max_trials`` (+ verification trials when the experiment has
  ``verify.seeds``), in the unit of the device that was measured: ``GPU-hours`` on CUDA,
  ``CPU-hours`` on a CPU (step times on a CPU say nothing of a GPU's, so a GPU experiment
  measured on a CPU is told to run the preflight on its cluster).

A trial that does not fit (CUDA out of memory, or a peak above the device's memory or
``--memory-limit-gb``) fails with the smallest change that makes it fit by :func:`estimate_memory`,
calibrated by the measured peak: ``set trainer.mini_batch_size: 16``, then with
``trainer.gradient_checkpointing: true``, then a shorter ``max_seq_length``. That fix is then
measured in its turn (``measure_fix``), so the report still projects the trial and the sweep, as
they would run with the fix.

The memory model (:func:`estimate_memory`) is measured at EmbeddingGemma-300m's shape on CPU in
float32 by ``bench/memory.py`` (bench/RESULTS.md, "Trainer memory"); bf16 activations are taken as
:data:`BF16_ACTIVATION_FACTOR` of float32 ones until a GPU run measures them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from mixopt.config import CategoricalParam, Experiment, IntParam
from mixopt.human import duration

# The trainer whose measurement the refusal names as the one that has it.
EMBEDDING_TRAINER = "trainers.embedding:train"
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
# bytes per token of a training step, the largest of the measured estimates rounded up, since the
# runs are small and RSS-noisy (bench/RESULTS.md, "Trainer memory"). The preflight on a GPU
# measures instead of estimating.
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
    """The experiment cannot be preflighted (a trainer without a measurement, no device); the message says why."""


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
    """The smallest change that brings the step under ``MARGIN × limit`` bytes (:func:`fix_for`), in words."""
    return fix_for(
        shape,
        batch_size=batch_size,
        seq=seq,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        limit=limit,
        measured=measured,
    )[0]


def fix_for(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    limit: float,
    measured: float | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """The smallest change that brings the step under ``MARGIN × limit`` bytes: its words, and the
    trainer options it sets (None when no setting fits).

    When a peak was measured, what the model does not explain (``measured − estimate(current)``, if
    positive: the process, the allocator, a model error) is added to every candidate's estimate as a
    constant, which errs on the side of not fitting. Tries, in order: mini-batches (the largest power
    of two that fits, below the current one), then the same with gradient checkpointing, then the
    longest power-of-two ``max_seq_length`` below the current one at which mini-batches of 1 text with
    checkpointing fit; else says that nothing does.
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
                changes: dict[str, Any] = {"mini_batch_size": m}
                if checkpointing and not gradient_checkpointing:
                    changes["gradient_checkpointing"] = True
                return _set(changes, need), changes
    for shorter in (2**k for k in range(int(math.log2(seq - 1)), -1, -1)) if seq > 1 else ():
        need = unexplained + estimate_memory(
            shape,
            batch_size=batch_size,
            seq=shorter,
            mini_batch_size=1,
            gradient_checkpointing=True,
            bf16=bf16,
        )
        if need <= MARGIN * limit:
            changes = {"max_seq_length": shorter, "mini_batch_size": 1, "gradient_checkpointing": True}
            return _set(changes, need), changes
    return (
        "even mini-batches of 1 text with gradient checkpointing do not fit: lower "
        f"trainer.max_seq_length (now {seq}) or use a device with more memory"
    ), None


def _set(changes: Mapping[str, Any], need: float) -> str:
    parts = [f"trainer.{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in changes.items()]
    return f"set {' and '.join(parts)} (estimated peak {need / 2**30:.1f} GiB)"


def peak_bf16_flops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def worst_case_options(exp: Experiment) -> tuple[dict[str, Any], list[str]]:
    """The trainer options of the most memory-hungry trial the search space allows, and notes saying so."""
    from mixopt.trial import absolute_options

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


def project(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    cuda: bool,
    memory_limit: float | None,
) -> tuple[float, bool]:
    """The step's projected peak (:func:`estimate_memory`), and whether the steps must not run.

    A CPU has no out-of-memory error (the kernel kills the process), so a CPU step projected beyond
    ``memory_limit`` bytes (default: the machine's memory) is not run; on CUDA the step always runs
    and an out-of-memory error is the figure.
    """
    projected = estimate_memory(
        shape,
        batch_size=batch_size,
        seq=seq,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
    )
    return projected, not cuda and projected > (memory_limit or machine_memory())


def machine_memory() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def rss() -> int:
    """This process's resident set size, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS(threading.Thread):
    """Samples this process's resident set size every millisecond; ``stop()`` returns the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = rss(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, rss())


class Figures(TypedDict):
    """What a trainer's preflight measurement returns (a plain dict, so it crosses Ray as one)."""

    device: str  # torch device type: "cuda" or "cpu"
    device_name: str
    total_memory: int  # bytes of the device (CPU: the machine)
    peak_memory: int  # bytes, as memory_kind says
    memory_kind: str
    oom: bool  # out of memory, or not run because projected_oom
    projected_oom: bool
    projected_memory: float  # bytes, by estimate_memory
    step_seconds: float  # mean after one warm-up step; NaN when not run
    tokens_per_step: int
    loss: float
    bf16: bool
    shape: dict[str, int]  # Shape's fields
    batch_size: int
    max_seq_length: int
    mini_batch_size: int | None
    gradient_checkpointing: bool
    steps: int
    load_seconds: float  # load the model onto the device
    eval_seconds: float  # one evaluation of every task's dev rows; NaN when not measured
    save_seconds: float  # one checkpoint write; NaN when not run
    checkpoint_bytes: int
    eval_every: int  # the trainer's: an evaluation every N steps (0: only the final one)


def measure(
    target: str,
    options: Mapping[str, Any],
    steps: int = 3,
    seed: int = 0,
    memory_limit: float | None = None,
    tasks: Sequence[Any] = (),
) -> Figures:
    """The trainer's preflight measurement of ``options``, run here (a Ray task or this process).

    ``tasks`` reach a measurement that takes them (its evaluation is timed on their dev rows).
    """
    import inspect

    from mixopt.trial import load_trainer

    measurement = load_trainer(target).require("preflight", "preflight cannot measure it")
    kwargs: dict[str, Any] = dict(steps=steps, seed=seed, memory_limit=memory_limit)
    if "tasks" in inspect.signature(measurement).parameters:
        kwargs["tasks"] = tuple(tasks)
    return measurement(options, **kwargs)


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
    fix_options: dict[str, Any] | None = None  # the trainer options the fix sets
    fix_figures: dict[str, Any] | None = None  # the fix's own measurement (``measure_fix``)


def _hours(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.3f}"


def evaluations_per_trial(steps: int, eval_every: int) -> int:
    """Evaluations a trial of ``steps`` steps runs: one every ``eval_every`` steps before the last, and
    the final one (:func:`trainers.embedding.train`)."""
    return 1 + ((steps - 1) // eval_every if eval_every > 0 and steps > 0 else 0)


def run_preflight(
    exp: Experiment,
    *,
    address: str | None = None,
    use_ray: bool = False,
    steps: int = 3,
    memory_limit_gb: float | None = None,
    model: str | None = None,
    measure_fix: bool = True,
    echo: Callable[[str], None] = print,
) -> PreflightReport:
    """Measure one worst-case trial and report (:func:`report`); ``model`` overrides ``trainer.model``.

    With ``address`` (a Ray cluster to join) or ``use_ray`` (Ray already initialised, as in the
    sweep), the measurement runs as a Ray task with the trial's resources, so on the kind of node and
    device a trial gets; otherwise in this process. When the trial does not fit and a fix exists,
    ``measure_fix`` measures the trial again with the fix and prints its projection (the sweep,
    which only refuses, turns it off).
    """
    from mixopt.trial import TrainerError, load_trainer

    try:
        trainer = load_trainer(exp.trainer.target)
    except TrainerError as e:
        raise PreflightError(str(e)) from None
    if trainer.preflight is None:
        raise PreflightError(
            f"this trainer ({exp.trainer.target!r}) has no preflight measurement: preflight measures "
            f"the embedding trainer ({EMBEDDING_TRAINER}) and any trainer module that provides "
            "preflight(options, *, steps, seed, memory_limit) (see mixopt.trial)"
        )
    if steps < 1:
        raise PreflightError(f"--steps must be >= 1, got {steps}")
    options, notes = worst_case_options(exp)
    if model:
        options["model"] = os.path.abspath(model) if os.path.exists(model) else model
    limit = memory_limit_gb * 2**30 if memory_limit_gb else None

    def run(options: dict[str, Any]) -> Figures:
        args = (exp.trainer.target, options, steps, exp.trainer.seed, limit, tuple(exp.tasks))
        if not (address or use_ray):
            return measure(*args)
        import ray

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=True)
        task = ray.remote(measure).options(
            num_cpus=exp.resources.cpus,
            num_gpus=exp.resources.gpus,
            resources=dict(exp.resources.custom) or None,
            max_retries=0,
        )
        return ray.get(task.remote(*args))

    result = report(exp, run(options), notes, memory_limit_gb=memory_limit_gb, echo=echo)
    if not result.fits and measure_fix and result.fix_options:
        result.fix_figures = dict(run(options | result.fix_options))
        lines = [f"with the fix ({result.fix}), measured:", *_measured_lines(exp, result.fix_figures)]
        for line in lines:
            echo(line)
        result.lines.extend(lines)
    return result


def _measured_lines(exp: Experiment, figures: Mapping[str, Any]) -> list[str]:
    """Peak memory, step time, tokens/s, MFU, the trial's parts and the sweep's device-hours."""
    gib = 2**30
    if figures["oom"]:
        return [f"  peak memory      out of memory ({figures['memory_kind']}): no projection"]
    lines = [f"  peak memory      {figures['peak_memory'] / gib:.2f} GiB ({figures['memory_kind']})"]
    return lines + _timing_lines(exp, figures)


def _timing_lines(exp: Experiment, figures: Mapping[str, Any]) -> list[str]:
    """Step time, tokens/s, MFU, then the trial time as the sum of its measured parts, and the sweep's
    device-hours in the measured device's unit."""
    shape = Shape(**figures["shape"])
    seconds = figures["step_seconds"]
    tokens_per_s = figures["tokens_per_step"] / seconds
    lines = [
        f"  step time        {seconds:.3f} s (mean of {figures['steps']} steps after 1 warm-up)",
        f"  tokens/s         {tokens_per_s:,.0f}",
    ]
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
    steps = exp.trainer.steps
    n_evals = evaluations_per_trial(steps, int(figures.get("eval_every", 0)))
    load, evaluation = figures.get("load_seconds", 0.0), figures.get("eval_seconds", math.nan)
    save = figures.get("save_seconds", 0.0)
    parts = [f"load {load:.3f} s", f"{steps} steps x {seconds:.3f} s"]
    trial = load + steps * seconds + save
    if math.isfinite(evaluation):
        parts.append(f"{n_evals} evaluations x {evaluation:.3f} s")
        trial += n_evals * evaluation
    size = figures.get("checkpoint_bytes", 0) / 1e9
    parts.append(f"checkpoint write {save:.3f} s ({size:.2f} GB)")
    missing = (
        ""
        if math.isfinite(evaluation)
        else "; evaluations not measured: the trainer's preflight takes no tasks"
    )
    lines.append(f"  trial time       {' + '.join(parts)} = {trial:.3f} s ({duration(trial)}{missing})")
    n_trials = exp.optimizer.max_trials
    n_verify = _verification_trials(exp)
    if figures["device"] == "cuda":
        unit, per_trial, note = "GPU", exp.resources.gpus or 1, ""
    else:
        unit, per_trial = "CPU", exp.resources.cpus
        note = (
            " (the GPU projection needs a GPU: run `mixopt preflight --address ...` on the cluster)"
            if exp.resources.gpus > 0
            else ""
        )
    total_hours = trial * (n_trials + n_verify) * per_trial / 3600
    verify = f" + {n_verify} verification" if n_verify else ""
    lines.append(
        f"  sweep            {n_trials}{verify} trials x {trial:.3f} s x {per_trial:g} {unit} "
        f"= {_hours(total_hours)} {unit}-hours{note}"
    )
    return lines


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
        f"preflight {exp.name}: {exp.trainer.target} on {figures['device_name']}, {'bf16' if bf16 else 'float32'}",
        f"worst case: batch_size {b} x 3 sides (query, positive, hard negative) x {seq} tokens "
        f"(every text at max_seq_length), mini_batch_size {mb}, gradient_checkpointing {str(ckpt).lower()}"
        + (f"; {', '.join(notes)}" if notes else ""),
    ]
    estimate = estimate_memory(
        shape, batch_size=b, seq=seq, mini_batch_size=mb, gradient_checkpointing=ckpt, bf16=bf16
    )
    fix = fix_options = None
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
    if math.isfinite(figures["step_seconds"]):
        lines.extend(_timing_lines(exp, figures))
    if fits:
        lines.append(f"fits: peak {figures['peak_memory'] / gib:.2f} GiB <= {limit / gib:.1f} GiB")
    else:
        fix, fix_options = fix_for(
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
    return PreflightReport(figures, fits, fix, lines, fix_options)
