"""Acquisition: sampled start points, and one maximiser over the bounded simplex for UCB and the
posterior mean.

UCB as the EmbeddingGemma paper (arXiv:2509.20354) writes it,

    a(x) = mu(x) + beta * sigma(x),

with mu, sigma the GP posterior mean and sd of the latent objective. botorch's
``UpperConfidenceBound`` computes ``mu + sqrt(beta_botorch) * sigma``, so it is built with
``beta_botorch = beta ** 2`` (beta=2 -> beta_botorch=4). The recommendation maximises botorch's
``PosteriorMean`` instead. Both go through :func:`maximise`: the acquisition at a few hundred
sampled starts (:func:`start_points`), SLSQP on the polytope ``{sum_k w_k = 1, lo_k <= w_k <=
hi_k}`` from the best of them (:func:`optimise`), every candidate snapped to an exact proposal
(:meth:`mixopt.space.SearchSpace.decode`: projection, int rounding, one-hot) and scored again
there; candidates within ``NEAR_IDENTICAL`` of a pending or told point are never returned.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction, PosteriorMean, UpperConfidenceBound
from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
from botorch.models.model import Model
from botorch.optim import optimize_acqf

from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.model import Fitted, condition_at_mean, jitter, seeded
from mixopt.space import NEAR_IDENTICAL, Proposal, SearchSpace, polytope_vertex, share_capped

logger = logging.getLogger("mixopt.optimizer")

# Acquisition starts: global bounded-Dirichlet draws, plus perturbations of the best observations
# (the optimum is often near the incumbent). Modest sizes keep a suggestion fast at 100
# observations x 17 tasks (bench/optimizer.py measures the latency; bench/RESULTS.md holds it).
N_GLOBAL = 384
N_LOCAL_CENTRES = 4
N_LOCAL_PER_CENTRE = 32
# A weight within this of its lower bound is off the incumbent's support (see start_points).
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


def ucb(beta: float) -> Callable[[Model], AcquisitionFunction]:
    """``mu + beta * sigma`` (botorch's UCB given ``beta ** 2``); beta = 0 for an exploitation step."""
    return lambda model: UpperConfidenceBound(model, beta=beta**2)


def posterior_mean(model: Model) -> AcquisitionFunction:
    return PosteriorMean(model)


def propose(
    fitted: Fitted, space: SearchSpace, alpha: np.ndarray, ledger: Ledger, beta: float, seed: int, what: str
) -> Proposal | None:
    """The UCB maximiser (``beta`` 0: the posterior mean's, an exploitation step) away from every
    pending and told point, with pending and failed proposals hallucinated (see :func:`maximise`).

    Failed trials stay hallucinated for good: a failure says nothing about the objective (a
    preempted worker, an OOM at one batch size), so no number is imputed; the point only loses
    its exploration bonus and cannot be proposed again.
    """
    return maximise(
        fitted,
        space,
        ucb(beta),
        lambda rng: start_points(space, alpha, ledger.told(), rng),
        seed,
        taken_x=ledger.taken_features(space.encode, space.dim),
        hallucinated=[ledger.proposal(i) for i in ledger.pending] + ledger.failed(),
        what=what,
    )


def mean_maximiser(
    fitted: Fitted,
    space: SearchSpace,
    alpha: np.ndarray,
    ledger: Ledger,
    seed: int,
    told: list[tuple[Proposal, float]] | None = None,
) -> Proposal:
    """The maximiser of the posterior mean (real observations only; every observed point is also
    a start), which may be an observed mixture. ``told``: the observations under the objective
    being maximised (default: the ledger's), whose best ones centre the local starts."""
    told = ledger.told() if told is None else told
    observed = [space.encode(p) for p, _ in told]
    proposal = maximise(
        fitted,
        space,
        posterior_mean,
        lambda rng: np.concatenate([start_points(space, alpha, told, rng), observed], axis=0),
        seed,
        taken_x=np.zeros((0, space.dim)),
        what="recommend()",
    )
    assert proposal is not None  # nothing is taken, so a candidate always remains
    return proposal


def start_points(
    space: SearchSpace, alpha: np.ndarray, told: list[tuple[Proposal, float]], rng: np.random.Generator
) -> np.ndarray:
    """Candidate features ``(r, dim)``: global bounded-Dirichlet draws (half with the user's alpha,
    half uniform) and convex perturbations ``(1 - e) w_best + e d`` of the best observations in
    ``told`` (convex combinations of feasible mixtures stay feasible), half of the directions ``d``
    drawn on ``w_best``'s support plus one task, so a sparse incumbent has sparse neighbours; then
    :func:`boundary_starts`."""
    half = N_GLOBAL // 2
    glob = [
        space.random_features(rng, alpha, half),
        space.random_features(rng, np.ones(space.n_tasks), half),
    ]
    told = sorted(told, key=lambda pv: -pv[1])
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
        # of a task from none, so proposals near a sparse incumbent would carry dust on every task.
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
    return np.concatenate(glob + local + boundary_starts(space, rng, centres), axis=0)


def boundary_starts(
    space: SearchSpace, rng: np.random.Generator, centres: list[np.ndarray]
) -> list[np.ndarray]:
    """Starts on faces and vertices of the polytope (see N_SPARSE): sparse draws, vertices,
    and ``(1 - e) w_c + e v`` between each incumbent ``w_c`` and a random vertex ``v``.
    Hyperparameters are drawn from their priors (incumbents keep theirs)."""
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


def maximise(
    fitted: Fitted,
    space: SearchSpace,
    acquisition: Callable[[Model], AcquisitionFunction],
    starts: Callable[[np.random.Generator], np.ndarray],
    seed: int,
    *,
    taken_x: np.ndarray,
    hallucinated: Sequence[Proposal] = (),
    what: str,
) -> Proposal | None:
    """The proposal that maximises ``acquisition`` over the search space, away from ``taken_x``.

    ``hallucinated``: pending (and failed) proposals added to the GP as observations equal to its
    posterior mean there (GP-BUCB, Desautels, Krause & Burdick, arXiv:1206.6402): the mean is
    unchanged and sigma collapses around them, so their exploration bonus is gone. ``starts(rng)``
    gives the sampled starts ``(r, dim)``; ``seed`` seeds both that ``rng`` and torch. The best
    ``NUM_RESTARTS`` starts farther than ``NEAR_IDENTICAL`` from every row of ``taken_x``
    ``(m, dim)`` go to SLSQP (a failure there keeps the sampled starts, logged with ``what``).
    Returns None when every candidate is near a taken point.
    """
    rng = np.random.default_rng(seed)
    with seeded(seed), jitter(fitted.jitter), warnings.catch_warnings():
        warnings.simplefilter("ignore", InputDataWarning)
        model = fitted.model
        if hallucinated:
            xh = torch.tensor(np.array([space.encode(p) for p in hallucinated]), dtype=torch.float64)
            xh = fitted.full(xh)  # pending trials will end at full fidelity
            model = condition_at_mean(model, xh)
        acq = fitted.at_full(acquisition(model), space.dim)
        x0 = starts(rng)
        with torch.no_grad():
            values = acq(torch.tensor(x0, dtype=torch.float64).unsqueeze(1)).numpy()
        free = np.ones(len(x0), dtype=bool)
        if len(taken_x):
            free = space.feature_distances(x0, taken_x).min(axis=1) >= NEAR_IDENTICAL
        order = [i for i in np.argsort(-values, kind="stable") if free[i]][:NUM_RESTARTS]
        candidates = [x0[i] for i in order]
        if order:
            try:
                candidates += list(optimise(acq, space, x0[order]))
            except Exception as err:  # SLSQP/linear-algebra failures: keep the sampled starts
                logger.warning(
                    "%s: acquisition optimisation failed (%s: %s); using the best sampled start",
                    what,
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


def optimise(acq: AcquisitionFunction, space: SearchSpace, starts: np.ndarray) -> np.ndarray:
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
