"""The ``mixopt`` command line: thin commands that validate their input and call the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from mixopt.config import ConfigError, dump_experiment, load_experiment

app = typer.Typer(
    help="Find the best task mixture for finetuning a text-embedding model, then soup the best trials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _load(path: Path, check_data: bool = False):
    try:
        exp = load_experiment(path)
    except ConfigError as e:
        _fail(str(e))
    if check_data:
        from mixopt.data import DataError, check_file

        problems = []
        for t in exp.tasks:
            for f in (t.train_file, t.dev_file):
                try:
                    check_file(f, t.kind)
                except DataError as e:
                    problems.append(f"task {t.name}: {e}")
        if problems:
            _fail("\n".join(problems))
    return exp


@app.command()
def validate(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    data: bool = typer.Option(False, "--data", help="Also read and validate every row of every task file."),
) -> None:
    """Validate an experiment YAML: print the resolved config, or every problem with file:line."""
    exp = _load(experiment, check_data=data)
    typer.echo(dump_experiment(exp), nl=False)


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synthetic"), "--out", help="Output folder (replaced if it exists)."),
    tasks: int = typer.Option(3, "--tasks", min=1, help="Number of tasks (kinds rotate retrieval, sts, classification)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes identical bytes."),
) -> None:
    """Write synthetic tasks in the real format, plus a tiny Gemma3 encoder and tokenizer (OUT/model)."""
    from mixopt.synth import synthesize

    meta = synthesize(out, n_tasks=tasks, seed=seed)
    for t in meta["tasks"]:
        typer.echo(f"{out / t['name']}: {t['kind']}, {t['private_words_per_concept']} private words/concept, "
                   f"{t['noise_words_per_text']} noise words/text")
    typer.echo(f"{out / 'model'}: tiny bidirectional Gemma3 encoder + tokenizer")


@app.command()
def sweep(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to join ('auto', or ray://host:10001). Default: $RAY_ADDRESS, "
        "else a local Ray started in this process."),
    resume: bool = typer.Option(False, "--resume", help="Continue the experiment's unfinished sweep (after a "
                                "killed driver): recorded trials are not run again."),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", min=1, help="Override optimizer.max_trials."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run the mixture sweep: seed mixtures, then GP-UCB proposals, trials on Ray Tune, all logged to MLflow."""
    from mixopt.sweep import SweepError, run_sweep

    exp = _load(experiment)
    try:
        run_sweep(exp, address=address, resume=resume, max_trials=max_trials, verbose=not quiet)
    except SweepError as e:
        _fail(f"{experiment}: {e}")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
