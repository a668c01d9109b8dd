"""Mixture optimizer: Dirichlet seed mixtures, then GP-UCB on the bounded simplex, behind ask/tell.

The EmbeddingGemma recipe (arXiv:2509.20354, sec. "Model souping"): start from hand-picked and
Dirichlet-sampled mixtures, then let a Gaussian process over the mixture weights with an
upper-confidence-bound acquisition propose the next ones. Usable alone, with no Ray and no MLflow::

    opt = MixtureOptimizer(["retrieval_0", "sts_1", "classification_2"])
    for proposal in opt.ask(4):          # {"retrieval_0": 0.21, "sts_1": 0.52, ...}
        opt.tell(proposal, train_and_score(proposal))
    best_proposal, best_value = opt.best()

**Seed phase.** The user's seed mixtures first, in order, then Dirichlet(alpha) draws until
``max(n_seeds, len(seed_mixtures))`` proposals are out (``n_seeds`` defaults to 7: on the K = 17
suite of ``bench/optimizer.py``, 3 candidate streams x 10 seeds, 7 seeds instead of 10 moved the
median regret at 32 trials on sparse1 from 0.53x to 0.40x the better GP peer, brought every lawA
run to the exact optimum and lawB's worst seed under the peers' median, at 1.6x on the face
objective (still 0.13x the peers); 5 seeds helped sparse1 more and cost more elsewhere; see
bench/RESULTS.md, "The seed phase"). Bounds are honoured by construction
(:func:`mixopt.space.bounded_dirichlet`). Seed hyperparameters: a user seed's own value if it gives
one, else the hyperparameter's ``default``, else a prior draw; Dirichlet seeds draw from the
priors (uniform, log-uniform, uniform integer, uniform choice) so the seeds spread over them too.

**BO phase.** A botorch ``SingleTaskGP`` in float64 with ``Standardize``d outcomes; the kernel is
Matern-5/2 with the dimension-scaled lengthscale prior of Hvarfner et al. (arXiv:2402.02229), one lengthscale shared by the K weights (tasks are exchangeable a priori;
see :func:`_make_gp`) times an ARD Matern over the hyperparameters. Features are the K weights
(stretched so the simplex spans about a unit cube, see :mod:`mixopt.space`), float/log/int
hyperparameters in [0, 1], categoricals one-hot.
The acquisition is UCB as the paper writes it,

    a(x) = mu(x) + beta * sigma(x),

with mu, sigma the GP posterior mean and sd of the latent objective. botorch's
``UpperConfidenceBound`` computes ``mu + sqrt(beta_botorch) * sigma``, so it is built with
``beta_botorch = beta ** 2`` (beta=2 -> beta_botorch=4). It is maximised over the polytope
``{sum_k w_k = 1, lo_k <= w_k <= hi_k}`` by SLSQP (botorch ``optimize_acqf`` with the equality
constraint and box bounds) from the best of a few hundred sampled starts (bounded-Dirichlet draws
and perturbations of the best observations, plus starts on the polytope's boundary, where sparse
and capped optima lie: sparse Dirichlet(0.1) draws, vertices, and edges from the best observations
towards vertices), with categoricals held fixed per start. The result is
projected exactly onto the polytope (:func:`mixopt.space.project_capped_simplex`): weights >= 0,
within bounds, summing to 1 within 1e-9; ints are rounded.

**Batches and asynchronous workers: GP-BUCB** (Desautels, Krause & Burdick, arXiv:1206.6402).
Every pending proposal (asked, not yet told, including those already chosen in the same
``ask(n)``) is added to the GP as a *hallucinated* observation equal to its posterior mean. That
leaves the mean unchanged and collapses the sd around pending points, so their exploration bonus
is gone and the next proposal goes elsewhere; the GP's hyperparameters are fitted on real
observations only. Candidates closer than ``mixopt.space.NEAR_IDENTICAL`` (1% of the mixture
moved, or 1% of a hyperparameter's range) to any pending or told point are rejected outright, so
concurrent workers never receive the same or a near-identical mixture. ``ask(2)`` and
``ask(1); ask(1)`` return the same proposals.

**Failed trials** (``tell(p, None)``) are kept as *permanently pending* points: hallucinated at the
posterior mean and excluded within the same radius. Not imputing a number (e.g. the worst value)
is deliberate: a failure says nothing about the objective (a preempted worker, an OOM at one
batch size), and a fake extreme value would distort the standardisation and the fitted
lengthscales for the whole space. The failed point loses its exploration bonus and cannot be
proposed again; its neighbourhood is only revisited if the mean there is genuinely high.

**Fallbacks, never a crash.** Fewer than 2 successful observations (e.g. ``n_seeds=0``, or
every seed still running) -> a bounded-Dirichlet draw, origin ``"random"``. A GP fit that fails
(not PSD, singular, optimiser error) is retried with a larger noise floor and Cholesky jitter, then
falls back to Dirichlet draws (origin ``"random"``) with a logged warning until the next
observation. A failed acquisition optimisation falls back to the best sampled start. All
observed values equal is fine (Standardize keeps a unit scale; UCB then explores).

**Recommendation.** ``best()`` is the best *observed* trial, biased upward by seed noise (the
winner's curse). ``recommend()`` returns the maximiser of the GP posterior mean over the same
space (the acquisition machinery above with botorch's ``PosteriorMean``, real observations only),
with its predicted mean and sd; ``noise_sd()`` is the fitted observation-noise sd in objective
units (the seed-to-seed spread, when every trial has its own trainer seed).

**Exploitation at the end of the budget.** With a known ``budget`` (the sweep's number of
trials), its last ``exploit_last`` proposals (2 by default; origin ``"exploit"``) maximise the
posterior mean instead of UCB (beta = 0, still away from every pending and told point), one at a
time: while one is pending, the next proposal is UCB again. A sweep's answer is a trained
checkpoint, so the budget should end on the mixture the GP believes best rather than on a last
exploratory probe: on the K = 17 suite of ``bench/optimizer.py`` (10 seeds) it lowered the
median regret at 32 trials to 0.56-0.70x on the interior, face, noisy and capped objectives and
0.37x on lawB, better on 49 of the 80 (objective, seed) pairs and worse on 8 (bench/RESULTS.md).

**Multi-fidelity (``multi_fidelity=True``; config ``optimizer.multi_fidelity``, which a sweep turns
on by default when early stopping is enabled: ``Experiment.multi_fidelity``).** Trials
report the objective at intermediate steps, and a scheduler (ASHA) stops some early. With the
option on, those partial results count, as in multi-fidelity BO over mixtures (ADMIRE-BayesOpt,
arXiv:2508.11551): the GP is fitted over ``(x, s)``, ``s`` the fraction of the step budget a
value was measured at, with the kernel (see :func:`_make_mf_gp`)

    k((x, s), (x', s')) = c_1 * k_x(x, x') * k_s(s, s') + c_2 * k_t(s, s'),

``k_x`` the single-fidelity kernel above, ``k_s`` a Matern-5/2 fidelity correlation and
``c_2 * k_t`` a learning-curve trend shared by every mixture (output scales ``c_1``, ``c_2``
fitted). Rows: every full-fidelity value
(``tell``) at ``s = 1``, and each trial's partial values (``tell_partial`` while it runs;
``tell(p, value, fraction=f)`` when it was stopped early) at their fractions: the latest value per
fraction, at most ``MF_CURVE_POINTS`` per trial (thinned, the highest kept), so the GP sees how a
mixture's early values relate to its final one. A trial's final value supersedes its fraction-1
report (the same measurement, not counted twice). Proposals, pending points' hallucinations,
``recommend()`` and ``predict()`` are at ``s = 1`` (botorch ``FixedFeatureAcquisitionFunction``).
``fidelity_scale`` (config ``optimizer.fidelity_scale``) adds a fitted scale to the mixture
term, ``c_1 * k_x * s^p s'^p * k_s`` (:class:`FidelityScale`): the gaps between mixtures grow with
training, so an early gap is a shrunken copy of the final one. It helps on learning curves that
rank mixtures early as they do at the end and hurts on curves that cross, so its default,
``"auto"``, turns it on only once six finished trials' earliest reports rank them as their final
values do (Spearman >= ``AUTO_SCALE_RHO``; :meth:`fidelity_scale_in_use`).
With the option off (the default), partial values are recorded in the state but not modelled,
and a stopped trial is only taken (never proposed again). With it on, :meth:`should_stop` is
model-based early stopping: a running trial whose UCB at full fidelity, given its partial curve,
is below the best finished trial's posterior mean (the sweep's ``early_stopping.method: gp``).
``bench/multifidelity.py`` measures all three (bench/RESULTS.md).

**Reproducible and resumable.** Every random choice is keyed by ``(random_state, what, index)``
and the GP fit depends only on the observations, so the same calls give the same proposals, and
``from_state_dict(json.loads(json.dumps(opt.state_dict())))`` continues exactly as the original.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gpytorch
import numpy as np
import scipy.stats
import torch
from botorch.acquisition import PosteriorMean, UpperConfidenceBound
from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.optim import optimize_acqf
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior

from mixopt.config import DEFAULT_FIDELITY_SCALE, Experiment
from mixopt.space import NEAR_IDENTICAL, Proposal, SearchSpace, polytope_vertex, share_capped

logger = logging.getLogger("mixopt.optimizer")

STATE_FORMAT = "mixopt.MixtureOptimizer"
STATE_VERSION = 1
ORIGINS = ("seed", "bo", "random", "warm", "exploit")
# The last proposals of a sweep with a known budget maximise the posterior mean (beta = 0).
EXPLOIT_LAST = 2
# Dirichlet seed trials before the GP (see the module docstring, "Seed phase").
N_SEEDS = 7
# Warm start: a reused trial is dropped when more than this share of its data came from tasks
# the new sweep no longer has (its value says little about the renormalised rest).
WARM_MAX_REMOVED = 0.25

# Multi-fidelity: partial results per trial the GP is fitted on (see _partial_rows).
MF_CURVE_POINTS = 3
# fidelity_scale "auto": the scale is on once this many finished trials have an early report and
# their Spearman rho (earliest common report vs final value) is at least AUTO_SCALE_RHO. On the
# multi-fidelity bench's curves: 0.99 on separable ones, at most 0.82 on the analytic ones, which
# cross (30 Dirichlet mixtures, 20 or 40 of 80 steps, report noise; bench/RESULTS.md).
AUTO_SCALE_MIN_TRIALS = 6
AUTO_SCALE_RHO = 0.9
# A GP needs at least two successful observations to say anything about where to go next.
MIN_OBSERVATIONS = 2
# Fitting attempts: (noise variance floor in standardised units, Cholesky jitter for float64).
# The first is botorch's default floor; the second trades a little fidelity for a stable fit.
FIT_ATTEMPTS: tuple[tuple[float, float | None], ...] = ((1e-4, None), (1e-3, 1e-5))
# Acquisition starts: global bounded-Dirichlet draws, plus perturbations of the best observations
# (the optimum is often near the incumbent). Modest sizes keep a suggestion well under the
# 1.5 s target at 100 observations x 17 tasks on 2 CPU cores (bench/optimizer.py measures it).
N_GLOBAL = 384
N_LOCAL_CENTRES = 4
N_LOCAL_PER_CENTRE = 32
# A weight within this of its lower bound is off the incumbent's support (see _start_points).
SUPPORT_EPS = 1e-9
# Starts on the boundary of the polytope, where sparse and capped optima lie (most weights 0 or
# at their maximum; Dirichlet(1) draws almost never come near there at K = 17): sparse
# bounded-Dirichlet(SPARSE_ALPHA) draws, random vertices (greedy fills of the caps in a random
# task order), and points on the edges between the best observations and random vertices.
N_SPARSE = 128
SPARSE_ALPHA = 0.1
N_VERTEX = 64
N_EDGE_PER_CENTRE = 16
NUM_RESTARTS = 6
SLSQP_MAXITER = 100
SLSQP_BATCH_DIMS = 120
# How many bounded-Dirichlet redraws to try before accepting a near-duplicate (tiny spaces only).
MAX_REDRAWS = 200

_TAGS = {"user-seed": 1, "seed": 2, "random": 3, "fit": 4, "acq": 5, "recommend": 6}


def _fit_mll(mll: ExactMarginalLogLikelihood) -> None:
    """Fit GP hyperparameters by maximising the marginal log likelihood (MAP with the priors).

    A module-level function so that tests can make it fail and exercise the fallbacks.
    """
    fit_gpytorch_mll(mll)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run botorch/gpytorch code with a fixed torch seed, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's setting.

    The GP's matrices have at most a few hundred rows: threads only add synchronisation, and on a
    busy machine OpenMP's spin-waiting made a 30-trial run ~9x slower with 2 threads than with 1
    (measured on the 2-core dev box under load). One thread also makes the floating-point
    reductions, hence the proposals, independent of the caller's thread count, so a run resumed
    in another process proposes the same.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _jitter(value: float | None) -> Iterator[None]:
    if value is None:
        yield
    else:
        with gpytorch.settings.cholesky_jitter(float_value=value, double_value=value):
            yield


@dataclass(frozen=True)
class Recommendation:
    """The optimizer's answer to "which mixture should I use": see :meth:`MixtureOptimizer.recommend`.

    Attributes:
        proposal: task weights (+ hyperparameters), exactly on the bounded simplex.
        mean: predicted objective at ``proposal`` (GP posterior mean, objective units); for the
            ``"best_observed"`` fallback, the observed value.
        sd: posterior sd of the *latent* objective there (no observation noise); None for the
            fallback (a single observation has no model behind it).
        source: ``"posterior_mean"`` (the GP's maximiser) or ``"best_observed"`` (fewer than
            2 successful observations, or the GP could not be fitted: ``best()`` instead).
    """

    proposal: dict[str, Any]
    mean: float
    sd: float | None
    source: str


@dataclass
class _Fitted:
    model: SingleTaskGP
    jitter: float | None
    # True for the multi-fidelity GP: its inputs have one more column, the fraction of the budget.
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


class MixtureOptimizer:
    """Propose task mixtures (and hyperparameters) to maximise a trial's objective. Ask/tell.

    Args:
        tasks: task names; every proposal has a weight for each.
        n_seeds: proposals of the seed phase (user seed mixtures count towards it; all user seed
            mixtures are proposed even if there are more than ``n_seeds``). With hyperparameters
            searched jointly, more seeds than the default 7 spread the first trials over them too.
        seed_mixtures: mixtures to try first, in order (task -> weight; missing tasks get 0; may
            also give hyperparameter values). Weights must sum to 1 within 1e-6 and respect bounds.
        dirichlet_alpha: concentration of the seed draws: one float for every task, or
            task -> float (tasks not named get 1.0). alpha=1 is uniform on the simplex; < 1 favours
            sparse mixtures, > 1 balanced ones.
        beta: UCB exploration weight in ``a(x) = mu(x) + beta * sigma(x)`` (botorch's UCB is
            given ``beta ** 2``, see the module docstring).
        random_state: seed of every random choice; same seed and calls -> same proposals.
        hyperparameters: name -> ``mixopt.config`` FloatParam / LogFloatParam / IntParam /
            CategoricalParam, or the equivalent plain dicts (``{"type": "log_float", "low": 1e-5,
            "high": 1e-3}``).
        bounds: task -> ``mixopt.config.WeightBounds`` or ``(min, max)``; others get [0, 1].
        multi_fidelity: model partial results (:meth:`tell_partial`, early-stopped trials) with a
            GP over (features, fraction of the step budget); see the module docstring.
        fidelity_scale: with ``multi_fidelity``, the mixture term of the GP's kernel gets the
            fitted scale ``s^p s'^p`` (:class:`FidelityScale`): for learning curves that rank
            mixtures early as they do at the end; on curves that cross it lost. ``"auto"``: on
            once the finished trials' earliest reports rank them as their final values do
            (:meth:`fidelity_scale_in_use`). None (the default): ``DEFAULT_FIDELITY_SCALE``
            (``"auto"``) with ``multi_fidelity``, else False.
        budget: the sweep's total number of trials, when known (None: open-ended). Reused
            (warm-start) observations do not count; every asked proposal that is not cancelled does.
        exploit_last: with a ``budget``, the last this many proposals are *exploitation* steps
            (origin ``"exploit"``): the maximiser of the posterior mean (UCB with beta = 0) away
            from every pending and told point, so the sweep's own trials end on the mixture the GP
            believes best; see the module docstring. 0 turns it off.

    Raises:
        ValueError: on any invalid argument, saying which and what to do.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        n_seeds: int = N_SEEDS,
        seed_mixtures: Sequence[Mapping[str, Any]] | None = None,
        dirichlet_alpha: float | Mapping[str, float] = 1.0,
        beta: float = 2.0,
        random_state: int = 0,
        hyperparameters: Mapping[str, Any] | None = None,
        bounds: Mapping[str, Any] | None = None,
        noise_sd: float | None = None,
        multi_fidelity: bool = False,
        fidelity_scale: bool | str | None = None,
        budget: int | None = None,
        exploit_last: int = EXPLOIT_LAST,
    ) -> None:
        self._space = SearchSpace(tasks, bounds=bounds, hyperparameters=hyperparameters)
        space = self._space
        if space.is_single_point:
            raise ValueError(
                "the bounds pin every task weight and there are no hyperparameters: there is only one "
                f"mixture ({dict(zip(space.tasks, space.lower.tolist()))}), nothing to optimise"
            )
        if isinstance(n_seeds, bool) or not isinstance(n_seeds, (int, np.integer)) or n_seeds < 0:
            raise ValueError(f"n_seeds must be an integer >= 0, got {n_seeds!r}")
        self.n_seeds = int(n_seeds)
        if (
            isinstance(beta, bool)
            or not isinstance(beta, (int, float))
            or not math.isfinite(beta)
            or beta < 0
        ):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.beta = float(beta)
        if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer, got {random_state!r}")
        self.random_state = int(random_state)
        if noise_sd is not None and (
            isinstance(noise_sd, bool)
            or not isinstance(noise_sd, (int, float))
            or not math.isfinite(noise_sd)
            or noise_sd <= 0
        ):
            raise ValueError(f"noise_sd must be a positive finite number (objective units), got {noise_sd!r}")
        self.prior_noise_sd = None if noise_sd is None else float(noise_sd)
        if not isinstance(multi_fidelity, bool):
            raise ValueError(f"multi_fidelity must be true or false, got {multi_fidelity!r}")
        self.multi_fidelity = multi_fidelity
        if fidelity_scale is None:  # one default for the config and Python (mixopt.config)
            fidelity_scale = DEFAULT_FIDELITY_SCALE if multi_fidelity else False
        if not (isinstance(fidelity_scale, bool) or fidelity_scale == "auto"):
            raise ValueError(f"fidelity_scale must be true, false or 'auto', got {fidelity_scale!r}")
        if fidelity_scale is not False and not multi_fidelity:
            raise ValueError(
                f"fidelity_scale={fidelity_scale!r} needs multi_fidelity=True (config optimizer.multi_fidelity): "
                "it scales the multi-fidelity GP's mixture term"
            )
        self.fidelity_scale = fidelity_scale
        self._scale_logged = False  # the last fit's choice, for the "auto" log line
        self.budget = budget
        if (
            isinstance(exploit_last, bool)
            or not isinstance(exploit_last, (int, np.integer))
            or exploit_last < 0
        ):
            raise ValueError(f"exploit_last must be an integer >= 0, got {exploit_last!r}")
        self.exploit_last = int(exploit_last)
        self.dirichlet_alpha: float | dict[str, float] = self._check_alpha(dirichlet_alpha)
        self._alpha = np.array(
            [
                self.dirichlet_alpha.get(t, 1.0)
                if isinstance(self.dirichlet_alpha, dict)
                else self.dirichlet_alpha
                for t in space.tasks
            ]
        )
        self.seed_mixtures: list[dict[str, Any]] = [dict(m) for m in (seed_mixtures or [])]
        self._user_seeds = self._build_user_seeds(self.seed_mixtures)

        # Every proposal ever asked, with its origin; pending and history refer to it by index,
        # so a repeat tell or a cancelled proposal still resolves to the exact dict we produced.
        self._asked: list[tuple[Proposal, str]] = []
        self._pending: list[int] = []
        self._history: list[tuple[int, float | None]] = []
        # Partial results (asked index, fraction of the step budget in (0, 1], value), in tell
        # order, and the trials stopped early (no longer pending, no full-fidelity value).
        self._partial: list[tuple[int, float, float]] = []
        self._stopped: list[int] = []
        self._fit_cache: tuple[int, _Fitted | None] | None = None
        self._features: list[np.ndarray] = []  # encode(asked[i]), filled lazily
        # Where reused observations came from (warm_start), recorded in the state.
        self.warm_source: dict[str, Any] | None = None

    @property
    def budget(self) -> int | None:
        """The sweep's total number of trials (None: unknown); settable, e.g. when a resumed
        sweep is given more trials."""
        return self._budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(
                f"budget must be an integer >= 1 (the sweep's number of trials) or None, got {value!r}"
            )
        self._budget = None if value is None else int(value)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_experiment(cls, exp: Experiment) -> MixtureOptimizer:
        """The optimizer an experiment config describes (``exp.search`` and ``exp.optimizer``)."""
        return cls(
            exp.task_names,
            n_seeds=exp.optimizer.n_seeds,
            seed_mixtures=exp.search.seed_mixtures,
            dirichlet_alpha=exp.optimizer.dirichlet_alpha,
            beta=exp.optimizer.beta,
            random_state=exp.optimizer.random_state,
            hyperparameters=exp.search.hyperparameters,
            bounds=exp.search.bounds,
            noise_sd=exp.optimizer.noise_sd,
            multi_fidelity=exp.multi_fidelity,
            fidelity_scale=exp.fidelity_scale,
            budget=exp.optimizer.max_trials,
            exploit_last=exp.optimizer.exploit_last,
        )

    def _check_alpha(self, alpha: float | Mapping[str, float]) -> float | dict[str, float]:
        def ok(a: Any) -> bool:
            return not isinstance(a, bool) and isinstance(a, (int, float)) and math.isfinite(a) and a > 0

        if isinstance(alpha, Mapping):
            unknown = sorted(set(alpha) - set(self._space.tasks))
            if unknown:
                raise ValueError(
                    f"dirichlet_alpha names unknown task(s) {unknown}; tasks are {list(self._space.tasks)}"
                )
            bad = {t: a for t, a in alpha.items() if not ok(a)}
            if bad:
                raise ValueError(f"dirichlet_alpha values must be positive finite numbers, got {bad}")
            return {t: float(a) for t, a in alpha.items()}
        if not ok(alpha):
            raise ValueError(
                f"dirichlet_alpha must be a positive finite number (or task -> number), got {alpha!r}"
            )
        return float(alpha)

    def _build_user_seeds(self, mixtures: list[dict[str, Any]]) -> list[Proposal]:
        space = self._space
        out: list[Proposal] = []
        for i, mix in enumerate(mixtures):
            where = f"seed_mixtures[{i}]"
            if not isinstance(mix, Mapping):
                raise ValueError(f"{where}: a seed mixture is a dict task -> weight, got {mix!r}")
            w = space.check_mixture(mix, where, partial=True)
            rng = np.random.default_rng(self._seed("user-seed", i))
            hyper = space.default_or_sample(rng)
            for n in space.hyperparameters:
                if n in mix:
                    hyper[n] = space.check_hyperparameter(n, mix[n], where)
            p = space.proposal(w, hyper)
            for j, q in enumerate(out):
                if space.distance(p, q) < NEAR_IDENTICAL:
                    raise ValueError(
                        f"seed_mixtures[{j}] and seed_mixtures[{i}] are the same trial "
                        f"({p}); remove one or give them different hyperparameters"
                    )
            out.append(p)
        return out

    def _seed(self, tag: str, index: int) -> int:
        """A 63-bit seed for one random choice, a pure function of (random_state, tag, index)."""
        entropy = [self.random_state % (2**64), _TAGS[tag], index]
        return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))

    # ------------------------------------------------------------------ public state

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._space.tasks

    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Proposals asked and not yet told or cancelled, in ask order (copies)."""
        return [dict(self._asked[i][0]) for i in self._pending]

    @property
    def history(self) -> list[tuple[dict[str, Any], float | None]]:
        """Told ``(proposal, value)`` pairs in tell order; value None marks a failed trial."""
        return [(dict(self._asked[i][0]), v) for i, v in self._history]

    @property
    def partial(self) -> list[tuple[dict[str, Any], float, float]]:
        """Partial results ``(proposal, fraction, value)`` in tell order (:meth:`tell_partial`, and
        the last value of each trial stopped early)."""
        return [(dict(self._asked[i][0]), f, v) for i, f, v in self._partial]

    @property
    def stopped(self) -> list[dict[str, Any]]:
        """Proposals whose trial was stopped early (``tell(p, value, fraction < 1)``), in tell order."""
        return [dict(self._asked[i][0]) for i in self._stopped]

    def origin(self, proposal: Mapping[str, Any]) -> str:
        """``"seed"`` (user seed or Dirichlet seed draw), ``"bo"`` (GP-UCB), ``"exploit"`` (one of
        the budget's last proposals: the posterior-mean maximiser), ``"random"`` (fallback draw) or
        ``"warm"`` (an observation reused from an earlier sweep, see :meth:`warm_start`)."""
        i = self._find(proposal, pending_only=False)
        if i is None:
            raise ValueError(self._unknown_message("origin", proposal))
        return self._asked[i][1]

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The best successful ``(proposal, value)`` told so far (first of ties), or None if none."""
        best: tuple[int, float] | None = None
        for i, v in self._history:
            if v is not None and (best is None or v > best[1]):
                best = (i, v)
        if best is None:
            return None
        return dict(self._asked[best[0]][0]), best[1]

    def warm_start(
        self,
        source: Mapping[str, Any] | Sequence[tuple[Mapping[str, Any], float | None]],
        *,
        max_removed: float = WARM_MAX_REMOVED,
        name: str = "",
    ) -> tuple[int, int]:
        """Reuse the observations of an earlier sweep before the first ask (Olmix's mixture reuse,
        arXiv:2602.12237).

        ``source``: a :meth:`state_dict` (its told trials are reused) or ``(proposal, value)``
        pairs. Each successful observation is carried onto this optimizer's tasks by
        :meth:`SearchSpace.carry` (removed tasks' weight renormalised away, the point dropped if
        that weight exceeds ``max_removed``; new tasks at weight 0, so they start unobserved)
        and recorded as told, with origin ``"warm"``. Reused points count towards the seed phase:
        with at least ``n_seeds`` of them the first ask is already a GP proposal. User seed
        mixtures are still proposed first. ``name`` (e.g. the source sweep) is kept in the state.
        Returns ``(reused, dropped)``; failed source trials are not counted.

        Raises:
            ValueError: after the first ask, or for a source that is neither.
        """
        if self._asked:
            raise ValueError("warm_start() must be called before the first ask()")
        if (
            isinstance(max_removed, bool)
            or not isinstance(max_removed, (int, float))
            or not 0 <= max_removed < 1
        ):
            raise ValueError(f"warm_start(): max_removed must be in [0, 1), got {max_removed!r}")
        if isinstance(source, Mapping):
            if source.get("format") != STATE_FORMAT:
                raise ValueError(
                    f"warm_start(): not a MixtureOptimizer state (expected format {STATE_FORMAT!r})"
                )
            try:
                asked = [a["proposal"] for a in source["asked"]]
                pairs = [(asked[int(i)], v) for i, v in source["history"]]
            except (KeyError, TypeError, IndexError) as err:
                raise ValueError(
                    f"warm_start(): the source state is malformed: {type(err).__name__}: {err}"
                ) from None
        else:
            pairs = list(source)
        reused = dropped = 0
        for proposal, value in pairs:
            if value is None:
                continue
            value = self._check_value(value)
            carried = self._space.carry(proposal, float(max_removed))
            if carried is None:
                dropped += 1
                continue
            self._asked.append((carried, "warm"))
            self._history.append((len(self._asked) - 1, value))
            reused += 1
        self.warm_source = {"name": str(name), "reused": reused, "dropped": dropped}
        return reused, dropped

    def recommend(self) -> Recommendation | None:
        """The mixture to use: the maximiser of the GP posterior mean, not the luckiest trial.

        ``best()`` is the best *observed* value, and with seed-to-seed noise that is biased upward
        (the winner's curse: the maximum of noisy scores favours lucky draws). The posterior mean

            mu(x) = E[f(x) | observations]

        pools every observation, so its maximiser over the bounded simplex (and the
        hyperparameters) is the noise-aware answer. It is found as a UCB proposal is (sampled
        starts including every observed point, SLSQP on the polytope, exact projection, ints
        rounded, categoricals held per start), with botorch's ``PosteriorMean`` as the objective;
        the GP is fitted on the real observations only (no hallucinated pending points) and
        recommending may return an already-observed mixture. Deterministic: the same history
        gives the same recommendation, also after a ``state_dict`` round trip.

        Returns:
            A :class:`Recommendation` (``mean`` and ``sd`` in objective units), or None when no
            trial has succeeded. With fewer than 2 successful observations, or when the GP
            cannot be fitted, it falls back to :meth:`best` (``source="best_observed"``) and
            logs why.
        """
        best = self.best()
        if best is None:
            return None
        n_ok = self._n_rows()
        fallback = Recommendation(best[0], best[1], None, "best_observed")
        if n_ok < MIN_OBSERVATIONS:
            logger.info(
                "recommend(): %d successful observation(s), the GP needs %d; returning the best observed",
                n_ok,
                MIN_OBSERVATIONS,
            )
            return fallback
        with _one_thread():
            fitted = self._fitted()
            if fitted is None:
                logger.warning("recommend(): the GP could not be fitted; returning the best observed")
                return fallback
            try:
                proposal = self._maximise_mean(fitted)
                mean, sd = self._predict([proposal])
            except Exception as err:  # numerical trouble must not cost the caller its answer
                logger.warning(
                    "recommend(): maximising the posterior mean failed (%s: %s); returning the best observed",
                    type(err).__name__,
                    err,
                )
                return fallback
        return Recommendation(dict(proposal), float(mean[0]), float(sd[0]), "posterior_mean")

    def noise_sd(self) -> float | None:
        """The fitted observation-noise sd, in objective units (None before the GP can be fitted).

        The likelihood's noise variance is in standardised units (``Standardize``), so
        ``noise_sd = sqrt(noise_var) * std(y)``. With one trainer seed per trial it estimates the
        seed-to-seed spread of a mixture's objective (plus whatever the GP cannot fit).
        """
        n_ok = self._n_rows()
        if n_ok < MIN_OBSERVATIONS:
            return None
        with _one_thread():
            fitted = self._fitted()
        if fitted is None:
            return None
        model = fitted.model
        noise_var = float(model.likelihood.noise.detach().reshape(-1)[0])
        scale = float(model.outcome_transform.stdvs.detach().reshape(-1)[0])
        return math.sqrt(max(noise_var, 0.0)) * scale

    # ------------------------------------------------------------------ ask / tell

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """``n`` new proposals, distinct from each other and from every pending and told one.

        Each becomes pending until told or cancelled. Returns plain dicts: every task's weight
        (float) then every hyperparameter's value.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"ask(n): n must be an integer >= 1, got {n!r}")
        out = []
        with _one_thread():
            for _ in range(int(n)):
                index = len(self._asked)
                retry_seed = self._cancelled_user_seed()
                if retry_seed is not None:
                    proposal, origin = retry_seed, "seed"
                elif index < max(self.n_seeds, len(self._user_seeds)):
                    proposal, origin = self._seed_proposal(index), "seed"
                else:
                    proposal, origin = self._bo_proposal(index)
                self._asked.append((proposal, origin))
                self._pending.append(index)
                out.append(dict(proposal))
        return out

    def _cancelled_user_seed(self) -> Proposal | None:
        """A user seed mixture that was asked, then cancelled (never told): it is offered again first."""
        live = (
            [self._asked[i][0] for i in self._pending]
            + [self._asked[i][0] for i, _ in self._history]
            + [self._asked[i][0] for i in self._stopped]
        )
        for seed in self._user_seeds[: len(self._asked)]:
            if seed not in live:
                return seed
        return None

    def tell(self, proposal: Mapping[str, Any], value: float | None, fraction: float = 1.0) -> None:
        """Record a trial's result: a finite float to maximise, or None for a failed trial.

        ``proposal`` must equal (``==``) a dict returned by :meth:`ask`; a JSON round trip keeps
        it equal. Telling an already-told proposal again records a repeat observation.

        ``fraction < 1``: the trial was stopped early (e.g. by ASHA) after that fraction of its
        step budget, and ``value`` is the last objective it reported (None: it reported none). It
        is no longer pending and is never proposed again; its value is a *partial* result
        (:attr:`partial`), modelled at its fraction with ``multi_fidelity``, never a
        full-fidelity observation (``best()`` ignores it).
        """
        value = self._check_value(value)
        fraction = self._check_fraction(fraction, "tell")
        if fraction < 1.0:
            i = self._find(proposal, pending_only=True)
            if i is None:
                raise ValueError(
                    f"tell(..., fraction={fraction}): {dict(proposal)} is not pending; only a running "
                    "trial can be stopped early"
                )
            self._pending.remove(i)
            self._stopped.append(i)
            # Usually the trial's last report, already told by tell_partial: kept once.
            if value is not None and (i, fraction, value) not in self._partial:
                self._partial.append((i, fraction, value))
            return
        i = self._find(proposal, pending_only=True)
        if i is not None:
            self._pending.remove(i)
        else:
            i = self._find(proposal, pending_only=False)
            if i is None:
                raise ValueError(self._unknown_message("tell", proposal))
        self._history.append((i, value))

    def tell_partial(self, proposal: Mapping[str, Any], value: float, fraction: float) -> None:
        """Record an intermediate result of a running trial: its objective ``value`` after
        ``fraction`` (in (0, 1]) of its step budget. The trial stays pending.

        With ``multi_fidelity`` the GP uses the trial's latest partial value until its final value
        arrives (which supersedes it); without, partial values are only kept in the state.
        """
        value = self._check_value(value)
        if value is None:
            raise ValueError("tell_partial(): value must be a finite float (a partial result has one)")
        fraction = self._check_fraction(fraction, "tell_partial")
        i = self._find(proposal, pending_only=True)
        if i is None:
            raise ValueError(
                f"tell_partial(): {dict(proposal)} is not pending (never asked, already told or stopped); "
                "partial results are for running trials"
            )
        self._partial.append((i, fraction, value))

    def should_stop(self, proposal: Mapping[str, Any]) -> bool:
        """Multi-fidelity early stopping: whether a running trial, given its partial results, is
        predicted not to beat the incumbent at full fidelity.

        With the GP over (mixture, fraction) fitted on every result so far (this trial's partial
        values included), the trial stops when even its upper confidence bound at full fidelity,
        ``mu(x, 1) + beta * sigma(x, 1)``, is below the best posterior mean at full fidelity
        among the finished trials: UCB would no longer choose it. This is the model-based
        counterpart of ASHA (learning-curve prediction, as in Domhan et al., IJCAI 2015, and the
        freeze-thaw view of multi-fidelity BO): curves that cross (small tasks learnt first) are
        judged by what they predict at the end, not by their rank at a rung. False until the
        trial has a partial result and some trial has finished, or when the GP cannot be fitted.
        A trial that stops is then told with ``tell(proposal, value, fraction=...)``.

        Raises:
            ValueError: without ``multi_fidelity``, or when ``proposal`` is not pending.
        """
        if not self.multi_fidelity:
            raise ValueError(
                "should_stop() needs multi_fidelity=True (config optimizer.multi_fidelity): the "
                "prediction comes from the GP over (mixture, fraction of the step budget)"
            )
        i = self._find(proposal, pending_only=True)
        if i is None:
            raise ValueError(
                f"should_stop(): {dict(proposal)} is not pending (never asked, already told or stopped)"
            )
        finished = [self._asked[j][0] for j, v in self._history if v is not None]
        if not finished or all(j != i for j, _, _ in self._partial) or self._n_rows() < MIN_OBSERVATIONS:
            return False
        with _one_thread():
            if self._fitted() is None:
                return False
            mean, sd = self._predict([self._asked[i][0]] + finished)
        return bool(mean[0] + self.beta * sd[0] < mean[1:].max())

    @staticmethod
    def _check_fraction(fraction: Any, method: str) -> float:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float, np.integer, np.floating))
            or not 0.0 < float(fraction) <= 1.0
        ):
            raise ValueError(
                f"{method}(): fraction is the share of the step budget done, in (0, 1]; got {fraction!r}"
            )
        return float(fraction)

    def cancel(self, proposal: Mapping[str, Any]) -> None:
        """Drop a pending proposal without a value (an interrupted trial); it may be proposed again."""
        i = self._find(proposal, pending_only=True)
        if i is None:
            raise ValueError(
                f"cancel(): {dict(proposal)} is not pending (never asked, already told, or already "
                f"cancelled); pending proposals are listed by .pending"
            )
        self._pending.remove(i)

    def _check_value(self, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(
                f"tell(): value must be a float to maximise, or None for a failed trial; got {value!r}"
            )
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"tell(): value {value} is not finite; a trial that produced no usable objective "
                "is a failed trial: tell(proposal, None)"
            )
        return value

    def _find(self, proposal: Mapping[str, Any], *, pending_only: bool) -> int | None:
        if not isinstance(proposal, Mapping):
            raise ValueError(
                f"a proposal is a dict returned by ask(), got {type(proposal).__name__}: {proposal!r}"
            )
        target = dict(proposal)
        if pending_only:
            return next((i for i in self._pending if self._asked[i][0] == target), None)
        return next((i for i in reversed(range(len(self._asked))) if self._asked[i][0] == target), None)

    def _unknown_message(self, method: str, proposal: Mapping[str, Any]) -> str:
        return (
            f"{method}(): {dict(proposal)} was never asked by this optimizer. Pass back a dict returned by "
            f"ask() unchanged (same keys {self._space.keys}, same values; a JSON round trip is fine)."
        )

    # ------------------------------------------------------------------ proposals

    def _taken_features(self) -> np.ndarray:
        """Features (m, dim) of the points a new proposal must not duplicate: pending and told ones."""
        idx = list(dict.fromkeys(list(self._pending) + [i for i, _ in self._history] + self._stopped))
        for i in range(len(self._features), len(self._asked)):  # encode each asked proposal once
            self._features.append(self._space.encode(self._asked[i][0]))
        return np.array([self._features[i] for i in idx]) if idx else np.zeros((0, self._space.dim))

    def _draw(self, tag: str, index: int) -> Proposal:
        """A bounded-Dirichlet mixture with prior hyperparameters, away from every taken point."""
        space = self._space
        rng = np.random.default_rng(self._seed(tag, index))
        taken_x = self._taken_features()
        p: Proposal = {}
        for _ in range(MAX_REDRAWS):
            p = space.proposal(space.sample_mixture(rng, self._alpha), space.sample_hyperparameters(rng))
            if (
                not len(taken_x)
                or space.feature_distances(space.encode(p)[None], taken_x).min() >= NEAR_IDENTICAL
            ):
                return p
        logger.warning(
            "no draw distinct from the %d pending/told proposals after %d tries: the search space is "
            "nearly exhausted; proposing a near-duplicate",
            len(taken_x),
            MAX_REDRAWS,
        )
        return p

    def _seed_proposal(self, index: int) -> Proposal:
        if index < len(self._user_seeds):
            return self._user_seeds[index]
        return self._draw("seed", index)

    def _bo_proposal(self, index: int) -> tuple[Proposal, str]:
        n_ok = self._n_rows()
        if n_ok < MIN_OBSERVATIONS:
            logger.info(
                "proposal %d: %d successful observation(s), the GP needs %d; drawing from the Dirichlet prior",
                index,
                n_ok,
                MIN_OBSERVATIONS,
            )
            return self._draw("random", index), "random"
        fitted = self._fitted()
        if fitted is None:
            return self._draw("random", index), "random"
        exploit = self._exploit_now()
        try:
            proposal = self._maximise_ucb(fitted, index, 0.0 if exploit else self.beta)
        except Exception as err:  # numerical trouble in the posterior must not end a sweep
            logger.warning(
                "proposal %d: UCB maximisation failed (%s: %s); falling back to a Dirichlet draw",
                index,
                type(err).__name__,
                err,
            )
            return self._draw("random", index), "random"
        if proposal is None:
            logger.warning(
                "proposal %d: every UCB candidate duplicates a pending or told proposal; falling back to a "
                "Dirichlet draw",
                index,
            )
            return self._draw("random", index), "random"
        return proposal, ("exploit" if exploit else "bo")

    def _exploit_now(self) -> bool:
        """Whether the next GP proposal is an exploitation step: it is among the last
        ``exploit_last`` of the ``budget`` and no other exploitation step is pending (with
        concurrent workers a second one would only land next to the first: the posterior mean
        does not move at a pending point, so UCB explores instead)."""
        if self._budget is None or not self.exploit_last:
            return False
        live = set(self._pending) | {i for i, _ in self._history} | set(self._stopped)
        issued = sum(1 for i in live if self._asked[i][1] != "warm")
        if self._budget - issued > self.exploit_last:
            return False
        return not any(self._asked[i][1] == "exploit" for i in self._pending)

    # ------------------------------------------------------------------ the GP

    def early_rank_correlation(self) -> tuple[float, int, float] | None:
        """How well early reports rank the finished trials: Spearman's rho between each finished
        trial's value at the earliest fraction reported by at least ``AUTO_SCALE_MIN_TRIALS`` of
        them and its final value. Returns ``(rho, trials, fraction)``, or None with too few."""
        final = {i: v for i, v in self._history if v is not None}
        at: dict[float, dict[int, float]] = {}
        for i, f, v in self._partial:
            if i in final and f < 1.0:
                at.setdefault(f, {})[i] = v  # the latest report at f
        for f in sorted(at):
            early = at[f]
            if len(early) >= AUTO_SCALE_MIN_TRIALS:
                idx = sorted(early)
                a = np.array([early[i] for i in idx])
                b = np.array([final[i] for i in idx])
                if np.ptp(a) == 0 or np.ptp(b) == 0:
                    return None
                rho = float(scipy.stats.spearmanr(a, b)[0])
                return rho, len(idx), f
        return None

    def fidelity_scale_in_use(self) -> bool:
        """Whether the multi-fidelity GP's next fit has the :class:`FidelityScale` term.

        ``fidelity_scale`` True/False: that. ``"auto"``: when :meth:`early_rank_correlation` is at
        least ``AUTO_SCALE_RHO`` (the finished trials' earliest reports rank them as their final
        values do, so early gaps are shrunken copies of final ones); off while fewer than
        ``AUTO_SCALE_MIN_TRIALS`` finished trials have an early report, and on curves that cross.
        """
        if not self.multi_fidelity or self.fidelity_scale is False:
            return False
        if self.fidelity_scale is True:
            return True
        found = self.early_rank_correlation()
        return found is not None and found[0] >= AUTO_SCALE_RHO

    def describe_fidelity_scale(self) -> str:
        """One line on the fidelity scale's state and why (for the log and the sweep's progress)."""
        on = self.fidelity_scale_in_use()
        if self.fidelity_scale != "auto":
            return (
                f"fidelity scale {'on' if on else 'off'} (fidelity_scale: {str(self.fidelity_scale).lower()})"
            )
        found = self.early_rank_correlation()
        if found is None:
            why = f"fewer than {AUTO_SCALE_MIN_TRIALS} finished trials with an early report"
        else:
            rho, n, f = found
            why = (
                f"Spearman {rho:.2f} between {n} finished trials' reports at {f:.2g} of the steps and "
                f"their final values; on at >= {AUTO_SCALE_RHO:g}"
            )
        return f"fidelity scale {'on' if on else 'off'} (auto: {why})"

    def _partial_rows(self) -> list[tuple[int, float, float]]:
        """The partial results the multi-fidelity GP is fitted on, ``(index, fraction, value)``.

        Per trial, the latest value at each fraction (a repeated report replaces the earlier one);
        fraction-1 partial values are dropped once the trial's full-fidelity value is told (it
        supersedes them: the same measurement, not a second one); at most ``MF_CURVE_POINTS``
        fractions per trial, evenly thinned, the highest always kept (the GP's cost grows with
        the cube of its rows; a few points per curve say how low fidelities relate to the full).
        """
        full = {i for i, v in self._history if v is not None}
        by_trial: dict[int, dict[float, float]] = {}
        for i, f, v in self._partial:
            if f < 1.0 or i not in full:
                by_trial.setdefault(i, {})[f] = v
        rows: list[tuple[int, float, float]] = []
        for i, curve in by_trial.items():
            fs = sorted(curve)
            if len(fs) > MF_CURVE_POINTS:
                keep = np.linspace(len(fs) - 1, 0, MF_CURVE_POINTS).round().astype(int)
                fs = sorted({fs[j] for j in keep})
            rows += [(i, f, curve[f]) for f in fs]
        return rows

    def _n_rows(self) -> int:
        """How many observations the GP is fitted on (partial ones only with ``multi_fidelity``)."""
        n = sum(v is not None for _, v in self._history)
        return n + len(self._partial_rows()) if self.multi_fidelity else n

    def _training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (n, d) features (+ a fraction-of-budget column with ``multi_fidelity``), ``y`` (n, 1)."""
        rows = [(self._asked[i][0], 1.0, v) for i, v in self._history if v is not None]
        if self.multi_fidelity:
            rows += [(self._asked[i][0], f, v) for i, f, v in self._partial_rows()]
        feats = [self._space.encode(p) for p, _, _ in rows]
        if self.multi_fidelity:
            feats = [np.append(x, f) for x, (_, f, _) in zip(feats, rows)]
        x = torch.tensor(np.array(feats), dtype=torch.float64)
        y = torch.tensor([[v] for _, _, v in rows], dtype=torch.float64)
        return x, y

    def _fitted(self) -> _Fitted | None:
        """The GP fitted on the successful observations (cached until the next tell), or None."""
        # Partial results change the multi-fidelity GP's data; the single-fidelity key is unchanged.
        key = len(self._history) + (len(self._partial) if self.multi_fidelity else 0)
        if self._fit_cache is not None and self._fit_cache[0] == key:
            return self._fit_cache[1]
        x, y = self._training_data()
        scale = self.fidelity_scale_in_use()
        if scale != self._scale_logged and self.fidelity_scale == "auto":
            logger.info("%s", self.describe_fidelity_scale())
        self._scale_logged = scale
        errors: list[str] = []
        fitted: _Fitted | None = None
        for attempt, (noise_floor, jitter) in enumerate(FIT_ATTEMPTS):
            try:
                with _seeded(self._seed("fit", key * len(FIT_ATTEMPTS) + attempt)), _jitter(jitter):
                    if self.multi_fidelity:
                        model = _make_mf_gp(
                            x, y, noise_floor, self._space.n_tasks, self.prior_noise_sd, scale
                        )
                    else:
                        model = _make_gp(x, y, noise_floor, self._space.n_tasks, self.prior_noise_sd)
                    _fit_mll(ExactMarginalLogLikelihood(model.likelihood, model))
                    model.eval()
                    with torch.no_grad():
                        post = model.posterior(x)
                        if not (torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()):
                            raise FloatingPointError("the fitted GP predicts non-finite values at the data")
                fitted = _Fitted(model, jitter, self.multi_fidelity)
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
        self._fit_cache = (key, fitted)
        return fitted

    def predict(self, proposals: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """GP posterior mean and sd of the objective at ``proposals``, in the objective's units.

        Returns two arrays of shape ``(len(proposals),)``. The sd is that of the latent objective
        (no observation noise). Pending proposals are not taken into account.

        Raises:
            RuntimeError: before the GP can be fitted (fewer than 2 successful observations) or
                when every fitting attempt failed.
            ValueError: for a malformed proposal.
        """
        if isinstance(proposals, Mapping):
            raise ValueError("predict() takes a list of proposals; wrap a single one as [proposal]")
        items = [self._space.check_proposal(p, f"predict(): proposals[{i}]") for i, p in enumerate(proposals)]
        n_ok = self._n_rows()
        if n_ok < MIN_OBSERVATIONS:
            raise RuntimeError(
                f"predict(): the GP needs at least {MIN_OBSERVATIONS} successful observations, "
                f"{n_ok} told so far; tell() more results first"
            )
        with _one_thread():
            return self._predict(items)

    def _predict(self, items: list[Proposal]) -> tuple[np.ndarray, np.ndarray]:
        fitted = self._fitted()
        if fitted is None:
            raise RuntimeError(
                "predict(): the GP could not be fitted to the observations (see the logged warning)"
            )
        if not items:
            return np.zeros(0), np.zeros(0)
        x = torch.tensor(np.array([self._space.encode(p) for p in items]), dtype=torch.float64)
        with torch.no_grad(), _jitter(fitted.jitter):
            post = fitted.model.posterior(fitted.full(x))
            mean = post.mean.squeeze(-1).numpy().copy()
            sd = post.variance.clamp_min(0).sqrt().squeeze(-1).numpy().copy()
        return mean, sd

    # ------------------------------------------------------------------ acquisition

    def _start_points(self, rng: np.random.Generator) -> np.ndarray:
        """Candidate features: global bounded-Dirichlet draws (half with the user's alpha, half
        uniform) and convex perturbations ``(1 - e) w_best + e d`` of the best observations
        (convex combinations of feasible mixtures stay feasible), half of the directions ``d``
        drawn on ``w_best``'s support plus one task, so a sparse incumbent has sparse neighbours."""
        space = self._space
        half = N_GLOBAL // 2
        glob = [
            space.random_features(rng, self._alpha, half),
            space.random_features(rng, np.ones(space.n_tasks), half),
        ]
        told = [(self._asked[i][0], v) for i, v in self._history if v is not None]
        told.sort(key=lambda pv: -pv[1])  # type: ignore[arg-type, operator]
        centres: list[np.ndarray] = []
        for p, _ in told:
            x = space.encode(p)
            if all(np.abs(x - c).max() > 0 for c in centres):
                centres.append(x)
            if len(centres) == N_LOCAL_CENTRES:
                break
        local = []
        k, s = space.n_tasks, space.weight_scale
        for c in centres:
            d = space.random_features(rng, np.ones(k), N_LOCAL_PER_CENTRE)
            # Every other direction stays on the centre's support plus one random task: a
            # Dirichlet(1) direction moves some weight onto every task, and the GP cannot tell 0.5 %
            # of a task from none, so proposals near a sparse incumbent carried dust on every task
            # (bench/RESULTS.md, "support-preserving local starts").
            support = c[:k] / s > space.lower + SUPPORT_EPS
            for r in range(0, N_LOCAL_PER_CENTRE, 2):
                on = support.copy()
                on[rng.integers(k)] = True
                share = np.zeros(k)
                share[on] = rng.dirichlet(np.ones(int(on.sum())))
                d[r, :k] = s * share_capped(share, space.lower, space.upper)
            e = np.exp(rng.uniform(math.log(0.01), math.log(0.5), size=(N_LOCAL_PER_CENTRE, 1)))
            x = np.repeat(c[None], N_LOCAL_PER_CENTRE, axis=0)
            x[:, :k] = (1 - e) * c[None, :k] + e * d[:, :k]
            m = k + len(space.numeric)
            x[:, k:m] = np.clip(x[:, k:m] + rng.normal(0.0, 0.1, size=(N_LOCAL_PER_CENTRE, m - k)), 0.0, 1.0)
            # A fifth of the local starts try another categorical value.
            swap = rng.random(N_LOCAL_PER_CENTRE) < 0.2
            x[swap, m:] = d[swap, m:]
            local.append(x)
        return np.concatenate(glob + local + self._boundary_starts(rng, centres), axis=0)

    def _boundary_starts(self, rng: np.random.Generator, centres: list[np.ndarray]) -> list[np.ndarray]:
        """Starts on faces and vertices of the polytope (see N_SPARSE): sparse draws, vertices,
        and ``(1 - e) w_c + e v`` between each incumbent ``w_c`` and a random vertex ``v``.
        Hyperparameters are drawn from their priors (incumbents keep theirs)."""
        space = self._space
        k, s = space.n_tasks, space.weight_scale
        sparse = space.random_features(rng, np.full(k, SPARSE_ALPHA), N_SPARSE)
        vert = space.random_features(rng, np.ones(k), N_VERTEX)
        for row in vert:
            row[:k] = s * polytope_vertex(rng.permutation(k), space.lower, space.upper)
        out = [sparse, vert]
        for c in centres:
            x = np.repeat(c[None], N_EDGE_PER_CENTRE, axis=0)
            e = rng.uniform(0.05, 1.0, size=(N_EDGE_PER_CENTRE, 1))
            v = np.array(
                [
                    s * polytope_vertex(rng.permutation(k), space.lower, space.upper)
                    for _ in range(N_EDGE_PER_CENTRE)
                ]
            ).reshape(N_EDGE_PER_CENTRE, k)
            x[:, :k] = (1 - e) * c[None, :k] + e * v
            out.append(x)
        return out

    def _maximise_ucb(self, fitted: _Fitted, index: int, beta: float) -> Proposal | None:
        space = self._space
        rng = np.random.default_rng(self._seed("acq", index))
        taken_x = self._taken_features()
        failed = [self._asked[i][0] for i, v in self._history if v is None]
        hallucinated = [self._asked[i][0] for i in self._pending] + failed
        with _seeded(self._seed("acq", index)), _jitter(fitted.jitter), warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)
            model = fitted.model
            if hallucinated:
                xh = torch.tensor(np.array([space.encode(p) for p in hallucinated]), dtype=torch.float64)
                xh = fitted.full(xh)  # pending trials will end at full fidelity
                with torch.no_grad():
                    mean_h = model.posterior(xh).mean
                model = model.condition_on_observations(xh, mean_h)
            acq = fitted.at_full(UpperConfidenceBound(model, beta=beta**2), space.dim)

            starts = self._start_points(rng)
            with torch.no_grad():
                values = acq(torch.tensor(starts, dtype=torch.float64).unsqueeze(1)).numpy()
            free = np.ones(len(starts), dtype=bool)
            if len(taken_x):
                free = space.feature_distances(starts, taken_x).min(axis=1) >= NEAR_IDENTICAL
            order = [i for i in np.argsort(-values, kind="stable") if free[i]][:NUM_RESTARTS]
            candidates = [starts[i] for i in order]
            if order:
                try:
                    candidates += list(_optimise(acq, space, starts[order]))
                except Exception as err:  # SLSQP/linear-algebra failures: keep the sampled starts
                    logger.warning(
                        "proposal %d: acquisition optimisation failed (%s: %s); using the best sampled start",
                        index,
                        type(err).__name__,
                        err,
                    )
            if not candidates:
                return None
            # Snap every candidate to an exact proposal (projection, int rounding, one-hot) and
            # score it where it will really be evaluated.
            proposals = [space.decode(x) for x in candidates]
            snapped = np.array([space.encode(p) for p in proposals])
            with torch.no_grad():
                scores = acq(torch.tensor(snapped, dtype=torch.float64).unsqueeze(1)).numpy()
        ok = np.ones(len(snapped), dtype=bool)
        if len(taken_x):
            ok = space.feature_distances(snapped, taken_x).min(axis=1) >= NEAR_IDENTICAL
        if not ok.any():
            return None
        best = max((i for i in range(len(snapped)) if ok[i]), key=lambda i: (scores[i], -i))
        return proposals[best]

    def _maximise_mean(self, fitted: _Fitted) -> Proposal:
        """Arg-max of the posterior mean over the search space (see :meth:`recommend`)."""
        space = self._space
        index = len(self._history)
        rng = np.random.default_rng(self._seed("recommend", index))
        observed = [self._asked[i][0] for i, v in self._history if v is not None]
        with _seeded(self._seed("recommend", index)), _jitter(fitted.jitter), warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)
            acq = fitted.at_full(PosteriorMean(fitted.model), space.dim)
            starts = np.concatenate([self._start_points(rng), [space.encode(p) for p in observed]], axis=0)
            with torch.no_grad():
                values = acq(torch.tensor(starts, dtype=torch.float64).unsqueeze(1)).numpy()
            order = np.argsort(-values, kind="stable")[:NUM_RESTARTS]
            candidates = [starts[i] for i in order]
            try:
                candidates += list(_optimise(acq, space, starts[order]))
            except Exception as err:  # SLSQP/linear-algebra failures: keep the sampled starts
                logger.warning(
                    "recommend(): SLSQP failed (%s: %s); using the best sampled start",
                    type(err).__name__,
                    err,
                )
            proposals = [space.decode(x) for x in candidates]
            snapped = np.array([space.encode(p) for p in proposals])
            with torch.no_grad():
                scores = acq(torch.tensor(snapped, dtype=torch.float64).unsqueeze(1)).numpy()
        best = max(range(len(snapped)), key=lambda i: (scores[i], -i))
        return proposals[best]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: the configuration, every asked proposal with its origin,
        the pending ones and the told values. Plain JSON types only (``json.dumps`` works)."""
        space = self._space
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": {
                "tasks": list(space.tasks),
                "n_seeds": self.n_seeds,
                # The validated, complete seed proposals: plain floats, and their hyperparameters
                # fixed, so a restored optimizer rebuilds exactly the same seeds.
                "seed_mixtures": [dict(p) for p in self._user_seeds],
                "dirichlet_alpha": (
                    dict(self.dirichlet_alpha)
                    if isinstance(self.dirichlet_alpha, dict)
                    else self.dirichlet_alpha
                ),
                "beta": self.beta,
                "random_state": self.random_state,
                "hyperparameters": space.hyperparameters_json(),
                "bounds": space.bounds_json(),
                "noise_sd": self.prior_noise_sd,
                "multi_fidelity": self.multi_fidelity,
                "fidelity_scale": self.fidelity_scale,
                "budget": self._budget,
                "exploit_last": self.exploit_last,
            },
            "warm_source": self.warm_source,
            "asked": [{"proposal": dict(p), "origin": o} for p, o in self._asked],
            "pending": list(self._pending),
            "history": [[i, v] for i, v in self._history],
            "partial": [[i, f, v] for i, f, v in self._partial],
            "stopped": list(self._stopped),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> MixtureOptimizer:
        """Rebuild an optimizer from :meth:`state_dict` (possibly after a JSON round trip); it
        proposes exactly what the original would have proposed next."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"not a MixtureOptimizer state (expected format {STATE_FORMAT!r}); pass what state_dict() returned"
            )
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"MixtureOptimizer state version {state.get('version')!r} is not supported "
                f"(this mixopt reads version {STATE_VERSION})"
            )
        try:
            c = state["config"]
            opt = cls(
                c["tasks"],
                n_seeds=c["n_seeds"],
                seed_mixtures=c["seed_mixtures"],
                dirichlet_alpha=c["dirichlet_alpha"],
                beta=c["beta"],
                random_state=c["random_state"],
                hyperparameters=c["hyperparameters"],
                bounds={t: tuple(b) for t, b in c["bounds"].items()},
                noise_sd=c.get("noise_sd"),  # absent from states written before it existed
                # States written before multi-fidelity existed have neither key.
                multi_fidelity=bool(c.get("multi_fidelity", False)),
                # Absent before session 11: the scale did not exist, so off.
                fidelity_scale=c.get("fidelity_scale", False),
                # States written before exploitation steps existed: no budget, the default count.
                budget=c.get("budget"),
                exploit_last=c.get("exploit_last", EXPLOIT_LAST),
            )
            asked = [(dict(a["proposal"]), str(a["origin"])) for a in state["asked"]]
            pending = [int(i) for i in state["pending"]]
            history = [(int(i), None if v is None else float(v)) for i, v in state["history"]]
            partial = [(int(i), float(f), float(v)) for i, f, v in state.get("partial", [])]
            stopped = [int(i) for i in state.get("stopped", [])]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"MixtureOptimizer state is incomplete or malformed: {type(err).__name__}: {err}"
            ) from None
        n = len(asked)
        if (
            any(o not in ORIGINS for _, o in asked)
            or any(
                not 0 <= i < n
                for i in pending + [i for i, _ in history] + [i for i, _, _ in partial] + stopped
            )
            or any(not (0.0 < f <= 1.0 and math.isfinite(v)) for _, f, v in partial)
        ):
            raise ValueError("MixtureOptimizer state is inconsistent: unknown origin or index out of range")
        for i, (p, _) in enumerate(asked):
            opt._space.check_proposal(p, f"state asked[{i}]")
        opt._asked, opt._pending, opt._history = asked, pending, history
        opt._partial, opt._stopped = partial, stopped
        opt.warm_source = state.get("warm_source")
        return opt


def _make_gp(
    x: torch.Tensor, y: torch.Tensor, noise_floor: float, n_weights: int, noise_sd: float | None = None
) -> SingleTaskGP:
    """SingleTaskGP in float64 with Standardize(1) outcomes and a simplex-aware Matern-5/2 kernel.

    ``k(x, x') = k_w(w, w') * k_h(h, h')``: ``k_w`` is Matern-5/2 on the K weight features with
    *one* lengthscale shared by all tasks, ``k_h`` Matern-5/2 with ARD over the hyperparameter
    features (absent without hyperparameters). Tasks are exchangeable a priori, and with a few
    dozen trials K separate lengthscales are not identifiable: MAP shrinks some of them, which
    inflates sigma along those axes and drags UCB onto the simplex's faces (bench/optimizer.py:
    at K=17 the shared lengthscale cut the median regret at 32 trials about 3x). Both blocks get
    the dimension-scaled LogNormal lengthscale prior of Hvarfner et al. (arXiv:2402.02229) for
    their own dimension.

    Noise: the likelihood's noise variance is in standardised units (``Standardize``). Without
    ``noise_sd`` its prior is botorch's LogNormal(-4, 1) (median sd 0.14 std(y)), with a floor. On a
    few noisy trials that prior wins over the data: the tiny experiment's 8 trials fitted a noise sd
    of 0.002-0.004 where its trainer seeds spread by 0.018 (bench/landscape.py), and the posterior
    mean then follows the luckiest seed. ``noise_sd`` (objective units, e.g. the verification
    stage's measured seed sd) centres the prior on ``(noise_sd / std(y))^2`` instead, with a log-sd
    of 0.5 (a factor 1.3 on the sd), so a few trials cannot talk it down and many can still move it.

    Shapes: ``x`` (n, d) features (weights first), ``y`` (n, 1) objective values.
    """
    return _gp(x, y, _mixture_kernel(x.shape[-1], n_weights), noise_floor, noise_sd)


def _mixture_kernel(d: int, n_weights: int) -> Kernel:
    """``k_w(w, w') * k_h(h, h')`` over ``d`` features, the ``n_weights`` weights first (see :func:`_make_gp`)."""
    prior = LogNormalPrior(loc=math.sqrt(2) + 0.5 * math.log(n_weights), scale=math.sqrt(3))
    covar: Kernel = MaternKernel(
        nu=2.5,
        active_dims=tuple(range(n_weights)),
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=prior.mode),
    )
    if d > n_weights:
        covar = covar * get_covar_module_with_dim_scaled_prior(
            ard_num_dims=d - n_weights, use_rbf_kernel=False, active_dims=tuple(range(n_weights, d))
        )
    return covar


def _gp(
    x: torch.Tensor, y: torch.Tensor, covar: Kernel, noise_floor: float, noise_sd: float | None
) -> SingleTaskGP:
    """SingleTaskGP in float64 with ``covar``, Standardize(1) outcomes and the noise prior of
    :func:`_noise_prior` above ``noise_floor``."""
    noise_prior = _noise_prior(y, noise_floor, noise_sd)
    likelihood = GaussianLikelihood(
        noise_prior=noise_prior,
        noise_constraint=GreaterThan(
            noise_floor, transform=None, initial_value=max(noise_prior.mode, 2 * noise_floor)
        ),
    )
    with warnings.catch_warnings():
        # Weight features are stretched beyond [0, 1] on purpose (see mixopt.space).
        warnings.simplefilter("ignore", InputDataWarning)
        return SingleTaskGP(
            x, y, likelihood=likelihood, covar_module=covar, outcome_transform=Standardize(m=1)
        )


def _noise_prior(y: torch.Tensor, noise_floor: float, noise_sd: float | None) -> LogNormalPrior:
    """The noise-variance prior in standardised units (see :func:`_make_gp`)."""
    if noise_sd is None:
        return LogNormalPrior(loc=-4.0, scale=1.0)
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
    sweep's first ASHA rung) cannot identify ``p``: a loose one let the fit send ``p`` to 3.8,
    "early values say nothing" (bench/RESULTS.md, "The fidelity scale as an option").
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
        a1 = x1[..., 0].clamp_min(1e-6) ** self.power
        a2 = x2[..., 0].clamp_min(1e-6) ** self.power
        return a1 * a2 if diag else a1.unsqueeze(-1) * a2.unsqueeze(-2)


def _make_mf_gp(
    x: torch.Tensor,
    y: torch.Tensor,
    noise_floor: float,
    n_weights: int,
    noise_sd: float | None = None,
    fidelity_scale: bool = False,
) -> SingleTaskGP:
    """The multi-fidelity GP: :func:`_make_gp`'s kernel on the features times a fidelity kernel,
    plus a learning-curve trend (multi-fidelity BO over mixtures, ADMIRE-BayesOpt arXiv:2508.11551):

        k((x, s), (x', s')) = c_1 * k_x(x, x') * [s^p s'^p] * k_s(s, s') + c_2 * k_t(s, s')

    ``s`` (the last column of ``x``) is the fraction of the step budget a value was measured at.
    ``[s^p s'^p]`` only with ``fidelity_scale`` (:class:`FidelityScale`, ``p`` fitted): the mixture
    effect grows with training, an early gap between two mixtures a shrunken copy of their final
    gap. On curves that rank mixtures early as at the end it cut the regret; on curves that cross
    it raised it (bench/RESULTS.md, "The fidelity scale as an option").
    ``k_x`` is :func:`_make_gp`'s kernel (shared-lengthscale Matern-5/2 on the weights, ARD Matern
    on the hyperparameters, the same priors); ``k_s`` Matern-5/2 on ``s``: how much a value at
    ``s`` says about one at ``s'`` for the same mixture; ``c_2 * k_t`` (Matern-5/2 on ``s``) is the
    part of the learning curve every mixture shares (scores rise with steps), so that a low value
    early in training is not read as a bad mixture. Both ``s`` lengthscales have a LogNormal(0, 1)
    prior (median 1: the whole budget); ``c_1``, ``c_2`` botorch's classic Gamma(2, 0.15) prior
    (the single-fidelity GP has no output scale: there ``Standardize`` makes the mixtures' variance
    1, here the trend takes much of it). Noise as :func:`_make_gp`'s.

    Shapes: ``x`` (n, d + 1) features then fraction, ``y`` (n, 1) objective values.
    """
    d = x.shape[-1] - 1
    covar = _mixture_kernel(d, n_weights)  # k_x: _make_gp's covariance over the features

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
    return _gp(x, y, covar, noise_floor, noise_sd)  # noise as in _make_gp


def _optimise(
    acq: UpperConfidenceBound | PosteriorMean | FixedFeatureAcquisitionFunction,
    space: SearchSpace,
    starts: np.ndarray,
) -> np.ndarray:
    """Run SLSQP from each start over the polytope; categoricals stay at each start's values.

    ``starts``: (r, d) features. Returns (r', d) optimised features (r' <= r when a group is empty).
    The equality constraint ``sum_k x_k / s = 1`` over the free weights (``s`` the weight scale)
    and the box bounds are handed to botorch ``optimize_acqf``; weights pinned by their bounds are
    fixed features.
    """
    k, s = space.n_tasks, space.weight_scale
    d = space.dim
    lower = np.zeros(d)
    upper = np.ones(d)
    lower[:k], upper[:k] = space.lower * s, space.upper * s
    bounds = torch.tensor(np.stack([lower, upper]), dtype=torch.float64)
    pinned = {i: float(lower[i]) for i in range(k) if space.upper[i] - space.lower[i] <= 0}
    free = [i for i in range(k) if i not in pinned]
    equality = []
    if free:
        rhs = 1.0 - math.fsum(space.lower[i] for i in pinned)
        equality = [(torch.tensor(free), torch.full((len(free),), 1.0 / s, dtype=torch.float64), rhs)]
    if len(pinned) == k and not space.numeric:
        return starts.copy()  # every feature is fixed per start: nothing for SLSQP to move
    cat_cols = list(range(k + len(space.numeric), d))
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, x in enumerate(starts):
        groups.setdefault(tuple(x[cat_cols].tolist()), []).append(i)
    out = []
    for combo, rows in groups.items():
        fixed = dict(pinned)
        fixed.update({c: v for c, v in zip(cat_cols, combo)})
        ic = torch.tensor(starts[rows], dtype=torch.float64).unsqueeze(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizationWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            x, _ = optimize_acqf(
                acq,
                bounds=bounds,
                q=1,
                num_restarts=len(rows),
                batch_initial_conditions=ic,
                equality_constraints=equality or None,
                fixed_features=fixed or None,
                return_best_only=False,
                retry_on_optimization_warning=False,
                # SLSQP runs the batched restarts as one problem whose dense QP costs O((b d)^3):
                # batch restarts while b * d stays small, then one or a few at a time.
                options={"maxiter": SLSQP_MAXITER, "batch_limit": max(1, SLSQP_BATCH_DIMS // d)},
            )
        out.append(x.reshape(-1, d).detach().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, d))
