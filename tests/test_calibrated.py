"""The reported posterior (mixopt.optimizer.calibrated): the grid mixture against a naive loop of
dense solves, each grid point's predictive against a GP with a vague constant mean, its samples
against its moments, and its noise estimate against replicated data of known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixopt.optimizer import MixtureOptimizer, calibrated
from mixopt.optimizer.calibrated import IntegratedGP, NoisePrior, matern52


def _kernel(a: np.ndarray, b: np.ndarray, ell: float) -> np.ndarray:
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r = math.sqrt(5.0) * d / ell
    return (1 + r + r * r / 3) * np.exp(-r)


def _data(n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(3), n) * 1.5
    y = 0.6 + 0.05 * np.sin(4 * x[:, 0]) - 0.03 * x[:, 1] + 0.01 * rng.normal(size=n)
    xs = rng.dirichlet(np.ones(3), 4) * 1.5
    return x, y, xs


def test_matern52_is_the_closed_form() -> None:
    r = np.array([0.0, 0.3, 1.0, 2.5])
    a = math.sqrt(5) * r
    np.testing.assert_allclose(matern52(r), (1 + a + 5 * r**2 / 3) * np.exp(-a), rtol=1e-14)


def test_the_mixture_equals_a_naive_loop_of_dense_solves() -> None:
    """Every grid point's restricted likelihood and kriging predictive by dense solves, weighted by
    the priors written out here, mixed: the same mean and sd as the eigendecomposed model."""
    x, y, xs = _data()
    length_prior = (1.0, 1.2)
    gp = IntegratedGP(x, y, n_weights=3, length_prior=length_prior)
    var_y = float(np.var(y, ddof=1))
    signal = var_y * np.geomspace(*calibrated.SIGNAL_RANGE, calibrated.SIGNAL_POINTS)
    noise = var_y * np.geomspace(*calibrated.NOISE_RANGE, calibrated.NOISE_POINTS)
    ones = np.ones(len(y))
    logw, means, second = [], [], []
    for ell in calibrated.LENGTHSCALES:
        k, ks, kss = _kernel(x, x, ell), _kernel(x, xs, ell), np.ones(len(xs))
        for s2 in signal:
            for n2 in noise:
                c = s2 * k + n2 * np.eye(len(y))
                ci_y, ci_1, ci_k = (
                    np.linalg.solve(c, y),
                    np.linalg.solve(c, ones),
                    np.linalg.solve(c, s2 * ks),
                )
                a, b = ones @ ci_1, ones @ ci_y
                m_hat = b / a
                ll = -0.5 * np.linalg.slogdet(c)[1] - 0.5 * math.log(a) - 0.5 * (y @ ci_y - b * b / a)
                prior = -0.5 * ((math.log(ell) - length_prior[0]) / length_prior[1]) ** 2
                prior += (
                    -0.5
                    * ((math.log(n2) - math.log(calibrated.NOISE_SHARE * var_y)) / calibrated.NOISE_LOG_SD)
                    ** 2
                )
                mean = m_hat + (s2 * ks).T @ np.linalg.solve(c, y - m_hat)
                var = s2 * kss - np.einsum("ij,ij->j", s2 * ks, ci_k) + (1 - ones @ ci_k) ** 2 / a
                logw.append(ll + prior)
                means.append(mean)
                second.append(var + mean**2)
    w = np.exp(np.array(logw) - max(logw))
    w /= w.sum()
    mean = w @ np.array(means)
    sd = np.sqrt(w @ np.array(second) - mean**2)
    got_mean, got_sd = gp.predict(xs)
    np.testing.assert_allclose(got_mean, mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_sd, sd, rtol=1e-6)


def test_one_grid_point_is_the_gp_with_a_vague_constant_mean() -> None:
    """With one lengthscale and the flat mean's limit taken by hand: a zero-mean GP whose kernel adds
    ``c 1 1'`` (a constant with prior variance ``c``), ``c`` large, predicts the same mean and sd."""
    x, y, xs = _data(9, seed=2)
    gp = IntegratedGP(x, y, n_weights=3, length_prior=(0.0, 1.0), lengthscales=np.array([0.7]))
    # The heaviest grid point, and its predictive through the module's per-point formulas.
    i, si, ni = np.unravel_index(int(np.argmax(gp.weights)), gp.weights.shape)
    mean, var = gp._posterior(int(i), np.array([si]), np.array([ni]), xs, full=False)
    s2, n2, c = gp.signal[si], gp.noise_var[ni], 1e5 * float(np.var(y))
    big = s2 * _kernel(x, x, 0.7) + c + n2 * np.eye(len(y))
    ks = s2 * _kernel(x, xs, 0.7) + c
    ref_mean = ks.T @ np.linalg.solve(big, y)
    ref_var = s2 + c - np.einsum("ij,ij->j", ks, np.linalg.solve(big, ks))
    # The vague mean's error is of order 1/c: far below the data's spread, far above rounding.
    np.testing.assert_allclose(mean[0], ref_mean, rtol=0, atol=1e-3 * float(np.std(y)))
    np.testing.assert_allclose(var[0], ref_var, rtol=1e-3)


def test_samples_have_the_mixtures_moments() -> None:
    x, y, xs = _data(8, seed=3)
    gp = IntegratedGP(x, y, n_weights=3, length_prior=(1.0, 1.5))
    mean, cov = gp.joint(xs)
    draws = gp.sample(xs, 20000, np.random.default_rng(0))
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * sd.max() / math.sqrt(20000) + 1e-12)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * float(np.max(np.diag(cov))))
    np.testing.assert_allclose(gp.predict(xs)[1], sd, rtol=1e-9)


def test_the_noise_estimate_finds_replicated_noise() -> None:
    """Four mixtures each measured ten times, noise sd 0.02: the posterior median noise sd lands
    within 20 % of it and its 95 % interval holds it."""
    rng = np.random.default_rng(5)
    centres = rng.dirichlet(np.ones(3), 4) * 1.5
    x = np.repeat(centres, 10, axis=0)
    y = 0.5 + 0.1 * x[:, 0] + 0.02 * rng.normal(size=len(x))
    median, lo, hi = IntegratedGP(x, y, n_weights=3, length_prior=(1.0, 1.5)).noise_sd()
    assert median == pytest.approx(0.02, rel=0.2) and lo < 0.02 < hi


def test_evidence_of_the_seed_sd_moves_the_noise_there() -> None:
    """Few trials leave the noise loose; a measured seed sd with many degrees of freedom pins it."""
    x, y, _ = _data(6, seed=4)
    loose = IntegratedGP(x, y, n_weights=3, length_prior=(1.0, 1.5)).noise_sd()
    pinned = IntegratedGP(
        x, y, n_weights=3, length_prior=(1.0, 1.5), noise=NoisePrior(evidence=((0.03, 200),))
    ).noise_sd()
    assert pinned[0] == pytest.approx(0.03, rel=0.1)
    assert pinned[2] / pinned[1] < loose[2] / loose[1]


def test_kernel_lengthscales_reads_the_fitted_kernel() -> None:
    opt = MixtureOptimizer(
        ["a", "b", "c"], random_state=0, hyperparameters={"lr": {"type": "float", "low": 0.0, "high": 1.0}}
    )
    rng = np.random.default_rng(0)
    for p in opt.ask(8):
        opt.tell(p, p["a"] - (p["lr"] - 0.3) ** 2 + 0.01 * rng.normal())
    model = opt._surrogate.fitted().model
    weights, hyper = calibrated.kernel_lengthscales(model, 3, opt.space.dim)
    kernels = model.covar_module.kernels  # the product k_w * k_h of make_gp
    assert weights == pytest.approx(float(kernels[0].lengthscale.detach().reshape(-1)[0]))
    np.testing.assert_allclose(hyper, kernels[1].lengthscale.detach().numpy().reshape(-1))
