"""Benchmark the mixture optimizer against random Dirichlet search and Optuna, in one run.

    .venv/bin/python bench/optimizer.py            # full: K in {4, 8, 17}, 10 seeds, budgets 16/32/64
    .venv/bin/python bench/optimizer.py --quick    # a smoke run: K in {4, 17}, 3 seeds, budgets 16/32

Objectives live on the probability simplex of K task weights; all are maximised.

- ``interior``: ``f(w) = -(w - c)^T A (w - c)`` with ``c ~ Dirichlet(3)`` inside the simplex and
  ``A = Q diag(lam) Q^T``, ``lam`` log-uniform in [1, 10] (tasks interact; the bowl is tilted).
  The optimum is ``c``.
- ``face``: the same bowl with its centre pushed outside the simplex: a quarter of the tasks
  (at least one) are harmful, ``c_k = -0.1``, which puts the optimum on a face of the simplex
  (some weights exactly 0) in most instances (8 of the first 9 checked by projected gradient).
- ``noisy``: ``interior`` observed with Gaussian noise of sd 10% of f's spread over random
  mixtures; regret is measured on the noiseless f.

Simple regret after n trials: ``f* - f(w_rec)`` with ``w_rec`` the trial with the best *observed*
value (the same rule for every method), ``f*`` found by SLSQP on the (convex) problem.

Methods, each given the same trial budget, sequentially (ask one, tell one):

- ``mixopt``: ``MixtureOptimizer(tasks, random_state=seed)`` with its defaults (10 Dirichlet seeds,
  then GP-UCB with beta=2).
- ``random``: uniform Dirichlet(1) mixtures.
- ``tpe`` / ``optuna-gp``: Optuna's TPESampler / GPSampler (defaults, 10 startup trials) on
  ``u_k in (0, 1)``, mapped to the simplex by normalised exponentials ``w_k = -log u_k / sum_j -log u_j``
  (uniform ``u`` gives a uniform Dirichlet(1) mixture).

It also measures suggestion latency (GP fit + acquisition for one ``ask``) at 100 observations
and 17 tasks, the issue's target being a median <= 1.5 s on the 2-core dev box.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.optimizer import MixtureOptimizer  # noqa: E402

OBJECTIVES = ("interior", "face", "noisy")
METHODS = ("mixopt", "random", "tpe", "optuna-gp")
NOISE_FRACTION = 0.10


class Problem:
    """One synthetic objective on the K-simplex, with its optimum."""

    def __init__(self, kind: str, k: int, seed: int) -> None:
        rng = np.random.default_rng([k, seed, OBJECTIVES.index(kind)])
        self.kind, self.k = kind, k
        q, _ = np.linalg.qr(rng.normal(size=(k, k)))
        lam = np.exp(rng.uniform(0.0, math.log(10.0), size=k))
        self.a = (q * lam) @ q.T
        self.c = rng.dirichlet(np.full(k, 3.0))
        if kind == "face":
            harmful = rng.choice(k, size=max(1, k // 4), replace=False)
            self.c[harmful] = -0.1
        self.f_star = self._optimum()
        spread = np.std([self.f(w) for w in rng.dirichlet(np.ones(k), 256)])
        self.noise_sd = NOISE_FRACTION * float(spread) if kind == "noisy" else 0.0
        self.noise_rng = np.random.default_rng([k, seed, 99])

    def f(self, w: np.ndarray) -> float:
        d = np.asarray(w) - self.c
        return -float(d @ self.a @ d)

    def observe(self, w: np.ndarray) -> float:
        return self.f(w) + (self.noise_rng.normal(0.0, self.noise_sd) if self.noise_sd else 0.0)

    def _optimum(self) -> float:
        best = -math.inf
        cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
        starts = [np.full(self.k, 1.0 / self.k)] + list(
            np.random.default_rng(0).dirichlet(np.ones(self.k), 4)
        )
        for w0 in starts:
            r = minimize(
                lambda w: -self.f(w),
                w0,
                jac=lambda w: 2.0 * self.a @ (w - self.c),
                bounds=[(0.0, 1.0)] * self.k,
                constraints=cons,
                method="SLSQP",
                options={"ftol": 1e-15, "maxiter": 1000},
            )
            w = np.clip(r.x, 0.0, None)
            best = max(best, self.f(w / w.sum()))
        return best


def run_mixopt(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    tasks = [f"task_{i}" for i in range(problem.k)]
    opt = MixtureOptimizer(tasks, random_state=seed)
    out = []
    for _ in range(budget):
        (p,) = opt.ask(1)
        w = np.array([p[t] for t in tasks])
        y = problem.observe(w)
        opt.tell(p, y)
        out.append((y, problem.f(w)))
    return out


def run_random(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng([seed, 12345])
    out = []
    for _ in range(budget):
        w = rng.dirichlet(np.ones(problem.k))
        out.append((problem.observe(w), problem.f(w)))
    return out


def _run_optuna(
    sampler: optuna.samplers.BaseSampler, problem: Problem, budget: int
) -> list[tuple[float, float]]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for _ in range(budget):
        trial = study.ask()
        # u stays below 1 so that the exponentials never all vanish (all u = 1 would give 0/0).
        e = np.array([-math.log(trial.suggest_float(f"u{i}", 1e-12, 1.0 - 1e-12)) for i in range(problem.k)])
        w = e / e.sum()
        y = problem.observe(w)
        study.tell(trial, y)
        out.append((y, problem.f(w)))
    return out


def run_tpe(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    return _run_optuna(optuna.samplers.TPESampler(seed=seed), problem, budget)


def run_optuna_gp(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    return _run_optuna(optuna.samplers.GPSampler(seed=seed), problem, budget)


RUNNERS: dict[str, Callable[[Problem, int, int], list[tuple[float, float]]]] = {
    "mixopt": run_mixopt,
    "random": run_random,
    "tpe": run_tpe,
    "optuna-gp": run_optuna_gp,
}


def simple_regret(problem: Problem, trace: list[tuple[float, float]], n: int) -> float:
    """``f* - f(w)`` at the first n trials' best observed value."""
    observed, true = zip(*trace[:n])
    if not all(map(math.isfinite, observed + true)):
        raise RuntimeError("a method produced a non-finite objective value; the comparison would be void")
    return max(problem.f_star - true[int(np.argmax(observed))], 0.0)


def latency(n_obs: int = 100, k: int = 17, repeats: int = 11) -> list[float]:
    """Seconds per ``ask(1)`` (GP fit + acquisition) with ``n_obs`` observations of a K-task problem."""
    problem = Problem("interior", k, 0)
    tasks = [f"task_{i}" for i in range(k)]
    opt = MixtureOptimizer(tasks, n_seeds=n_obs, random_state=0)
    for p in opt.ask(n_obs):
        opt.tell(p, problem.f(np.array([p[t] for t in tasks])))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        (p,) = opt.ask(1)
        times.append(time.perf_counter() - t0)
        # Telling invalidates the fitted GP, so every timed ask refits (101, 102, ... observations).
        opt.tell(p, problem.f(np.array([p[t] for t in tasks])))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K in {4, 17}, 3 seeds, budgets 16/32")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10, quick 3)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # the dev box has 2 shared cores; every method gets the same one

    ks = (4, 17) if args.quick else (4, 8, 17)
    budgets = (16, 32) if args.quick else (16, 32, 64)
    n_seeds = args.seeds or (3 if args.quick else 10)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")

    print(f"# mixture optimizer benchmark: K={ks}, budgets={budgets}, {n_seeds} seeds, torch threads=1")
    if not args.no_latency:
        t = latency()
        print(
            f"latency ask(1) at 100 obs x 17 tasks: median {statistics.median(t):.3f} s "
            f"(min {min(t):.3f}, max {max(t):.3f}, {len(t)} asks; target <= 1.5 s)"
        )
    regrets: dict[tuple[str, int, str, int], list[float]] = {}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    for kind in OBJECTIVES:
        for k in ks:
            for seed in range(n_seeds):
                problem = Problem(kind, k, seed)
                for m in methods:
                    problem.noise_rng = np.random.default_rng([k, seed, 99])  # same noise stream per method
                    t0 = time.perf_counter()
                    trace = RUNNERS[m](problem, max(budgets), seed)
                    seconds[m] += time.perf_counter() - t0
                    for b in budgets:
                        regrets.setdefault((kind, k, m, b), []).append(simple_regret(problem, trace, b))
            print(f"  done {kind} K={k}", file=sys.stderr, flush=True)

    print("\nmedian simple regret (lower is better); ratios: mixopt / random, mixopt / better Optuna")
    head = f"{'objective':9} {'K':>3} {'n':>3} " + " ".join(f"{m:>10}" for m in methods)
    has_ratio = "mixopt" in methods and "random" in methods
    optunas = [m for m in ("tpe", "optuna-gp") if m in methods]
    if has_ratio:
        head += f" {'/random':>8}"
    if "mixopt" in methods and optunas:
        head += f" {'/optuna':>8}"
    print(head)
    summary: dict[int, list[tuple[float, float]]] = {}
    for kind in OBJECTIVES:
        for k in ks:
            for b in budgets:
                med = {m: statistics.median(regrets[(kind, k, m, b)]) for m in methods}
                line = f"{kind:9} {k:>3} {b:>3} " + " ".join(f"{med[m]:>10.2e}" for m in methods)
                r_rand = r_opt = math.nan
                if has_ratio:
                    r_rand = med["mixopt"] / med["random"] if med["random"] > 0 else math.nan
                    line += f" {r_rand:>8.2f}"
                if "mixopt" in methods and optunas:
                    best_opt = min(med[m] for m in optunas)
                    r_opt = med["mixopt"] / best_opt if best_opt > 0 else math.nan
                    line += f" {r_opt:>8.2f}"
                summary.setdefault(b, []).append((r_rand, r_opt))
                print(line)
    print()
    for b, rows in summary.items():
        rr = [r for r, _ in rows if not math.isnan(r)]
        ro = [o for _, o in rows if not math.isnan(o)]
        if rr:
            print(
                f"budget {b}: mixopt/random median regret ratio: median {statistics.median(rr):.2f}, "
                f"worst {max(rr):.2f} over {len(rr)} settings"
                + (
                    f"; mixopt/better-Optuna: median {statistics.median(ro):.2f}, worst {max(ro):.2f}, "
                    f"<= 1 in {sum(o <= 1 for o in ro)}/{len(ro)}"
                    if ro
                    else ""
                )
            )
    print("wall time per method (s): " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))


if __name__ == "__main__":
    main()
