"""``mixopt eval``: a model on MTEB tasks, the scores into its MLflow run and its model card.

``mixopt soup --mteb`` runs the same evaluation on the soup it made (:func:`mteb_eval`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import fail, load
from mixopt.config import ConfigError, Experiment


def eval_(
    model: str = typer.Argument(
        ..., help="A sentence-transformers directory (soup, checkpoint) or an MLflow run id."
    ),
    mteb: Optional[str] = typer.Option(None, "--mteb", help='An MTEB benchmark, e.g. "MTEB(eng, v2)".'),
    mteb_tasks: Optional[str] = typer.Option(
        None,
        "--mteb-tasks",
        help="MTEB task names, comma-separated (e.g. Banking77Classification,STSBenchmark).",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="Experiment YAML whose task prompts the model is evaluated with "
        "(default: the config recorded by the model's sweep, if any).",
    ),
    tracking_uri: Optional[str] = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Encoding batch size."),
    device: Optional[str] = typer.Option(
        None, "--device", help="cpu, cuda, ... (default: sentence-transformers' choice)."
    ),
    prompt_task: Optional[str] = typer.Option(
        None,
        "--prompt-task",
        help="Where the experiment's tasks of one kind have different prompts: the task whose "
        "prompts to use (one per kind, comma-separated).",
    ),
) -> None:
    """Evaluate a model on MTEB tasks; log mteb.<task> scores to its MLflow run and add them to its model card."""
    if (mteb is None) == (mteb_tasks is None):
        fail("give exactly one of --mteb BENCHMARK or --mteb-tasks TASK,TASK,...")
    cwd_importable()
    exp = load(config) if config is not None else recorded_config(model, tracking_uri)
    chosen = [n.strip() for n in prompt_task.split(",") if n.strip()] if prompt_task else []
    mteb_eval(model, mteb, mteb_tasks, exp, tracking_uri, batch_size, device, prompt_tasks=chosen)


def cwd_importable() -> None:
    """Let ``--mteb-tasks my_tasks:Task`` import ``my_tasks.py`` from the working directory:
    ``python -m`` puts it on ``sys.path``, the ``mixopt`` console script does not."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def mteb_eval(
    target: str,
    benchmark: Optional[str],
    task_list: Optional[str],
    exp: Experiment | None,
    tracking_uri: Optional[str],
    batch_size: int,
    device: Optional[str],
    run_id: Optional[str] = None,
    prompt_tasks: Sequence[str] = (),
) -> None:
    """Run MTEB on a model and print the table; ``eval`` and ``soup --mteb`` both call it."""
    # mteb and MLflow are imported when an evaluation runs: they take seconds to load, which
    # `mixopt --help` must not wait for.
    from mixopt.mteb_eval import EvalError, ModelError, evaluate_model, format_mteb_table, mteb_prompts

    names = [n.strip() for n in task_list.split(",") if n.strip()] if task_list else None
    try:
        model_dir, run_id, scores = evaluate_model(
            target,
            benchmark=benchmark,
            task_names=names,
            prompts=mteb_prompts(exp.tasks, prompt_tasks) if exp is not None else None,
            tracking_uri=tracking_uri,
            batch_size=batch_size,
            device=device,
            run_id=run_id,
        )
    except EvalError as e:  # a model that does not load is the input's fault (2), the rest the evaluation's
        fail(str(e), code=2 if isinstance(e, ModelError) else 1)
    typer.echo(format_mteb_table(scores))
    where = f"MLflow run {run_id}" if run_id else "no MLflow run (none records this directory)"
    typer.echo(
        f"mteb scores of {model_dir}: {model_dir / 'mteb_results.json'}, model card README.md; {where}"
    )


def recorded_config(model: str, tracking_uri: Optional[str]) -> Experiment | None:
    """The experiment recorded by the sweep of the model's run, for its prompts; None if there is none."""
    # As in mteb_eval: MLflow is imported when the command runs.
    from mixopt.mteb_eval import EvalError, resolve_model
    from mixopt.tracking import store

    uri = store.resolve_uri(tracking_uri)
    try:
        _, run_id = resolve_model(model, uri)
    except EvalError as e:
        fail(str(e), code=1)
    if run_id is None:
        return None
    name = store.experiment_name_of_run(store.connect(uri), run_id)
    try:
        return store.recorded_experiment(uri, name)[0]
    except (LookupError, ConfigError):
        return None
