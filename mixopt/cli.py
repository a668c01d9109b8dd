"""The ``mixopt`` command line: thin commands that validate their input and call the library."""

from __future__ import annotations

import os
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
    tasks: int = typer.Option(
        3, "--tasks", min=1, help="Number of tasks (kinds rotate retrieval, sts, classification)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes identical bytes."),
) -> None:
    """Write synthetic tasks in the real format, plus a tiny Gemma3 encoder and tokenizer (OUT/model)."""
    from mixopt.synth import synthesize

    meta = synthesize(out, n_tasks=tasks, seed=seed)
    for t in meta["tasks"]:
        typer.echo(
            f"{out / t['name']}: {t['kind']}, {t['private_words_per_concept']} private words/concept, "
            f"{t['noise_words_per_text']} noise words/text"
        )
    typer.echo(f"{out / 'model'}: tiny bidirectional Gemma3 encoder + tokenizer")


@app.command()
def sweep(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to join ('auto', or ray://host:10001). Default: $RAY_ADDRESS, "
        "else a local Ray started in this process.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the experiment's unfinished sweep (after a "
        "killed driver): recorded trials are not run again.",
    ),
    max_trials: Optional[int] = typer.Option(
        None, "--max-trials", min=1, help="Override optimizer.max_trials."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run the mixture sweep: seed mixtures, then GP-UCB proposals, trials on Ray Tune, all logged to MLflow."""
    from mixopt.sweep import SweepError, run_sweep

    exp = _load(experiment)
    try:
        run_sweep(exp, address=address, resume=resume, max_trials=max_trials, verbose=not quiet)
    except SweepError as e:
        _fail(f"{experiment}: {e}")


@app.command()
def preflight(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to run on, with the trial's resources ('auto', ray://host:10001). "
        "Default: this process, on its device.",
    ),
    steps: int = typer.Option(3, "--steps", min=1, help="Timed steps (after one warm-up step)."),
    memory_limit_gb: Optional[float] = typer.Option(
        None, "--memory-limit-gb", min=0, help="Memory the trial may use (default: the device's)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Use this model directory or hub id instead of trainer.model."
    ),
) -> None:
    """A few steps of one worst-case trial on the sweep's device: peak memory, tokens/s, MFU and the
    sweep's projected GPU-hours. Exits 1, naming the fix, if the trial does not fit."""
    from mixopt.preflight import PreflightError, run_preflight

    exp = _load(experiment)
    try:
        result = run_preflight(
            exp,
            address=address,
            steps=steps,
            memory_limit_gb=memory_limit_gb,
            model=model,
            echo=typer.echo,
        )
    except (PreflightError, ValueError) as e:
        _fail(f"{experiment}: {e}")
    if not result.fits:
        raise typer.Exit(1)


@app.command()
def soup(
    experiment_file: Optional[Path] = typer.Argument(
        None,
        metavar="[EXPERIMENT.yaml]",
        help="The sweep's experiment YAML (its tasks and trainer evaluate the "
        "soup). Default: the config recorded by the newest sweep in the tracking store.",
    ),
    experiment: Optional[str] = typer.Option(
        None,
        "--experiment",
        help="MLflow experiment name of the sweep (default: the YAML's, else the newest sweep's).",
    ),
    runs: str = typer.Option(
        "top5", "--runs", help="Trials to soup: topK (e.g. top5), all, or RUN_ID,RUN_ID,..."
    ),
    method: str = typer.Option(
        "uniform", "--method", help="uniform (mean of all) or greedy (Wortsman et al. 2022)."
    ),
    metric: str = typer.Option(
        "objective", "--metric", help="MLflow metric that ranks the trials (higher is better)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output sentence-transformers directory (default: soups/<experiment name>)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    register: Optional[str] = typer.Option(
        None, "--register", help="Also register the soup in the MLflow model registry under this name."
    ),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: the YAML's, else $MLFLOW_TRACKING_URI, "
        "else sqlite:///mlflow.db).",
    ),
) -> None:
    """Average the best trials of a sweep into a model soup, evaluate it, and log it to MLflow."""
    if method not in ("uniform", "greedy"):
        _fail(f"--method {method!r}: choose uniform or greedy")
    from mixopt.soup import CheckpointError, SoupError, format_table, parse_runs, soup_from_sweep

    try:
        parse_runs(runs)
    except SoupError as e:
        _fail(str(e))
    if experiment_file is not None:
        exp = _load(experiment_file)
    else:
        # No YAML: use the config the newest sweep recorded on its MLflow parent run.
        from mixopt.config import ConfigError
        from mixopt.tracking import recorded_experiment

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
        try:
            exp, sweep_run = recorded_experiment(uri, experiment)
            typer.echo(
                f"sweep run {sweep_run} (experiment {exp.experiment_name!r}): using its recorded config"
            )
            tracking_uri = uri
        except ConfigError as e:
            _fail(str(e))
        except LookupError as e:
            if experiment is None:
                _fail(f"{e}; give the sweep's EXPERIMENT.yaml or --experiment NAME (its MLflow experiment)")
            exp = None  # averaged and logged, but with no tasks to evaluate on
    if method == "greedy" and exp is None:
        _fail("--method greedy evaluates candidate soups with the trainer: give the EXPERIMENT.yaml")
    try:
        _, result = soup_from_sweep(
            exp,
            runs=runs,
            method=method,
            metric=metric,
            out=out,
            force=force,
            register=register,
            experiment_name=experiment,
            tracking_uri=tracking_uri,
            echo=typer.echo,
        )
    except (SoupError, CheckpointError) as e:
        _fail(str(e), code=1)
    kept = [i.run_id for i in result.ingredients] if result.greedy is not None else None
    typer.echo(format_table(result.candidates, result.evaluation, metric, exp.tasks if exp else (), kept))
    size = result.stats.n_bytes / 2**20 if result.stats else 0.0
    typer.echo(
        f"wrote {result.out}: {result.method} soup of {len(result.ingredients)} checkpoint(s), "
        f"{size:.3g} MiB of weights; MLflow run {result.run_id}"
    )
    if result.registered:
        typer.echo(f"registered as MLflow model {result.registered[0]!r} version {result.registered[1]}")


if __name__ == "__main__":
    app()
