"""Multi-fidelity on the real-data experiment's learning curves: ``optimizer.multi_fidelity`` (and
``fidelity_scale``), replayed on the trials of bench/real.py's per-trial cache.

Reads the cache that ``bench/real.py table`` writes (its docstring gives the format) and runs
bench/multifidelity.py's simulated sweeps (two asynchronous workers, a budget of trainer steps) on
the real learning curves, on **dev scores only** (nothing here reads a test score to decide): the
trials with an intermediate dev evaluation, ``f(w, t)`` the mean over seeds at the nearest such
mixture, reports with Gaussian noise of the pooled seed sd of the final objective. Policies: full
trials, full trials with the multi-fidelity GP, ASHA, ASHA with the multi-fidelity GP (with and
without ``fidelity_scale``); regret of ``recommend()`` at the whole budget, each paired by sweep
against full trials. Figures: bench/RESULTS.md, "Real data".

    python bench/real_options.py --cache runs/real-st/trials.json --sweeps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import multifidelity  # noqa: E402  (bench/multifidelity.py: the simulated sweep)


def _key(mixture: dict[str, float], names: list[str]) -> tuple[float, ...]:
    return tuple(round(float(mixture[n]), 12) for n in names)


class MeasuredCurves:
    """``f(w, t)``: the mean dev objective at step ``t`` of the nearest mixture with a curve."""

    def __init__(self, trials: list[dict[str, Any]], names: list[str], steps: int) -> None:
        by: dict[tuple[float, ...], dict[int, list[float]]] = {}
        for t in trials:
            points = {int(s): v for s, v, _ in t["curve"]} | {steps: t["objective"]}
            for s, v in points.items():
                by.setdefault(_key(t["mixture"], names), {}).setdefault(s, []).append(v)
        self.points = np.array(list(by))
        self.values = [{s: float(np.mean(v)) for s, v in d.items()} for d in by.values()]
        finals = [[v for v in d[steps]] for d in by.values() if len(d[steps]) > 1]
        self.seed_sd = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in finals]))) if finals else 0.0
        self.steps = steps

    def __call__(self, w: np.ndarray, t: float) -> float:
        i = int(np.argmin(((self.points - w) ** 2).sum(1)))
        d = self.values[i]
        return d[min(d, key=lambda s: abs(s - t))]

    def optimum(self) -> float:
        return max(d[self.steps] for d in self.values)


def fidelity(cache: dict[str, Any], sweeps: int, budget: int) -> None:
    names = [t["name"] for t in cache["tasks"]]
    steps = int(cache["steps"])
    with_curve = [t for t in cache["trials"] if t["curve"]]
    if not with_curve:
        print("multi-fidelity: no trial of the cache has an intermediate evaluation")
        return
    curves = MeasuredCurves(with_curve, names, steps)
    report = min(int(s) for t in with_curve for s, _, _ in t["curve"])
    multifidelity.T, multifidelity.REPORT, multifidelity.GRACE = steps, report, report
    multifidelity.N_SEEDS = cache["config"]["optimizer"].get("n_seeds")
    f_star = curves.optimum()
    print(
        f"multi-fidelity on the real learning curves: {len(curves.points)} mixtures with a curve "
        f"(reports at {report} and {steps} steps), report noise sd {curves.seed_sd:.4f} (pooled seed sd), "
        f"budget {budget} x {steps} steps, {sweeps} sweeps; regret of recommend() at the whole budget"
    )
    results: dict[str, list[float]] = {}
    for policy, scale in (
        ("full", None),
        ("full-mf", False),
        ("asha", None),
        ("asha-mf", False),
        ("asha-mf", True),
    ):
        multifidelity.FIDELITY_SCALE = scale
        label = policy + ("" if scale is None else f", scale {'on' if scale else 'off'}")
        runs = [
            multifidelity.simulate(policy, names, curves, f_star, curves.seed_sd, budget, s)
            for s in range(sweeps)
        ]
        results[label] = [r.regrets[1.0] for r in runs]
        r = np.array(results[label])
        print(
            f"  {label:20s} median {np.median(r):.4f} [{np.quantile(r, 0.25):.4f}, {np.quantile(r, 0.75):.4f}]"
            f"  trials {statistics.median(x.trials for x in runs):.0f}, stopped {statistics.median(x.stopped for x in runs):.0f}"
        )
    full = np.array(results["full"])
    for label, r in results.items():
        if label != "full":
            d = np.array(r) - full
            print(
                f"  {label} − full: median {np.median(d):+.4f}, lower on {int((d < -1e-12).sum())}, higher on {int((d > 1e-12).sum())} of {len(d)}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True, help="bench/real.py's per-trial cache")
    ap.add_argument("--sweeps", type=int, default=20, help="simulated sweeps per policy")
    ap.add_argument(
        "--mf-budget",
        type=int,
        default=None,
        help="multi-fidelity budget in full trials (default max_trials)",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cache = json.loads(args.cache.read_text())
    names = [x["name"] for x in cache["tasks"]]
    print(
        f"cache {args.cache}: {len(cache['trials'])} trials, {len({_key(t['mixture'], names) for t in cache['trials']})} mixtures"
    )
    fidelity(cache, args.sweeps, args.mf_budget or int(cache["config"]["optimizer"]["max_trials"]))


if __name__ == "__main__":
    main()
