"""``mixopt soup``: select the sweep's best trials, average them, evaluate, and log the soup.

A *model soup* (Wortsman et al., 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time", arXiv:2203.05482) averages the
weights of models finetuned from one initialisation:
``theta_soup = (1/K) sum_k theta_k`` over the K selected trials (``uniform``), or over the subset
that :func:`mixopt.soup.greedy.greedy_select` keeps (``greedy``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mixopt.soup.average import DEFAULT_CHUNK_BYTES
from mixopt.soup.card import format_selection
from mixopt.soup.evaluate import Evaluate, TrainerEvaluate, metric_problem, split_dev_rows, trainer_evaluator
from mixopt.soup.ingredients import METHODS, Selection, SoupError, parse_runs
from mixopt.soup.make import make_soup
from mixopt.soup.outdir import check_replaceable
from mixopt.soup.prompts import check_prompt_task, default_prompt_task
from mixopt.soup.registry import log_soup
from mixopt.soup.result import SoupResult
from mixopt.soup.selection import select_ingredients
from mixopt.tracking import store

if TYPE_CHECKING:
    from mixopt.config import Experiment


def soup_from_sweep(
    exp: Experiment | None,
    *,
    runs: str = "top5",
    method: str = "uniform",
    metric: str = "objective",
    out: Path | None = None,
    force: bool = False,
    register: str | None = None,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    evaluate: Evaluate | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = print,
    prompt_task: str | None = None,
) -> tuple[Selection, SoupResult]:
    """``mixopt soup``: select trials from the sweep's MLflow experiment, soup, evaluate, log.

    ``exp`` (the experiment YAML) gives the MLflow experiment, the tracking URI, the tasks and the
    trainer whose ``evaluate_checkpoint`` scores the soup. Without it, ``experiment_name`` must be
    given and the soup is not evaluated (uniform only). ``evaluate`` overrides the trainer's.

    The greedy soup selects on one half of each task's dev rows and is scored on the other
    (:func:`mixopt.soup.evaluate.split_dev_rows`) when the evaluation takes ``dev_rows``; otherwise
    its reported score is the biased one it selected on, and the output and card say so.
    ``prompt_task`` names the task whose prompts become the soup's ``query`` / ``document``
    (default: the experiment's first retrieval task). The last line echoed compares the soup with
    its best ingredient on the same rows, a warning when the soup is behind (:mod:`mixopt.soup.compare`).
    """
    name = experiment_name or (exp.experiment_name if exp is not None else None)
    if not name:
        raise SoupError("give the experiment YAML or --experiment NAME (the sweep's MLflow experiment)")
    uri = store.resolve_uri(tracking_uri or (exp.tracking.resolved_uri() if exp is not None else None))
    if method not in METHODS:
        raise SoupError(f"unknown soup method {method!r}; choose one of {list(METHODS)}")
    spec = parse_runs(runs)
    if evaluate is None and exp is not None:
        evaluate = trainer_evaluator(exp)
    if method == "greedy" and evaluate is None:
        raise SoupError(
            "--method greedy evaluates candidate soups: give the experiment YAML, not only --experiment"
        )
    tasks = tuple(exp.tasks) if exp is not None else ()
    if prompt_task is not None:
        check_prompt_task(prompt_task, tasks)
    else:
        prompt_task = default_prompt_task(tasks)
    select_eval, report_eval, split = evaluate, None, None
    if method == "greedy" and exp is not None:
        if isinstance(evaluate, TrainerEvaluate) and evaluate.takes_dev_rows:
            halves = split_dev_rows(tasks)  # before any work: too few dev rows is an error
            select_eval, report_eval = evaluate.on(halves.select), evaluate.on(halves.report)
            split = (
                "greedy selected on one half of the dev rows, the score is on the other: " + halves.describe()
            )
        else:
            split = (
                f"the score is measured on the dev rows the greedy soup was selected on, so it is biased "
                f"upward: the evaluation of {exp.trainer.target!r} takes no dev_rows to hold rows out"
            )
    if evaluate is not None and (problem := metric_problem(metric, tasks)) is not None:
        raise SoupError(problem)  # before any work: the soup could not be compared by it
    out = Path(out) if out is not None else Path("soups") / name
    check_replaceable(out, force)  # before any work: a soup of a large model takes minutes
    client = store.connect(uri)
    selection = select_ingredients(client, name, spec, metric)
    if echo:
        echo(format_selection(selection))
        if split:
            echo(f"note: {split}")
    result = make_soup(
        selection.chosen,
        out,
        method=method,
        evaluate=select_eval,
        metric=metric,
        force=force,
        tasks=tasks,
        experiment_name=name,
        chunk_bytes=chunk_bytes,
        echo=echo,
        report=report_eval,
        split=split,
        prompt_task=prompt_task,
    )
    log_soup(client, selection, result, register, str(spec))
    if echo and result.best_ingredient is not None:
        echo(result.best_ingredient.line())
    return selection, result
