"""The soup against its best ingredient, on the dev rows the soup is judged on.

Averaging checkpoints is not always a gain: when the ingredients sit in different basins, or one
is much better than the rest, the soup scores below its best ingredient, and shipping it would
lose what the sweep found. :func:`against_best` measures both on the same rows:

- ``uniform``: the soup is scored by the trainer's own evaluation on the dev rows every trial was
  scored on, so the best ingredient's figure is its recorded dev score (``--metric``);
- ``greedy`` scored on held-out rows: the best ingredient (the first candidate, which greedy
  always keeps) is evaluated on those held-out rows too; scored on its selection rows, its
  figure is greedy's first step (the best ingredient alone, on the same rows).

:class:`BestIngredient` says which is ahead; :meth:`BestIngredient.warning` is the line the
console, the model card and the MLflow run carry when the soup is behind, naming the alternatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mixopt.soup.evaluate import Evaluate, metric_of
from mixopt.soup.greedy import GreedyResult
from mixopt.soup.ingredients import Ingredient


@dataclass(frozen=True)
class BestIngredient:
    """The soup's score and its best ingredient's, on the same dev rows (``rows`` says which)."""

    metric: str
    soup: float
    best: float
    run_id: str
    trial_id: str
    checkpoint: Path
    rows: str
    method: str

    @property
    def soup_is_worse(self) -> bool:
        return self.soup < self.best

    def line(self) -> str:
        """The console's line: the warning when the soup is behind, else the margin it leads by."""
        warning = self.warning()
        if warning is not None:
            return f"WARNING: {warning}"
        return (
            f"the soup is not behind its best ingredient (trial {self.trial_id}) on {self.rows}: "
            f"{self.metric} {self.soup:.4f} against {self.best:.4f} ({self.soup - self.best:+.4f})"
        )

    def warning(self) -> str | None:
        """The line saying the soup is behind and what to do instead; None when it is not behind."""
        if not self.soup_is_worse:
            return None
        ship = (
            f"ship the best trial instead ({self.trial_id}, run {self.run_id}, checkpoint {self.checkpoint})"
        )
        other = (
            "or try `mixopt soup --method greedy`, which keeps an ingredient only when the soup gains"
            if self.method == "uniform"
            else "or soup fewer, closer trials (`--runs top3`)"
        )
        return (
            f"the {self.method} soup scores {self.metric} {self.soup:.4f}, below its best ingredient "
            f"(trial {self.trial_id}: {self.best:.4f}; {self.soup - self.best:+.4f}) on {self.rows}: {ship}, {other}"
        )


def against_best(
    method: str,
    metric: str,
    soup_score: float | None,
    members: Sequence[Ingredient],
    greedy: GreedyResult | None,
    report: Evaluate | None,
) -> BestIngredient | None:
    """The soup (score ``soup_score``) against its best ingredient among ``members`` (the averaged
    ones; greedy: its first candidate, always kept), on the rows the soup was scored on; None when
    the soup was not evaluated. ``report``: greedy's evaluation on its held-out rows (None: the
    greedy soup was scored on the rows it selected on). One evaluation of the best ingredient is
    run for a greedy soup scored on held-out rows; otherwise none."""
    if soup_score is None or not members:
        return None
    if greedy is None:
        best = max(members, key=lambda i: i.value)
        figure, rows = float(best.value), "the dev rows every trial was scored on"
    else:
        best = members[0]
        if report is not None:
            figure, rows = metric_of(report(best.checkpoint), metric), "the held-out dev rows"
        else:
            figure, rows = float(greedy.steps[0].soup_score), "the dev rows greedy selected on"
    return BestIngredient(
        metric, float(soup_score), figure, best.run_id, best.trial_id, best.checkpoint, rows, method
    )
