"""The GP surrogate: kernels, noise prior, the multi-fidelity kernel, and the fit with retry.

A botorch ``SingleTaskGP`` in float64 with ``Standardize``d outcomes; the kernel is Matern-5/2
with the dimension-scaled lengthscale prior of Hvarfner et al. (arXiv:2402.02229), one
lengthscale shared by the K weights (tasks are exchangeable a priori; :func:`make_gp`) times an
ARD Matern over the hyperparameters. The multi-fidelity GP (:func:`make_mf_gp`) adds a fidelity
kernel and a learning-curve trend over the fraction of the step budget (ADMIRE-BayesOpt,
arXiv:2508.11551). :func:`fit_gp` fits either, retrying with a larger noise floor and Cholesky
jitter before giving up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gpytorch
import torch
from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior

logger = logging.getLogger("mixopt.optimizer")

# A GP needs at least two successful observations to say anything about where to go next.
MIN_OBSERVATIONS = 2
# Fitting attempts: (noise variance floor in standardised units, Cholesky jitter for float64).
# The first is botorch's default floor; the second trades a little fidelity for a stable fit.
FIT_ATTEMPTS: tuple[tuple[float, float | None], ...] = ((1e-4, None), (1e-3, 1e-5))
# botorch's default noise prior: LogNormal(-4, 1) on the noise variance in standardised units.
NOISE_PRIOR_LOC = -4.0


def fit_mll(mll: ExactMarginalLogLikelihood) -> None:
    """Fit GP hyperparameters by maximising the marginal log likelihood (MAP with the priors).

    A module-level function so that tests can make it fail and exercise the fallbacks.
    """
    fit_gpytorch_mll(mll)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run botorch/gpytorch code with a fixed torch seed, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's setting.

    The GP's matrices have at most a few hundred rows: threads only add synchronisation, and on a
    busy machine OpenMP's spin-waiting makes a run several times slower with 2 threads than with
    1. One thread also makes the floating-point reductions, hence the proposals, independent of
    the caller's thread count, so a run resumed in another process proposes the same.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def jitter(value: float | None) -> Iterator[None]:
    """Cholesky jitter ``value`` for gpytorch's solves (None: its default)."""
    if value is None:
        yield
    else:
        with gpytorch.settings.cholesky_jitter(float_value=value, double_value=value):
            yield


@dataclass
class Fitted:
    """A fitted GP with the jitter it needed; ``fidelity`` for the multi-fidelity GP, whose inputs
    have one more column, the fraction of the step budget. ``model`` is a ``SingleTaskGP``."""

    model: Model
    jitter: float | None
    fidelity: bool = False

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., d) search features as model inputs: at full fidelity (s = 1) for the MF GP."""
        if not self.fidelity:
            return x
        return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], dim=-1)

    def at_full(self, acq: Any, dim: int) -> Any:
        """An acquisition over the ``dim`` search features (the MF GP's fidelity column fixed at 1)."""
        if not self.fidelity:
            return acq
        return FixedFeatureAcquisitionFunction(acq, d=dim + 1, columns=[dim], values=[1.0])


def condition_at_mean(model: Model, xh: torch.Tensor) -> Model:
    """``model`` with observations at ``xh`` equal to its posterior mean there (GP-BUCB)."""
    with torch.no_grad():
        mean_h = model.posterior(xh).mean
    return model.condition_on_observations(xh, mean_h)


def make_gp(
    x: torch.Tensor, y: torch.Tensor, noise_floor: float, n_weights: int, noise_sd: float | None = None
) -> SingleTaskGP:
    """SingleTaskGP in float64 with Standardize(1) outcomes and a simplex-aware Matern-5/2 kernel.

    ``k(x, x') = k_w(w, w') * k_h(h, h')``: ``k_w`` is Matern-5/2 on the K weight features with
    *one* lengthscale shared by all tasks, ``k_h`` Matern-5/2 with ARD over the hyperparameter
    features (absent without hyperparameters). Tasks are exchangeable a priori, and with a few
    dozen trials K separate lengthscales are not identifiable: MAP shrinks some of them, which
    inflates sigma along those axes and drags UCB onto the simplex's faces (bench/RESULTS.md,
    "Mixture optimizer", compares the two). Both blocks get the dimension-scaled LogNormal
    lengthscale prior of Hvarfner et al. (arXiv:2402.02229) for their own dimension.

    Noise: the likelihood's noise variance is in standardised units (``Standardize``). Without
    ``noise_sd`` its prior is botorch's LogNormal(-4, 1) (median sd 0.14 std(y)), with a floor. On a
    few noisy trials that prior wins over the data: the fitted noise sd falls far below the
    trainer's seed-to-seed spread (bench/RESULTS.md, "Mixture landscape"), and the posterior
    mean then follows the luckiest seed. ``noise_sd`` (objective units, e.g. the verification
    stage's measured seed sd) centres the prior on ``(noise_sd / std(y))^2`` instead, with a log-sd
    of 0.5 (a factor 1.3 on the sd), so a few trials cannot talk it down and many can still move it.

    Shapes: ``x`` (n, d) features (weights first), ``y`` (n, 1) objective values.
    """
    return single_task_gp(x, y, mixture_kernel(x.shape[-1], n_weights), noise_floor, noise_sd)


def mixture_kernel(d: int, n_weights: int) -> Kernel:
    """``k_w(w, w') * k_h(h, h')`` over ``d`` features, the ``n_weights`` weights first (see
    :func:`make_gp`)."""
    prior = LogNormalPrior(*weight_lengthscale_prior(n_weights))
    covar: Kernel = MaternKernel(
        nu=2.5,
        active_dims=tuple(range(n_weights)),
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=prior.mode),
    )
    if d > n_weights:
        covar = covar * get_covar_module_with_dim_scaled_prior(
            ard_num_dims=d - n_weights,
            use_rbf_kernel=False,
            active_dims=tuple(range(n_weights, d)),
        )
    return covar


def weight_lengthscale_prior(n_weights: int) -> tuple[float, float]:
    """``(loc, scale)`` of the LogNormal prior on the weights' shared lengthscale: Hvarfner et al.'s
    dimension-scaled prior (arXiv:2402.02229) for ``n_weights`` dimensions."""
    return math.sqrt(2) + 0.5 * math.log(n_weights), math.sqrt(3)


def single_task_gp(
    x: torch.Tensor, y: torch.Tensor, covar: Kernel, noise_floor: float, noise_sd: float | None
) -> SingleTaskGP:
    """SingleTaskGP in float64 with ``covar``, Standardize outcomes and the noise prior of
    :func:`noise_prior` above ``noise_floor``; ``y`` (n, 1)."""
    prior = noise_prior(y, noise_floor, noise_sd)
    likelihood = GaussianLikelihood(
        noise_prior=prior,
        noise_constraint=GreaterThan(
            noise_floor, transform=None, initial_value=max(prior.mode, 2 * noise_floor)
        ),
    )
    with warnings.catch_warnings():
        # Weight features are stretched beyond [0, 1] on purpose (see mixopt.space).
        warnings.simplefilter("ignore", InputDataWarning)
        return SingleTaskGP(
            x, y, likelihood=likelihood, covar_module=covar, outcome_transform=Standardize(m=1)
        )


def noise_prior(y: torch.Tensor, noise_floor: float, noise_sd: float | None) -> LogNormalPrior:
    """The noise-variance prior in standardised units (see :func:`make_gp`); ``y`` (n, 1)."""
    if noise_sd is None:
        return LogNormalPrior(loc=NOISE_PRIOR_LOC, scale=1.0)
    y_sd = float(y.std()) if len(y) > 1 else 0.0
    # All values equal: Standardize leaves them at unit scale; keep the prior finite.
    var = (noise_sd / y_sd) ** 2 if y_sd > 0 else 1.0
    return LogNormalPrior(loc=math.log(max(var, 2 * noise_floor)), scale=0.5)


class FidelityScale(Kernel):
    """``k(s, s') = s^p s'^p`` on one input column (the fraction of the step budget), ``p >= 0.01``
    fitted with a LogNormal(log 0.5, 0.5) prior (median 0.5, at most about 1.4 at two sd).

    Times a stationary kernel it is a rank-one scale: the mixture effect's variance grows with the
    fraction, ``s^{2p}``. Every mixture starts from the same model, so early gaps between mixtures
    are smaller than final ones; with ``p -> 0`` an early value would count as a noisy copy of the
    final one at full size. The prior is tight because partial values at a single fraction (a young
    sweep's first ASHA rung) cannot identify ``p``: a loose prior lets the fit send ``p`` high,
    "early values say nothing" (bench/RESULTS.md, "Multi-fidelity").

    Shapes: ``x1`` (..., n, 1), ``x2`` (..., m, 1) -> (..., n, m), or (..., n) with ``diag``.
    """

    has_lengthscale = False

    def __init__(self, dim: int) -> None:
        super().__init__(active_dims=(dim,))
        self.register_parameter("raw_power", torch.nn.Parameter(torch.full((1,), 0.5)))
        self.register_constraint("raw_power", GreaterThan(1e-2, transform=None, initial_value=0.5))
        self.register_prior(
            "power_prior",
            LogNormalPrior(loc=math.log(0.5), scale=0.5),
            lambda m: m.power,
            lambda m, v: m._set_power(v),
        )

    @property
    def power(self) -> torch.Tensor:
        return self.raw_power_constraint.transform(self.raw_power)

    def _set_power(self, value: Any) -> None:
        value = torch.as_tensor(value, dtype=self.raw_power.dtype).expand_as(self.raw_power)
        self.initialize(raw_power=self.raw_power_constraint.inverse_transform(value))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: Any) -> torch.Tensor:
        # s = 0 never occurs (a report is after at least one step); the clamp keeps gradients finite.
        p = self.power  # (1,): broadcasts over the rows
        a1 = x1[..., 0].clamp_min(1e-6) ** p
        a2 = x2[..., 0].clamp_min(1e-6) ** p
        return a1 * a2 if diag else a1.unsqueeze(-1) * a2.unsqueeze(-2)


def make_mf_gp(
    x: torch.Tensor,
    y: torch.Tensor,
    noise_floor: float,
    n_weights: int,
    noise_sd: float | None = None,
    fidelity_scale: bool = False,
) -> SingleTaskGP:
    """The multi-fidelity GP: :func:`make_gp`'s kernel on the features times a fidelity kernel,
    plus a learning-curve trend (multi-fidelity BO over mixtures, ADMIRE-BayesOpt arXiv:2508.11551):

        k((x, s), (x', s')) = c_1 * k_x(x, x') * [s^p s'^p] * k_s(s, s') + c_2 * k_t(s, s')

    ``s`` (the last column of ``x``) is the fraction of the step budget a value was measured at.
    ``[s^p s'^p]`` only with ``fidelity_scale`` (:class:`FidelityScale`, ``p`` fitted): the mixture
    effect grows with training, an early gap between two mixtures a shrunken copy of their final
    gap. That helps on curves that rank mixtures early as at the end and hurts on curves that
    cross (bench/RESULTS.md, "Multi-fidelity").
    ``k_x`` is :func:`make_gp`'s kernel (shared-lengthscale Matern-5/2 on the weights, ARD Matern
    on the hyperparameters, the same priors); ``k_s`` Matern-5/2 on ``s``: how much a value at
    ``s`` says about one at ``s'`` for the same mixture; ``c_2 * k_t`` (Matern-5/2 on ``s``) is the
    part of the learning curve every mixture shares (scores rise with steps), so that a low value
    early in training is not read as a bad mixture. Both ``s`` lengthscales have a LogNormal(0, 1)
    prior (median 1: the whole budget); ``c_1``, ``c_2`` botorch's classic Gamma(2, 0.15) prior
    (the single-fidelity GP has no output scale: there ``Standardize`` makes the mixtures' variance
    1, here the trend takes much of it). Noise as :func:`make_gp`'s.

    Shapes: ``x`` (n, d + 1) features then fraction, ``y`` (n, 1) objective values.
    """
    d = x.shape[-1] - 1
    covar = mixture_kernel(d, n_weights)  # k_x: make_gp's covariance over the features

    def fidelity_kernel() -> MaternKernel:
        s_prior = LogNormalPrior(loc=0.0, scale=1.0)
        return MaternKernel(
            nu=2.5,
            active_dims=(d,),
            lengthscale_prior=s_prior,
            lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=1.0),
        )

    # Both terms have their own output scale: with the trend in the data, the standardised
    # outcomes' unit variance is mostly the trend's, not the mixtures' (a unit-variance k_x * k_s
    # would overstate how much the mixture matters, hence sigma, at full fidelity).
    if fidelity_scale:
        covar = covar * FidelityScale(d)
    covar = ScaleKernel(covar * fidelity_kernel(), outputscale_prior=GammaPrior(2.0, 0.15)) + ScaleKernel(
        fidelity_kernel(), outputscale_prior=GammaPrior(2.0, 0.15)
    )
    return single_task_gp(x, y, covar, noise_floor, noise_sd)  # noise as in make_gp


def fit_gp(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_weights: int,
    noise_sd: float | None,
    multi_fidelity: bool,
    fidelity_scale: bool,
    seed: Callable[[int], int],
) -> Fitted | None:
    """Fit the GP to ``x`` (n, d) (+ the fraction column with ``multi_fidelity``), ``y`` (n, 1).

    Each setting of ``FIT_ATTEMPTS`` in turn (``seed(attempt)`` seeds torch), until one fits and
    predicts finite values at the data; a fit that needed a retry is logged, and so is the None
    returned when every setting failed (botorch, gpytorch and linear-algebra errors alike).
    """
    errors: list[str] = []
    fitted: Fitted | None = None
    for attempt, (noise_floor, jitter_value) in enumerate(FIT_ATTEMPTS):
        try:
            with seeded(seed(attempt)), jitter(jitter_value):
                if multi_fidelity:
                    model = make_mf_gp(x, y, noise_floor, n_weights, noise_sd, fidelity_scale)
                else:
                    model = make_gp(x, y, noise_floor, n_weights, noise_sd)
                fit_mll(ExactMarginalLogLikelihood(model.likelihood, model))
                model.eval()
                with torch.no_grad():
                    post = model.posterior(x)
                    if not (torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()):
                        raise FloatingPointError("the fitted GP predicts non-finite values at the data")
            fitted = Fitted(model, jitter_value, multi_fidelity)
            break
        except Exception as err:  # botorch/gpytorch/linalg errors alike: try the next setting
            errors.append(f"{type(err).__name__}: {err}")
    if fitted is not None and errors:
        logger.warning(
            "GP fit on %d observations needed a noise floor of %g and jitter %g (first attempt: %s)",
            len(y),
            FIT_ATTEMPTS[len(errors)][0],
            FIT_ATTEMPTS[len(errors)][1] or 0.0,
            errors[0],
        )
    elif fitted is None:
        logger.warning(
            "GP fit on %d observations failed with every setting (%s); proposing Dirichlet draws "
            "(origin 'random') until the next observation",
            len(y),
            " | ".join(errors),
        )
    return fitted
