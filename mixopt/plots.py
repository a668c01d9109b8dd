"""Summary figures of a sweep, logged on its parent MLflow run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes or CI
    import matplotlib.pyplot as plt

    return plt


ORIGIN_COLOURS = {"seed": "tab:blue", "warm": "tab:cyan", "bo": "tab:orange", "exploit": "tab:green"}


def _trial_number(trial: Mapping[str, Any], position: int) -> int:
    """The N of the trial's id ``trial-NNN`` (as MLflow shows it), else its position."""
    tid = str(trial.get("trial_id") or "")
    tail = tid.rsplit("-", 1)[-1]
    return int(tail) if tid.startswith("trial-") and tail.isdigit() else position


def best_so_far(trials: Sequence[Mapping[str, Any]]):
    """Objective of each trial (in trial order, x = the N of its id ``trial-NNN``), coloured by its
    origin, and the best so far."""
    plt = _plt()
    values = [
        t["objective"] if t["status"] == "FINISHED" and t["objective"] is not None else np.nan for t in trials
    ]
    best = np.fmax.accumulate(np.array(values, dtype=float))
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.array([_trial_number(t, i) for i, t in enumerate(trials)])
    origins = [str(t.get("origin") or "other") for t in trials]
    for origin in dict.fromkeys(origins):
        idx = [i for i, o in enumerate(origins) if o == origin]
        ax.plot(
            x[idx],
            [values[i] for i in idx],
            "o",
            color=ORIGIN_COLOURS.get(origin, "tab:gray"),
            label=f"{origin} trial",
        )
    ax.step(x, best, where="post", color="black", label="best so far")
    failed = [x[i] for i, t in enumerate(trials) if t["status"] == "FAILED"]
    if failed:
        ax.plot(
            failed,
            [np.nanmin(best) if np.isfinite(best).any() else 0] * len(failed),
            "x",
            color="red",
            label="failed",
        )
    ax.set_xlabel("trial (the N of trial-NNN)")
    ax.set_ylabel("objective")
    ax.legend()
    fig.tight_layout()
    return fig


def top_mixtures(trials: Sequence[Mapping[str, Any]], tasks: Sequence[str], k: int = 10):
    """Task weights of the k best trials as stacked bars."""
    plt = _plt()
    done = sorted(
        (t for t in trials if t["status"] == "FINISHED" and t["objective"] is not None),
        key=lambda t: -t["objective"],
    )[:k]
    fig, ax = plt.subplots(figsize=(max(6, len(done) * 0.8), 4))
    bottom = np.zeros(len(done))
    for task in tasks:
        w = np.array([t["proposal"][task] for t in done])
        ax.bar([t["trial_id"] for t in done], w, bottom=bottom, label=task)
        bottom += w
    ax.set_ylabel("weight")
    ax.set_title(f"mixtures of the top {len(done)} trials (best first)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def slice_range(
    centre: Mapping[str, float],
    task: str,
    tasks: Sequence[str],
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[float, float, dict[str, float]]:
    """The weights task ``t`` can take on its slice through ``centre``, and how the others move.

    On the slice, ``w_t = x`` and every other weight is ``w_o = d_o (1 - x)`` with
    ``d_o = c_o / (1 - c_t)`` (the centre's proportions; ``1 / (n - 1)`` each when ``c_t = 1``), so
    the mixture sums to 1. Bounds ``lo_o <= d_o (1 - x) <= hi_o`` give
    ``1 - hi_o / d_o <= x <= 1 - lo_o / d_o``; intersected with ``[lo_t, hi_t]`` they give
    ``[a, b]``, which holds ``c_t`` when the centre is inside the bounds.
    Returns ``(a, b, d)``.
    """
    bounds = bounds or {}
    rest = 1.0 - centre[task]
    others = [o for o in tasks if o != task]
    d = {o: (centre[o] / rest if rest > 0 else 1.0 / len(others)) for o in others}
    a, b = bounds.get(task, (0.0, 1.0))
    a, b = max(a, 0.0), min(b, 1.0)
    for o in others:
        lo, hi = bounds.get(o, (0.0, 1.0))
        if d[o] > 0:
            a, b = max(a, 1.0 - hi / d[o]), min(b, 1.0 - lo / d[o])
    # Stay a hair inside: a weight 1e-12 below its bound is refused by predict().
    a, b = min(a + 1e-9, centre[task]), max(b - 1e-9, centre[task])
    return a, b, d


def gp_slices(
    optimizer: MixtureOptimizer,
    tasks: Sequence[str],
    n: int = 41,
    bounds: Mapping[str, tuple[float, float]] | None = None,
):
    """GP posterior mean ± sd along each task's weight, through the best mixture.

    Moving task t's weight to x rescales the other weights so the mixture still sums to 1; x spans
    only the weights that keep every task inside its ``bounds`` (see :func:`slice_range`).
    """
    plt = _plt()
    best = optimizer.best()
    if best is None:
        raise ValueError("no successful trial to centre the slices on")
    centre = dict(best[0])
    cols = min(len(tasks), 4)
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        a, b, d = slice_range(centre, task, tasks, bounds)
        xs = np.linspace(a, b, n)
        points = []
        for x in xs:
            p = dict(centre)
            for other, share in d.items():
                p[other] = share * (1 - x)
            p[task] = float(x)
            points.append(p)
        mean, sd = optimizer.predict(points)
        ax.plot(xs, mean)
        ax.fill_between(xs, mean - sd, mean + sd, alpha=0.3)
        ax.axvline(centre[task], color="grey", linestyle=":")
        ax.set_title(task, fontsize="small")
        ax.set_xlabel("weight")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle("GP posterior mean ± sd along each task's weight (others rescaled)")
    fig.tight_layout()
    return fig


def sweep_figures(
    trials: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    optimizer: MixtureOptimizer,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The parent run's figures by file name. A figure that cannot be drawn is left out and
    reported through ``warn`` (with why); the others are still returned."""
    makers = {
        "best_so_far.png": lambda: best_so_far(trials),
        "top_mixtures.png": lambda: top_mixtures(trials, tasks),
        "gp_posterior.png": lambda: gp_slices(optimizer, tasks, bounds=bounds),
    }
    figs = {}
    for name, make in makers.items():
        try:
            figs[name] = make()
        except Exception as e:  # a figure must never cost the sweep its record
            if warn is not None:
                warn(f"figure {name} not drawn: {type(e).__name__}: {e}")
    return figs
