"""``python -m trainers.<name> EXPERIMENT.yaml OUT_DIR [--steps N]``: one trial of a trainer, alone.

The trial trains on the uniform mixture with the YAML's tasks, seed, step budget and trainer
options, with no Ray, no MLflow and no optimizer: a check of the data, the model and the options
before a sweep. The result is printed as JSON. The checkpoint goes to ``OUT_DIR/model``, which
is replaced only when it is an earlier checkpoint (it holds ``mixopt_checksums.json``); anything
else there is refused before the trial, untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mixopt import owned
from mixopt.checksums import CHECKSUMS_FILE
from mixopt.config import load_experiment
from mixopt.trial import Report, Trial, TrialResult


def one_trial_main(train: Callable[[Trial, Report], TrialResult], argv: Sequence[str], name: str) -> int:
    """Run one trial of ``train`` (the trainer module ``trainers.<name>``) as the command line
    ``argv`` asks; print its objective, task scores, checkpoint and extra figures as JSON."""
    parser = argparse.ArgumentParser(
        prog=f"python -m trainers.{name}",
        description=f"Run one trial of the {name} trainer on a uniform mixture.",
    )
    parser.add_argument("config")
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    exp = load_experiment(args.config)
    model = Path(args.out_dir) / "model"
    why = owned.refusal(model, CHECKSUMS_FILE, "files")
    if why is not None:
        if why == "not marked":
            why = f"a folder that is not a checkpoint mixopt wrote (no {CHECKSUMS_FILE} in it)"
        print(
            f"{parser.prog}: {model} is {why}; the trial writes its checkpoint there: choose another OUT_DIR",
            file=sys.stderr,
        )
        return 2
    names = exp.task_names
    trial = Trial(
        mixture={n: 1.0 / len(names) for n in names},
        hyperparameters={},
        seed=exp.trainer.seed,
        steps=args.steps or exp.trainer.steps,
        output_dir=Path(args.out_dir),
        tasks=tuple(exp.tasks),
        options=exp.trainer.options,
        trial_id="trial",
        objective_weights=exp.objective_weights,
    )
    result = train(trial, lambda step, metrics: None)
    out = {"objective": result.objective, "task_scores": dict(result.task_scores)}
    print(json.dumps(out | {"checkpoint": str(result.checkpoint), **dict(result.extra)}, indent=2))
    return 0
