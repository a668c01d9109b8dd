"""What the GP is fitted on, at which fidelity: full-fidelity values and trials' partial curves.

Without ``multi_fidelity`` the GP sees every successful told value. With it, it also sees each
trial's partial results (``tell_partial`` while it runs, ``tell(p, value, fraction=f)`` when it was
stopped early) at the fraction ``s`` of the step budget they were measured at, full-fidelity
values at ``s = 1``: the rows of the GP over ``(x, s)`` (:func:`mixopt.optimizer.model.make_mf_gp`).
"""

from __future__ import annotations

import numpy as np
import torch

from mixopt.optimizer.ledger import Ledger
from mixopt.space import SearchSpace

# Partial results per trial the multi-fidelity GP is fitted on (see partial_rows).
MF_CURVE_POINTS = 3


def partial_rows(ledger: Ledger) -> list[tuple[int, float, float]]:
    """The partial results the multi-fidelity GP is fitted on, ``(index, fraction, value)``.

    Per trial, the latest value at each fraction (a repeated report replaces the earlier one);
    fraction-1 partial values are dropped once the trial's full-fidelity value is told (it
    supersedes them: the same measurement, not a second one); at most ``MF_CURVE_POINTS``
    fractions per trial, evenly thinned, the highest always kept (the GP's cost grows with
    the cube of its rows; a few points per curve say how low fidelities relate to the full).
    """
    full = {i for i, v in ledger.history if v is not None}
    return curve_rows(ledger.partial, full)


def curve_rows(partial: list[tuple[int, float, float]], full: set[int]) -> list[tuple[int, float, float]]:
    """:func:`partial_rows`'s rule on any partial values ``(index, fraction, value)`` (the objective's,
    or another composition's), ``full`` the indices that have a full-fidelity value of the same quantity."""
    by_trial: dict[int, dict[float, float]] = {}
    for i, f, v in partial:
        if f < 1.0 or i not in full:
            by_trial.setdefault(i, {})[f] = v
    rows: list[tuple[int, float, float]] = []
    for i, curve in by_trial.items():
        fs = sorted(curve)
        if len(fs) > MF_CURVE_POINTS:
            keep = np.linspace(len(fs) - 1, 0, MF_CURVE_POINTS).round().astype(int)
            fs = sorted({fs[j] for j in keep})
        rows += [(i, f, curve[f]) for f in fs]
    return rows


def features(
    ledger: Ledger, space: SearchSpace, rows: list[tuple[int, float, float]], multi_fidelity: bool
) -> torch.Tensor:
    """The model inputs ``(n, d)`` of ``rows`` (+ the fraction column with ``multi_fidelity``)."""
    feats = [space.encode(ledger.proposal(i)) for i, _, _ in rows]
    if multi_fidelity:
        feats = [np.append(x, f) for x, (_, f, _) in zip(feats, rows)]
    return torch.tensor(np.array(feats), dtype=torch.float64)


def n_rows(ledger: Ledger, multi_fidelity: bool) -> int:
    """How many observations the GP is fitted on (partial ones only with ``multi_fidelity``)."""
    n = len(ledger.successes())
    return n + len(partial_rows(ledger)) if multi_fidelity else n


def data_key(ledger: Ledger, multi_fidelity: bool) -> int:
    """Changes whenever the GP's data does: a tell, or (multi-fidelity only) a partial result."""
    return len(ledger.history) + (len(ledger.partial) if multi_fidelity else 0)


def training_data(
    ledger: Ledger, space: SearchSpace, multi_fidelity: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (n, d) features (+ a fraction-of-budget column with ``multi_fidelity``), ``y`` (n, 1)."""
    rows = [(ledger.proposal(i), 1.0, v) for i, v in ledger.successes()]
    if multi_fidelity:
        rows += [(ledger.proposal(i), f, v) for i, f, v in partial_rows(ledger)]
    feats = [space.encode(p) for p, _, _ in rows]
    if multi_fidelity:
        feats = [np.append(x, f) for x, (_, f, _) in zip(feats, rows)]
    x = torch.tensor(np.array(feats), dtype=torch.float64)
    y = torch.tensor([[v] for _, _, v in rows], dtype=torch.float64)
    return x, y
