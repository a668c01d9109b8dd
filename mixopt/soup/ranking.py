"""Noise-robust rank scores for the soup's ingredients (``--rank posterior``), without MLflow.

A trial's dev score is one draw of its mixture's seed noise, so ranking by it (``objective``)
picks the luckiest trials. The posterior rank uses the mean over a mixture's seeds where it was
trained with several (the verification stage), else the sweep's GP posterior mean at the trial's
mixture, which pools the neighbouring trials. Which gives the better soup: bench/RESULTS.md,
section "Soup ranking".
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mixopt.soup.ingredients import Ingredient

# The posterior of one sweep's optimizer: ``predict(proposals) -> (mean, sd)``, each of shape
# ``(len(proposals),)`` (:meth:`mixopt.optimizer.MixtureOptimizer.predict`).
Predict = Callable[[Sequence[Mapping[str, Any]]], tuple[Any, Any]]


def rank_scores(
    ingredients: Sequence[Ingredient], predictor: Callable[[str], Predict]
) -> tuple[list[Ingredient], list[str]]:
    """``--rank posterior``: each ingredient with its noise-robust score, and notes.

    A mixture (the exact proposal) trained with several seeds scores the mean of its runs'
    values; a mixture with one run scores the GP posterior mean of its sweep's optimizer there,
    ``predictor(sweep_run_id)([proposal])[0][0]`` (``predictor`` is called once per sweep). An
    ingredient whose sweep's predictor cannot be had (``predictor`` raises), or whose proposal
    lies outside the optimizer's search space (e.g. a baseline outside the bounds), keeps its
    own value. Returned in the order given.
    """
    groups: dict[str, list[Ingredient]] = {}
    for ing in ingredients:
        key = json.dumps(ing.proposal, sort_keys=True) if ing.proposal is not None else ing.run_id
        groups.setdefault(key, []).append(ing)
    predictors: dict[str, Predict | None] = {}
    notes: list[str] = []
    out: list[Ingredient] = []
    for members in groups.values():
        if len(members) > 1:
            mean = math.fsum(m.value for m in members) / len(members)
            out += [dataclasses.replace(m, score=mean) for m in members]
            continue
        ing = members[0]
        score = ing.value
        parent = ing.parent_run_id
        if parent is not None and ing.proposal is not None:
            if parent not in predictors:
                try:
                    predictors[parent] = predictor(parent)
                except Exception as e:  # no state, unreadable state: rank this sweep by value
                    predictors[parent] = None
                    notes.append(f"sweep run {parent}: no optimizer state to rank by ({e}); ranked by value")
            predict = predictors[parent]
            if predict is not None:
                try:
                    mean, _ = predict([ing.proposal])
                    score = float(mean[0])
                except (ValueError, RuntimeError) as e:
                    notes.append(f"{ing.label}: no posterior mean ({e}); ranked by its value")
        out.append(dataclasses.replace(ing, score=score))
    order = {ing.run_id: i for i, ing in enumerate(ingredients)}
    out.sort(key=lambda i: order[i.run_id])
    return out, notes
