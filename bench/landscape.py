"""The mixture landscape of the tiny experiment on the real trainer: is the mixture effect above the seed noise?

Runs ``trainers.embedding:train`` directly (no Ray, no MLflow) on a fixed set of mixtures of the
tiny experiment's tasks (corners within the YAML's bounds, edges, uniform, interior points and
points near the expected optimum), each with several trainer seeds (``Trial.seed``: data order,
order of the tasks, new-layer init). It prints, per mixture, the mean and sd over seeds of the objective,
then

    pooled sd      = sqrt(mean over mixtures of the within-mixture variance)   (seed noise)
    effect         = best mixture mean - uniform mean
    effect / pooled sd
    interior       = every weight of the best mixture >= 0.05

A sweep can only tell a better mixture from a worse one if ``effect / pooled sd`` is well above 1;
issue 10 asks for >= 3 (the measured figure is in bench/RESULTS.md). Trials run at the YAML's
trainer options and its hyperparameters' defaults, as a sweep's seed trials do; ``--set KEY=VALUE``
overrides one (a JSON value, e.g. ``--set learning_rate=2e-3``).

    python bench/landscape.py                          # 12 mixtures x 3 seeds, 2 worker processes
    python bench/landscape.py --seeds 4 --steps 60     # more seeds, another step budget
    python bench/landscape.py --quick                  # 4 mixtures x 2 seeds, to check it runs
    python bench/landscape.py --set eval_every=10      # also the learning curves (see below)

**Learning curves** (whenever the trainer reports the dev objective before the end, i.e.
``eval_every`` below ``steps``): do early values rank the mixtures as their final values do? That
is what early stopping bets on (ASHA keeps the top of a rung by one trial's value; the
multi-fidelity GP models the curves). At each reported step ``t`` it prints the pooled seed sd of
the objective and two rank correlations (Spearman) with the mixtures' *final mean* over seeds:
``mean@t`` (the mixtures' means at ``t``; how the landscape changes) and ``trial@t`` (one trial per
mixture, as a sweep has, averaged over seeds; at the last step this is the noise ceiling: a
trial's own final value predicts the final mean only that well), and ``rung@t``: how many of the
final top ``n // 4`` mixtures a rung at ``t`` that stops the lower half (ASHA's reduction factor
2) would stop, per seed.

The synthetic tasks are written with ``mixopt.synth`` (seed 0, the default spec, as ``make synth``)
into a temporary directory unless ``--data DIR`` points at existing ones. Each worker runs torch on
one thread, as a sweep's trial does.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# In the task order of experiments/tiny_synthetic.yaml: (retrieval_0, sts_1, classification_2).
MIXTURES: list[tuple[str, tuple[float, float, float]]] = [
    ("uniform", (1 / 3, 1 / 3, 1 / 3)),
    ("corner retrieval", (0.8, 0.1, 0.1)),
    ("corner sts", (0.1, 0.8, 0.1)),
    ("corner classification", (0.1, 0.1, 0.8)),
    ("edge r+s", (0.45, 0.45, 0.1)),
    ("edge r+c", (0.45, 0.1, 0.45)),
    ("edge s+c", (0.1, 0.45, 0.45)),
    ("interior s", (0.25, 0.5, 0.25)),
    ("interior c", (0.25, 0.25, 0.5)),
    ("near optimum a", (0.5, 0.3, 0.2)),
    ("near optimum b", (0.55, 0.3, 0.15)),
    ("near optimum c", (0.6, 0.25, 0.15)),
]
QUICK = ["uniform", "corner retrieval", "corner classification", "near optimum a"]


def _job(args: tuple[dict[str, Any], tuple[float, ...], int, str]) -> dict[str, Any]:
    """One trial in a worker process; returns the objective and per-task scores."""
    spec, weights, seed, out = args
    import torch

    torch.set_num_threads(1)
    from mixopt.config import experiment_from_dict
    from mixopt.trial import Trial
    from trainers.embedding import train

    exp = experiment_from_dict(spec["experiment"], base_dir=Path(spec["base_dir"]))
    names = exp.task_names
    # A sweep's seed trials run at the hyperparameters' defaults: so does the landscape.
    # (An option set with --set wins over a hyperparameter's default.)
    defaults = {
        name: p.default
        for name, p in exp.search.hyperparameters.items()
        if p.default is not None and name not in spec["overrides"]
    }
    trial = Trial(
        mixture=dict(zip(names, weights)),
        hyperparameters=defaults,
        seed=seed,
        steps=exp.trainer.steps,
        output_dir=Path(out),
        tasks=tuple(exp.tasks),
        options=exp.trainer.options,
        trial_id=f"s{seed}",
    )
    curve: list[tuple[int, float]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        if "objective" in metrics:
            curve.append((step, float(metrics["objective"])))

    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train(trial, report)
    return {
        "curve": curve,
        "weights": weights,
        "seed": seed,
        "objective": result.objective,
        "scores": dict(result.task_scores),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "train_seconds": result.extra["train_seconds"],
        "eval_seconds": result.extra["eval_seconds"],
    }


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return m, math.sqrt(var)


def _curves(results: list[dict[str, Any]], mixtures: list, seeds: list[int], steps: int) -> None:
    """The learning-curve table (see the module docstring); nothing without intermediate reports."""
    from scipy.stats import spearmanr

    value: dict[tuple[tuple[float, ...], int, int], float] = {}
    for r in results:
        for step, v in r["curve"]:
            value[(tuple(r["weights"]), r["seed"], step)] = v
    ws = [tuple(w) for _, w in mixtures]
    at = sorted({st for (_, _, st) in value if all((w, s, st) in value for w in ws for s in seeds)})
    if len(at) < 2 or at[-1] != steps or len(ws) < 4:
        return
    final = [_mean_sd([value[(w, s, steps)] for s in seeds])[0] for w in ws]
    top = {i for i in sorted(range(len(ws)), key=lambda i: -final[i])[: max(1, len(ws) // 4)]}
    print(f"\nlearning curves: {len(ws)} mixtures x {len(seeds)} seeds; Spearman with the final mean")
    print(f"{'step':>5} {'pooled sd':>10} {'mean@t':>7} {'trial@t':>8}  rung@t (of the final top {len(top)})")
    for t in at:
        means = [_mean_sd([value[(w, s, t)] for s in seeds])[0] for w in ws]
        pooled = math.sqrt(sum(_mean_sd([value[(w, s, t)] for s in seeds])[1] ** 2 for w in ws) / len(ws))
        per_seed = [[value[(w, s, t)] for w in ws] for s in seeds]
        trial = sum(spearmanr(v, final)[0] for v in per_seed) / len(seeds)
        # A rung at t stops the lower half of the mixtures by one trial's value (per seed).
        stopped = [
            len(top & set(sorted(range(len(ws)), key=lambda i: v[i])[: len(ws) // 2])) for v in per_seed
        ]
        print(
            f"{t:5d} {pooled:10.4f} {spearmanr(means, final)[0]:7.2f} {trial:8.2f}  "
            + " ".join(str(k) for k in stopped)
            + f" (mean {sum(stopped) / len(stopped):.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "tiny_synthetic.yaml"))
    parser.add_argument("--data", default=None, help="existing synthetic tasks (default: write them)")
    parser.add_argument("--seeds", type=int, default=3, help="trainer seeds per mixture")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override trainer.steps")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 torch thread each)")
    parser.add_argument("--quick", action="store_true", help="4 mixtures x 2 seeds")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a trainer option (JSON value)",
    )
    parser.add_argument(
        "--mixture", action="append", default=[], metavar="W0,W1,W2", help="run these mixtures instead"
    )
    parser.add_argument("--json", default=None, help="also write every trial's result here")
    args = parser.parse_args(argv)

    from mixopt.config import parse_yaml
    from mixopt.synth import synthesize

    data, _ = parse_yaml(Path(args.config).read_text(), args.config)
    tmp = Path(tempfile.mkdtemp(prefix="landscape."))
    if args.data:
        synth_dir = Path(args.data).resolve()
    else:
        synth_dir = tmp / "synthetic"
        synthesize(synth_dir, n_tasks=len(data["tasks"]), seed=0)
    for task in data["tasks"]:
        task["path"] = str(synth_dir / task["name"])
    data["trainer"]["model"] = str(synth_dir / "model")
    if args.steps:
        data["trainer"]["steps"] = args.steps
    for item in args.set:
        key, _, value = item.partition("=")
        data["trainer"][key] = json.loads(value)
    data["trainer"]["cpu_threads"] = 1
    data["trainer"]["progress"] = False
    overrides = [item.partition("=")[0] for item in args.set]
    spec = {"experiment": data, "base_dir": str(tmp), "overrides": overrides}

    if args.mixture:
        mixtures = [(m, tuple(float(x) for x in m.split(","))) for m in args.mixture]
        mixtures = [("uniform", (1 / 3, 1 / 3, 1 / 3)), *mixtures]
    elif args.quick:
        mixtures = [m for m in MIXTURES if m[0] in QUICK]
    else:
        mixtures = MIXTURES
    seeds = list(range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds)))
    jobs = [(spec, w, s, str(tmp / "runs" / f"{i}-{s}")) for i, (_, w) in enumerate(mixtures) for s in seeds]
    names = [t["name"] for t in data["tasks"]]
    print(
        f"{len(mixtures)} mixtures x {len(seeds)} seeds, steps {data['trainer']['steps']}, "
        f"{args.workers} workers, tasks {names}",
        flush=True,
    )
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_job, jobs, chunksize=1)
    wall = time.perf_counter() - t0

    rows = []
    for label, w in mixtures:
        rs = [r for r in results if tuple(r["weights"]) == tuple(w)]
        mean, sd = _mean_sd([r["objective"] for r in rs])
        per_task = {n: _mean_sd([r["scores"][n] for r in rs])[0] for n in names}
        rows.append((label, w, mean, sd, per_task, [r["objective"] for r in rs]))
    print(f"\n| mixture | {' | '.join(names)} | mean | sd | per task (mean) |")
    for label, w, mean, sd, per_task, values in rows:
        tasks = " ".join(f"{per_task[n]:.3f}" for n in names)
        ws = " | ".join(f"{x:.2f}" for x in w)
        print(f"| {label} | {ws} | {mean:.4f} | {sd:.4f} | {tasks} |  {' '.join(f'{v:.3f}' for v in values)}")
    pooled = math.sqrt(sum(sd**2 for *_, sd, _, _ in rows) / len(rows))
    uniform = next(r for r in rows if r[0] == "uniform")
    best = max(rows, key=lambda r: r[2])
    effect = best[2] - uniform[2]
    interior = min(best[1]) >= 0.05
    seconds = [r["seconds"] for r in results]
    train_s = sum(r["train_seconds"] for r in results) / len(results)
    eval_s = sum(r["eval_seconds"] for r in results) / len(results)
    cpu = [r["cpu_seconds"] for r in results]
    print(f"\npooled seed sd    {pooled:.4f}")
    by_task = {
        n: math.sqrt(
            sum(
                _mean_sd([r["scores"][n] for r in results if tuple(r["weights"]) == tuple(w)])[1] ** 2
                for _, w in mixtures
            )
            / len(mixtures)
        )
        for n in names
    }
    print(
        "  per task         "
        + ", ".join(f"{n} {sd:.4f}" for n, sd in by_task.items())
        + " (pooled sd of each score)"
    )
    print(f"best              {best[0]} {tuple(round(x, 3) for x in best[1])}  mean {best[2]:.4f}")
    print(f"uniform           mean {uniform[2]:.4f}")
    print(f"effect            {effect:+.4f}")
    print(f"effect / pooled sd {effect / pooled if pooled else float('inf'):.2f}")
    print(f"best is interior  {interior} (every weight >= 0.05)")
    print(
        f"trial seconds     wall mean {sum(seconds) / len(seconds):.1f}, max {max(seconds):.1f}; "
        f"CPU mean {sum(cpu) / len(cpu):.1f}, max {max(cpu):.1f} "
        f"(train {train_s:.1f} + eval {eval_s:.1f}; {len(results)} trials, wall {wall:.0f} s on {args.workers} workers)"
    )
    _curves(results, mixtures, seeds, data["trainer"]["steps"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)  # the trials' checkpoints
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
