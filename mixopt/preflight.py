"""Preflight: a few steps of one trial at the search space's worst case, before a sweep spends GPU-hours.

``mixopt preflight EXPERIMENT.yaml`` (or ``sweep.preflight: true``) builds the trial the sweep
would run with the most memory-hungry values the search space allows (the largest ``batch_size``,
``max_seq_length`` and ``mini_batch_size`` if they are hyperparameters, checkpointing off if it is
one), and asks the trainer to measure ``1 + steps`` optimisation steps of it on full-length batches
(its ``preflight`` measurement, :class:`mixopt.trial.PreflightMeasure`; the embedding trainer's is
:func:`trainers.preflight.preflight`) on the device a trial gets (through Ray with the trial's
resources when a cluster address is given, else in this process). A trainer without one is refused
with a line saying so. This module keeps the service's side: what to measure, the projection, the
report, and refusing what won't fit. It reports:

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
``--memory-limit-gb``) fails with the smallest change of options that makes it fit, when the trainer
has a memory model to name one (its optional ``memory_fix`` hook, :class:`mixopt.trial.MemoryFix`;
the embedding trainer's is :func:`trainers.memory.memory_fix`): ``set trainer.mini_batch_size: 16``,
then with ``trainer.gradient_checkpointing: true``, then a shorter ``max_seq_length``. That fix is
then measured in its turn (``measure_fix``), so the report still projects the trial and the sweep,
as they would run with the fix. A trainer without the hook gets the measured report and the
refusal without a fix.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from mixopt.config import CategoricalParam, Experiment, IntParam
from mixopt.human import duration
from mixopt.trial import MemoryFix, TrainerError, absolute_options, load_trainer

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


class PreflightError(RuntimeError):
    """The experiment cannot be preflighted (a trainer without a measurement, no device); the message says why."""


def peak_bf16_flops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def worst_case_options(exp: Experiment) -> tuple[dict[str, Any], list[str]]:
    """The trainer options of the most memory-hungry trial the search space allows, and notes saying so."""
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
    projected_memory: float  # bytes, by the trainer's memory model; NaN without one
    step_seconds: float  # mean after one warm-up step; NaN when not run
    tokens_per_step: int
    loss: float
    bf16: bool
    # The model's sizes: n_params and n_embedding (all trainable parameters, and the token-embedding
    # table's; MFU's N is the difference), and whatever else the trainer's memory model reads.
    shape: dict[str, int]
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
    try:
        trainer = load_trainer(exp.trainer.target)
    except TrainerError as e:
        raise PreflightError(str(e)) from None
    if trainer.preflight is None:
        raise PreflightError(
            f"this trainer ({exp.trainer.target!r}) has no preflight measurement: preflight measures "
            "the embedding trainer and any trainer module that provides "
            "preflight(options, *, steps, seed, memory_limit) (see mixopt.trial)"
        )
    if steps < 1:
        raise PreflightError(f"--steps must be >= 1, got {steps}")
    if memory_limit_gb is not None and not memory_limit_gb > 0:  # nan too
        raise PreflightError(
            f"--memory-limit-gb {memory_limit_gb:g}: a trial cannot fit in no memory; give the GiB a trial "
            "may use (e.g. 40), or leave it out for the device's own memory"
        )
    options, notes = worst_case_options(exp)
    if model:
        options["model"] = os.path.abspath(model) if os.path.exists(model) else model
    limit = memory_limit_gb * 2**30 if memory_limit_gb is not None else None

    def run(options: dict[str, Any]) -> Figures:
        args = (exp.trainer.target, options, steps, exp.trainer.seed, limit, tuple(exp.tasks))
        if not (address or use_ray):
            return measure(*args)
        import ray  # only when the measurement runs on Ray: `mixopt preflight` alone runs here

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=True)
        task = ray.remote(measure).options(
            num_cpus=exp.resources.cpus,
            num_gpus=exp.resources.gpus,
            resources=dict(exp.resources.custom) or None,
            max_retries=0,
        )
        return ray.get(task.remote(*args))

    result = report(
        exp, run(options), notes, memory_limit_gb=memory_limit_gb, memory_fix=trainer.memory_fix, echo=echo
    )
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
    n_matmul = figures["shape"]["n_params"] - figures["shape"]["n_embedding"]
    seconds = figures["step_seconds"]
    tokens_per_s = figures["tokens_per_step"] / seconds
    lines = [
        f"  step time        {seconds:.3f} s (mean of {figures['steps']} steps after 1 warm-up)",
        f"  tokens/s         {tokens_per_s:,.0f}",
    ]
    peak_flops = peak_bf16_flops(figures["device_name"]) if figures["device"] == "cuda" else None
    achieved = 6 * n_matmul * tokens_per_s
    if peak_flops:
        lines.append(
            f"  MFU              {100 * achieved / peak_flops:.1f} % of {peak_flops / 1e12:.0f} TFLOP/s dense bf16 "
            f"(6·N·tokens/s, N = {n_matmul / 1e6:.1f}M non-embedding parameters)"
        )
    else:
        lines.append(
            f"  MFU              n/a ({achieved / 1e12:.3f} TFLOP/s achieved by 6·N·tokens/s, "
            f"N = {n_matmul / 1e6:.1f}M non-embedding parameters; no bf16 peak known for this device)"
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
    memory_fix: MemoryFix | None = None,
    echo: Callable[[str], None] = print,
) -> PreflightReport:
    """Print the figures of :func:`measure` and decide whether the trial fits; one that does not is
    given the trainer's ``memory_fix`` when it has one."""
    limit = memory_limit_gb * 2**30 if memory_limit_gb is not None else figures["total_memory"]
    limit_source = "--memory-limit-gb" if memory_limit_gb is not None else "the device's memory"
    b, seq = figures["batch_size"], figures["max_seq_length"]
    mb, ckpt, bf16 = figures["mini_batch_size"], figures["gradient_checkpointing"], figures["bf16"]
    gib = 2**30
    lines = [
        f"preflight {exp.name}: {exp.trainer.target} on {figures['device_name']}, {'bf16' if bf16 else 'float32'}",
        f"worst case: batch_size {b} x 3 sides (query, positive, hard negative) x {seq} tokens "
        f"(every text at max_seq_length), mini_batch_size {mb}, gradient_checkpointing {str(ckpt).lower()}"
        + (f"; {', '.join(notes)}" if notes else ""),
    ]
    estimate = float(figures.get("projected_memory", math.nan))
    modelled = math.isfinite(estimate)
    fix = fix_options = None
    if figures["projected_oom"]:
        lines.append(
            f"  peak memory      projected {estimate / gib:.1f} GiB by the memory model, over the "
            f"{limit / gib:.1f} GiB limit: the steps were not run"
        )
        fits = False
    elif figures["oom"]:
        lines.append(
            f"  peak memory      out of memory ({figures['memory_kind']}"
            + (f"; model estimate {estimate / gib:.1f} GiB)" if modelled else ")")
        )
        fits = False
    else:
        peak = figures["peak_memory"]
        lines.append(
            f"  peak memory      {peak / gib:.2f} GiB of {limit / gib:.1f} GiB ({limit_source}); "
            f"{figures['memory_kind']}" + (f"; model estimate {estimate / gib:.2f} GiB" if modelled else "")
        )
        fits = peak <= limit
    if math.isfinite(figures["step_seconds"]):
        lines.extend(_timing_lines(exp, figures))
    if fits:
        lines.append(f"fits: peak {figures['peak_memory'] / gib:.2f} GiB <= {limit / gib:.1f} GiB")
    elif memory_fix is not None:
        fix, fix_options = memory_fix(figures, limit=limit)
        lines.append(f"does not fit in {limit / gib:.2f} GiB ({limit_source}): {fix}")
    else:
        lines.append(
            f"does not fit in {limit / gib:.2f} GiB ({limit_source}); the trainer has no memory model "
            "to name a fix (its memory_fix, see mixopt.trial)"
        )
    for line in lines:
        echo(line)
    return PreflightReport(figures, fits, fix, lines, fix_options)
