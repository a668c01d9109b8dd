"""Summary figures of a sweep, logged on its parent MLflow run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes or CI
    import matplotlib.pyplot as plt

    return plt


def best_so_far(trials: Sequence[Mapping[str, Any]]):
    """Objective of each trial (in trial order) and the best so far."""
    plt = _plt()
    values = [
        t["objective"] if t["status"] == "FINISHED" and t["objective"] is not None else np.nan for t in trials
    ]
    best = np.fmax.accumulate(np.array(values, dtype=float))
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(values) + 1)
    ax.plot(x, values, "o", label="trial objective")
    ax.step(x, best, where="post", label="best so far")
    failed = [i + 1 for i, t in enumerate(trials) if t["status"] == "FAILED"]
    if failed:
        ax.plot(
            failed,
            [np.nanmin(best) if np.isfinite(best).any() else 0] * len(failed),
            "x",
            color="red",
            label="failed",
        )
    ax.set_xlabel("trial")
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


def gp_slices(optimizer: Any, tasks: Sequence[str], n: int = 41):
    """GP posterior mean ± sd along each task's weight, through the best mixture.

    Moving task t's weight to x rescales the other weights so the mixture still sums to 1.
    """
    plt = _plt()
    best = optimizer.best()
    if best is None:
        raise ValueError("no successful trial to centre the slices on")
    centre = dict(best[0])
    cols = min(len(tasks), 4)
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    xs = np.linspace(0, 1, n)
    for ax, task in zip(axes.flat, tasks):
        rest = 1.0 - centre[task]
        points = []
        for x in xs:
            p = dict(centre)
            for other in tasks:
                if other != task:
                    p[other] = (centre[other] / rest * (1 - x)) if rest > 0 else (1 - x) / (len(tasks) - 1)
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
    trials: Sequence[Mapping[str, Any]], tasks: Sequence[str], optimizer: Any
) -> dict[str, Any]:
    figs = {"best_so_far.png": best_so_far(trials), "top_mixtures.png": top_mixtures(trials, tasks)}
    try:
        figs["gp_posterior.png"] = gp_slices(optimizer, tasks)
    except Exception:
        pass  # too few points for a GP yet: the other figures still tell the story
    return figs
