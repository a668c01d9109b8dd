"""What the optimizer knows, read-only: its observations and its models' predictions.

:class:`Views` is the query half of :class:`~mixopt.optimizer.MixtureOptimizer` (which adds
ask, tell, warm start and the state): every method here reads the ledger and the surrogate and
changes neither, so reports and the CLI can ask as much as they like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import MIN_OBSERVATIONS, one_thread
from mixopt.optimizer.surrogate import Surrogate
from mixopt.space import SearchSpace


class Views:
    """Read-only queries over ``_ledger`` (observations), ``_surrogate`` (GPs) and ``_space``."""

    _ledger: Ledger
    _surrogate: Surrogate
    _space: SearchSpace
    objective_weights: dict[str, float]

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._space.tasks

    @property
    def score_names(self) -> tuple[str, ...]:
        """The scores the objective names (weighted or not), in its order."""
        return tuple(self.objective_weights)

    @property
    def surrogate_in_use(self) -> str:
        """``"composite"`` when the per-score GPs model the objective now, else ``"single"``."""
        return "composite" if self._surrogate.composite() else "single"

    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Proposals asked and not yet told or cancelled, in ask order (copies)."""
        return [dict(self._ledger.proposal(i)) for i in self._ledger.pending]

    @property
    def history(self) -> list[tuple[dict[str, Any], float | None]]:
        """Told ``(proposal, value)`` pairs in tell order; value None marks a failed trial."""
        return [(dict(self._ledger.proposal(i)), v) for i, v in self._ledger.history]

    @property
    def proxy_history(self) -> list[tuple[dict[str, Any], float, dict[str, float] | None]]:
        """Proxy observations ``(proposal, value, scores or None)`` in tell order (copies)."""
        return [(dict(p), v, None if s is None else dict(s)) for p, v, s in self._ledger.proxy]

    @property
    def score_history(self) -> list[tuple[dict[str, Any], dict[str, float] | None]]:
        """Told ``(proposal, scores)`` in tell order (scores None: told a scalar, or failed)."""
        led = self._ledger
        return [
            (dict(led.proposal(i)), None if s is None else dict(s))
            for (i, _), s in zip(led.history, led.scores)
        ]

    @property
    def partial(self) -> list[tuple[dict[str, Any], float, float]]:
        """Partial results ``(proposal, fraction, value)`` in tell order (:meth:`tell_partial`, and
        the last value of each trial stopped early)."""
        return [(dict(self._ledger.proposal(i)), f, v) for i, f, v in self._ledger.partial]

    @property
    def stopped(self) -> list[dict[str, Any]]:
        """Proposals whose trial was stopped early (``tell(p, value, fraction < 1)``), in tell order."""
        return [dict(self._ledger.proposal(i)) for i in self._ledger.stopped]

    def origin(self, proposal: Mapping[str, Any]) -> str:
        """``"seed"`` (user seed or Dirichlet seed draw), ``"bo"`` (GP-UCB), ``"exploit"`` (one of
        the budget's last proposals: the posterior-mean maximiser), ``"random"`` (fallback draw) or
        ``"warm"`` (an observation reused from an earlier sweep, see :meth:`warm_start`)."""
        return self._ledger.origin(self._ledger.asked_index("origin", proposal))

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The best successful ``(proposal, value)`` told so far (first of ties), or None if none."""
        best: tuple[int, float] | None = None
        for i, v in self._ledger.successes():
            if best is None or v > best[1]:
                best = (i, v)
        return None if best is None else (dict(self._ledger.proposal(best[0])), best[1])

    def noise_sd(self) -> float | None:
        """The fitted observation-noise sd, in objective units (None before the GP can be fitted).

        The likelihood's noise variance is in standardised units (``Standardize``), so
        ``noise_sd = sqrt(noise_var) * std(y)``. With one trainer seed per trial it estimates the
        seed-to-seed spread of a mixture's objective (plus whatever the GP cannot fit).
        """
        if self._surrogate.n_rows() < MIN_OBSERVATIONS:
            return None
        with one_thread():
            return self._surrogate.noise_sd_fitted()

    def predict(self, proposals: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """GP posterior mean and sd of the objective at ``proposals``, in the objective's units.

        Returns two arrays of shape ``(len(proposals),)``. The sd is that of the latent objective
        (no observation noise). Pending proposals are not taken into account.

        Raises:
            RuntimeError: before the GP can be fitted (fewer than 2 successful observations) or
                when every fitting attempt failed.
            ValueError: for a malformed proposal.
        """
        items = self._items("predict", proposals)
        n_ok = self._surrogate.n_rows()
        if n_ok < MIN_OBSERVATIONS:
            raise RuntimeError(
                f"predict(): the GP needs at least {MIN_OBSERVATIONS} successful observations, "
                f"{n_ok} told so far; tell() more results first"
            )
        with one_thread():
            return self._surrogate.predict(items)

    def predict_scores(
        self, proposals: Sequence[Mapping[str, Any]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per score name (the weighted ones, and others once observed twice), the per-score GP's
        posterior mean and sd of the latent score at ``proposals``, each ``(len(proposals),)``.

        Raises:
            RuntimeError: no per-score GP yet (no scores told, a weighted score observed fewer
                than twice, or a failed fit).
        """
        items = self._items("predict_scores", proposals)
        models = self._surrogate.scores
        names = [
            n for n, c in self.objective_weights.items() if c > 0 or len(models.rows(n)) >= MIN_OBSERVATIONS
        ]
        with one_thread():
            return models.predict(names, items, self._weighted())

    def predict_joint(
        self, proposals: Sequence[Mapping[str, Any]], score: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``proposals``
        (for differences between nearby mixtures with their uncertainty).

        Raises:
            RuntimeError: as :meth:`predict_scores`; ValueError: an unknown score name.
        """
        items = self._items("predict_joint", proposals)
        if not any(score in s for _, s in self._ledger.scored()):
            raise ValueError(
                f"predict_joint(): no trial was told score {score!r}; told scores: {self._told_names()}"
            )
        with one_thread():
            return self._surrogate.scores.joint(score, items, self._weighted())

    def _weighted(self) -> list[str]:
        return [n for n, c in self.objective_weights.items() if c > 0]

    def _told_names(self) -> list[str]:
        return sorted({k for _, s in self._ledger.scored() for k in s})

    def _items(self, method: str, proposals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(proposals, Mapping):
            raise ValueError(f"{method}() takes a list of proposals; wrap a single one as [proposal]")
        return [self._space.check_proposal(p, f"{method}(): proposals[{i}]") for i, p in enumerate(proposals)]
