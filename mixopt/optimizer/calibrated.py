"""The predictive the optimizer reports: the GP with its hyperparameters integrated out, not fitted.

The proposal GP (:mod:`~mixopt.optimizer.model`) takes the most probable hyperparameters (MAP).
On a dozen noisy trials that point estimate is the wrong thing to report an interval from: the
noise sd fitted from a few points falls far below the seed-to-seed spread, the GP interpolates
the luckiest trials, and the interval at the posterior mean's maximiser is a fraction of the real
error (bench/RESULTS.md, "Calibration"). This module integrates the hyperparameters instead
(Bayesian model averaging over a grid; Rasmussen & Williams 2006, sec. 5.2; the kriging
predictor with an unknown mean, Santner, Williams & Notz 2003, sec. 4.1). The model is

    y_i = m + f(x_i) + e_i,   f ~ GP(0, s^2 k_l),   e_i ~ N(0, sigma^2),

``k_l`` the proposal GP's Matern-5/2 kernel on the stretched weights (one lengthscale ``l``
shared by the tasks), times its ARD Matern over the hyperparameters with their fitted
lengthscales held fixed. The mean ``m`` has a flat prior and is integrated in closed form;
``(l, s^2, sigma^2)`` run over a grid with prior weights:

- ``l``: the proposal GP's dimension-scaled LogNormal prior (Hvarfner et al., arXiv:2402.02229);
- ``s^2``: log-uniform over ``[SIGNAL_RANGE] * var(y)`` (the scale of the data, as ``Standardize``);
- ``sigma^2``: :class:`NoisePrior`: without a known seed sd, LogNormal on ``sigma^2 / var(y)``
  (median ``NOISE_SHARE``); with one (``noise_sd``), LogNormal around it; in both cases times the
  likelihood of any independent measurement of the seed spread (the verification's pooled sd).

For each grid point the restricted likelihood (the mean integrated out) is, with
``C = s^2 K + sigma^2 I`` and ``1`` the vector of ones,

    log L = -1/2 log|C| - 1/2 log(1' C^-1 1) - 1/2 (y' C^-1 y - (1' C^-1 y)^2 / 1' C^-1 1),

and the predictive of ``m + f(x*)`` is Gaussian with ``k* = s^2 k_l(X, x*)``,

    mean = m_hat + k*' C^-1 (y - m_hat 1),        m_hat = 1' C^-1 y / 1' C^-1 1,
    var  = s^2 - k*' C^-1 k* + (1 - 1' C^-1 k*)^2 / 1' C^-1 1.

The reported predictive is the mixture over the grid, weights ``prior * L`` normalised, reduced to
its mean and sd (``var = sum_g w_g (var_g + mean_g^2) - mean^2``). One eigendecomposition of ``K``
per lengthscale makes every ``(s^2, sigma^2)`` pair cost O(n). Shapes: ``x`` (n, d) features,
``y`` (n,); predictions at (m, d) give (m,) arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from gpytorch.kernels import MaternKernel
from threadpoolctl import threadpool_limits

from mixopt.optimizer.model import NOISE_PRIOR_LOC

F = TypeVar("F", bound=Callable[..., Any])

# Grid of the weights' lengthscale, in the stretched feature units (mixopt.space), log-spaced.
LENGTHSCALES = np.exp(np.linspace(math.log(0.05), math.log(50.0), 19))
# Signal variance s^2 relative to var(y): log-uniform over this range (a data set's spread is
# signal plus noise, so s^2 far above var(y) has no support; far below, the data are noise).
SIGNAL_RANGE = (1e-3, 10.0)
SIGNAL_POINTS = 17
# Noise variance sigma^2 relative to var(y), the grid's range.
NOISE_RANGE = (1e-4, 10.0)
NOISE_POINTS = 21
# The default noise prior: sigma^2 / var(y) LogNormal with median NOISE_SHARE, the proposal GP's
# (exp(-4), a noise sd of 0.14 std(y)), and log-sd NOISE_LOG_SD, wider than its 1: a point estimate
# can sit at the mode, an integral must cover the noise a few trials cannot rule out
# (bench/RESULTS.md, "Calibration", compares the choices).
NOISE_SHARE = math.exp(NOISE_PRIOR_LOC)
NOISE_LOG_SD = 1.5
# A known seed sd (``noise_sd``) centres the noise prior there with this log-sd on sigma^2, as the
# proposal GP's prior does (mixopt.optimizer.model.noise_prior).
KNOWN_LOG_SD = 0.5
# p_matters: the signal variance at least this share of the noise variance (signal sd >= noise sd / 2).
MATTERS = 0.25
# Grid points whose weight is below this share of the largest are dropped from predictions.
PRUNE = 1e-9


@dataclass(frozen=True)
class NoisePrior:
    """What is known of the noise variance before the trials: ``sd`` (a known seed-to-seed sd, in
    objective units; None: only its share of ``var(y)``) and ``evidence``: independent
    measurements of the seed spread, ``(sample sd, degrees of freedom)`` each (the verification's
    two arms, pooled: ``(seed_sd, 2 (n - 1))``), whose likelihood multiplies the prior:

        p(s_v | sigma^2) ∝ (sigma^2)^(-nu/2) exp(-nu s_v^2 / (2 sigma^2)).
    """

    sd: float | None = None
    evidence: tuple[tuple[float, int], ...] = ()

    def log_weight(self, noise_var: np.ndarray, var_y: float) -> np.ndarray:
        """Log prior weight of each noise variance of the (log-spaced) grid, up to a constant."""
        log_v = np.log(noise_var)
        if self.sd is not None and self.sd > 0:
            out = -0.5 * ((log_v - 2 * math.log(self.sd)) / KNOWN_LOG_SD) ** 2
        else:
            out = -0.5 * ((log_v - math.log(NOISE_SHARE * var_y)) / NOISE_LOG_SD) ** 2
        for sd, dof in self.evidence:
            if dof > 0 and sd > 0:
                out = out - 0.5 * dof * log_v - dof * sd**2 / (2 * noise_var)
        return out


def one_blas_thread(fn: F) -> F:
    """Run ``fn`` with numpy's BLAS on one thread: its matrices are small, and on a busy machine the
    BLAS threads' spin-waiting makes the work several times slower (as torch's, see
    :func:`mixopt.optimizer.model.one_thread`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def matern52(r: np.ndarray) -> np.ndarray:
    """Matern-5/2 of a scaled distance: ``(1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)``."""
    a = math.sqrt(5.0) * r
    return (1.0 + a + a * a / 3.0) * np.exp(-a)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
    return np.sqrt(np.clip(d2, 0.0, None))


class IntegratedGP:
    """The GP of the module docstring, conditioned on ``x`` (n, d), ``y`` (n,).

    ``n_weights``: the first features are the weights (one shared lengthscale, integrated);
    ``h_lengthscales``: the ARD lengthscales of the remaining features (held fixed), None when
    there are none; ``length_prior``: ``(loc, scale)`` of the LogNormal prior on the weights'
    lengthscale; ``noise``: the :class:`NoisePrior`; ``lengthscales``: the grid of the weights'
    lengthscale (one value: held there, as a plug-in estimate).
    """

    @one_blas_thread
    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        n_weights: int,
        length_prior: tuple[float, float],
        h_lengthscales: np.ndarray | None = None,
        noise: NoisePrior | None = None,
        lengthscales: np.ndarray = LENGTHSCALES,
    ) -> None:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float).reshape(-1)
        if len(x) != len(y) or len(y) < 2:
            raise ValueError(f"IntegratedGP needs at least 2 observations with features, got {len(y)}")
        self.x, self.y, self.n_weights = x, y, int(n_weights)
        self.h_lengthscales = None if h_lengthscales is None else np.asarray(h_lengthscales, dtype=float)
        self.noise = noise or NoisePrior()
        var_y = float(np.var(y, ddof=1))
        if not var_y > 0:  # every value equal: the scale comes from the known sd, else an arbitrary unit
            var_y = (self.noise.sd or 1.0) ** 2
        self.var_y = var_y
        self.signal = var_y * np.geomspace(*SIGNAL_RANGE, SIGNAL_POINTS)
        self.noise_var = var_y * np.geomspace(*NOISE_RANGE, NOISE_POINTS)
        if self.noise.sd is not None and self.noise.sd > 0:  # the grid must reach the known sd
            lo = min(self.noise_var[0], self.noise.sd**2 * math.exp(-3 * KNOWN_LOG_SD))
            hi = max(self.noise_var[-1], self.noise.sd**2 * math.exp(3 * KNOWN_LOG_SD))
            self.noise_var = np.geomspace(lo, hi, NOISE_POINTS)
        self.length_prior = length_prior
        self.lengthscales = np.asarray(lengthscales, dtype=float).reshape(-1)
        loc, scale = length_prior
        log_prior_l = -0.5 * ((np.log(self.lengthscales) - loc) / scale) ** 2
        log_prior = (
            log_prior_l[:, None, None]
            + self.noise.log_weight(self.noise_var, var_y)[None, None, :]
            + np.zeros((1, SIGNAL_POINTS, 1))
        )
        self._eig = [np.linalg.eigh(self._k(x, x, ell)) for ell in self.lengthscales]
        ones = np.ones(len(y))
        self._terms = []
        log_like = np.empty((len(self.lengthscales), SIGNAL_POINTS, len(self.noise_var)))
        for i, (lam, u) in enumerate(self._eig):
            lam = np.clip(lam, 0.0, None)
            alpha, beta = u.T @ y, u.T @ ones
            d = self.signal[:, None, None] * lam[None, None, :] + self.noise_var[None, :, None]  # (S, N, n)
            a = (beta**2 / d).sum(-1)
            b = (alpha * beta / d).sum(-1)
            q = (alpha**2 / d).sum(-1)
            log_like[i] = -0.5 * np.log(d).sum(-1) - 0.5 * np.log(a) - 0.5 * (q - b * b / a)
            self._terms.append((alpha, beta, d, a, b / a))
        log_w = log_prior + log_like
        log_w -= log_w.max()
        w = np.exp(log_w)
        self.weights = w / w.sum()  # (L, S, N)

    def _k(self, a: np.ndarray, b: np.ndarray, ell: float) -> np.ndarray:
        """``k_l(a, b)`` with unit variance: Matern-5/2 on the weights times the ARD part."""
        k = self.n_weights
        out = matern52(_distances(a[:, :k], b[:, :k]) / ell)
        if self.h_lengthscales is not None and a.shape[1] > k:
            out = out * matern52(_distances(a[:, k:] / self.h_lengthscales, b[:, k:] / self.h_lengthscales))
        return out

    def _points(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The grid points kept for predictions: ``(lengthscale index, signal index, noise index)``."""
        keep = self.weights > PRUNE * self.weights.max()
        return [(i, *np.nonzero(keep[i])) for i in range(len(self.lengthscales)) if keep[i].any()]

    def _posterior(
        self, i: int, si: np.ndarray, ni: np.ndarray, xs: np.ndarray, full: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grid points ``(i, si[g], ni[g])``' predictive at ``xs`` (m, d): means (G, m) and variances
        (G, m), or with ``full`` covariances (G, m, m) (the module docstring's formulas)."""
        lam, u = self._eig[i]
        alpha, beta, d, a, m_hat = self._terms[i]
        c0 = u.T @ self._k(self.x, xs, self.lengthscales[i])  # (n, m)
        s2 = self.signal[si][:, None]  # (G, 1)
        dg = d[si, ni]  # (G, n)
        mh = m_hat[si, ni][:, None]
        mean = mh + s2 * (((alpha[None, :] - mh * beta[None, :]) / dg) @ c0)  # (G, m)
        lin = 1.0 - s2 * ((beta[None, :] / dg) @ c0)  # (G, m): 1 - 1' C^-1 k*
        inv_a = (1.0 / a[si, ni])[:, None]
        if not full:
            quad = s2**2 * ((1.0 / dg) @ (c0**2))
            return mean, np.clip(s2 - quad, 0.0, None) + lin**2 * inv_a
        prior = self._k(xs, xs, self.lengthscales[i])  # (m, m)
        quad = np.einsum("in,gn,nj->gij", c0.T, s2**2 / dg, c0)
        cov = s2[:, :, None] * prior[None] - quad + inv_a[:, :, None] * lin[:, :, None] * lin[:, None, :]
        return mean, cov

    @one_blas_thread
    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of ``m + f(x*)`` at ``xs`` (m, d), each (m,): the grid mixture's moments."""
        xs = np.asarray(xs, dtype=float)
        first, second, total = np.zeros(len(xs)), np.zeros(len(xs)), 0.0
        for i, si, ni in self._points():
            mean, var = self._posterior(i, si, ni, xs, full=False)
            w = self.weights[i][si, ni][:, None]
            first += (w * mean).sum(0)
            second += (w * (var + mean**2)).sum(0)
            total += float(w.sum())
        mean = first / total
        return mean, np.sqrt(np.clip(second / total - mean**2, 0.0, None))

    @one_blas_thread
    def joint(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (m,) and covariance (m, m) of ``m + f`` at ``xs``: the mixture's first two moments,
        ``cov = sum_g w_g (C_g + mu_g mu_g') - mean mean'``."""
        xs = np.asarray(xs, dtype=float)
        first, second, total = np.zeros(len(xs)), np.zeros((len(xs), len(xs))), 0.0
        for i, si, ni in self._points():
            mean, cov = self._posterior(i, si, ni, xs, full=True)
            w = self.weights[i][si, ni]
            first += w @ mean
            second += np.einsum("g,gij->ij", w, cov) + (w[:, None] * mean).T @ mean
            total += float(w.sum())
        mean = first / total
        cov = second / total - np.outer(mean, mean)
        return mean, 0.5 * (cov + cov.T)

    @one_blas_thread
    def sample(self, xs: np.ndarray, paths: int, rng: np.random.Generator) -> np.ndarray:
        """``paths`` joint draws of ``m + f`` at ``xs`` (m, d) from the mixture: a grid point drawn by
        its weight, then a draw from its Gaussian. Returns (paths, m)."""
        xs = np.asarray(xs, dtype=float)
        flat = self.weights.reshape(-1)
        picks = rng.choice(flat.size, size=paths, p=flat / flat.sum())
        out = np.empty((paths, len(xs)))
        for g in np.unique(picks):
            i, si, ni = np.unravel_index(g, self.weights.shape)
            rows = np.flatnonzero(picks == g)
            mean, cov = self._posterior(int(i), np.array([si]), np.array([ni]), xs, full=True)
            out[rows] = mean[0] + rng.standard_normal((len(rows), len(xs))) @ _root(cov[0]).T
        return out

    def noise_sd(self) -> tuple[float, float, float]:
        """The noise sd's posterior median and 2.5 % / 97.5 % quantiles (objective units), read off
        the grid's cumulative weights by linear interpolation in log sd."""
        p = self.weights.sum(axis=(0, 1))
        cdf = np.cumsum(p) - 0.5 * p  # each grid value at the middle of its mass
        log_sd = 0.5 * np.log(self.noise_var)
        return tuple(float(np.exp(np.interp(q, cdf, log_sd))) for q in (0.5, 0.025, 0.975))  # type: ignore[return-value]

    def p_matters(self) -> float:
        """Posterior probability that the weights move the objective by at least half a trial's
        noise sd: the mass of the grid points with ``s >= sigma / 2`` (``s^2 >= MATTERS * sigma^2``)."""
        big = self.signal[None, :, None] >= MATTERS * self.noise_var[None, None, :]
        return float(self.weights[np.broadcast_to(big, self.weights.shape)].sum())


def _root(cov: np.ndarray) -> np.ndarray:
    """A square root ``R`` with ``R R' = cov``: Cholesky with a relative jitter, else (numerically
    singular) the symmetric root from the eigendecomposition."""
    cov = 0.5 * (cov + cov.T)
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-300)
    try:
        return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(cov)
        return vecs * np.sqrt(np.clip(vals, 0.0, None))


def kernel_lengthscales(
    model: torch.nn.Module, n_weights: int, dim: int
) -> tuple[float | None, np.ndarray | None]:
    """The fitted lengthscales of a proposal GP (:func:`mixopt.optimizer.model.mixture_kernel`,
    alone or inside the multi-fidelity kernel): the weights' shared one and the hyperparameters'
    ARD ones (features ``n_weights..dim``), None where the kernel has no such part."""
    weights: float | None = None
    hyper: np.ndarray | None = None
    for part in model.modules():
        if not isinstance(part, MaternKernel) or part.active_dims is None:
            continue
        dims = tuple(int(i) for i in part.active_dims.tolist())
        ls = part.lengthscale.detach().cpu().numpy().reshape(-1, len(dims) if part.ard_num_dims else 1)
        mean = np.exp(np.log(ls).mean(axis=0))
        if dims == tuple(range(n_weights)):
            weights = float(mean[0])
        elif dim > n_weights and dims == tuple(range(n_weights, dim)):
            hyper = np.broadcast_to(mean, (dim - n_weights,)).copy()
    return weights, hyper
