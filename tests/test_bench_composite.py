"""bench/composite.py's problems: the laws, their optimum and their noise against independent references."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_composite", Path(__file__).parents[1] / "bench" / "composite.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _naive_scores(p, w_full: np.ndarray) -> list[float]:
    """The module docstring's law, one task at a time: s_i = base + gain (1 - exp(-rate z_i))."""
    out = []
    for i in range(p.n_tasks):
        z = w_full[i] + sum((p.transfer[i, j]) * w_full[j] for j in range(p.n_tasks) if j != i)
        out.append(p.base[i] + p.gain[i] * (1.0 - math.exp(-p.rate[i] * z)))
    return out


@pytest.mark.parametrize("kind", ["interior", "sparse", "mixed"])
def test_optimum_matches_a_dense_grid_at_k3(bench, kind: str) -> None:
    """f* by SLSQP is the maximum of the mean over a 0.0025-step grid of the 3-simplex (to grid accuracy)."""
    n = 400
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    grid = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1) / n
    for seed in (0, 1):
        p = bench.CompositeProblem(kind, 3, seed)
        values = np.array([p.f(w) for w in grid])
        assert values.max() <= p.f_star + 1e-12
        assert p.f_star - values.max() < 2e-4
        assert p.f(p.w_star) == pytest.approx(p.f_star)


def test_scores_follow_the_written_law_and_removed_tasks_leave_the_objective(bench) -> None:
    rng = np.random.default_rng(3)
    full = bench.CompositeProblem("mixed", 17, 2)
    cut = bench.CompositeProblem("mixed", 17, 2, removed=(16,))
    assert cut.tasks == [f"task_{i}" for i in range(16)]
    for _ in range(5):
        w = rng.dirichlet(np.ones(17))
        assert full.scores(w) == pytest.approx(_naive_scores(full, w), abs=1e-12)
        assert full.f(w) == pytest.approx(np.mean(_naive_scores(full, w)), abs=1e-12)
        v = rng.dirichlet(np.ones(16))
        # The same laws with task 16 at weight 0, and only the other 16 scores averaged.
        assert cut.f(v) == pytest.approx(np.mean(_naive_scores(full, np.append(v, 0.0))[:16]), abs=1e-12)
    assert cut.f_star >= max(cut.f(w) for w in rng.dirichlet(np.ones(16), 500))


@pytest.mark.parametrize("kind", ["interior", "sparse", "mixed"])
def test_gradient_matches_finite_differences(bench, kind: str) -> None:
    p = bench.CompositeProblem(kind, 17, 1, removed=(4,))
    w = np.random.default_rng(0).dirichlet(np.ones(16))
    h = 1e-6
    fd = [(p.f(w + h * e) - p.f(w - h * e)) / (2 * h) for e in np.eye(16)]
    assert p.grad(w) == pytest.approx(fd, abs=1e-7)


@pytest.mark.parametrize("kind", ["interior", "sparse", "mixed"])
def test_each_score_is_monotone_in_its_own_weight(bench, kind: str) -> None:
    """Moving data from any task j to task i raises task i's score (the suite's premise)."""
    p = bench.CompositeProblem(kind, 17, 0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = rng.dirichlet(np.ones(17))
        i, j = rng.choice(17, size=2, replace=False)
        moved = w.copy()
        delta = 0.5 * w[j]
        moved[i] += delta
        moved[j] -= delta
        assert p.scores(moved)[i] > p.scores(w)[i]


def test_sparse_optima_are_sparse_and_interior_ones_at_k3_are_inside(bench) -> None:
    for seed in range(4):
        sparse = bench.CompositeProblem("sparse", 17, seed)
        assert (sparse.w_star < 1e-6).sum() >= 12
        assert (bench.CompositeProblem("interior", 3, seed).w_star > 0.01).all()


def test_observed_objective_is_the_mean_of_noisy_scores_with_the_closed_form_sd(bench) -> None:
    p = bench.CompositeProblem("interior", 3, 0)
    w = np.array([0.2, 0.3, 0.5])
    draws = np.array([p.observe(w) for _ in range(20000)])
    sd = math.sqrt(float(((p.noise_sd / 3) ** 2).sum()))
    assert draws.mean() == pytest.approx(p.f(w), abs=4 * sd / math.sqrt(len(draws)))
    assert draws.std() == pytest.approx(sd, rel=0.03)
    # Same stream, same draws: the scores a mixopt run sees average to what the peers see.
    p.noise_rng = np.random.default_rng(7)
    s = p.observe_scores(w)
    p.noise_rng = np.random.default_rng(7)
    assert p.observe(w) == pytest.approx(s.mean())


def test_landscape_replay_looks_up_the_nearest_measured_mixture(bench) -> None:
    rows = [
        {"weights": [0.8, 0.1, 0.1], "scores": {"a": 0.5, "b": 0.6, "c": 0.9}},
        {"weights": [0.8, 0.1, 0.1], "scores": {"a": 0.7, "b": 0.6, "c": 0.9}},
        {"weights": [0.1, 0.1, 0.8], "scores": {"a": 0.1, "b": 0.5, "c": 1.0}},
        {"weights": [0.1, 0.1, 0.8], "scores": {"a": 0.1, "b": 0.7, "c": 1.0}},
    ]
    p = bench.LandscapeProblem(rows, 0)
    assert p.f([0.6, 0.2, 0.2]) == pytest.approx((0.6 + 0.6 + 0.9) / 3)
    assert p.f([0.2, 0.2, 0.6]) == pytest.approx((0.1 + 0.6 + 1.0) / 3)
    assert p.f_star == pytest.approx(0.7)
    # Pooled seed sd per task: sqrt(mean of the two within-mixture variances).
    assert p.noise_sd == pytest.approx([math.sqrt(0.02 / 2), math.sqrt(0.02 / 2), 0.0])


def test_report_pairs_labels_by_seed_and_returns_the_median_ratio(bench, capsys) -> None:
    """The ratio is composite's median regret over single's, regret read at the best *observed* trial."""
    single = [0.02, 0.04, 0.01]
    composite = [0.01, 0.001, 0.03]
    traces = {}
    for s in range(3):
        f_star = bench.CompositeProblem("interior", 3, s).f_star
        # The best observed trial (0.9) is the one whose true regret counts; the other is a decoy.
        for lab, r in (("mixopt-single", single[s]), ("mixopt-composite", composite[s])):
            traces[f"interior|3|{lab}|{s}|32"] = [[0.9, f_star - r]] + [[0.1, f_star]] * 31
    ratios = bench.report(traces, ["mixopt-single", "mixopt-composite"], ("interior",), (3,), range(3))
    assert ratios == [pytest.approx(np.median(composite) / np.median(single))]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("interior"))
    assert " 2/1 " in line  # composite better on seeds 0 and 1, worse on seed 2
