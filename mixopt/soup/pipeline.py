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
from mixopt.soup.evaluate import Evaluate, trainer_evaluator
from mixopt.soup.ingredients import DEFAULT_RANK, METHODS, Selection, SoupError, parse_runs
from mixopt.soup.make import SoupResult, make_soup
from mixopt.soup.outdir import check_replaceable
from mixopt.soup.registry import log_soup
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
    rank: str = DEFAULT_RANK,
    out: Path | None = None,
    force: bool = False,
    register: str | None = None,
    experiment_name: str | None = None,
    tracking_uri: str | None = None,
    evaluate: Evaluate | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = print,
) -> tuple[Selection, SoupResult]:
    """``mixopt soup``: select trials from the sweep's MLflow experiment, soup, evaluate, log.

    ``exp`` (the experiment YAML) gives the MLflow experiment, the tracking URI, the tasks and the
    trainer whose ``evaluate_checkpoint`` scores the soup. Without it, ``experiment_name`` must be
    given and the soup is not evaluated (uniform only). ``evaluate`` overrides the trainer's.
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
    out = Path(out) if out is not None else Path("soups") / name
    check_replaceable(out, force)  # before any work: a soup of a large model takes minutes
    client = store.connect(uri)
    selection = select_ingredients(client, name, spec, metric, rank)
    if echo:
        echo(format_selection(selection))
    result = make_soup(
        selection.chosen,
        out,
        method=method,
        evaluate=evaluate,
        metric=metric,
        force=force,
        tasks=tuple(exp.tasks) if exp is not None else (),
        experiment_name=name,
        chunk_bytes=chunk_bytes,
        echo=echo,
    )
    log_soup(client, selection, result, register, str(spec))
    return selection, result
