"""The composite surrogate: one GP per score, composed into the objective by its weights.

Composite Bayesian optimisation (Astudillo & Frazier, ICML 2019, arXiv:1906.01537) models the
parts a trial measures and composes them. Here the objective is linear in the scores,
``f(x) = sum_k c_k s_k(x)``, and with independent GPs on the ``s_k`` its posterior is again
Gaussian, mean ``sum_k c_k mu_k(x)`` and variance ``sum_k c_k^2 sigma_k^2(x)``: botorch's
``ScalarizedPosteriorTransform(c)`` on the multi-output posterior, so UCB and the posterior mean
stay closed form. :class:`ComposedGP` computes that posterior directly from each group's Cholesky
factor, a one-output model that botorch's UCB and ``PosteriorMean`` take as they are.

**One fit, batched.** Scores observed on the same rows (every trial reports every task's score)
form a *group*: one ``SingleTaskGP`` with an ``(n, m)`` outcome, which botorch and gpytorch run
as a batch of m independent GPs (each its own kernel hyperparameters, noise and ``Standardize``)
fitted by one optimisation of the summed marginal likelihood. Each has the single GP's kernel and priors
(:func:`mixopt.optimizer.model.make_gp`). Scores observed on different rows cannot share a batch
(a batched GP needs one input matrix): a warm start that added a task leaves the new score
without the reused trials, a held-out score may be missing from some trials. Each such group is
fitted alone; :class:`ComposedGP` sums over the groups as over the scores of one group (the
groups are independent GPs, as a ``ModelListGP`` would join them).

**Pending points (GP-BUCB)** are hallucinated per score at that score's posterior mean
(:func:`mixopt.optimizer.model.condition_at_mean`): every part's mean stays, every part's sd collapses there, and so do
the composition's.

**Noise prior.** With the objective's seed-to-seed sd ``noise_sd`` known and the scores' noises
taken as equal and independent, each score's sd is ``noise_sd / sqrt(sum_k c_k^2)`` (the weights
the optimizer was built with, so a recomposition reuses the fits).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal

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


class Part:
    """One group's fitted GP as the tensors its posterior needs, in standardised units: inputs
    ``x`` (m, n, d) and targets ``y`` (m, n), the Cholesky factor of ``K + noise I`` (m, n, n),
    ``alpha = (K + noise I)^-1 (y - c)`` (m, n, 1), the constant mean ``const`` (m, 1, 1), and
    ``Standardize``'s ``mean``/``std`` (m,) back to score units; ``covar`` the batched kernel."""

    def __init__(self, fitted: Fitted) -> None:
        model = fitted.model
        m, d = model.num_outputs, model.train_inputs[0].shape[-1]
        self.covar, self.jitter = model.covar_module, fitted.jitter
        self.noise = model.likelihood.noise.detach().reshape(m, 1, 1)
        self.const = model.mean_module.constant.detach().reshape(m, 1, 1)
        self.mean = model.outcome_transform.means.detach().reshape(m)
        self.std = model.outcome_transform.stdvs.detach().reshape(m)
        self._factor(
            model.train_inputs[0].detach().reshape(m, -1, d), model.train_targets.detach().reshape(m, -1)
        )

    def _factor(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        eye = torch.eye(x.shape[-2], dtype=x.dtype)
        with torch.no_grad(), jitter(self.jitter):
            k = self.covar(x, x).to_dense() + self.noise * eye
            if self.jitter is not None:
                k = k + self.jitter * eye
            self.chol = torch.linalg.cholesky(k)
            self.alpha = torch.cholesky_solve(y.unsqueeze(-1) - self.const, self.chol)

    def conditioned(self, xh: torch.Tensor) -> Part:
        """A copy with observations at ``xh`` (h, d) equal to its posterior mean there (GP-BUCB)."""
        with torch.no_grad():
            mu, _ = self.standard(xh.unsqueeze(0), diag=True)  # (m, h)
        out = copy.copy(self)
        m = self.x.shape[0]
        out._factor(torch.cat([self.x, xh.expand(m, *xh.shape)], dim=-2), torch.cat([self.y, mu], dim=-1))
        return out

    def standard(self, x: torch.Tensor, diag: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean (m, r) and, with ``diag``, variance (m, r) at the r rows of ``x``
        (1 or m, r, d), else covariance (m, r, r), in standardised units."""
        m = self.x.shape[0]
        xm = x.expand(m, *x.shape[-2:])
        ks = self.covar(xm, self.x).to_dense()  # (m, r, n)
        mean = self.const[..., 0] + (ks @ self.alpha)[..., 0]
        v = torch.linalg.solve_triangular(self.chol, ks.transpose(-1, -2), upper=False)  # (m, n, r)
        if diag:
            prior = self.covar(xm, xm, diag=True)
            return mean, (prior - (v * v).sum(-2)).clamp_min(0.0)
        prior = self.covar(xm, xm).to_dense()
        return mean, prior - v.transpose(-1, -2) @ v


class ComposedGP(Model):
    """The composition ``sum_k c_k s_k`` of independent per-score GPs as a one-output botorch model.

    Its posterior at ``X`` (..., q, d) is the Gaussian with mean ``sum_k c_k mu_k`` and covariance
    ``sum_k c_k^2 Sigma_k``: what botorch's ``ScalarizedPosteriorTransform`` gives on the parts'
    multi-output posterior, computed from each part's Cholesky factor directly. The detour
    through gpytorch's multi-output posterior costs about six times more per ask at 17 scores:
    for every start point it concatenates and expands the training inputs once per score.
    """

    _num_outputs = 1

    def __init__(self, parts: list[tuple[Part, torch.Tensor]]) -> None:
        super().__init__()
        self.parts = parts  # (part, c_k per output (m,))

    @property
    def num_outputs(self) -> int:
        return 1

    def condition_at_mean(self, xh: torch.Tensor) -> ComposedGP:
        """Pending points ``xh`` (h, d) hallucinated per score at its posterior mean (GP-BUCB)."""
        return ComposedGP([(p.conditioned(xh), c) for p, c in self.parts])

    def posterior(
        self,
        X: torch.Tensor,
        output_indices=None,
        observation_noise=False,
        posterior_transform=None,
        **kwargs,
    ):  # type: ignore[no-untyped-def,override]
        if posterior_transform is not None:
            raise ValueError("ComposedGP is already composed: give no posterior_transform")
        batch, q, d = X.shape[:-2], X.shape[-2], X.shape[-1]
        flat = X.reshape(-1, d)
        diag = q == 1
        mean = torch.zeros(flat.shape[0], dtype=X.dtype)
        cov = torch.zeros(flat.shape[0], dtype=X.dtype) if diag else torch.zeros(*batch, q, q, dtype=X.dtype)
        for part, c in self.parts:
            with jitter(part.jitter):
                if diag:
                    mu, var = part.standard(flat.unsqueeze(0), diag=True)  # (m, r)
                    mean = mean + ((c * part.std).unsqueeze(-1) * mu + (c * part.mean).unsqueeze(-1)).sum(0)
                    cov = cov + ((c * part.std) ** 2).unsqueeze(-1).mul(var).sum(0)
                else:
                    xb = X.reshape(-1, q, d)
                    for b in range(xb.shape[0]):
                        mu, sig = part.standard(xb[b].unsqueeze(0), diag=False)  # (m, q), (m, q, q)
                        mean[b * q : (b + 1) * q] += (
                            (c * part.std).unsqueeze(-1) * mu + (c * part.mean).unsqueeze(-1)
                        ).sum(0)
                        cov.view(-1, q, q)[b] += (((c * part.std) ** 2).view(-1, 1, 1) * sig).sum(0)
        if diag:
            mvn = MultivariateNormal(mean.reshape(*batch, 1), cov.reshape(*batch, 1, 1).clamp_min(1e-30))
        else:
            cov = cov + 1e-12 * torch.eye(q, dtype=X.dtype)
            mvn = MultivariateNormal(mean.reshape(*batch, q), cov)
        return GPyTorchPosterior(mvn)


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
        :class:`Fitted` whose model is the one-output :class:`ComposedGP` of the groups."""
        names = [n for n, c in weights.items() if c > 0]
        groups = self.groups(names)
        if groups is None:
            return None
        parts = [
            (Part(g.fitted), torch.tensor([weights[n] for n in g.names], dtype=torch.float64)) for g in groups
        ]
        jitters = [g.fitted.jitter for g in groups if g.fitted.jitter is not None]
        return Fitted(ComposedGP(parts), max(jitters) if jitters else None, self.multi_fidelity)

    def covering(self, names: Sequence[str], base: Sequence[str]) -> list[Group] | None:
        """Groups covering ``names``, fitted as for the composition over ``base`` (the weighted
        scores) where they are in it, so that a score's prediction is the one the proposals used;
        the others grouped among themselves."""
        inside = [n for n in base if n in names]
        outside = [n for n in names if n not in base]
        got = (self.groups(base) if inside else []), (self.groups(outside) if outside else [])
        if got[0] is None or got[1] is None:
            return None
        return [g for g in got[0] if set(g.names) & set(names)] + got[1]

    def predict(
        self, names: Sequence[str], items: list[Proposal], base: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per score, the latent posterior mean and sd at ``items`` (full fidelity); ``base``
        the composition's scores (see :meth:`covering`)."""
        groups = self.covering(names, base)
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

    def joint(self, name: str, items: list[Proposal], base: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``items``."""
        groups = self.covering([name], base)
        if groups is None:
            raise RuntimeError(
                f"predict_joint(): the GP of score {name!r} cannot be fitted yet (it needs "
                f"{MIN_OBSERVATIONS} observations, or the fit failed)"
            )
        group = next(g for g in groups if name in g.names)
        j = group.names.index(name)
        part = Part(group.fitted)
        x = group.fitted.full(
            torch.tensor(np.array([self.space.encode(p) for p in items]), dtype=torch.float64)
        )
        with torch.no_grad(), jitter(group.fitted.jitter):
            mean, cov = part.standard(x.unsqueeze(0), diag=False)  # standardised units
        std, mu = float(part.std[j]), float(part.mean[j])
        return (mu + std * mean[j]).numpy().copy(), (std**2 * cov[j]).numpy().copy()

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
