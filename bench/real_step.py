"""What one trial of the real-data experiment costs on this machine, part by part, and the base model.

Reads experiments/real_minilm.yaml (its trainer, tasks and options; ``--config`` another;
``--target`` another trainer on the same YAML, its options changed with ``--set``) and the data
written by bench/real_data.py, and times, in this process with ``cpu_threads`` torch threads:

    load          the trainer's own load of the model folder (SentenceTransformer(folder), or
                  trainers.model.load_encoder for trainers.embedding), the median of 3 loads
    eval@N        the base model scored on the first N dev rows of every task
                  (``evaluate_checkpoint`` with ``dev_rows``: the soup's and a trial's evaluation,
                  the load excluded), per task and in all; the dev scores printed beside
    checkpoint    the trainer's checkpoint write of the loaded model (safetensors, prompts, checksums)
    trial         one trial of the YAML's trainer target on a mixture (default: uniform) for
                  ``--steps`` steps, with its own figures: train seconds, s/step, tokens/s, and
                  the final dev evaluation on every dev row
    test          (--test) the base model on every task's *test* split: nothing is fitted, so
                  this reads the test split only to check the data against published figures
                  (all-MiniLM-L6-v2's STS-B test Spearman is about 0.82)

    python bench/real_step.py                                 # 30 steps, dev sizes 100 300 500
    python bench/real_step.py --steps 60 --mixture news=1 --test
    python bench/real_step.py --skip-trial --dev-sizes 500 --test --threads 2
    python bench/real_step.py --target trainers.embedding:train --set 'matryoshka_dims=[384, 256, 128]' \
        task_sampling=stratified --steps 40 --dev-sizes 300     # the built-in trainer, MiniLM's dims

The machine's load (``os.getloadavg``) is printed before and after: a shared 2-core box makes
every figure here noisy, so read them with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_avg() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _mixture(spec: list[str], names: list[str]) -> dict[str, float]:
    if not spec:
        return {n: 1.0 / len(names) for n in names}
    weights = {n: 0.0 for n in names}
    for item in spec:
        name, _, value = item.partition("=")
        if name not in weights:
            raise SystemExit(f"--mixture: {name!r} is not a task of the experiment ({names})")
        weights[name] = float(value)
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()}


def _load_and_save(target: str, tasks: list, options: dict):
    """The trainer's own model load and checkpoint write: (load(path) -> model, save(model, out))."""
    if target.partition(":")[0] == "trainers.embedding":
        from trainers.model import load_encoder, save_sentence_transformer

        def save_builtin(loaded, out: Path) -> None:
            save_sentence_transformer(
                loaded.encoder,
                loaded.tokenizer,
                out,
                prompts={},
                max_seq_length=options.get("max_seq_length", 256),
            )

        return load_encoder, save_builtin
    from sentence_transformers import SentenceTransformer

    from trainers.sentence_transformers import save_checkpoint

    return (
        lambda path: SentenceTransformer(path, device="cpu"),
        lambda model, out: save_checkpoint(model, out, tasks),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "real_minilm.yaml")
    parser.add_argument(
        "--data", type=Path, default=None, help="task folders DIR/<task> instead of the YAML's paths"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="trainer seed (default: the YAML's)")
    parser.add_argument("--dev-sizes", type=int, nargs="*", default=[100, 300, 500])
    parser.add_argument("--mixture", nargs="*", default=[], metavar="TASK=W", help="default: uniform")
    parser.add_argument("--threads", type=int, default=None, help="default: the YAML's cpu_threads")
    parser.add_argument(
        "--target", default=None, help="trainer target instead of the YAML's (e.g. trainers.embedding:train)"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="trainer options (YAML values)"
    )
    parser.add_argument("--test", action="store_true", help="also score the base model on the test splits")
    parser.add_argument("--skip-trial", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()

    import torch
    import yaml

    from mixopt.config import TaskConfig, load_experiment
    from mixopt.trial import Trial, load_trainer
    from trainers.evaluation import METRIC_KEYS

    exp = load_experiment(args.config)
    options = dict(exp.trainer.options)
    options.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    if args.threads:
        options["cpu_threads"] = args.threads
    torch.set_num_threads(options.get("cpu_threads") or torch.get_num_threads())
    target = args.target or exp.trainer.target
    trainer = load_trainer(target)
    try:
        trainer.options.model_validate(options)
    except ValueError as e:
        raise SystemExit(f"{args.config}: trainer options under {target}: {e}") from None
    tasks = list(exp.tasks)
    if args.data:
        tasks = [t.model_copy(update={"path": args.data.resolve() / t.name}) for t in tasks]
    names = [t.name for t in tasks]
    model_path = options["model"]
    out: dict = {
        "config": str(args.config),
        "target": target,
        "options": options,
        "threads": torch.get_num_threads(),
    }
    print(f"{_load_avg()}; torch threads {torch.get_num_threads()}; {target} on {model_path}")
    out["load_before"] = os.getloadavg()

    load, save = _load_and_save(target, tasks, options)
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = load(model_path)
        loads.append(time.perf_counter() - t0)
    out["load_s"] = statistics.median(loads)
    print(f"load          {out['load_s']:6.2f} s   (3 loads: {', '.join(f'{x:.2f}' for x in loads)})")

    with tempfile.TemporaryDirectory(prefix="real-step-") as tmp:
        t0 = time.perf_counter()
        save(model, Path(tmp) / "ckpt")
        out["checkpoint_s"] = time.perf_counter() - t0
    print(f"checkpoint    {out['checkpoint_s']:6.2f} s")

    def score(task_list, dev_rows=None) -> tuple[dict, float]:
        t0 = time.perf_counter()
        result = trainer.require("evaluate_checkpoint", "scoring")(
            Path(model_path), task_list, options, dev_rows=dev_rows
        )
        return result, time.perf_counter() - t0 - out["load_s"]

    out["eval"] = {}
    for n in args.dev_sizes:
        per_task = {}
        for task in tasks:
            result, seconds = score([task], {task.name: range(n)})
            per_task[task.name] = {"seconds": seconds, "score": result.task_scores[task.name]}
        total = sum(v["seconds"] for v in per_task.values())
        out["eval"][n] = per_task
        print(
            f"eval@{n:<4d}     {total:6.2f} s   "
            + "  ".join(f"{k} {v['seconds']:.1f} s ({v['score']:.4f})" for k, v in per_task.items())
        )

    if args.test:
        test_tasks = [
            TaskConfig.model_validate(
                {
                    **t.model_dump(exclude={"path", "train", "dev"}),
                    "train": t.train_file,
                    "dev": t.path / "test.jsonl",
                }
            )
            for t in tasks
        ]
        result, seconds = score(test_tasks)
        out["base_test"] = dict(result.task_metrics)
        print(
            f"base on test  {seconds:6.2f} s   "
            + "  ".join(f"{k} {v:.4f}" for k, v in result.task_scores.items())
        )
        for t in tasks:
            keys = [k for k in result.task_metrics if k.startswith(t.name + "/")]
            print("              " + "  ".join(f"{k} {result.task_metrics[k]:.4f}" for k in keys))
        out["metric_keys"] = METRIC_KEYS

    if not args.skip_trial:
        mixture = _mixture(args.mixture, names)
        with tempfile.TemporaryDirectory(prefix="real-trial-") as tmp:
            trial = Trial(
                mixture=mixture,
                hyperparameters={},
                seed=exp.trainer.seed if args.seed is None else args.seed,
                steps=args.steps,
                output_dir=Path(tmp),
                tasks=tuple(tasks),
                options=options,
                trial_id="real-step",
                objective_weights=exp.objective_weights,
            )
            t0 = time.perf_counter()
            result = trainer.train(trial, lambda step, metrics: None)
            wall = time.perf_counter() - t0
        extra = dict(result.extra)
        out["trial"] = {
            "mixture": mixture,
            "steps": args.steps,
            "wall_s": wall,
            **extra,
            **result.task_scores,
        }
        setup = wall - extra["train_seconds"] - extra["eval_seconds"]
        print(
            f"trial         {wall:6.2f} s   {args.steps} steps of {mixture}: train {extra['train_seconds']:.1f} s "
            f"({extra['train_seconds'] / args.steps:.2f} s/step, {extra['tokens_per_s']:.0f} tokens/s), "
            f"eval {extra['eval_seconds']:.1f} s, load + data + checkpoint {setup:.1f} s"
        )
        print("              " + "  ".join(f"{k} {v:.4f}" for k, v in result.task_scores.items()))
    out["load_after"] = os.getloadavg()
    print(_load_avg())
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
