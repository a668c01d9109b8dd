"""What to propose next: the seed phase, GP-UCB, exploitation at the end of the budget, and the
fallbacks that keep a sweep going when the GP cannot help.

**Seed phase.** The user's seed mixtures first, in order (one asked, then cancelled, is offered
again first), then bounded-Dirichlet(alpha) draws until ``max(n_seeds, len(seed_mixtures))``
proposals are out. **BO phase.** The UCB maximiser (:func:`mixopt.optimizer.acquisition.propose`).
**Exploitation.** With a known budget, its last ``exploit_last`` proposals maximise the posterior
mean (UCB with beta = 0), one at a time. **Fallbacks, never a crash.** Fewer than 2 successful
observations, a GP that cannot be fitted, a failed acquisition, or every candidate a duplicate:
a bounded-Dirichlet draw, origin ``"random"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixopt.optimizer import acquisition
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import MIN_OBSERVATIONS
from mixopt.optimizer.objective import compose
from mixopt.optimizer.seeding import RandomStreams, draw
from mixopt.optimizer.surrogate import Surrogate
from mixopt.space import Proposal, SearchSpace

logger = logging.getLogger("mixopt.optimizer")


@dataclass(frozen=True)
class Recommendation:
    """The optimizer's answer to "which mixture should I use": see :meth:`MixtureOptimizer.recommend`.

    Attributes:
        proposal: task weights (+ hyperparameters), exactly on the bounded simplex.
        mean: predicted objective at ``proposal`` (the reported posterior's mean,
            :mod:`mixopt.optimizer.calibrated`, objective units); for the ``"best_observed"``
            fallback, the observed value.
        sd: its posterior sd of the *latent* objective there (no observation noise); None for the
            fallback (a single observation has no model behind it).
        source: ``"posterior_mean"`` (the GP's maximiser) or ``"best_observed"`` (fewer than
            2 successful observations, or the GP could not be fitted: ``best()`` instead).
    """

    proposal: dict[str, Any]
    mean: float
    sd: float | None
    source: str


class Proposer:
    """Chooses each new proposal and its origin from the ledger, the GP and the random streams."""

    def __init__(
        self,
        space: SearchSpace,
        alpha: np.ndarray,
        streams: RandomStreams,
        ledger: Ledger,
        surrogate: Surrogate,
        user_seeds: list[Proposal],
    ) -> None:
        self.space, self.alpha, self.streams = space, alpha, streams
        self.ledger, self.surrogate, self.user_seeds = ledger, surrogate, user_seeds

    def next(
        self, *, n_seeds: int, beta: float, budget: int | None, exploit_last: int
    ) -> tuple[Proposal, str]:
        """The next proposal (the ``len(asked)``-th) and its origin."""
        index = len(self.ledger.asked)
        retry_seed = self.ledger.cancelled(self.user_seeds)
        if retry_seed is not None:
            return retry_seed, "seed"
        if index < max(n_seeds, len(self.user_seeds)):
            if index < len(self.user_seeds):
                return self.user_seeds[index], "seed"
            return self.draw("seed", index), "seed"
        return self.bo(index, beta, self.exploit_now(budget, exploit_last))

    def draw(self, tag: str, index: int) -> Proposal:
        taken_x = self.ledger.taken_features(self.space.encode, self.space.dim)
        return draw(self.space, self.alpha, self.streams.rng(tag, index), taken_x)

    def bo(self, index: int, beta: float, exploit: bool) -> tuple[Proposal, str]:
        n_ok = self.surrogate.n_rows()
        if n_ok < MIN_OBSERVATIONS:
            logger.info(
                "proposal %d: %d successful observation(s), the GP needs %d; drawing from the Dirichlet prior",
                index,
                n_ok,
                MIN_OBSERVATIONS,
            )
            return self.draw("random", index), "random"
        fitted = self.surrogate.fitted()
        if fitted is None:
            return self.draw("random", index), "random"
        try:
            seed = self.streams.seed("acq", index)
            beta = 0.0 if exploit else beta
            proposal = acquisition.propose(
                fitted, self.space, self.alpha, self.ledger, beta, seed, f"proposal {index}"
            )
        except Exception as err:  # numerical trouble in the posterior must not end a sweep
            logger.warning(
                "proposal %d: UCB maximisation failed (%s: %s); falling back to a Dirichlet draw",
                index,
                type(err).__name__,
                err,
            )
            return self.draw("random", index), "random"
        if proposal is None:
            logger.warning(
                "proposal %d: every UCB candidate duplicates a pending or told proposal; falling back to a "
                "Dirichlet draw",
                index,
            )
            return self.draw("random", index), "random"
        return proposal, ("exploit" if exploit else "bo")

    def exploit_now(self, budget: int | None, exploit_last: int) -> bool:
        """Whether the next GP proposal is an exploitation step: it is among the last
        ``exploit_last`` of the ``budget`` and no other exploitation step is pending (with
        concurrent workers a second one would only land next to the first: the posterior mean
        does not move at a pending point, so UCB explores instead)."""
        if budget is None or not exploit_last:
            return False
        if budget - self.ledger.issued() > exploit_last:
            return False
        return not any(self.ledger.origin(i) == "exploit" for i in self.ledger.pending)

    def recommend(
        self,
        best: tuple[dict[str, Any], float],
        weights: dict[str, float] | None = None,
        told: list[tuple[Proposal, float]] | None = None,
    ) -> Recommendation:
        """The posterior mean's maximiser with its predicted mean and sd (objective units), or
        ``best`` (the best observed trial) when the GP cannot say, with the reason logged.
        ``weights``: another composition (None: the optimizer's), ``told`` its observed values."""
        n_ok = self.surrogate.n_rows(weights)
        fallback = Recommendation(best[0], best[1], None, "best_observed")
        if n_ok < MIN_OBSERVATIONS:
            logger.info(
                "recommend(): %d successful observation(s), the GP needs %d; returning the best observed",
                n_ok,
                MIN_OBSERVATIONS,
            )
            return fallback
        fitted = self.surrogate.fitted(weights)
        if fitted is None:
            logger.warning("recommend(): the GP could not be fitted; returning the best observed")
            return fallback
        try:
            seed = self.streams.seed("recommend", len(self.ledger.history))
            proposal = acquisition.mean_maximiser(fitted, self.space, self.alpha, self.ledger, seed, told)
            mean, sd = self.reported([proposal], weights)
        except Exception as err:  # numerical trouble must not cost the caller its answer
            logger.warning(
                "recommend(): maximising the posterior mean failed (%s: %s); returning the best observed",
                type(err).__name__,
                err,
            )
            return fallback
        return Recommendation(dict(proposal), float(mean[0]), float(sd[0]), "posterior_mean")

    def reported(
        self, items: list[Proposal], weights: dict[str, float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The reported posterior's mean and sd at ``items`` (:meth:`Surrogate.integrated`); the
        proposal GP's when the trained values are too few for it (a multi-fidelity sweep whose
        trials are partial so far)."""
        model = self.surrogate.integrated(weights)
        if model is None:
            return self.surrogate.predict(items, weights)
        return model.predict(np.array([self.space.encode(p) for p in items]))

    def recommend_under(self, weights: dict[str, float]) -> Recommendation | None:
        """:meth:`recommend` under another composition ``weights``, from the told scores alone;
        None when no trial succeeded.

        Raises:
            ValueError: trials succeeded but none was told every score ``weights`` weighs.
        """
        led = self.ledger
        told = [(led.proposal(i), v) for i, s in led.scored() if (v := compose(weights, s)) is not None]
        if not told:
            if led.successes():
                raise ValueError(
                    f"recommend(): no trial was told every score {sorted(n for n, c in weights.items() if c > 0)} "
                    "the objective weighs; tell(proposal, scores={...}) records them"
                )
            return None
        best = max(range(len(told)), key=lambda k: (told[k][1], -k))
        return self.recommend((dict(told[best][0]), told[best][1]), weights, told)
