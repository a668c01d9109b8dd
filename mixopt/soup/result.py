"""What a soup is once made: :class:`SoupResult`, which the card describes and MLflow records.

:func:`mixopt.soup.make.make_soup` builds it, :func:`mixopt.soup.card.model_card` writes it up,
:func:`mixopt.soup.registry.log_soup` adds where it went in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mixopt.soup.average import AverageStats
from mixopt.soup.compare import BestIngredient
from mixopt.soup.evaluate import metric_of
from mixopt.soup.greedy import GreedyResult
from mixopt.soup.ingredients import Ingredient
from mixopt.trial import TrialResult


@dataclass
class SoupResult:
    """What :func:`make_soup` wrote (and, once logged, where it went in MLflow)."""

    out: Path
    method: str
    metric: str
    ingredients: tuple[Ingredient, ...]  # the averaged ones
    candidates: tuple[Ingredient, ...]  # every selected trial (= ingredients for uniform)
    stats: AverageStats | None
    evaluation: TrialResult | None
    greedy: GreedyResult | None = None
    run_id: str | None = None
    registered: tuple[str, str] | None = None  # (name, version)
    split: str | None = None  # greedy: which dev rows it selected on and which it reports on
    prompts: dict[str, str] = field(default_factory=dict)  # every prompt of the soup, by name
    prompt_task: str | None = None  # the task whose prompts are ``query`` / ``document``
    best_ingredient: BestIngredient | None = None  # the soup against its best ingredient, same rows

    @property
    def score(self) -> float | None:
        return None if self.evaluation is None else metric_of(self.evaluation, self.metric)
