"""Trial-trainer throughput on CPU with the batch loader on a background thread vs on the training thread.

Runs :func:`trainers.embedding.train` (the whole trial loop: sampling, pairing, tokenising, the
step) on the synthetic tasks and tiny encoder of ``mixopt synth`` and reports training tokens/s
(``result.extra["tokens_per_s"]``: non-padding tokens over the training seconds, evaluation
excluded). Sides, each in its own subprocess, alternated ``--repeats`` times, best of each:

- ``prefetch 0``: this repository, batches prepared on the training thread between steps;
- ``prefetch 2``: this repository, batches prepared two ahead by the background thread;
- ``base``: the trainer at git revision ``--base`` (e.g. one without the background loader), when given.

Usage::

    python bench/loader.py --steps 60 --repeats 3 --base REVISION

On a CPU the step and the loader compete for the same cores, so the gain is bounded by the share of
a step spent preparing batches; on a GPU host the step runs on the device and the loader's work
disappears from the step time entirely.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.code)
    from mixopt.config import load_experiment
    from mixopt.trial import Trial
    from trainers.embedding import train

    exp = load_experiment(args.config)
    options = {**exp.trainer.options, "model": str(Path(args.data) / "model"), "batch_size": args.batch}
    options.update(eval_every=0, cpu_threads=args.threads)
    if args.prefetch >= 0:
        options["prefetch"] = args.prefetch
    trial = Trial(
        mixture={t: 1 / len(exp.tasks) for t in exp.task_names},
        hyperparameters={},
        seed=0,
        steps=args.steps,
        output_dir=Path(args.out),
        tasks=tuple(exp.tasks),
        options=options,
        trial_id="bench",
    )
    result = train(trial, lambda step, metrics: None)
    print("RESULT " + json.dumps(dict(result.extra)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the step (cpu_threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default=None, help="git revision of the trainer to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(REPO))
    from mixopt.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "data"
        synthesize(data, n_tasks=3, seed=0)
        import yaml

        config = tmp_path / "tiny.yaml"
        raw = yaml.safe_load((REPO / "experiments" / "tiny_synthetic.yaml").read_text())
        # Only what a trial reads (tasks, trainer): sections added since --base would not load there.
        raw = {key: raw[key] for key in ("name", "tasks", "trainer")}
        raw["trainer"].pop("task_sampling", None)  # newer than --base; every side draws tasks at random
        config.write_text(yaml.safe_dump(raw).replace("../data/synthetic/", f"{data}/"))
        sides = [("prefetch 0", str(REPO), 0), ("prefetch 2", str(REPO), 2)]
        if args.base:
            base = tmp_path / "base"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.base, "mixopt", "trainers"],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            sides.insert(0, (f"base {args.base}", str(base), -1))
        best: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for name, code, prefetch in sides:
                cmd = [sys.executable, __file__, "--child", "--code", code, "--config", str(config)]
                cmd += ["--data", str(data), "--out", str(tmp_path / f"out-{repeat}-{prefetch}")]
                cmd += [
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                    "--threads",
                    str(args.threads),
                ]
                cmd += ["--prefetch", str(prefetch)]
                env = {**os.environ, "PYTHONPATH": code, "TOKENIZERS_PARALLELISM": "false"}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                stats = json.loads(lines[-1][len("RESULT ") :])
                print(f"  {name:<16} repeat {repeat}: {stats['tokens_per_s']:.0f} tokens/s", flush=True)
                if name not in best or stats["tokens_per_s"] > best[name]["tokens_per_s"]:
                    best[name] = stats
    print(
        f"trial trainer on the tiny synthetic experiment: batch {args.batch}, {args.steps} steps, "
        f"{args.threads} torch thread(s), best of {args.repeats}"
    )
    reference = best["prefetch 0"]["tokens_per_s"]
    for name, stats in best.items():
        print(
            f"  {name:<16}{stats['tokens_per_s']:>10.0f} tokens/s  ({stats['tokens_per_s'] / reference:.2f}x prefetch 0)"
        )


if __name__ == "__main__":
    main()
