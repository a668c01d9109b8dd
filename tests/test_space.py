from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from mixopt.config import CategoricalParam, IntParam, LogFloatParam, WeightBounds
from mixopt.space import (
    SearchSpace,
    bounded_dirichlet,
    coerce_param,
    polytope_vertex,
    project_capped_simplex,
    share_capped,
    tighten_bounds,
)


def random_bounds(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Feasible random bounds: some tasks free, some with min and/or max, some pinned."""
    lo = np.zeros(k)
    hi = np.ones(k)
    kind = rng.integers(0, 4, size=k)  # 0 free, 1 min, 2 max, 3 both
    lo_share = rng.uniform(0.0, 0.9)
    m = rng.uniform(0.0, 1.0, size=k) * (kind % 2 == 1)
    if m.sum() > 0:
        lo = m / m.sum() * lo_share
    hi = np.where(kind >= 2, lo + (1.0 - lo) * rng.uniform(0.0, 1.0, size=k), 1.0)
    if hi.sum() < 1.0:
        # Raise every max proportionally to its headroom until they sum to just over 1.
        room = 1.0 - hi
        hi = hi + room * min(1.0, (1.0 - hi.sum()) / room.sum() + 1e-3)
    if k > 2 and rng.random() < 0.3:  # a pinned weight
        hi[0] = lo[0]
        if hi.sum() < 1.0:
            hi[1:] = 1.0
    return lo, hi


def assert_in_polytope(w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    total = math.fsum(w)
    assert abs(total - 1.0) <= 1e-9, total
    for k in range(len(w)):
        assert w[k] >= 0.0
        assert lo[k] <= w[k] <= hi[k], (k, lo[k], w[k], hi[k])


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1), log_alpha=st.floats(-3.0, 2.0))
def test_bounded_dirichlet_honours_bounds_exactly(k: int, seed: int, log_alpha: float) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = random_bounds(rng, k)
    alpha = np.full(k, 10.0**log_alpha)
    lo_t, hi_t = tighten_bounds(lo, hi)
    for _ in range(5):
        w = bounded_dirichlet(rng, alpha, lo_t, hi_t)
        assert_in_polytope(w, lo, hi)


def test_bounded_dirichlet_without_max_bounds_is_the_shifted_dirichlet() -> None:
    # Reference: numpy's own Dirichlet draw from the same stream, shifted onto the reduced simplex.
    k = 6
    lo = np.array([0.1, 0.0, 0.05, 0.0, 0.0, 0.2])
    alpha = np.array([0.5, 1.0, 2.0, 1.0, 3.0, 1.0])
    for seed in range(20):
        y = np.random.default_rng(seed).dirichlet(alpha)
        w = bounded_dirichlet(np.random.default_rng(seed), alpha, lo, np.ones(k))
        np.testing.assert_allclose(w, lo + (1 - lo.sum()) * y, rtol=0, atol=1e-14)


def test_bounded_dirichlet_mean_matches_closed_form() -> None:
    # E[w] = lo + (1 - sum lo) * alpha / sum(alpha) for min bounds only.
    lo = np.array([0.3, 0.0, 0.1])
    alpha = np.array([1.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    draws = np.array([bounded_dirichlet(rng, alpha, lo, np.ones(3)) for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0), lo + 0.6 * alpha / alpha.sum(), atol=0.01)


def test_bounded_dirichlet_does_not_stall_with_tight_max_bounds_at_40_tasks() -> None:
    # Maxes that sum to 1.02: a rejection sampler would essentially never accept a draw.
    k = 40
    hi = np.full(k, 1.02 / k)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert_in_polytope(bounded_dirichlet(rng, np.ones(k), np.zeros(k), hi), np.zeros(k), hi)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_projection_matches_scipy_qp(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = random_bounds(rng, k)
    v = rng.normal(0.0, 0.7, size=k)
    w = project_capped_simplex(v, lo, hi)
    assert_in_polytope(w, lo, hi)
    ref = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2),
        np.clip(np.full(k, 1.0 / k), lo, hi),
        jac=lambda x: x - v,
        bounds=list(zip(lo, hi)),
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(k)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert ref.success, ref.message
    np.testing.assert_allclose(w, ref.x, atol=1e-6)


def test_projection_keeps_feasible_points() -> None:
    w = np.array([0.25, 0.5, 0.25])
    np.testing.assert_array_equal(project_capped_simplex(w, np.zeros(3), np.ones(3)), w)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 10), seed=st.integers(0, 2**32 - 1))
def test_tightened_bounds_are_the_linear_programme_extremes(k: int, seed: int) -> None:
    lo, hi = random_bounds(np.random.default_rng(seed), k)
    lo_t, hi_t = tighten_bounds(lo, hi)
    for i in range(k):
        c = np.zeros(k)
        c[i] = 1.0
        kw = dict(A_eq=np.ones((1, k)), b_eq=[1.0], bounds=list(zip(lo, hi)), method="highs")
        assert linprog(c, **kw).fun == pytest.approx(lo_t[i], abs=1e-9)
        assert -linprog(-c, **kw).fun == pytest.approx(hi_t[i], abs=1e-9)


def test_hyperparameter_encoding_follows_each_prior_scale() -> None:
    space = SearchSpace(
        ["a", "b"],
        hyperparameters={
            "lr": LogFloatParam(type="log_float", low=1e-5, high=1e-3),
            "steps": IntParam(type="int", low=10, high=20),
            "pool": CategoricalParam(type="categorical", choices=["mean", "cls", True]),
            "wd": {"type": "float", "low": 0.0, "high": 0.1},
        },
    )
    p = {"a": 0.5, "b": 0.5, "lr": 1e-4, "steps": 15, "pool": True, "wd": 0.025}
    x = space.encode(p)
    k = 2
    # Geometric midpoint of [1e-5, 1e-3] is the unit midpoint; ints and floats linearly.
    assert x[k + space.numeric.index("lr")] == pytest.approx(0.5)
    assert x[k + space.numeric.index("steps")] == pytest.approx(0.5)
    assert x[k + space.numeric.index("wd")] == pytest.approx(0.25)
    assert list(x[space.onehot_slices["pool"]]) == [0.0, 0.0, 1.0]
    back = space.decode(x)
    assert back["pool"] is True and back["steps"] == 15 and isinstance(back["steps"], int)
    assert back["lr"] == pytest.approx(1e-4, rel=1e-12)
    # Ints round to the nearest integer.
    x[k + space.numeric.index("steps")] = 0.56  # 10 + 5.6
    assert space.decode(x)["steps"] == 16


def test_distance_is_total_variation_of_the_mixture() -> None:
    space = SearchSpace(["a", "b", "c"])
    a = {"a": 0.5, "b": 0.3, "c": 0.2}
    b = {"a": 0.4, "b": 0.3, "c": 0.3}
    assert space.distance(a, b) == pytest.approx(0.1)  # 0.5 * (0.1 + 0 + 0.1)


def test_plain_dict_hyperparameters_are_validated_with_their_name() -> None:
    assert coerce_param("lr", {"type": "log_float", "low": 1e-5, "high": 1e-3}).high == 1e-3
    with pytest.raises(ValueError, match="'lr'.*low"):
        coerce_param("lr", {"type": "log_float", "low": 0.0, "high": 1e-3})
    with pytest.raises(ValueError, match="'bs'"):
        coerce_param("bs", {"type": "int", "low": 8, "high": 4})


def test_space_rejects_bad_bounds_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        SearchSpace(["a", "b"], bounds={"c": (0.0, 1.0)})
    with pytest.raises(ValueError, match="minimum weights sum"):
        SearchSpace(["a", "b"], bounds={"a": (0.6, 1.0), "b": WeightBounds(min=0.6)})
    with pytest.raises(ValueError, match="maximum weights sum"):
        SearchSpace(["a", "b"], bounds={"a": (0.0, 0.4), "b": (0.0, 0.4)})
    with pytest.raises(ValueError, match="name of a task"):
        SearchSpace(["a", "b"], hyperparameters={"a": {"type": "float", "low": 0, "high": 1}})
    with pytest.raises(ValueError, match="distinct"):
        SearchSpace(["a", "a"])


def test_polytope_vertex_is_the_greedy_fill_and_a_vertex() -> None:
    lo, hi = np.array([0.0, 0.1, 0.0]), np.array([0.3, 0.5, 0.6])
    # Hand computation: start at lo = (0, .1, 0), free mass .9; task 2 takes .6, task 0 takes .3.
    np.testing.assert_allclose(polytope_vertex([2, 0, 1], lo, hi), [0.3, 0.1, 0.6], atol=1e-15)
    np.testing.assert_allclose(polytope_vertex([1, 2, 0], lo, hi), [0.0, 0.5, 0.5], atol=1e-15)
    # Uncapped: the simplex vertex of the first task.
    np.testing.assert_array_equal(polytope_vertex([3, 0, 1, 2], np.zeros(4), np.ones(4)), [0, 0, 0, 1])
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 12))
        hi = rng.uniform(0.05, 0.6, size=k)
        hi[0] = max(hi[0], 1.0 - hi[1:].sum() + 1e-3)
        w = polytope_vertex(rng.permutation(k), np.zeros(k), hi)
        assert math.fsum(w) == pytest.approx(1.0, abs=1e-12)
        # A vertex of {sum w = 1, 0 <= w <= hi}: at most one weight strictly between its bounds.
        assert np.sum((w > 1e-12) & (w < hi - 1e-12)) <= 1


def test_share_capped_closed_form() -> None:
    # y = (.7, .2, .1), w0 capped at .5: w0 pinned, the other .5 shared 2:1 -> (.5, 1/3, 1/6).
    w = share_capped(np.array([0.7, 0.2, 0.1]), np.zeros(3), np.array([0.5, 1.0, 1.0]))
    np.testing.assert_allclose(w, [0.5, 1 / 3, 1 / 6], atol=1e-15)
    # With minimums: w = lo + (1 - sum lo) y when nothing is capped.
    w = share_capped(np.array([0.5, 0.5]), np.array([0.2, 0.0]), np.ones(2))
    np.testing.assert_allclose(w, [0.6, 0.4], atol=1e-15)


def test_carry_renormalises_removed_tasks_and_zeroes_new_ones() -> None:
    space = SearchSpace(["a", "b", "d"])
    # Task c (0.2) is gone: a, b renormalised by 0.8; the new task d starts at 0.
    carried = space.carry({"a": 0.5, "b": 0.3, "c": 0.2}, max_removed=0.25)
    assert carried == pytest.approx({"a": 0.625, "b": 0.375, "d": 0.0}, abs=1e-15)
    # More of the data removed than allowed: dropped.
    assert space.carry({"a": 0.4, "b": 0.3, "c": 0.3}, max_removed=0.25) is None
    # Carried weights outside the new bounds: dropped; inside: kept.
    capped = SearchSpace(["a", "b", "d"], bounds={"a": (0.0, 0.6)})
    assert capped.carry({"a": 0.5, "b": 0.3, "c": 0.2}, max_removed=0.25) is None
    assert capped.carry({"a": 0.45, "b": 0.45, "c": 0.1}, max_removed=0.25) == pytest.approx(
        {"a": 0.5, "b": 0.5, "d": 0.0}, abs=1e-15
    )
    # A hyperparameter the old sweep lacked takes its default, or the point is dropped.
    hp = SearchSpace(
        ["a", "b"], hyperparameters={"lr": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.3}}
    )
    assert hp.carry({"a": 0.5, "b": 0.5}, max_removed=0.0) == {"a": 0.5, "b": 0.5, "lr": 0.3}
    nodef = SearchSpace(["a", "b"], hyperparameters={"lr": {"type": "float", "low": 0.0, "high": 1.0}})
    assert nodef.carry({"a": 0.5, "b": 0.5}, max_removed=0.0) is None
    assert nodef.carry({"a": 0.5, "b": 0.5, "lr": 0.7}, max_removed=0.0) == {"a": 0.5, "b": 0.5, "lr": 0.7}
