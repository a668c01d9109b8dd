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

from mixopt.optimizer.calibrated import IntegratedGP
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import MIN_OBSERVATIONS, one_thread
from mixopt.optimizer.surrogate import Surrogate
from mixopt.space import SearchSpace


def pending(ledger: Ledger) -> list[dict[str, Any]]:
    return [dict(ledger.proposal(i)) for i in ledger.pending]


def history(ledger: Ledger) -> list[tuple[dict[str, Any], float | None]]:
    return [(dict(ledger.proposal(i)), v) for i, v in ledger.history]


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


class Predictive:
    """The reported posterior of one modelled quantity (the objective, a composition of the scores,
    or one score) over proposals: :class:`~mixopt.optimizer.calibrated.IntegratedGP` on its
    trained values, with the search space's encoding. ``trials``: how many values it rests on."""

    def __init__(self, model: IntegratedGP, space: SearchSpace, what: str) -> None:
        self.model, self.space, self.what = model, space, what
        self.trials = len(model.y)

    def _x(self, proposals: Sequence[Mapping[str, Any]], method: str) -> np.ndarray:
        items = checked(self.space, method, proposals)
        return np.array([self.space.encode(p) for p in items]).reshape(len(items), self.space.dim)

    def predict(self, proposals: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of the latent value at ``proposals``, each ``(n,)``."""
        return self.model.predict(self._x(proposals, "predict"))

    def joint(self, proposals: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(n,)`` and covariance ``(n, n)`` of the latent value at ``proposals``."""
        return self.model.joint(self._x(proposals, "predict_joint"))

    def sample(self, proposals: Sequence[Mapping[str, Any]], paths: int, seed: int) -> np.ndarray:
        """``paths`` joint posterior draws of the latent value at ``proposals``: ``(paths, n)``."""
        return self.model.sample(self._x(proposals, "sample"), paths, np.random.default_rng(seed))

    def noise_sd(self) -> tuple[float, float, float]:
        """The trial noise sd: posterior median and 95 % interval (objective units)."""
        return self.model.noise_sd()

    def p_matters(self) -> float:
        """Posterior probability that the weights move the value by at least half a trial's noise sd."""
        return self.model.p_matters()


def predictive(
    surrogate: Surrogate,
    space: SearchSpace,
    weights: Mapping[str, float] | None = None,
    evidence: tuple[tuple[float, int], ...] = (),
    what: str = "the objective",
) -> Predictive:
    """The :class:`Predictive` of the objective (``weights`` None) or of a composition (a score:
    ``{name: 1.0}``), ``evidence`` as :meth:`Surrogate.integrated` takes it.

    Raises:
        RuntimeError: fewer than ``MIN_OBSERVATIONS`` trained values of it.
    """
    with one_thread():
        model = surrogate.integrated(None if weights is None else dict(weights), tuple(evidence))
    if model is None:
        raise RuntimeError(
            f"{what}: the GP needs at least {MIN_OBSERVATIONS} successful observations, "
            f"{surrogate.n_values(weights)} told so far; tell() more results first"
        )
    return Predictive(model, space, what)


def noise_sd(surrogate: Surrogate, space: SearchSpace) -> float | None:
    """The trial noise sd's posterior median (objective units); None before 2 successful trials."""
    try:
        return predictive(surrogate, space).noise_sd()[0]
    except RuntimeError:
        return None


def predict(
    surrogate: Surrogate, space: SearchSpace, proposals: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """The objective's posterior mean and latent sd at ``proposals``, each ``(n,)``."""
    checked(space, "predict", proposals)
    return predictive(surrogate, space, what="predict()").predict(proposals)


def predict_scores(
    surrogate: Surrogate,
    space: SearchSpace,
    weights: Mapping[str, float],
    proposals: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per score (the weighted ones, and others observed twice), its posterior mean and sd, each ``(n,)``."""
    checked(space, "predict_scores", proposals)
    names = [n for n, c in weights.items() if c > 0 or surrogate.n_values({n: 1.0}) >= MIN_OBSERVATIONS]
    return {
        n: predictive(surrogate, space, {n: 1.0}, what=f"predict_scores(): score {n!r}").predict(proposals)
        for n in names
    }


def predict_joint(
    surrogate: Surrogate,
    space: SearchSpace,
    ledger: Ledger,
    proposals: Sequence[Mapping[str, Any]],
    score: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``proposals``."""
    checked(space, "predict_joint", proposals)
    if not any(score in s for _, s in ledger.scored()):
        told = sorted({k for _, s in ledger.scored() for k in s})
        raise ValueError(f"predict_joint(): no trial was told score {score!r}; told scores: {told}")
    return predictive(surrogate, space, {score: 1.0}, what=f"predict_joint(): score {score!r}").joint(
        proposals
    )


def weighted(weights: Mapping[str, float]) -> list[str]:
    """The score names the objective weighs (weight > 0), in its order."""
    return [n for n, c in weights.items() if c > 0]


def checked(space: SearchSpace, method: str, proposals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``proposals`` checked against ``space`` (a single dict is refused: wrap it in a list)."""
    if isinstance(proposals, Mapping):
        raise ValueError(f"{method}() takes a list of proposals; wrap a single one as [proposal]")
    return [space.check_proposal(p, f"{method}(): proposals[{i}]") for i, p in enumerate(proposals)]
