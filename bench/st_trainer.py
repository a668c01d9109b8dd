"""The sentence-transformers trainer against the built-in one on the tiny landscape's mixtures.

Both trainers run the same trials (mixture, trainer seed, step budget) on the same synthetic tasks
and tiny Gemma3 encoder: ``trainers.embedding:train`` as experiments/tiny_synthetic.yaml sets it,
``trainers.sentence_transformers:train`` as experiments/st_tiny.yaml does. Trials run one after
another in this process (one torch thread), the two trainers interleaved trial by trial, so a load
on the machine falls on both alike. It prints, per mixture, each trainer's mean and sd of the
objective over seeds, then

    Spearman      rank correlation of the two trainers' mean objectives over the mixtures
                  (scipy.stats.spearmanr): do they order the mixtures alike?
    tokens/s      each trainer's training throughput (non-padding tokens of every text it
                  embeds for the loss / training seconds), median over trials, and the ratio

    python bench/st_trainer.py                       # 8 mixtures x 3 seeds (the landscape's first 8)
    python bench/st_trainer.py --mixtures 12 --seeds 4
    python bench/st_trainer.py --quick               # 3 mixtures x 1 seed, to check it runs

The synthetic tasks are written with ``mixopt.synth`` (seed 0, the default spec, as ``make
synth``) into a temporary directory unless ``--data DIR`` points at existing ones.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from landscape import MIXTURES  # noqa: E402

CONFIGS = {
    "built-in": REPO / "experiments" / "tiny_synthetic.yaml",
    "st": REPO / "experiments" / "st_tiny.yaml",
}


def _experiment(config: Path, synth_dir: Path, steps: int | None):
    from mixopt.config import experiment_from_dict, parse_yaml

    data, _ = parse_yaml(config.read_text(), str(config))
    for task in data["tasks"]:
        task["path"] = str(synth_dir / task["name"])
    data["trainer"]["model"] = str(synth_dir / "model")
    data["trainer"]["cpu_threads"] = 1
    if steps:
        data["trainer"]["steps"] = steps
    return experiment_from_dict(data, base_dir=synth_dir)


def _trial(exp, weights, seed: int, out: Path) -> dict:
    from mixopt.trial import Trial, load_trainer

    trainer = load_trainer(exp.trainer.target)
    trial = Trial(
        mixture=dict(zip(exp.task_names, weights)),
        hyperparameters={},
        seed=seed,
        steps=exp.trainer.steps,
        output_dir=out,
        tasks=tuple(exp.tasks),
        options=exp.trainer.options,
        trial_id=f"s{seed}",
    )
    t0 = time.perf_counter()
    result = trainer.train(trial, lambda step, metrics: None)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "objective": result.objective,
        "tokens_per_s": result.extra["tokens_per_s"],
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="existing synthetic tasks (default: write them)")
    parser.add_argument("--mixtures", type=int, default=8, help="the landscape's first N mixtures (>= 3)")
    parser.add_argument("--seeds", type=int, default=3, help="trainer seeds per mixture")
    parser.add_argument("--steps", type=int, default=None, help="override trainer.steps (both trainers)")
    parser.add_argument("--quick", action="store_true", help="3 mixtures x 1 seed")
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from mixopt.synth import synthesize

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="st_trainer."))
    synth_dir = Path(args.data).resolve() if args.data else tmp / "synthetic"
    if not args.data:
        synthesize(synth_dir, n_tasks=3, seed=0)
    exps = {name: _experiment(path, synth_dir, args.steps) for name, path in CONFIGS.items()}
    mixtures = MIXTURES[: 3 if args.quick else args.mixtures]
    seeds = list(range(1 if args.quick else args.seeds))
    steps = exps["st"].trainer.steps
    print(f"{len(mixtures)} mixtures x {len(seeds)} seeds x 2 trainers, steps {steps}, 1 thread", flush=True)

    t0 = time.perf_counter()
    results: dict[str, dict[tuple, list[dict]]] = {name: {} for name in exps}
    for i, (_, w) in enumerate(mixtures):
        for seed in seeds:
            for name, exp in exps.items():
                r = _trial(exp, w, seed, tmp / "runs" / f"{name}-{i}-{seed}")
                results[name].setdefault(w, []).append(r)
        print(f"  mixture {i + 1}/{len(mixtures)} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    wall = time.perf_counter() - t0

    means = {name: [] for name in exps}
    print("\n| mixture | weights | built-in mean | sd | st mean | sd |")
    for label, w in mixtures:
        row = []
        for name in exps:
            values = [r["objective"] for r in results[name][w]]
            means[name].append(statistics.fmean(values))
            row += [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
        print(
            f"| {label} | {', '.join(f'{x:.2f}' for x in w)} | " + " | ".join(f"{v:.4f}" for v in row) + " |"
        )
    rho = spearmanr(means["built-in"], means["st"]).statistic
    rate = {
        name: statistics.median(r["tokens_per_s"] for rs in results[name].values() for r in rs)
        for name in exps
    }
    secs = {
        name: statistics.fmean(r["seconds"] for rs in results[name].values() for r in rs) for name in exps
    }
    print(f"\nSpearman of the mean objectives over {len(mixtures)} mixtures: {rho:.3f}")
    print(
        f"tokens/s (median)  built-in {rate['built-in']:.0f}, st {rate['st']:.0f}, "
        f"st / built-in {rate['st'] / rate['built-in']:.2f}"
    )
    print(
        f"trial seconds (mean, with load and evaluation)  built-in {secs['built-in']:.1f}, st {secs['st']:.1f}"
    )
    print(f"wall {wall:.0f} s for {2 * len(mixtures) * len(seeds)} trials")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
