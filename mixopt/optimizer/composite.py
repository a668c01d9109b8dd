"""The composite surrogate: one GP per score, composed into the objective by its weights.

Composite Bayesian optimisation (Astudillo & Frazier, ICML 2019, arXiv:1906.01537) models the
parts a trial measures and composes them. Here the objective is linear in the scores,
``f(x) = sum_k c_k s_k(x)``, and with independent GPs on the ``s_k`` its posterior is again
Gaussian, mean ``sum_k c_k mu_k(x)`` and variance ``sum_k c_k^2 sigma_k^2(x)``: botorch's
``ScalarizedPosteriorTransform(c)`` on the multi-output posterior, so UCB and the posterior mean
stay closed form (:mod:`~mixopt.optimizer.acquisition` hands the transform to both).

**One fit, batched.** Scores observed on the same rows (every trial reports every task's score)
form a *group*: one ``SingleTaskGP`` with an ``(n, m)`` outcome, which botorch and gpytorch run
as a batch of m independent GPs (each its own kernel hyperparameters, noise and ``Standardize``)
fitted by one optimisation of the summed marginal likelihood. Each keeps today's kernel and priors
(:func:`mixopt.optimizer.model.make_gp`). Scores observed on different rows cannot share a batch
(a batched GP needs one input matrix): a warm start that added a task leaves the new score
without the reused trials, a held-out score may be missing from some trials. Each such group is
fitted alone and the groups are joined by a ``ModelListGP``, whose posterior is the block-diagonal
joint of its parts, so the composition above holds across groups too.

**Pending points (GP-BUCB)** are hallucinated per score at that score's posterior mean
(:func:`mixopt.optimizer.model.condition_at_mean`): every part's mean stays, every part's sd collapses there, and so do
the composition's.

**Noise prior.** With the objective's seed-to-seed sd ``noise_sd`` known and the scores' noises
taken as equal and independent, each score's sd is ``noise_sd / sqrt(sum_k c_k^2)`` (the weights
the optimizer was built with, so a recomposition reuses the fits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition.objective import ScalarizedPosteriorTransform
from botorch.models import ModelListGP
from botorch.models.model import Model

from mixopt.optimizer import fidelity
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import FIT_ATTEMPTS, MIN_OBSERVATIONS, Fitted, fit_gp, jitter
from mixopt.optimizer.seeding import RandomStreams
from mixopt.space import Proposal, SearchSpace


@dataclass
class Group:
    """Scores observed on the same rows and their one batched GP (outputs in ``names`` order)."""

    names: tuple[str, ...]
    fitted: Fitted


class ScoreModels:
    """Fits and caches the per-score GP groups over the ledger's scored observations.

    A group's fit depends only on its rows and names (seeded as the scalar GP's, by the data
    key), so compositions that share groups share fits; the cache is dropped when data changes.
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
        self._key = -1
        self._groups: dict[tuple[tuple[str, ...], tuple[tuple[int, float], ...]], Fitted | None] = {}

    def rows(self, name: str) -> list[tuple[int, float, float]]:
        return fidelity.score_rows(self.ledger, name, self.multi_fidelity)

    def n_rows(self, names: Sequence[str]) -> int:
        """The fewest rows any of ``names`` has: a composition needs every part fitted."""
        return min((len(self.rows(n)) for n in names), default=0)

    def groups(self, names: Sequence[str]) -> list[Group] | None:
        """The fitted groups covering ``names`` (in first-seen order), or None when a group's fit
        failed or a score has fewer than ``MIN_OBSERVATIONS`` rows."""
        key = fidelity.data_key(self.ledger, self.multi_fidelity)
        if key != self._key:
            self._key, self._groups = key, {}
        by_rows: dict[tuple[tuple[int, float], ...], list[str]] = {}
        rows: dict[str, list[tuple[int, float, float]]] = {}
        for n in names:
            rows[n] = self.rows(n)
            if len(rows[n]) < MIN_OBSERVATIONS:
                return None
            by_rows.setdefault(tuple((i, f) for i, f, _ in rows[n]), []).append(n)
        out = []
        for sig, group in by_rows.items():
            cache_key = (tuple(group), sig)
            if cache_key not in self._groups:
                self._groups[cache_key] = self._fit(group, rows, key)
            fitted = self._groups[cache_key]
            if fitted is None:
                return None
            out.append(Group(tuple(group), fitted))
        return out

    def _fit(
        self, group: list[str], rows: dict[str, list[tuple[int, float, float]]], key: int
    ) -> Fitted | None:
        first = rows[group[0]]
        x = fidelity.features(self.ledger, self.space, first, self.multi_fidelity)
        y = torch.tensor([[r[2] for r in rows[n]] for n in group], dtype=torch.float64).T
        return fit_gp(
            x,
            y,
            n_weights=self.space.n_tasks,
            noise_sd=self.noise_sd,
            multi_fidelity=self.multi_fidelity,
            fidelity_scale=self.fidelity_scale,
            seed=lambda attempt: self.streams.seed("fit", key * len(FIT_ATTEMPTS) + attempt),
        )

    def composed(self, weights: Mapping[str, float]) -> Fitted | None:
        """The composition ``sum_k c_k s_k`` over the positively weighted scores as one
        :class:`Fitted`: the groups' models (a ``ModelListGP`` when there are several) and the
        ``ScalarizedPosteriorTransform`` every acquisition and prediction applies."""
        names = [n for n, c in weights.items() if c > 0]
        groups = self.groups(names)
        if groups is None:
            return None
        order = [n for g in groups for n in g.names]
        models = [g.fitted.model for g in groups]
        model: Model = models[0] if len(models) == 1 else ModelListGP(*models)
        jitters = [g.fitted.jitter for g in groups if g.fitted.jitter is not None]
        transform = ScalarizedPosteriorTransform(
            weights=torch.tensor([weights[n] for n in order], dtype=torch.float64)
        )
        return Fitted(model, max(jitters) if jitters else None, self.multi_fidelity, transform)

    def predict(
        self, names: Sequence[str], items: list[Proposal]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per score, the latent posterior mean and sd at ``items`` (full fidelity)."""
        groups = self.groups(names)
        if groups is None:
            raise RuntimeError(
                "predict_scores(): the per-score GPs cannot be fitted yet (every score needs "
                f"{MIN_OBSERVATIONS} observations, or a fit failed; see the logged warning)"
            )
        x = torch.tensor(np.array([self.space.encode(p) for p in items]), dtype=torch.float64)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for g in groups:
            with torch.no_grad(), jitter(g.fitted.jitter):
                post = g.fitted.model.posterior(g.fitted.full(x))
                mean = post.mean.reshape(len(items), -1).numpy()
                sd = post.variance.clamp_min(0).sqrt().reshape(len(items), -1).numpy()
            for j, n in enumerate(g.names):
                out[n] = (mean[:, j].copy(), sd[:, j].copy())
        return out

    def joint(self, name: str, items: list[Proposal]) -> tuple[np.ndarray, np.ndarray]:
        """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``items``."""
        groups = self.groups([name])
        if groups is None:
            raise RuntimeError(
                f"predict_joint(): the GP of score {name!r} cannot be fitted yet (it needs "
                f"{MIN_OBSERVATIONS} observations, or the fit failed)"
            )
        fitted = groups[0].fitted
        x = torch.tensor(np.array([self.space.encode(p) for p in items]), dtype=torch.float64)
        with torch.no_grad(), jitter(fitted.jitter):
            mvn = fitted.model.posterior(fitted.full(x)).distribution
            return mvn.mean.reshape(-1).numpy().copy(), mvn.covariance_matrix.numpy().copy()

    def noise_sd_composed(self, weights: Mapping[str, float]) -> float | None:
        """The composition's noise sd in objective units, ``sqrt(sum_k c_k^2 noise_k^2)``."""
        names = [n for n, c in weights.items() if c > 0]
        groups = self.groups(names)
        if groups is None:
            return None
        var = 0.0
        for g in groups:
            noise = g.fitted.model.likelihood.noise.detach().reshape(-1)
            scale = g.fitted.model.outcome_transform.stdvs.detach().reshape(-1)
            for j, n in enumerate(g.names):
                var += weights[n] ** 2 * max(float(noise[j]), 0.0) * float(scale[j]) ** 2
        return math.sqrt(var)


def score_noise_sd(noise_sd: float | None, weights: Mapping[str, float]) -> float | None:
    """Each score's noise sd when the objective's is ``noise_sd`` and the scores' are equal and
    independent: ``noise_sd / sqrt(sum_k c_k^2)``."""
    if noise_sd is None:
        return None
    return noise_sd / math.sqrt(math.fsum(c * c for c in weights.values() if c > 0))
