"""The GP over the ledger's observations: fitted once per change of data, then asked for
predictions. Which rows it sees is :mod:`~mixopt.optimizer.fidelity`'s rule; how it is built and
fitted, :mod:`~mixopt.optimizer.model`'s.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mixopt.optimizer import fidelity
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import FIT_ATTEMPTS, MIN_OBSERVATIONS, Fitted, fit_gp, jitter
from mixopt.optimizer.seeding import RandomStreams
from mixopt.space import Proposal, SearchSpace


class Surrogate:
    """The optimizer's GP: fitted on the successful observations (and, with ``multi_fidelity``,
    the partial ones), cached until the data changes.

    The fit of data key ``key`` is seeded by ``streams.seed("fit", key * len(FIT_ATTEMPTS) +
    attempt)``: it depends only on the observations, so a restored state refits the same GP.
    """

    def __init__(
        self,
        ledger: Ledger,
        space: SearchSpace,
        streams: RandomStreams,
        *,
        multi_fidelity: bool,
        fidelity_scale: bool,
        noise_sd: float | None,
    ) -> None:
        self.ledger, self.space, self.streams = ledger, space, streams
        self.multi_fidelity, self.fidelity_scale, self.noise_sd = multi_fidelity, fidelity_scale, noise_sd
        self._cache: tuple[int, Fitted | None] | None = None

    def n_rows(self) -> int:
        """How many observations the GP is fitted on (partial ones only with ``multi_fidelity``)."""
        return fidelity.n_rows(self.ledger, self.multi_fidelity)

    def fitted(self) -> Fitted | None:
        """The GP fitted on the current observations (cached until they change), or None when
        every fitting attempt failed."""
        key = fidelity.data_key(self.ledger, self.multi_fidelity)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        x, y = fidelity.training_data(self.ledger, self.space, self.multi_fidelity)
        fitted = fit_gp(
            x,
            y,
            n_weights=self.space.n_tasks,
            noise_sd=self.noise_sd,
            multi_fidelity=self.multi_fidelity,
            fidelity_scale=self.fidelity_scale,
            seed=lambda attempt: self.streams.seed("fit", key * len(FIT_ATTEMPTS) + attempt),
        )
        self._cache = (key, fitted)
        return fitted

    def below_incumbent(self, i: int, beta: float) -> bool:
        """Whether running trial ``i``'s UCB at full fidelity, ``mu(x_i, 1) + beta * sigma(x_i, 1)``,
        is below the best posterior mean at full fidelity among the finished trials. False until
        the trial has a partial result and some trial has finished, or when the GP cannot be fitted.
        """
        finished = [self.ledger.proposal(j) for j, _ in self.ledger.successes()]
        if not finished or all(j != i for j, _, _ in self.ledger.partial) or self.n_rows() < MIN_OBSERVATIONS:
            return False
        if self.fitted() is None:
            return False
        mean, sd = self.predict([self.ledger.proposal(i)] + finished)
        return bool(mean[0] + beta * sd[0] < mean[1:].max())

    def predict(self, items: list[Proposal]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the latent objective at ``items`` (at full fidelity), each
        ``(len(items),)``, in objective units.

        Raises:
            RuntimeError: when the GP could not be fitted.
        """
        fitted = self.fitted()
        if fitted is None:
            raise RuntimeError(
                "predict(): the GP could not be fitted to the observations (see the logged warning)"
            )
        if not items:
            return np.zeros(0), np.zeros(0)
        x = torch.tensor(np.array([self.space.encode(p) for p in items]), dtype=torch.float64)
        with torch.no_grad(), jitter(fitted.jitter):
            post = fitted.model.posterior(fitted.full(x))
            mean = post.mean.squeeze(-1).numpy().copy()
            sd = post.variance.clamp_min(0).sqrt().squeeze(-1).numpy().copy()
        return mean, sd

    def noise_sd_fitted(self) -> float | None:
        """The fitted observation-noise sd in objective units, ``sqrt(noise_var) * std(y)`` (the
        likelihood's variance is in ``Standardize``d units); None when the GP could not be fitted."""
        fitted = self.fitted()
        if fitted is None:
            return None
        model = fitted.model
        noise_var = float(model.likelihood.noise.detach().reshape(-1)[0])
        scale = float(model.outcome_transform.stdvs.detach().reshape(-1)[0])
        return math.sqrt(max(noise_var, 0.0)) * scale
