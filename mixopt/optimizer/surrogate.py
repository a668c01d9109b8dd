"""The GP over the ledger's observations: fitted once per change of data, then asked for
predictions. Which rows it sees is :mod:`~mixopt.optimizer.fidelity`'s rule; how it is built and
fitted, :mod:`~mixopt.optimizer.model`'s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mixopt.optimizer import fidelity
from mixopt.optimizer.calibrated import IntegratedGP, NoisePrior, kernel_lengthscales
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import (
    FIT_ATTEMPTS,
    MIN_OBSERVATIONS,
    Fitted,
    fit_gp,
    jitter,
    weight_lengthscale_prior,
)
from mixopt.optimizer.objective import compose
from mixopt.optimizer.seeding import RandomStreams
from mixopt.space import Proposal, SearchSpace


class Surrogate:
    """The optimizer's GP: fitted on the successful observations (and, with ``multi_fidelity``,
    the partial ones), cached until the data changes.

    One GP on the composed objective. Every method takes ``weights`` (None: the optimizer's own
    objective; else a composition of the told scores, a single GP on the recomposed values), so a
    recommendation under another composition uses the same machinery.

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
        weights: dict[str, float] | None = None,
    ) -> None:
        self.ledger, self.space, self.streams = ledger, space, streams
        self.multi_fidelity, self.fidelity_scale, self.noise_sd = multi_fidelity, fidelity_scale, noise_sd
        self.weights = dict(weights or {})
        self._cache: tuple[int, Fitted | None] | None = None
        self._recomposed: dict[tuple[tuple[str, float], ...], tuple[int, Fitted | None]] = {}
        self._integrated: dict[Any, IntegratedGP | None] = {}

    def _own(self, weights: dict[str, float] | None) -> bool:
        return weights is None or weights == self.weights

    def n_rows(self, weights: dict[str, float] | None = None) -> int:
        """How many observations the GP is fitted on (partial ones only with ``multi_fidelity``);
        for a composition, the trials whose scores compose it."""
        if self._own(weights):
            return fidelity.n_rows(self.ledger, self.multi_fidelity)
        assert weights is not None
        return len(self._recomposed_rows(weights))

    def fitted(self, weights: dict[str, float] | None = None) -> Fitted | None:
        """The GP fitted on the current observations (cached until they change), or None when
        every fitting attempt failed."""
        if not self._own(weights):
            assert weights is not None
            return self._fit_recomposed(weights)
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

    def _recomposed_rows(self, weights: dict[str, float]) -> list[tuple[int, float, float]]:
        """Rows of the single GP on another composition: each scored trial's recomposed value
        (partial ones with ``multi_fidelity``, by :func:`fidelity.curve_rows`'s rule)."""
        rows = [(i, 1.0, v) for i, s in self.ledger.scored() if (v := compose(weights, s)) is not None]
        if self.multi_fidelity:
            led = self.ledger
            partial = [
                (i, f, v)
                for (i, f, _), ps in zip(led.partial, led.partial_scores)
                if ps is not None and (v := compose(weights, ps)) is not None
            ]
            rows += fidelity.curve_rows(partial, {i for i, _, _ in rows})
        return rows

    def _fit_recomposed(self, weights: dict[str, float]) -> Fitted | None:
        """The single GP on another composition's values, cached."""
        key = fidelity.data_key(self.ledger, self.multi_fidelity)
        cache_key = tuple(sorted(weights.items()))
        if cache_key in self._recomposed and self._recomposed[cache_key][0] == key:
            return self._recomposed[cache_key][1]
        rows = self._recomposed_rows(weights)
        fitted = None
        if len(rows) >= MIN_OBSERVATIONS:
            fitted = fit_gp(
                fidelity.features(self.ledger, self.space, rows, self.multi_fidelity),
                torch.tensor([[v] for _, _, v in rows], dtype=torch.float64),
                n_weights=self.space.n_tasks,
                noise_sd=self.noise_sd,
                multi_fidelity=self.multi_fidelity,
                fidelity_scale=self.fidelity_scale,
                seed=lambda attempt: self.streams.seed("fit", key * len(FIT_ATTEMPTS) + attempt),
            )
        self._recomposed[cache_key] = (key, fitted)
        return fitted

    def _values(self, weights: dict[str, float] | None) -> list[tuple[int, float]]:
        """``(index, value)`` of the trained full-fidelity values of the objective (``weights`` None
        or the optimizer's own) or of composition ``weights`` (a score: ``{name: 1.0}``)."""
        if self._own(weights):
            return self.ledger.successes()
        assert weights is not None
        return [(i, v) for i, s in self.ledger.scored() if (v := compose(weights, s)) is not None]

    def n_values(self, weights: dict[str, float] | None = None) -> int:
        """How many trained values :meth:`integrated` rests on."""
        return len(self._values(weights))

    def integrated(
        self, weights: dict[str, float] | None = None, evidence: tuple[tuple[float, int], ...] = ()
    ) -> IntegratedGP | None:
        """The predictive the optimizer reports (:class:`~mixopt.optimizer.calibrated.IntegratedGP`):
        on the trained full-fidelity values of the objective (or of composition ``weights``), the
        hyperparameters' lengthscales from the proposal GP, the noise prior centred on ``noise_sd``
        when given and ``evidence`` (independent seed-sd measurements) multiplying it. None with
        fewer than ``MIN_OBSERVATIONS`` values; cached until the data change."""
        rows = self._values(weights)
        own = self._own(weights)
        key = (len(self.ledger.history), own or tuple(sorted((weights or {}).items())), tuple(evidence))
        if key in self._integrated:
            return self._integrated[key]
        self._integrated = {k: v for k, v in self._integrated.items() if k[0] == key[0]}  # drop stale fits
        model = None
        if len(rows) >= MIN_OBSERVATIONS:
            n_weights, dim = self.space.n_tasks, self.space.dim
            hyper = None
            if (
                dim > n_weights
            ):  # the hyperparameters' ARD lengthscales: the proposal GP's, else its prior's median
                fitted = self.fitted(weights)
                hyper = kernel_lengthscales(fitted.model, n_weights, dim)[1] if fitted is not None else None
                if hyper is None:
                    hyper = np.full(dim - n_weights, math.exp(weight_lengthscale_prior(dim - n_weights)[0]))
            model = IntegratedGP(
                np.array([self.space.encode(self.ledger.proposal(i)) for i, _ in rows]),
                np.array([v for _, v in rows]),
                n_weights=n_weights,
                length_prior=weight_lengthscale_prior(n_weights),
                h_lengthscales=hyper,
                noise=NoisePrior(self.noise_sd if own else None, tuple(evidence)),
            )
        self._integrated[key] = model
        return model

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

    def predict(
        self, items: list[Proposal], weights: dict[str, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the latent objective at ``items`` (at full fidelity), each
        ``(len(items),)``, in objective units.

        Raises:
            RuntimeError: when the GP could not be fitted.
        """
        fitted = self.fitted(weights)
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
