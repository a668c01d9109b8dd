"""``mixopt soup``: average the best trials of a sweep into a model soup, evaluate it, log it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import (
    experiment_file_argument,
    experiment_option,
    fail,
    find_sweep,
    tracking_uri_option,
)
from mixopt.cli.eval import cwd_importable, mteb_eval
from mixopt.config import ConfigError
from mixopt.soup.evaluate import metric_problem
from mixopt.soup.ingredients import SoupError, parse_runs
from mixopt.soup.outdir import check_replaceable
from mixopt.soup.prompts import default_prompt_task


def soup(
    experiment_file: Optional[Path] = experiment_file_argument(
        "The sweep's experiment YAML (its tasks and trainer evaluate the soup)."
    ),
    experiment: Optional[str] = experiment_option(),
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
    force: bool = typer.Option(
        False, "--force", help="Replace --out if it is an earlier soup (it holds .mixopt-soup.json)."
    ),
    register: Optional[str] = typer.Option(
        None, "--register", help="Also register the soup in the MLflow model registry under this name."
    ),
    tracking_uri: Optional[str] = tracking_uri_option(),
    mteb: Optional[str] = typer.Option(
        None,
        "--mteb",
        help='Then evaluate the soup on an MTEB benchmark, e.g. "MTEB(eng, v2)" (mixopt eval).',
    ),
    mteb_tasks: Optional[str] = typer.Option(
        None, "--mteb-tasks", help="Then evaluate the soup on these MTEB tasks (comma-separated)."
    ),
    prompt_task: Optional[str] = typer.Option(
        None,
        "--prompt-task",
        help="The task whose prompts become the soup's `query` / `document` prompts (encode_query, "
        "encode_document; default: the first retrieval task).",
    ),
) -> None:
    """Average the best trials of a sweep into a model soup, evaluate it, and log it to MLflow."""
    # The soup's averaging, its MLflow records and mteb are imported when the command runs: they
    # load torch, MLflow and mteb, which `mixopt --help` must not wait for.
    from mixopt.soup.card import format_table
    from mixopt.soup.checkpoints import CheckpointError
    from mixopt.soup.pipeline import soup_from_sweep

    with_mteb = mteb is not None or mteb_tasks is not None
    if mteb is not None and mteb_tasks is not None:
        fail("give at most one of --mteb BENCHMARK or --mteb-tasks TASK,TASK,...")
    if with_mteb:
        from mixopt.mteb_eval import EvalError, load_tasks

        cwd_importable()
        try:  # before the soup is made: a misspelt task should not cost a soup
            load_tasks(mteb, [n for n in (mteb_tasks or "").split(",") if n.strip()] or None)
        except EvalError as e:
            fail(str(e))
    if method not in ("uniform", "greedy"):
        fail(f"--method {method!r}: choose uniform or greedy")
    try:
        parse_runs(runs)
        if out is not None:  # before the tracking store is read: a rejected --out writes nothing
            check_replaceable(out, force)
    except SoupError as e:
        fail(str(e))
    target = find_sweep(experiment_file, experiment, tracking_uri)
    exp = target.exp
    if exp is None:
        if isinstance(target.error, ConfigError):
            fail(str(target.error))
        if experiment is None:
            fail(target.missing())
        # --experiment NAME with no config recorded: averaged and logged, with no tasks to evaluate on
    elif target.run_id is not None:
        typer.echo(
            f"sweep run {target.run_id} (experiment {exp.experiment_name!r}): using its recorded config"
        )
    if method == "greedy" and exp is None:
        fail("--method greedy evaluates candidate soups with the trainer: give the EXPERIMENT.yaml")
    if exp is not None and (problem := metric_problem(metric, exp.tasks)) is not None:
        fail(problem)  # before the soup is made: it would be scored without that metric
    if exp is not None and with_mteb:
        from mixopt.mteb_eval import EvalError, mteb_prompts

        try:  # before the soup is made: prompts mteb could not choose between
            mteb_prompts(exp.tasks, [n for n in (prompt_task or default_prompt_task(exp.tasks),) if n])
        except EvalError as e:
            fail(str(e))
    try:
        _, result = soup_from_sweep(
            exp,
            runs=runs,
            method=method,
            metric=metric,
            out=out,
            force=force,
            register=register,
            experiment_name=target.name,
            tracking_uri=target.uri,
            echo=typer.echo,
            prompt_task=prompt_task,
        )
    except (SoupError, CheckpointError) as e:
        fail(str(e), code=1)
    kept = [i.run_id for i in result.ingredients] if result.greedy is not None else None
    typer.echo(format_table(result.candidates, result.evaluation, metric, exp.tasks if exp else (), kept))
    size = result.stats.n_bytes / 2**20 if result.stats else 0.0
    typer.echo(
        f"wrote {result.out}: {result.method} soup of {len(result.ingredients)} checkpoint(s), "
        f"{size:.3g} MiB of weights; MLflow run {result.run_id}"
    )
    if result.registered:
        typer.echo(f"registered as MLflow model {result.registered[0]!r} version {result.registered[1]}")
    if with_mteb:
        mteb_eval(
            str(result.out),
            mteb,
            mteb_tasks,
            exp,
            target.uri,
            32,
            None,
            run_id=result.run_id,
            prompt_tasks=[result.prompt_task] if result.prompt_task else [],
        )
