"""``mixopt validate``: the resolved config, or every problem with its file:line."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mixopt.cli.common import fail, load
from mixopt.config import Experiment, dump_experiment


def validate(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    data: bool = typer.Option(False, "--data", help="Also read and validate every row of every task file."),
) -> None:
    """Validate an experiment YAML: print the resolved config, or every problem with file:line."""
    exp = load(experiment, check_data=data, sweep=True)
    preflight_warnings(exp)
    typer.echo(dump_experiment(exp), nl=False)


def preflight_warnings(exp: Experiment) -> None:
    """What validate can tell without starting Ray: a missing model path, too many concurrent trials."""
    # The sweep's checks are imported here: the sweep package loads Ray and MLflow, which
    # `mixopt --help` must not wait for.
    from mixopt.sweep.checks import concurrency_warning, local_resources, model_problems
    from mixopt.sweep.progress import warn

    problems = model_problems(exp)
    if problems:
        fail("\n".join(problems))
    if not os.environ.get("RAY_ADDRESS"):
        w = concurrency_warning(exp, local_resources(exp), "this machine (a local Ray)")
        if w:
            warn(w)
