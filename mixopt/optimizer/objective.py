"""The objective as a composition of scores: weights over score names, and the checks on told scores.

A trial measures one score per task (and possibly on held-out sets that are not trained on); the
objective is their weighted mean, ``sum_k c_k s_k`` with ``c_k >= 0`` normalised to sum 1. The
weights are the user's choice and may change after a sweep (:meth:`MixtureOptimizer.recommend`),
so the optimizer keeps the scores, not only the composed value.

The one home of the composition: the config's weights (:func:`check_objective`,
:func:`equal_weights`, :func:`kind_weights`), the trainers' reported objective, the soup's score
and the optimizer all compose with :func:`compose`. Importing this module loads neither torch nor
botorch, so ``mixopt.config`` and the trainers import it freely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# A told value that also comes with scores must equal their composition within this.
VALUE_TOLERANCE = 1e-9


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))


def equal_weights(names: Sequence[str]) -> dict[str, float]:
    """The plain mean over ``names``: the default objective (``mean_task``, the mean of the tasks' scores)."""
    return {str(n): 1.0 / len(names) for n in names}


def kind_weights(kinds: Mapping[str, str]) -> dict[str, float]:
    """``mean_kind``: the mean over task kinds of each kind's mean score, as weights over the tasks
    (``kinds``: task -> kind): a task of a kind with ``n`` tasks, among ``K`` kinds, weighs ``1 / (K n)``."""
    per_kind = {k: sum(v == k for v in kinds.values()) for k in set(kinds.values())}
    return {str(t): 1.0 / (len(per_kind) * per_kind[k]) for t, k in kinds.items()}


def check_objective(weights: Any, where: str = "objective") -> dict[str, float]:
    """Score name -> weight, normalised to sum 1 (the objective is a weighted *mean*).

    Weights must be finite and >= 0 with a positive sum; names non-empty strings. ``where`` names
    the argument (or YAML path) in the error.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(
            f"{where}: give score name -> weight (e.g. {{'retrieval': 2, 'sts': 1}}), got {weights!r}"
        )
    bad = {k: v for k, v in weights.items() if not _number(v) or not math.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"{where}: weights must be finite numbers >= 0, got {bad}")
    names = [k for k in weights if not isinstance(k, str) or not k]
    if names:
        raise ValueError(f"{where}: score names must be non-empty strings, got {names}")
    # Divided by the largest first: weights near the float maximum (1e308) would overflow their sum.
    top = max(float(v) for v in weights.values())
    if top <= 0:
        raise ValueError(f"{where}: the weights sum to 0; give at least one score a positive weight")
    scaled = {str(k): float(v) / top for k, v in weights.items()}
    total = math.fsum(scaled.values())
    return {k: v / total for k, v in scaled.items()}


def check_scores(scores: Any, method: str) -> dict[str, float]:
    """A trial's scores: score name -> finite float."""
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError(f"{method}(): scores must be a non-empty dict score name -> float, got {scores!r}")
    out: dict[str, float] = {}
    for k, v in scores.items():
        if not isinstance(k, str) or not _number(v) or not math.isfinite(float(v)):
            raise ValueError(
                f"{method}(): score {k!r} must be a finite float under a string name, got {v!r}; a trial "
                "that produced no usable score is a failed trial: tell(proposal, None)"
            )
        out[k] = float(v)
    return out


def compose(weights: Mapping[str, float], scores: Mapping[str, float]) -> float | None:
    """The objective ``sum_k c_k s_k`` over the positively weighted names, or None when one of their
    scores is missing. ``weights`` sum to 1 (:func:`check_objective`, :func:`equal_weights`,
    :func:`kind_weights` make them so): the composition is their weighted mean."""
    if any(c > 0 and k not in scores for k, c in weights.items()):
        return None
    return math.fsum(c * scores[k] for k, c in weights.items() if c > 0)


def composed_value(
    weights: Mapping[str, float], scores: Mapping[str, float], value: Any, method: str
) -> float:
    """The objective of a trial told with ``scores`` (``value``: None, or the same number)."""
    missing = [k for k, c in weights.items() if c > 0 and k not in scores]
    if missing:
        raise ValueError(
            f"{method}(): scores lack {missing}, weighted by the objective {dict(weights)}; report every "
            "weighted score, or change the objective's weights"
        )
    composed = compose(weights, scores)
    assert composed is not None
    if value is not None and (not _number(value) or abs(float(value) - composed) > VALUE_TOLERANCE):
        raise ValueError(
            f"{method}(): value {value!r} differs from the objective composed from the scores "
            f"({composed!r}); pass value=None with scores (the composition decides)"
        )
    return composed


def same_composition(a: Mapping[str, float] | None, b: Mapping[str, float]) -> bool:
    """Whether two normalised compositions weigh the same scores equally (within 1e-12)."""
    if a is None:
        return False
    pa = {k: v for k, v in a.items() if v > 0}
    pb = {k: v for k, v in b.items() if v > 0}
    return set(pa) == set(pb) and all(abs(pa[k] - pb[k]) <= 1e-12 for k in pa)


def warm_scores(
    records: Sequence[tuple[Any, Any, Mapping[str, float] | None]],
    source_weights: Mapping[str, float] | None,
    weights: Mapping[str, float],
) -> tuple[list[tuple[Any, float | None, dict[str, float] | None]], int]:
    """A warm start's source trials under this optimizer's composition ``weights``.

    A trial with scores keeps those this optimizer has (the names ``weights`` gives, weighted or
    not), its objective recomputed from them (None when a weighted score is new: unknown, not a
    failure); with none of them it is dropped (proposal None). A trial without scores keeps its
    value only when the source's composition is this one's (``source_weights`` None: taken as
    this one's); otherwise it is dropped. Failed trials (no value, no scores) are left out.
    Returns the records ``(proposal or None, value, scores)`` and how many were left out.
    """
    out: list[tuple[Any, float | None, dict[str, float] | None]] = []
    failed = 0
    same = source_weights is None or same_composition(source_weights, weights)
    for proposal, value, scores in records:
        if scores is None:
            if value is None:
                failed += 1
            else:
                out.append((proposal if same else None, value, None))
            continue
        kept = {k: float(v) for k, v in scores.items() if k in weights}
        out.append((proposal if kept else None, compose(weights, kept), kept or None))
    return out, failed
