"""``mixopt tasks``: each task's source, row counts and two example rows with the prompts applied."""

from __future__ import annotations

from pathlib import Path

import typer

from mixopt.cli.common import fail, load
from mixopt.data import DataError
from mixopt.task_listing import describe_task
from mixopt.tokens import SAMPLE_ROWS, share_problems, share_warnings, task_unknown_shares


def tasks(experiment: Path = typer.Argument(..., help="Experiment YAML.")) -> None:
    """List each task: its data source, row counts where known, and two example rows with the prompts applied."""
    # The sweep's console is imported here: the sweep package loads Ray and MLflow, which
    # `mixopt --help` must not wait for.
    from mixopt.sweep.progress import warn

    exp = load(experiment)
    shares = task_unknown_shares(exp)
    problems = []
    for t in exp.tasks:
        try:
            typer.echo("\n".join(describe_task(t)))
        except DataError as e:
            problems.append(f"task {t.name}: {e}")
            continue
        if t.name in shares:
            share, n = shares[t.name]
            typer.echo(
                f"  unknown tokens: {share:.1%} of {n} tokens in the first {SAMPLE_ROWS} train rows "
                "(the tokenizer's <unk>)"
            )
    for w in share_warnings(shares) + share_problems(shares):  # the data check refuses the latter
        warn(w)
    if problems:
        fail("\n".join(problems))
