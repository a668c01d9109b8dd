"""Greedy soup (Wortsman et al., 2022, arXiv:2203.05482, Algorithm 1).

Sort the ingredients by their rank score, start from the best one, and add each next one only
if the soup's dev score with it does not drop: ``S <- S + {k}  iff  f(mean(S + {k})) >= f(mean(S))``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixopt.soup.average import DEFAULT_CHUNK_BYTES, average_into
from mixopt.soup.ingredients import Ingredient, SoupError


@dataclass(frozen=True)
class GreedyStep:
    """One candidate of the greedy soup: the soup's score with it, and whether it was kept."""

    run_id: str
    trial_id: str
    ingredient_value: float
    soup_score: float
    kept: bool


@dataclass(frozen=True)
class GreedyResult:
    """Greedy selection: the kept ingredients (in order), every step, and the final soup."""

    kept: tuple[Ingredient, ...]
    steps: tuple[GreedyStep, ...]
    score: float
    soup_dir: Path  # the averaged soup of ``kept`` inside ``workdir``


def greedy_select(
    ingredients: Sequence[Ingredient],
    evaluate: Callable[[Path], float],
    workdir: Path,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    echo: Callable[[str], None] | None = None,
) -> GreedyResult:
    """Greedy soup (Wortsman et al., 2022, arXiv:2203.05482, Algorithm 1).

    Ingredients are sorted by ``value`` (highest first). The soup starts as the best one alone,
    scored by ``evaluate`` like every later candidate (so all comparisons use one evaluation).
    Each next ingredient ``k`` is tried: the uniform average of ``S + {k}`` is written to
    ``workdir`` and scored; ``k`` is kept iff ``score(S + {k}) >= score(S)`` (a NaN score is a
    drop). At most two soups are on disk at any time.
    """
    if not ingredients:
        raise SoupError("greedy soup: no ingredients")
    order = sorted(ingredients, key=lambda i: -i.rank_value)
    workdir = Path(workdir)

    def build(members: Sequence[Ingredient], name: str) -> Path:
        d = workdir / name
        d.mkdir(parents=True)
        average_into([m.checkpoint for m in members], d, [m.label for m in members], chunk_bytes)
        return d

    first = order[0]
    soup_dir = build([first], "soup-0")
    score = float(evaluate(soup_dir))
    steps = [GreedyStep(first.run_id, first.trial_id, first.value, score, True)]
    if echo:
        echo(f"greedy: start with {first.label}: soup score {score:.4f}")
    kept = [first]
    for n, cand in enumerate(order[1:], start=1):
        trial_dir = build([*kept, cand], f"soup-{n}")
        s = float(evaluate(trial_dir))
        keep = math.isfinite(s) and s >= score
        steps.append(GreedyStep(cand.run_id, cand.trial_id, cand.value, s, keep))
        if echo:
            echo(
                f"greedy: + {cand.label}: soup score {s:.4f} vs {score:.4f} -> {'kept' if keep else 'dropped'}"
            )
        if keep:
            shutil.rmtree(soup_dir)
            kept.append(cand)
            soup_dir, score = trial_dir, s
        else:
            shutil.rmtree(trial_dir)
    return GreedyResult(tuple(kept), tuple(steps), score, soup_dir)
