"""What the optimizer knows, read-only: its observations and its models' predictions.

Plain functions of the parts they read (the :class:`~mixopt.optimizer.ledger.Ledger`, the
:class:`~mixopt.optimizer.surrogate.Surrogate`, the :class:`~mixopt.space.SearchSpace`): each
changes nothing, so reports and the CLI can ask as much as they like.
:class:`~mixopt.optimizer.MixtureOptimizer`'s query methods (``history``, ``best``,
``predict``...) call them with its own parts; their docstrings say what each returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import MIN_OBSERVATIONS, one_thread
from mixopt.optimizer.surrogate import Surrogate
from mixopt.space import SearchSpace


def pending(ledger: Ledger) -> list[dict[str, Any]]:
    return [dict(ledger.proposal(i)) for i in ledger.pending]


def history(ledger: Ledger) -> list[tuple[dict[str, Any], float | None]]:
    return [(dict(ledger.proposal(i)), v) for i, v in ledger.history]


def proxy_history(ledger: Ledger) -> list[tuple[dict[str, Any], float, dict[str, float] | None]]:
    return [(dict(p), v, None if s is None else dict(s)) for p, v, s in ledger.proxy]


def score_history(ledger: Ledger) -> list[tuple[dict[str, Any], dict[str, float] | None]]:
    return [
        (dict(ledger.proposal(i)), None if s is None else dict(s))
        for (i, _), s in zip(ledger.history, ledger.scores)
    ]


def partial(ledger: Ledger) -> list[tuple[dict[str, Any], float, float]]:
    return [(dict(ledger.proposal(i)), f, v) for i, f, v in ledger.partial]


def stopped(ledger: Ledger) -> list[dict[str, Any]]:
    return [dict(ledger.proposal(i)) for i in ledger.stopped]


def origin(ledger: Ledger, proposal: Mapping[str, Any]) -> str:
    return ledger.origin(ledger.asked_index("origin", proposal))


def best(ledger: Ledger) -> tuple[dict[str, Any], float] | None:
    """The best successful ``(proposal, value)``, the first of ties; None before any success."""
    found: tuple[int, float] | None = None
    for i, v in ledger.successes():
        if found is None or v > found[1]:
            found = (i, v)
    return None if found is None else (dict(ledger.proposal(found[0])), found[1])


def noise_sd(surrogate: Surrogate) -> float | None:
    """``sqrt(noise_var) * std(y)`` (the likelihood's noise is in ``Standardize``d units); None
    before the GP can be fitted."""
    if surrogate.n_rows() < MIN_OBSERVATIONS:
        return None
    with one_thread():
        return surrogate.noise_sd_fitted()


def predict(
    surrogate: Surrogate, space: SearchSpace, proposals: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """The objective's GP posterior mean and latent sd at ``proposals``, each ``(n,)``."""
    items = checked(space, "predict", proposals)
    n_ok = surrogate.n_rows()
    if n_ok < MIN_OBSERVATIONS:
        raise RuntimeError(
            f"predict(): the GP needs at least {MIN_OBSERVATIONS} successful observations, "
            f"{n_ok} told so far; tell() more results first"
        )
    with one_thread():
        return surrogate.predict(items)


def predict_scores(
    surrogate: Surrogate,
    space: SearchSpace,
    weights: Mapping[str, float],
    proposals: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per score (the weighted ones, and others observed twice), its GP's mean and sd, each ``(n,)``."""
    items = checked(space, "predict_scores", proposals)
    models = surrogate.scores
    names = [n for n, c in weights.items() if c > 0 or len(models.rows(n)) >= MIN_OBSERVATIONS]
    with one_thread():
        return models.predict(names, items, weighted(weights))


def predict_joint(
    surrogate: Surrogate,
    space: SearchSpace,
    ledger: Ledger,
    weights: Mapping[str, float],
    proposals: Sequence[Mapping[str, Any]],
    score: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``proposals``."""
    items = checked(space, "predict_joint", proposals)
    if not any(score in s for _, s in ledger.scored()):
        told = sorted({k for _, s in ledger.scored() for k in s})
        raise ValueError(f"predict_joint(): no trial was told score {score!r}; told scores: {told}")
    with one_thread():
        return surrogate.scores.joint(score, items, weighted(weights))


def weighted(weights: Mapping[str, float]) -> list[str]:
    """The score names the objective weighs (weight > 0), in its order."""
    return [n for n, c in weights.items() if c > 0]


def checked(space: SearchSpace, method: str, proposals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``proposals`` checked against ``space`` (a single dict is refused: wrap it in a list)."""
    if isinstance(proposals, Mapping):
        raise ValueError(f"{method}() takes a list of proposals; wrap a single one as [proposal]")
    return [space.check_proposal(p, f"{method}(): proposals[{i}]") for i, p in enumerate(proposals)]
