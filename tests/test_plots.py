"""The sweep's figures: GP slices stay inside the task bounds, a figure that fails is a warning."""

from __future__ import annotations

import numpy as np
import pytest

from mixopt import plots
from mixopt.optimizer import MixtureOptimizer

TASKS = ["retrieval_0", "sts_1", "classification_2"]
# The tiny experiment's bound (experiments/tiny_synthetic.yaml), plus an upper bound.
BOUNDS = {"retrieval_0": (0.05, 1.0), "classification_2": (0.0, 0.6)}


def objective(p: dict[str, float]) -> float:
    return 1.0 - (p["retrieval_0"] - 0.5) ** 2 - (p["sts_1"] - 0.3) ** 2


@pytest.fixture(scope="module")
def told() -> tuple[MixtureOptimizer, list[dict]]:
    opt = MixtureOptimizer(TASKS, n_seeds=5, bounds=BOUNDS, random_state=0)
    trials = []
    for i in range(7):
        (p,) = opt.ask(1)
        v = objective(p)
        opt.tell(p, v)
        trials.append({"trial_id": f"trial-{i:03d}", "status": "FINISHED", "objective": v, "proposal": p})
    return opt, trials


def feasible_by_scan(centre: dict[str, float], task: str, grid: np.ndarray) -> np.ndarray:
    """Independent reference: the grid weights of ``task`` whose rescaled mixture respects BOUNDS."""
    rest = 1.0 - centre[task]
    ok = []
    for x in grid:
        w = {o: centre[o] / rest * (1 - x) for o in TASKS if o != task} | {task: x}
        ok.append(all(BOUNDS.get(t, (0, 1))[0] <= w[t] <= BOUNDS.get(t, (0, 1))[1] for t in TASKS))
    return grid[np.array(ok)]


def test_slice_range_matches_a_scan_of_the_bounds(told) -> None:
    opt, _ = told
    centre = opt.best()[0]
    grid = np.linspace(0, 1, 100_001)
    for task in TASKS:
        a, b, _ = plots.slice_range(centre, task, TASKS, BOUNDS)
        ok = feasible_by_scan(centre, task, grid)
        assert a == pytest.approx(ok.min(), abs=2e-5) and b == pytest.approx(ok.max(), abs=2e-5), task
        assert a <= centre[task] <= b


def test_the_tiny_experiments_bounds_give_all_three_figures(told) -> None:
    opt, trials = told
    warnings: list[str] = []
    figs = plots.sweep_figures(trials, TASKS, opt, BOUNDS, warn=warnings.append)
    assert sorted(figs) == ["best_so_far.png", "gp_posterior.png", "top_mixtures.png"] and warnings == []
    # Each slice stays inside its task's bounds.
    for ax, task in zip(figs["gp_posterior.png"].axes, TASKS):
        xs = ax.lines[0].get_xdata()
        lo, hi = BOUNDS.get(task, (0.0, 1.0))
        assert lo <= xs.min() and xs.max() <= hi


def test_a_figure_that_cannot_be_drawn_is_a_warning_not_silence() -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=5, bounds=BOUNDS, random_state=0)
    (p,) = opt.ask(1)
    opt.tell(p, 0.5)  # one success: too few for the GP
    trials = [{"trial_id": "trial-000", "status": "FINISHED", "objective": 0.5, "proposal": p}]
    warnings: list[str] = []
    figs = plots.sweep_figures(trials, TASKS, opt, BOUNDS, warn=warnings.append)
    assert sorted(figs) == ["best_so_far.png", "top_mixtures.png"]
    assert len(warnings) == 1 and warnings[0].startswith("figure gp_posterior.png not drawn: RuntimeError: ")


def test_best_so_far_numbers_trials_as_their_ids_and_colours_them_by_origin() -> None:
    origins = ["seed", "seed", "bo", "exploit"]
    trials = [
        {"trial_id": f"trial-{i:03d}", "status": "FINISHED", "objective": 0.1 * i, "origin": o}
        for i, o in enumerate(origins)
    ]
    fig = plots.best_so_far(trials)
    points = {
        line.get_label(): list(line.get_xdata()) for line in fig.axes[0].lines if line.get_marker() == "o"
    }
    # Reference: the ids' own numbers (trial-000 is x = 0), grouped by origin.
    assert points == {"seed trial": [0, 1], "bo trial": [2], "exploit trial": [3]}
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].lines}
    assert len({colours["seed trial"], colours["bo trial"], colours["exploit trial"]}) == 3
