"""The numbers behind the sweep report: Pareto fronts, weight importance, the task-interference map.

Every function takes plain arrays or a *model*, an object with the optimizer's prediction methods
(:class:`mixopt.optimizer.MixtureOptimizer` is one), so each can be checked against a closed form
with no GP in the loop (tests/test_report.py).

**Moving weight onto a task.** From a mixture ``r`` on the bounded simplex, moving a share ``d``
of the whole mixture onto task ``i`` gives

    m_i(d) = (1 - d) r + d e_i,

which keeps the weights summing to 1 and never negative; ``d`` is the largest value up to the
requested step that keeps every weight inside its bounds (:func:`feasible_step`). It is the
question a mixture user asks ("what if I train a bit more on task i?") and, unlike a partial
derivative along ``w_i`` alone, it never leaves the simplex.

**Interference map** (:func:`interference`). For a training task ``i`` and a scored task ``j``,

    D_ij = s_j(m_i) - s_j(r),

its posterior mean and sd from the joint posterior of score ``j`` at the two mixtures
(``Var D = var(m_i) + var(r) - 2 cov(m_i, r)``), and ``P(D_ij > 0) = Phi(mean / sd)``: how sure
the model is of the sign. A positive ``D_ij`` for ``i != j`` is transfer, a negative one
interference.

**Weight importance, globally** (:func:`weight_importance`). The weights of a mixture are
dependent (they sum to 1), so the variance decomposition of Sobol' (independent inputs) does not
apply as is. The index used here is the first-order index for dependent inputs (the correlation
ratio; Kucherenko, Tarantola & Annoni 2012, doi:10.1016/j.cpc.2011.12.020):

    S_i = Var(E[f(W) | W_i]) / Var(f(W)),   W uniform on the bounded simplex,

the share of the variance of ``f`` over all admissible mixtures that knowing task ``i``'s weight
explains, through the task itself and through what its weight takes from the others. The indices
need not sum to 1 (the inputs are dependent). ``E[f | W_i]`` is estimated by averaging ``f`` over
draws of the other weights from their conditional distribution given ``W_i`` (uniform on the slice
of the polytope), at values of ``W_i`` from its marginal (:func:`conditional_design`); the variance
of those means, corrected for their Monte Carlo error and floored at 0 (:func:`first_order`), is
never negative. It is computed on joint posterior sample paths of the objective, so each index
comes with its interval. For a linear ``f(w) = a . w`` on the plain simplex the index has the
closed form ``(a_i - mean_{j != i} a_j)^2 Var(W_i) / a^T Cov(W) a``
(:func:`linear_sobol_closed_form`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

# Rejection sampling of the capped simplex: below this acceptance rate the bounds are too tight for
# it (the report then shows the section as unavailable, with that reason).
_MIN_ACCEPT = 1e-3


# --------------------------------------------------------------------------- Pareto front


def pareto_front(scores: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``scores`` (n x k, every column maximised) that no other row dominates.

    Row ``b`` dominates row ``a`` when ``b >= a`` in every column and ``b > a`` in one. Rows with
    a NaN are never on the front. Returns the indices in increasing order.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"pareto_front: scores must be 2-d (trials x scores), got shape {s.shape}")
    ok = ~np.isnan(s).any(axis=1)
    v = s[ok]
    ge = (v[:, None, :] >= v[None, :, :]).all(axis=2)  # ge[b, a]: b >= a everywhere
    gt = (v[:, None, :] > v[None, :, :]).any(axis=2)
    dominated = (ge & gt).any(axis=0)
    return np.flatnonzero(ok)[~dominated]


# --------------------------------------------------------------------------- moving weight


def feasible_step(r: np.ndarray, i: int, step: float, lower: np.ndarray, upper: np.ndarray) -> float:
    """The largest ``d`` in ``[0, step]`` with ``lower <= (1 - d) r + d e_i <= upper``.

    Weight ``i`` grows as ``r_i + d (1 - r_i)`` (capped by ``upper_i``); every other weight
    shrinks as ``(1 - d) r_j`` (floored by ``lower_j``).
    """
    if r[i] >= 1:  # the mixture is task i alone: there is no weight left to move onto it
        return 0.0
    d = min(float(step), (upper[i] - r[i]) / (1 - r[i]))
    for j in range(len(r)):
        if j != i and r[j] > 0:
            d = min(d, 1 - lower[j] / r[j])
    return max(d, 0.0)


def moved_mixtures(
    r: np.ndarray, step: float, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, d)``: row ``i`` of M is ``(1 - d_i) r + d_i e_i`` with ``d_i`` = :func:`feasible_step`."""
    n = len(r)
    d = np.array([feasible_step(r, i, step, lower, upper) for i in range(n)])
    m = (1 - d)[:, None] * r[None, :] + np.diag(d)
    return m, d


@dataclass(frozen=True)
class Effects:
    """Predicted changes ``D[i, j]`` of score ``j`` when weight moves onto task ``i``.

    ``mean``/``sd``: (tasks x scores); ``p_positive``: ``Phi(mean / sd)`` (0.5 where sd = 0 and
    mean = 0); ``step``: the share moved for each task (smaller than asked at a bound; 0 where
    the task cannot gain weight).
    """

    tasks: tuple[str, ...]
    scores: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray
    p_positive: np.ndarray
    step: np.ndarray


def _p_positive(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), np.sign(mean) * np.inf)
    return np.where((sd <= 0) & (mean == 0), 0.5, norm.cdf(z))


def interference(
    joint: Callable[[list[dict[str, Any]], str], tuple[np.ndarray, np.ndarray]],
    tasks: Sequence[str],
    scores: Sequence[str],
    centre: Mapping[str, Any],
    lower: np.ndarray,
    upper: np.ndarray,
    step: float = 0.1,
) -> Effects:
    """The task-interference map around ``centre`` (see the module docstring).

    ``joint(proposals, score)`` returns the posterior mean (n,) and covariance (n, n) of one
    score at ``proposals`` (``MixtureOptimizer.predict_joint``). ``centre`` is a proposal (its
    hyperparameters, if any, are kept fixed on every moved mixture).
    """
    tasks = list(tasks)
    r = np.array([float(centre[t]) for t in tasks])
    m, d = moved_mixtures(r, step, lower, upper)
    hyper = {k: v for k, v in centre.items() if k not in tasks}
    points = [dict(centre)] + [{**dict(zip(tasks, map(float, row))), **hyper} for row in m]
    mean = np.zeros((len(tasks), len(scores)))
    sd = np.zeros_like(mean)
    for j, score in enumerate(scores):
        mu, cov = joint(points, score)
        mu, cov = np.asarray(mu, dtype=float), np.asarray(cov, dtype=float)
        mean[:, j] = mu[1:] - mu[0]
        var = np.diag(cov)[1:] + cov[0, 0] - 2 * cov[0, 1:]
        sd[:, j] = np.sqrt(np.clip(var, 0.0, None))
    mean[d == 0] = 0.0
    sd[d == 0] = 0.0
    return Effects(tuple(tasks), tuple(scores), mean, sd, _p_positive(mean, sd), d)


def composed_joint(
    joint: Callable[[list[dict[str, Any]], str], tuple[np.ndarray, np.ndarray]],
    weights: Mapping[str, float],
) -> Callable[[list[dict[str, Any]]], tuple[np.ndarray, np.ndarray]]:
    """The joint posterior of the objective ``sum_k c_k s_k`` from independent per-score posteriors:
    mean ``sum_k c_k mu_k``, covariance ``sum_k c_k^2 C_k``."""

    def f(points: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        mean, cov = 0.0, 0.0
        for name, c in weights.items():
            if c == 0:
                continue
            mu, k = joint(points, name)
            mean = mean + c * np.asarray(mu, dtype=float)
            cov = cov + c * c * np.asarray(k, dtype=float)
        return np.asarray(mean), np.asarray(cov)

    return f


# --------------------------------------------------------------------------- Sobol indices


def _uniform_capped(
    rng: np.random.Generator, total: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """One uniform draw of ``{w : sum w = total[r], lower <= w <= upper}`` per row ``r`` (rejection
    from the shifted simplex, redrawing the rows that break an upper bound); ValueError when the
    bounds leave too little of it to sample this way."""
    n, k = len(total), len(lower)
    free = np.clip(total - lower.sum(), 0.0, None)
    out = np.empty((n, k))
    todo = np.arange(n)
    for _ in range(int(1 / _MIN_ACCEPT)):
        w = lower + free[todo, None] * rng.dirichlet(np.ones(k), size=len(todo))
        ok = (w <= upper + 1e-12).all(axis=1)
        out[todo[ok]] = w[ok]
        todo = todo[~ok]
        if not len(todo):
            return out
    raise ValueError("the weight bounds leave too small a part of the simplex to sample it uniformly")


def conditional_design(
    rng: np.random.Generator, n: int, inner: int, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Points for :func:`first_order`: an array (k, n, inner, k). Slice ``i`` holds ``n`` values of
    ``W_i`` (each the ``i``-th weight of a uniform draw of the bounded simplex, so they follow its
    marginal), each with ``inner`` draws of the other weights uniform on ``{sum = 1 - W_i, bounds}``,
    i.e. from their conditional distribution given ``W_i``. Every point is a uniform draw."""
    k = len(lower)
    out = np.empty((k, n, inner, k))
    for i in range(k):
        rest = [j for j in range(k) if j != i]
        w_i = _uniform_capped(rng, np.ones(n), lower, upper)[:, i]
        out[i, :, :, i] = w_i[:, None]
        others = _uniform_capped(rng, np.repeat(1.0 - w_i, inner), lower[rest], upper[rest])
        out[i][:, :, rest] = others.reshape(n, inner, k - 1)
    return out


def first_order(values: np.ndarray) -> np.ndarray:
    """First-order indices ``Var(E[f | W_i]) / Var(f)`` from values on a :func:`conditional_design`.

    ``values``: (..., k, n, inner), the same function (or each of several sample paths, leading
    axes) at the design's points. ``E[f | W_i]`` at each of the ``n`` values of ``W_i`` is the mean
    of its ``inner`` values; the variance of those means over-counts by the mean within-variance
    divided by ``inner``, which is subtracted (the unbiased estimate of ``Var(E[f | W_i])``); the
    index is that estimate floored at 0, so never negative, over ``Var(f)`` of all the points.
    Returns (..., k); 0 where f is flat.
    """
    v = np.asarray(values, dtype=float)
    inner = v.shape[-1]
    means = v.mean(axis=-1)  # (..., k, n)
    within = v.var(axis=-1, ddof=1).mean(axis=-1) if inner > 1 else 0.0  # (..., k)
    between = means.var(axis=-1, ddof=1) - within / inner
    flat = v.reshape(*v.shape[:-3], -1)
    total = flat.var(axis=-1, ddof=1)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.clip(between, 0.0, None) / np.where(total > 0, total, 1.0), 0.0)


def linear_sobol_closed_form(a: Sequence[float]) -> np.ndarray:
    """First-order indices of ``f(w) = a . w`` for ``W`` uniform on the plain simplex (Dirichlet(1)).

    Given ``W_i``, the other weights are ``(1 - W_i)`` times a uniform draw of the smaller simplex,
    so ``E[f | W_i] = abar_i + (a_i - abar_i) W_i`` with ``abar_i`` the mean of the other ``a``:
    ``Var(E[f | W_i]) = (a_i - abar_i)^2 Var(W_i)``. Dirichlet(1) on k parts has
    ``Var(W_i) = (k - 1) / (k^2 (k + 1))`` and ``Cov(W_i, W_j) = -1 / (k^2 (k + 1))``.
    """
    a = np.asarray(a, dtype=float)
    k = len(a)
    var_w = (k - 1) / (k**2 * (k + 1))
    cov = np.full((k, k), -1.0 / (k**2 * (k + 1)))
    np.fill_diagonal(cov, var_w)
    abar = (a.sum() - a) / (k - 1)
    return (a - abar) ** 2 * var_w / float(a @ cov @ a)


@dataclass(frozen=True)
class Importance:
    """Per-task first-order indices over posterior sample paths: their ``mean`` and the 5 % and
    95 % quantiles ``low`` and ``high``; every value is >= 0 (:func:`first_order`)."""

    tasks: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


# Points at which the sample paths are drawn (their joint posterior is factorised once per path's
# hyperparameters: the cost grows with the cube of this), and draws of the other weights per value
# of W_i: the estimate's Monte Carlo error is part of the paths' spread.
IMPORTANCE_POINTS = 512
IMPORTANCE_INNER = 8


def weight_importance(
    sample: Callable[[list[dict[str, Any]], int, int], np.ndarray],
    tasks: Sequence[str],
    lower: np.ndarray,
    upper: np.ndarray,
    hyper: Mapping[str, Any] | None = None,
    paths: int = 64,
    seed: int = 0,
    points: int = IMPORTANCE_POINTS,
) -> Importance:
    """:func:`first_order` on ``paths`` joint posterior sample paths of the objective, with
    hyperparameters held at ``hyper``. ``sample(proposals, paths, seed)`` returns the draws
    (paths, n) at ``proposals`` (:meth:`mixopt.optimizer.views.Predictive.sample`)."""
    rng = np.random.default_rng(seed)
    k = len(tasks)
    inner = IMPORTANCE_INNER
    n = max(4, points // (k * inner))
    design = conditional_design(rng, n, inner, lower, upper)
    hyper = dict(hyper or {})
    proposals = [{**dict(zip(tasks, map(float, w))), **hyper} for w in design.reshape(-1, k)]
    draws = np.asarray(sample(proposals, paths, seed), dtype=float)
    s = first_order(draws.reshape(paths, k, n, inner))
    low, high = np.percentile(s, [5, 95], axis=0)
    return Importance(tuple(tasks), s.mean(axis=0), low, high)


# --------------------------------------------------------------------------- the line


def along_line(
    model: Any, start: Mapping[str, Any], end: Mapping[str, Any], tasks: Sequence[str], n: int = 41
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The posterior of the objective on ``(1 - t) start + t end``, t in [0, 1]: ``(t, mean, sd)``.

    Both ends are on the bounded simplex, which is convex, so every point between is too.
    Hyperparameters are those of ``end`` (the recommendation) all along.
    """
    t = np.linspace(0.0, 1.0, n)
    hyper = {k: v for k, v in end.items() if k not in tasks}
    points = [
        {**{w: float((1 - x) * float(start[w]) + x * float(end[w])) for w in tasks}, **hyper} for x in t
    ]
    mean, sd = model.predict(points)
    return t, np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """The running maximum of the finished values (None before the first one)."""
    out: list[float | None] = []
    best = -math.inf
    for v in values:
        if v is not None and math.isfinite(v):
            best = max(best, v)
        out.append(None if best == -math.inf else best)
    return out
