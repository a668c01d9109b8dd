"""The search space of a mixture sweep: a bounded simplex of task weights, plus hyperparameters.

A point of the space is a *proposal*: a plain dict with every task's weight (a float) and every
hyperparameter's value, e.g. ``{"retrieval_0": 0.6, "sts_1": 0.4, "lr": 3e-5}``. The weights
``w`` live on the bounded simplex

    S = { w in R^K : sum_k w_k = 1,  lo_k <= w_k <= hi_k }

which is a convex polytope. This module samples it exactly (no rejection), projects onto it
exactly, and encodes proposals as feature vectors for the Gaussian process:

    x = [ s * w_1 .. s * w_K | u_1 .. u_F | one-hot(c_1) .. one-hot(c_C) ]

with ``u`` the float / log-float / int hyperparameters mapped to [0, 1] (log scale for log-float)
and categoricals one-hot. ``s`` (:attr:`SearchSpace.weight_scale`) stretches the simplex so that
Dirichlet(1) draws spread over the features about as much as uniform draws spread over [0, 1]
(a weight's sd under Dirichlet(1) is ~1/K, a uniform's is 1/sqrt(12)); the GP's lengthscale
prior is calibrated for unit-cube inputs. All K weights are kept (none dropped as redundant) so
the kernel treats every task alike; the redundancy is harmless for a stationary kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
from pydantic import TypeAdapter, ValidationError

from mixopt.parameters import (
    CategoricalParam,
    FloatParam,
    Hyperparameter,
    IntParam,
    LogFloatParam,
    WeightBounds,
)

Param = Union[FloatParam, LogFloatParam, IntParam, CategoricalParam]
Proposal = dict[str, Any]

# Two proposals closer than this (see SearchSpace.distance) count as the same trial.
NEAR_IDENTICAL = 1e-2
# Weights are exact to this; a sum is reported wrong beyond it.
SUM_EXACT = 1e-9
# User-supplied mixtures (seeds, predict inputs) may be off by this much, as in the config.
USER_TOLERANCE = 1e-6

_PARAM_ADAPTER: TypeAdapter[Param] = TypeAdapter(Hyperparameter)


def coerce_param(name: str, spec: Param | Mapping[str, Any]) -> Param:
    """A hyperparameter spec from a config object or the equivalent plain dict, validated."""
    if isinstance(spec, (FloatParam, LogFloatParam, IntParam, CategoricalParam)):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"hyperparameter {name!r}: expected a FloatParam/LogFloatParam/IntParam/CategoricalParam or a "
            f"dict like {{'type': 'float', 'low': 0.0, 'high': 1.0}}, got {type(spec).__name__}"
        )
    try:
        return _PARAM_ADAPTER.validate_python(dict(spec))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors(include_url=False)
        )
        raise ValueError(f"hyperparameter {name!r} is invalid: {problems}") from None


def coerce_bounds(
    task: str, spec: WeightBounds | Sequence[float] | Mapping[str, float]
) -> tuple[float, float]:
    """``(min, max)`` of one task's weight from WeightBounds, a ``(min, max)`` pair or a dict."""
    try:
        if isinstance(spec, WeightBounds):
            b = spec
        elif isinstance(spec, Mapping):
            b = WeightBounds.model_validate(dict(spec))
        else:
            lo, hi = spec  # type: ignore[misc]
            b = WeightBounds(min=float(lo), max=float(hi))
    except (ValidationError, TypeError, ValueError) as err:
        raise ValueError(
            f"bounds for task {task!r} must be WeightBounds or a (min, max) pair with "
            f"0 <= min <= max <= 1, got {spec!r} ({err})"
        ) from None
    return float(b.min), float(b.max)


def tighten_bounds(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tightest box with the same intersection with the simplex.

    ``lo'_k = max(lo_k, 1 - sum_{j != k} hi_j)`` and ``hi'_k = min(hi_k, 1 - sum_{j != k} lo_j)``:
    a weight can be no larger than what the others' minimums leave, and no smaller than what the
    others' maximums cannot absorb.
    """
    lo_sum, hi_sum = math.fsum(lower), math.fsum(upper)
    lo = np.maximum(lower, 1.0 - (hi_sum - upper))
    hi = np.minimum(upper, 1.0 - (lo_sum - lower))
    hi = np.maximum(hi, lo)  # rounding can cross them when the set is a single point
    return lo, hi


def project_capped_simplex(v: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` onto ``{w : sum w = 1, lower <= w <= upper}``, exact to ~1e-15.

    The projection is ``w = clip(v - tau, lower, upper)`` for the ``tau`` where ``sum w = 1``
    (the KKT conditions of ``min ||w - v||^2``); ``sum clip(v - tau)`` is non-increasing in tau, so
    tau is found by bisection. A last pass moves the float residual (~1e-16) onto coordinates that
    have room, so the sum is 1 to rounding and every bound holds exactly.
    Requires ``sum(lower) <= 1 <= sum(upper)``.
    """
    v = np.asarray(v, dtype=np.float64)
    if np.all(v >= lower) and np.all(v <= upper) and abs(math.fsum(v) - 1.0) <= 1e-14:
        return v.copy()
    a, b = float(np.min(v - upper)) - 1.0, float(np.max(v - lower)) + 1.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if math.fsum(np.clip(v - mid, lower, upper)) > 1.0:
            a = mid
        else:
            b = mid
        if b - a <= 1e-16 * max(1.0, abs(mid)):
            break
    w = np.clip(v - 0.5 * (a + b), lower, upper)
    return _fix_residual(w, lower, upper)


def _fix_residual(w: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Move ``1 - sum(w)`` onto coordinates with room, largest room first, keeping the bounds."""
    w = w.copy()
    for _ in range(3):
        r = 1.0 - math.fsum(w)
        if r == 0.0:
            break
        room = (upper - w) if r > 0 else (w - lower)
        for k in np.argsort(-room, kind="stable"):
            step = min(abs(r), float(room[k]))
            w[k] = min(max(w[k] + math.copysign(step, r), lower[k]), upper[k])
            r = 1.0 - math.fsum(w)
            if r == 0.0 or abs(r) < 1e-18:
                break
    return w


def bounded_dirichlet(
    rng: np.random.Generator, alpha: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """One Dirichlet(alpha) mixture honouring ``lower <= w <= upper`` by construction.

    ``y ~ Dirichlet(alpha)`` shares out the mass left above the minimums,
    ``w = lo + (1 - sum lo) * y``; a weight that then exceeds its maximum is pinned at it and its
    excess is shared among the free weights in proportion to their ``y`` (repeat until none
    exceeds). Each round pins at least one weight and cannot pin all of them while
    ``sum(upper) >= 1``, so it ends in at most K rounds for any K, never rejecting a draw.
    Without max bounds this is exactly the Dirichlet shifted onto the reduced simplex.
    """
    k = len(alpha)
    y = rng.dirichlet(alpha)
    if not np.all(np.isfinite(y)) or y.sum() <= 0:  # tiny alphas can underflow every component
        y = np.zeros(k)
        y[rng.integers(k)] = 1.0
    return share_capped(y, lower, upper)


def share_capped(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The point of the bounded simplex that shares ``y`` (shares >= 0, sum 1) out as
    :func:`bounded_dirichlet` does: ``w = lo + (1 - sum lo) * y``, a weight over its maximum pinned
    there and its excess re-shared among the free weights in proportion to ``y``.

    Deterministic, so a peer sampler that only produces points of the plain simplex (Optuna's,
    in bench/optimizer.py) reaches the capped polytope through the same map as mixopt's seeds.
    """
    k = len(y)
    pinned = np.zeros(k, dtype=bool)
    w = lower.copy()
    for _ in range(k + 1):
        free = ~pinned
        mass = 1.0 - math.fsum(upper[pinned]) - math.fsum(lower[free])
        share = y[free].sum()
        # All-zero shares (alpha << 1) spread the mass evenly instead of dividing by zero.
        frac = y[free] / share if share > 0 else np.full(free.sum(), 1.0 / free.sum())
        w[free] = lower[free] + max(mass, 0.0) * frac
        w[pinned] = upper[pinned]
        over = free & (w > upper)
        if not over.any():
            break
        pinned |= over
        if pinned.all():
            break
    return project_capped_simplex(np.clip(w, lower, upper), lower, upper)


def polytope_vertex(order: Sequence[int], lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The vertex of the bounded simplex that fills tasks greedily in ``order``.

    Start from ``w = lo`` and hand the free mass ``1 - sum lo`` out in ``order``, each task taking
    up to ``hi_k - lo_k``. Every vertex of ``{sum w = 1, lo <= w <= hi}`` is of this form (a
    vertex has at most one weight strictly between its bounds), and without caps it is the
    simplex vertex ``e_order[0]``. ``order`` may list only some tasks when they absorb the mass.
    """
    w = np.asarray(lower, dtype=np.float64).copy()
    left = 1.0 - math.fsum(w)
    for k in order:
        if left <= 0.0:
            break
        step = min(float(upper[k] - lower[k]), left)
        w[k] += step
        left -= step
    return project_capped_simplex(w, lower, upper)


def _choice_index(p: CategoricalParam, value: Any) -> int | None:
    """Index of ``value`` among the choices; True is not 1 here (bool is an int in Python)."""
    for i, c in enumerate(p.choices):
        if c == value and isinstance(c, bool) == isinstance(value, bool):
            return i
    return None


class SearchSpace:
    """Tasks with weight bounds, and hyperparameters, as one encodable, sampleable space.

    Args:
        tasks: task names, in order; the proposal dicts list them in this order.
        bounds: task -> WeightBounds | (min, max); tasks not named get [0, 1].
        hyperparameters: name -> FloatParam | LogFloatParam | IntParam | CategoricalParam (or the
            equivalent plain dicts).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        bounds: Mapping[str, Any] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(tasks, str) or not isinstance(tasks, Sequence):
            raise ValueError(f"tasks must be a list of task names, got {tasks!r}")
        self.tasks: tuple[str, ...] = tuple(tasks)
        if not self.tasks:
            raise ValueError("tasks is empty: give at least one task name")
        for t in self.tasks:
            if not isinstance(t, str) or not t:
                raise ValueError(f"task names must be non-empty strings, got {t!r}")
        dup = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if dup:
            raise ValueError(f"task names must be distinct; repeated: {dup}")
        k = len(self.tasks)

        bounds = dict(bounds or {})
        unknown = sorted(set(bounds) - set(self.tasks))
        if unknown:
            raise ValueError(f"bounds name unknown task(s) {unknown}; tasks are {list(self.tasks)}")
        lo = np.zeros(k)
        hi = np.ones(k)
        for i, t in enumerate(self.tasks):
            if t in bounds:
                lo[i], hi[i] = coerce_bounds(t, bounds[t])
        if math.fsum(lo) > 1.0 + SUM_EXACT:
            raise ValueError(
                f"the minimum weights sum to {math.fsum(lo):.12g} > 1: no mixture fits the bounds"
            )
        if math.fsum(hi) < 1.0 - SUM_EXACT:
            raise ValueError(
                f"the maximum weights sum to {math.fsum(hi):.12g} < 1: no mixture fits the bounds"
            )
        self.raw_lower, self.raw_upper = lo, hi
        self.lower, self.upper = tighten_bounds(lo, hi)

        self.hyperparameters: dict[str, Param] = {}
        for name, spec in dict(hyperparameters or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"hyperparameter names must be non-empty strings, got {name!r}")
            if name in self.tasks:
                raise ValueError(f"hyperparameter {name!r} has the name of a task; rename one of them")
            self.hyperparameters[name] = coerce_param(name, spec)

        # Feature layout: weights, then one column per float/log/int, then one-hot blocks.
        self.weight_scale = max(1.0, k / math.sqrt(12.0))
        self.numeric: list[str] = [
            n for n, p in self.hyperparameters.items() if not isinstance(p, CategoricalParam)
        ]
        self.categorical: list[str] = [
            n for n, p in self.hyperparameters.items() if isinstance(p, CategoricalParam)
        ]
        col = k + len(self.numeric)
        self.onehot_slices: dict[str, slice] = {}
        for n in self.categorical:
            c = len(self.hyperparameters[n].choices)  # type: ignore[union-attr]
            self.onehot_slices[n] = slice(col, col + c)
            col += c
        self.dim = col
        width = self.upper - self.lower
        # Total-variation size of the mixture polytope, to scale "near-identical" in narrow ones.
        self._tv_scale = min(1.0, 0.5 * float(width.sum()))

    # ------------------------------------------------------------------ properties

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def keys(self) -> list[str]:
        return list(self.tasks) + list(self.hyperparameters)

    @property
    def is_single_point(self) -> bool:
        """True when the bounds pin every weight and there are no hyperparameters to search."""
        return bool(np.all(self.upper - self.lower <= 0.0)) and not self.hyperparameters

    # ------------------------------------------------------------------ sampling

    def sample_mixture(self, rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
        return bounded_dirichlet(rng, alpha, self.lower, self.upper)

    def sample_hyperparameters(self, rng: np.random.Generator) -> dict[str, Any]:
        """One draw from each hyperparameter's prior: uniform, log-uniform, uniform integer, uniform choice."""
        out: dict[str, Any] = {}
        for name, p in self.hyperparameters.items():
            if isinstance(p, FloatParam):
                out[name] = float(rng.uniform(p.low, p.high))
            elif isinstance(p, LogFloatParam):
                out[name] = float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
            elif isinstance(p, IntParam):
                out[name] = int(rng.integers(p.low, p.high + 1))
            else:
                out[name] = p.choices[int(rng.integers(len(p.choices)))]
        return out

    def default_or_sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Each hyperparameter's ``default`` where it has one, else a prior draw."""
        drawn = self.sample_hyperparameters(rng)
        return {
            n: (p.default if p.default is not None else drawn[n]) for n, p in self.hyperparameters.items()
        }

    def proposal(self, weights: np.ndarray, hyper: Mapping[str, Any]) -> Proposal:
        """A proposal dict: tasks in order with float weights, then hyperparameters in order."""
        out: Proposal = {t: float(w) for t, w in zip(self.tasks, weights)}
        for n in self.hyperparameters:
            out[n] = hyper[n]
        return out

    # ------------------------------------------------------------------ validation

    def check_hyperparameter(self, name: str, value: Any, where: str) -> Any:
        p = self.hyperparameters[name]
        if isinstance(p, CategoricalParam):
            idx = _choice_index(p, value)
            if idx is not None:
                return p.choices[idx]
            raise ValueError(f"{where}: {name}={value!r} is not one of the choices {p.choices}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: {name}={value!r} must be a number")
        if not math.isfinite(float(value)):
            raise ValueError(f"{where}: {name}={value!r} must be finite")
        if isinstance(p, IntParam):
            if float(value) != round(float(value)):
                raise ValueError(f"{where}: {name}={value!r} must be an integer")
            value = int(round(float(value)))
        else:
            value = float(value)
        if not (p.low <= value <= p.high):
            raise ValueError(f"{where}: {name}={value!r} is outside [{p.low}, {p.high}]")
        return value

    def check_mixture(self, mixture: Mapping[str, Any], where: str, *, partial: bool) -> np.ndarray:
        """Weights of a user mixture as an exact point of the polytope, or a ValueError saying why.

        ``partial``: tasks not named get weight 0 (seed mixtures); otherwise every task is required.
        The sum and bounds may be off by USER_TOLERANCE; the result is projected to be exact.
        """
        unknown = sorted(set(mixture) - set(self.tasks) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown}; tasks are {list(self.tasks)}"
                + (f", hyperparameters {list(self.hyperparameters)}" if self.hyperparameters else "")
            )
        missing = [t for t in self.tasks if t not in mixture]
        if missing and not partial:
            raise ValueError(f"{where}: missing weight(s) for {missing}")
        w = np.zeros(self.n_tasks)
        for i, t in enumerate(self.tasks):
            v = mixture.get(t, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{where}: weight for {t!r} must be a number, got {v!r}")
            if not math.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"{where}: weight for {t!r} must be finite and >= 0, got {v!r}")
            w[i] = float(v)
        total = math.fsum(w)
        if abs(total - 1.0) > USER_TOLERANCE:
            raise ValueError(f"{where}: weights must sum to 1 (within {USER_TOLERANCE:g}), got {total!r}")
        bad = [
            f"{t}={w[i]:g} not in [{self.raw_lower[i]:g}, {self.raw_upper[i]:g}]"
            for i, t in enumerate(self.tasks)
            if not (self.raw_lower[i] - USER_TOLERANCE <= w[i] <= self.raw_upper[i] + USER_TOLERANCE)
        ]
        if bad:
            raise ValueError(f"{where}: weight(s) outside their bounds: {', '.join(bad)}")
        return project_capped_simplex(w, self.lower, self.upper)

    def check_proposal(self, proposal: Mapping[str, Any], where: str) -> Proposal:
        """A complete proposal (every task and hyperparameter), validated and made exact."""
        if not isinstance(proposal, Mapping):
            raise ValueError(
                f"{where}: a proposal is a dict of task weights and hyperparameters, got {proposal!r}"
            )
        w = self.check_mixture(proposal, where, partial=False)
        missing = [n for n in self.hyperparameters if n not in proposal]
        if missing:
            raise ValueError(f"{where}: missing hyperparameter(s) {missing}")
        hyper = {n: self.check_hyperparameter(n, proposal[n], where) for n in self.hyperparameters}
        return self.proposal(w, hyper)

    def carry(self, proposal: Mapping[str, Any], max_removed: float) -> Proposal | None:
        """A proposal of another task set carried onto this one, or None when it cannot be.

        Olmix-style mixture reuse (arXiv:2602.12237): the weight of tasks this space does not
        have (``r = sum`` of their weights) is renormalised away, ``w'_k = w_k / (1 - r)`` for
        the kept tasks, and a task new to this space gets weight 0. The point is dropped
        (None) when ``r > max_removed`` (the trial measured mostly data that is gone), when the
        carried weights break this space's bounds, or when a hyperparameter of this space is
        neither in the proposal nor has a default. Hyperparameters the space lacks are ignored.
        """
        removed = math.fsum(
            float(v)
            for t, v in proposal.items()
            if t not in self.tasks
            and t not in self.hyperparameters
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        )
        if removed > max_removed or removed >= 1.0:
            return None
        w = np.array([float(proposal.get(t, 0.0)) for t in self.tasks]) / (1.0 - removed)
        if (
            abs(math.fsum(w) - 1.0) > USER_TOLERANCE
            or np.any(w < self.raw_lower - USER_TOLERANCE)
            or np.any(w > self.raw_upper + USER_TOLERANCE)
        ):
            return None
        hyper: dict[str, Any] = {}
        for n, p in self.hyperparameters.items():
            if n in proposal:
                try:
                    hyper[n] = self.check_hyperparameter(n, proposal[n], "carried proposal")
                except ValueError:
                    return None
            elif p.default is not None:
                hyper[n] = p.default
            else:
                return None
        return self.proposal(project_capped_simplex(w, self.lower, self.upper), hyper)

    # ------------------------------------------------------------------ encoding

    def encode(self, proposal: Mapping[str, Any]) -> np.ndarray:
        """Feature vector (``dim``,) of a proposal (see the module docstring for the layout)."""
        x = np.zeros(self.dim)
        x[: self.n_tasks] = [self.weight_scale * float(proposal[t]) for t in self.tasks]
        for j, n in enumerate(self.numeric):
            x[self.n_tasks + j] = self._to_unit(n, proposal[n])
        for n in self.categorical:
            p = self.hyperparameters[n]
            idx = _choice_index(p, proposal[n])  # type: ignore[arg-type]
            if idx is None:
                raise ValueError(f"{n}={proposal[n]!r} is not one of the choices {p.choices}")  # type: ignore[union-attr]
            x[self.onehot_slices[n].start + idx] = 1.0
        return x

    def decode(self, x: np.ndarray) -> Proposal:
        """The proposal nearest to features ``x``: weights projected onto the polytope, ints rounded,
        categoricals by arg-max of their one-hot block."""
        w = project_capped_simplex(
            np.asarray(x[: self.n_tasks], dtype=np.float64) / self.weight_scale, self.lower, self.upper
        )
        hyper: dict[str, Any] = {}
        for j, n in enumerate(self.numeric):
            hyper[n] = self._from_unit(n, float(x[self.n_tasks + j]))
        for n in self.categorical:
            p = self.hyperparameters[n]
            hyper[n] = p.choices[int(np.argmax(x[self.onehot_slices[n]]))]  # type: ignore[union-attr]
        return self.proposal(w, hyper)

    def _to_unit(self, name: str, value: Any) -> float:
        p = self.hyperparameters[name]
        if isinstance(p, LogFloatParam):
            return (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        return (float(value) - p.low) / (p.high - p.low)  # type: ignore[union-attr]

    def _from_unit(self, name: str, u: float) -> Any:
        p = self.hyperparameters[name]
        u = min(max(u, 0.0), 1.0)
        if isinstance(p, LogFloatParam):
            return float(
                min(max(math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low))), p.low), p.high)
            )
        if isinstance(p, IntParam):
            return int(min(max(round(p.low + u * (p.high - p.low)), p.low), p.high))
        return float(min(max(p.low + u * (p.high - p.low), p.low), p.high))  # type: ignore[union-attr]

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        """How different two proposals are; below NEAR_IDENTICAL they are the same trial.

        ``max( TV(w_a, w_b) / size, max_j |u_a,j - u_b,j|, [a categorical differs] )`` with
        ``TV = 0.5 * sum_k |w_a,k - w_b,k|`` (the share of the data that changes task), ``u`` the
        [0, 1]-encoded numeric hyperparameters, and ``size`` the polytope's own TV extent (capped
        at 1) so that narrow bounds still admit distinct trials.
        """
        return float(self.feature_distances(self.encode(a)[None], self.encode(b)[None])[0, 0])

    def feature_distances(self, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
        """:meth:`distance` between every row of ``xa`` (n, dim) and of ``xb`` (m, dim): (n, m)."""
        k = self.n_tasks
        d = np.zeros((len(xa), len(xb)))
        if self._tv_scale > 0:
            dw = np.abs(xa[:, None, :k] - xb[None, :, :k]).sum(-1)
            d = 0.5 * dw / self.weight_scale / self._tv_scale
        if self.dim > k:
            # Numeric columns are in [0, 1]; a differing one-hot block differs by exactly 1.
            d = np.maximum(d, np.abs(xa[:, None, k:] - xb[None, :, k:]).max(-1))
        return d

    def random_features(self, rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
        """``n`` prior draws (bounded-Dirichlet weights, prior hyperparameters) as features (n, dim)."""
        x = np.zeros((n, self.dim))
        k = self.n_tasks
        for i in range(n):
            x[i, :k] = self.weight_scale * self.sample_mixture(rng, alpha)
        for j, name in enumerate(self.numeric):
            p = self.hyperparameters[name]
            if isinstance(p, IntParam):
                x[:, k + j] = (rng.integers(p.low, p.high + 1, size=n) - p.low) / (p.high - p.low)
            else:  # uniform in the unit encoding is the (log-)uniform prior
                x[:, k + j] = rng.uniform(0.0, 1.0, size=n)
        for name in self.categorical:
            sl = self.onehot_slices[name]
            x[np.arange(n), sl.start + rng.integers(sl.stop - sl.start, size=n)] = 1.0
        return x

    # ------------------------------------------------------------------ serialisation

    def hyperparameters_json(self) -> dict[str, dict[str, Any]]:
        return {n: p.model_dump(mode="json") for n, p in self.hyperparameters.items()}

    def bounds_json(self) -> dict[str, list[float]]:
        return {
            t: [float(self.raw_lower[i]), float(self.raw_upper[i])]
            for i, t in enumerate(self.tasks)
            if self.raw_lower[i] != 0.0 or self.raw_upper[i] != 1.0
        }
