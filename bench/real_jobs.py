"""Work of the real-data benchmark run outside the sweep, in worker processes: a trial, a dev or a
test evaluation of a checkpoint.

Each job is a plain dict (picklable) and runs in a fresh ``spawn`` process of a pool of
``workers`` (the sweep's ``max_concurrent``: one torch thread each, as a sweep trial runs), so a
worker starts with the parent's environment and therefore with the read audit of
``bench/read_audit`` when the parent set it. The parent records each result as it arrives.

- ``{"kind": "train", "key", "mixture", "seed", "out", "eval_every"}``: one trial of the
  experiment's trainer (its YAML options, ``eval_every`` overridden), as the sweep would run it
  with that seed; returns the dev scores, the objective, every dev metric, the learning curve
  (``[step, objective, {task: score}]`` for each intermediate evaluation), the checkpoint, and
  the wall, train and evaluation seconds.
- ``{"kind": "dev", "key", "checkpoint"}``: the checkpoint scored on the dev splits.
- ``{"kind": "test", "key", "checkpoint"}``: the checkpoint scored on the test splits
  (:mod:`real_testsplit`, the only reader of them).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def run_jobs(
    config: Path, jobs: Iterable[dict[str, Any]], workers: int, done: Callable[[dict[str, Any]], None]
) -> None:
    """Run ``jobs`` on ``workers`` processes; ``done(result)`` in this process as each one ends.

    A job that raises ends the run with its error (after the jobs in flight finish): the
    benchmark's figures need every one of them.
    """
    jobs = [dict(j, config=str(config)) for j in jobs]
    if not jobs:
        return
    with mp.get_context("spawn").Pool(min(workers, len(jobs)), maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(_run, jobs):
            done(result)


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from mixopt.config import load_experiment

    torch.set_num_threads(1)
    exp = load_experiment(Path(job["config"]))
    t0 = time.perf_counter()
    if job["kind"] == "train":
        out = _train(exp, job)
    elif job["kind"] == "dev":
        from mixopt.soup.evaluate import trainer_evaluator

        result = trainer_evaluator(exp)(Path(job["checkpoint"]))
        out = {
            "dev": dict(result.task_scores),
            "objective": result.objective,
            "dev_metrics": dict(result.task_metrics),
        }
    elif job["kind"] == "test":
        from real_testsplit import evaluate_on_test

        out = {
            "test": evaluate_on_test(
                exp.trainer.target, Path(job["checkpoint"]), exp.tasks, exp.trainer.options
            )
        }
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    return {
        **out,
        "key": job["key"],
        "kind": job["kind"],
        "wall_s": time.perf_counter() - t0,
        "load": os.getloadavg(),
    }


def _train(exp: Any, job: dict[str, Any]) -> dict[str, Any]:
    from mixopt.trial import Trial, load_trainer

    options = dict(exp.trainer.options)
    options["eval_every"] = int(job.get("eval_every") or 0)
    defaults = {n: p.default for n, p in exp.search.hyperparameters.items() if p.default is not None}
    trial = Trial(
        mixture=dict(job["mixture"]),
        hyperparameters=defaults,
        seed=int(job["seed"]),
        steps=exp.trainer.steps,
        output_dir=Path(job["out"]),
        tasks=tuple(exp.tasks),
        options=options,
        trial_id=job["key"],
        objective_weights=exp.objective_weights,
    )
    from mixopt.sweep.scores import report_scores

    curve: list[list[Any]] = []
    names = exp.task_names
    configured = {t.name: t.metric for t in exp.tasks}

    def report(step: int, metrics: dict[str, float]) -> None:
        if "objective" in metrics and step < exp.trainer.steps:
            curve.append([step, float(metrics["objective"]), report_scores(metrics, configured)])

    result = load_trainer(exp.trainer.target).train(trial, report)
    return {
        "dev": {n: float(result.task_scores[n]) for n in names},
        "objective": float(result.objective),
        "dev_metrics": {k: float(v) for k, v in result.task_metrics.items()},
        "curve": curve,
        "checkpoint": str(result.checkpoint),
        "train_s": float(result.extra.get("train_seconds", float("nan"))),
        "eval_s": float(result.extra.get("eval_seconds", float("nan"))),
    }
