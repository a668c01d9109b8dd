"""The trial function that Ray Tune runs on a worker: one trial of the experiment's trainer.

Tune reuses a worker process for the next trial (``reuse_actors``), so what one trial leaves in
the process, the next one starts with: after each trial :func:`release_memory` hands the freed
heap back to the operating system (``python tests/test_trial_memory.py`` measures the process's
memory floor across trials with and without it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.common import failure_kind
from mixopt.trial import Trial, TrialFailed, load_trainer, score_metrics


def train_function(exp: Experiment) -> Callable[..., Any]:
    """The trainer's train function, named by ``trainer.target`` (``module:function``)."""
    return load_trainer(exp.trainer.target).train


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``malloc_trim``), else None (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_memory() -> None:
    """Return the memory a finished trial freed to the operating system.

    A trial's model, optimizer state and activations are garbage once it returns, but CPython's
    reference cycles keep some of them until a collection, glibc's malloc keeps freed heap pages
    for reuse by the process (its arenas grow, they rarely shrink), and PyTorch's CUDA caching
    allocator keeps freed blocks reserved. In a reused worker these add up trial after trial;
    ``gc.collect()``, glibc's ``malloc_trim(0)`` and ``torch.cuda.empty_cache()`` give them back.
    """
    gc.collect()
    torch = sys.modules.get("torch")  # a trainer that never imported torch has no torch memory
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def run_trial(
    config: dict[str, Any], experiment_json: str, options: dict[str, Any], storage_dir: str
) -> None:
    """Ray Tune function trainable: one trial of the experiment's trainer.

    Runs on a worker. Reports every trainer report to Tune; the final report carries the
    objective, per-task scores and the checkpoint path. A failure raises, so Tune records it.
    """
    # Ray is imported where a trial runs (on a worker): the sweep's checks import this package
    # without it (`mixopt validate`).
    import ray
    from ray import tune

    exp = Experiment.model_validate_json(experiment_json)
    node_id = ray.get_runtime_context().get_node_id()
    proposal = config["proposal"]
    tasks = exp.task_names
    trial = Trial(
        mixture={t: float(proposal[t]) for t in tasks},
        hyperparameters={k: v for k, v in proposal.items() if k not in tasks},
        seed=int(config.get("seed", exp.trainer.seed)),
        steps=exp.trainer.steps,
        output_dir=Path(storage_dir) / config["trial_id"],
        tasks=tuple(exp.tasks),
        options=options,
        trial_id=config["trial_id"],
        objective_weights=exp.objective_weights,
    )

    def report(step: int, metrics: Mapping[str, float]) -> None:
        out: dict[str, Any] = {
            "mixopt_step": int(step),
            "mixopt_node": node_id,
            "mixopt": {k: float(v) for k, v in metrics.items()},
        }
        if "objective" in metrics:
            out["objective"] = float(metrics["objective"])
        tune.report(out)

    train = train_function(exp)
    try:
        result = train(trial, report)
    except Exception as e:
        # The traceback holds the trainer's frames, and they the model: drop their locals first.
        traceback.clear_frames(e.__traceback__)
        release_memory()
        # Ray pickles the exception for the driver without its chain: the kind (bad data, a full
        # disk, or the trial's own failure) rides along as an attribute the driver reads.
        try:
            e.mixopt_failure_kind = failure_kind(e)  # type: ignore[attr-defined]
        except AttributeError:  # an exception type without attributes: the driver guesses
            pass
        raise
    release_memory()
    if not (isinstance(result.objective, (int, float)) and math.isfinite(result.objective)):
        raise TrialFailed(f"the trainer returned a non-finite objective ({result.objective})")
    final = {
        "objective": float(result.objective),
        **result.task_metrics,
        **result.extra,
        **score_metrics(result.task_scores),
    }
    tune.report(
        {
            "objective": float(result.objective),
            "mixopt_step": trial.steps,
            "mixopt_node": node_id,
            "mixopt_final": 1,
            "mixopt": final,
            "mixopt_checkpoint": str(result.checkpoint) if result.checkpoint else "",
        }
    )
