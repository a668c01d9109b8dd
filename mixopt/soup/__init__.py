"""Model soup: average the best trials of a sweep into the final model.

A *model soup* (Wortsman et al., 2022, arXiv:2203.05482) averages the weights of models
finetuned from one initialisation. EmbeddingGemma's released model is such a soup of checkpoints
trained on different task mixtures. Two recipes: **uniform**, ``theta_soup = (1/K) sum_k theta_k``
over the K selected trials, and **greedy** (the paper's Algorithm 1).

The package, one job a module:

- :mod:`~mixopt.soup.ingredients`: ``--runs``, :class:`Ingredient`, :class:`Selection` (plain data).
- :mod:`~mixopt.soup.selection`: which trial runs, read from the sweep's MLflow experiment.
- :mod:`~mixopt.soup.greedy`: the greedy soup.
- :mod:`~mixopt.soup.checkpoints` and :mod:`~mixopt.soup.average`: checks, then the streaming,
  chunked mean through safetensors (torch and safetensors only, no pydantic, no MLflow).
- :mod:`~mixopt.soup.evaluate`: the trainer's ``evaluate_checkpoint``, and one metric of its result.
- :mod:`~mixopt.soup.make`: average, evaluate, write the card, rename into place.
- :mod:`~mixopt.soup.result`: :class:`SoupResult`, what a soup is once made.
- :mod:`~mixopt.soup.card`: the selection, the per-task table, the model card.
- :mod:`~mixopt.soup.registry`: the soup's MLflow run and model-registry version.
- :mod:`~mixopt.soup.pipeline`: :func:`soup_from_sweep`, which chains them for ``mixopt soup``.

The names below are loaded on first use, so that ``mixopt.soup.average`` imports only torch and
safetensors (the soup benchmark runs on a bare GPU image).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixopt.soup.average import AverageStats, average_checkpoints
    from mixopt.soup.card import format_selection, format_table, model_card
    from mixopt.soup.checkpoints import CheckpointError
    from mixopt.soup.evaluate import Evaluate, metric_of, trainer_evaluator
    from mixopt.soup.greedy import GreedyResult, GreedyStep, greedy_select
    from mixopt.soup.ingredients import (
        METHODS,
        Ingredient,
        RunsSpec,
        Selection,
        Skipped,
        SoupError,
        parse_runs,
    )
    from mixopt.soup.make import make_soup
    from mixopt.soup.pipeline import soup_from_sweep
    from mixopt.soup.registry import log_soup
    from mixopt.soup.result import SoupResult
    from mixopt.soup.selection import resolve_run_id, select_ingredients

_HOME = {
    "AverageStats": "average",
    "average_checkpoints": "average",
    "format_selection": "card",
    "format_table": "card",
    "model_card": "card",
    "CheckpointError": "checkpoints",
    "Evaluate": "evaluate",
    "metric_of": "evaluate",
    "trainer_evaluator": "evaluate",
    "GreedyResult": "greedy",
    "GreedyStep": "greedy",
    "greedy_select": "greedy",
    "METHODS": "ingredients",
    "Ingredient": "ingredients",
    "RunsSpec": "ingredients",
    "Selection": "ingredients",
    "Skipped": "ingredients",
    "SoupError": "ingredients",
    "parse_runs": "ingredients",
    "SoupResult": "result",
    "make_soup": "make",
    "soup_from_sweep": "pipeline",
    "log_soup": "registry",
    "resolve_run_id": "selection",
    "select_ingredients": "selection",
}

__all__ = [
    "AverageStats",
    "CheckpointError",
    "Evaluate",
    "GreedyResult",
    "GreedyStep",
    "Ingredient",
    "METHODS",
    "RunsSpec",
    "Selection",
    "Skipped",
    "SoupError",
    "SoupResult",
    "average_checkpoints",
    "format_selection",
    "format_table",
    "greedy_select",
    "log_soup",
    "make_soup",
    "metric_of",
    "model_card",
    "parse_runs",
    "resolve_run_id",
    "select_ingredients",
    "soup_from_sweep",
    "trainer_evaluator",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mixopt.soup' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mixopt.soup.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
