"""Does the per-task (composite) model beat the single GP? Composite objectives for the mixture optimizer.

    .venv/bin/python bench/composite.py --cache /tmp/comp              # K in {3, 17}, 10 seeds, 32 trials
    .venv/bin/python bench/composite.py --cache /tmp/comp --methods optuna-gp,botorch-ucb   # the GP peers
    .venv/bin/python bench/composite.py --cache /tmp/comp --methods mixopt-composite --label variant
    .venv/bin/python bench/composite.py --cache /tmp/comp --compare mixopt-single,mixopt-composite,variant
    .venv/bin/python bench/composite.py --cache /tmp/comp --compare mixopt-single,mixopt-composite --per-seed
    .venv/bin/python bench/composite.py --latency                      # ask at 100 observations x 17 tasks
    .venv/bin/python bench/composite.py --warm --seeds 10              # warm start with a task removed
    .venv/bin/python bench/composite.py --landscape results.json       # bench/landscape.py --json, replayed

Every trial measures one score per task; the objective is their mean. Each task's score is a
saturating law of the mixture, monotone in the task's own weight, with transfer between tasks:

    s_i(w) = base_i + gain_i * (1 - exp(-rate_i * z_i(w))),   z_i(w) = w_i + sum_{j != i} T_ij w_j

``T_ij > 0``: task j's data helps task i (positive transfer); ``T_ij < 0``: it hurts (interference).
Each ``s_i`` is concave in ``w`` (a concave increasing function of a linear one), so the mean is
concave too and SLSQP from many starts finds its maximum ``f*`` on the simplex.

- ``interior``: every task saturates fast (``rate`` log-uniform in [2, 8]), scores of different
  scales (``base`` in [0.1, 0.6], ``gain`` in [0.15, 0.5]); a quarter of the pairs transfer
  (``T`` in [0.1, 0.5]), 15 % interfere (``T`` in [-0.3, -0.05]). The optimum spreads the data
  (over every task at K = 3, about half of them at K = 17).
- ``sparse``: a sixth of the tasks (at least one) are hubs whose data helps every other task
  (``T`` in [0.4, 0.9]); the rest learn slowly from their own data (``rate`` in [0.5, 1.5], gain in
  [0.1, 0.3]) and 30 % of their pairs interfere. The optimum puts most tasks at weight 0.
- ``mixed``: the real landscape's shape (bench/RESULTS.md, "Mixture landscape"): tasks near their
  ceiling beside slow ones (``rate`` log-uniform in [0.5, 20], ``gain`` in [0.05, 0.6]), transfer and
  interference as ``interior``. Optima on faces or inside.

Trial noise: each score gets Gaussian noise of sd 10 % of its spread over random mixtures; the
optimizer sees the noisy scores (``mixopt-*``) or their mean (the peers); regret is measured on the
noise-free mean.

Methods, each given the same 32 trials (ask one, tell one), the same seeds and the same noise stream:

- ``mixopt-single``: ``MixtureOptimizer(tasks, surrogate="single", budget=32)`` told the scores: one
  GP on the composed objective (the model before issue 34).
- ``mixopt-composite``: the same with ``surrogate="composite"``: one GP per score, composed.
- ``optuna-gp`` / ``botorch-ucb``: the peers of bench/optimizer.py, told only the objective.

Simple regret at n trials: ``f* - f(w)`` at the trial with the best *observed* objective (the rule of
bench/optimizer.py, its ``TIE`` included). The table prints per objective each method's median and
worst seed, the ratio of each mixopt label's median to the first label's (``--compare`` order), and
on how many seeds it is better / worse. The issue's target: composite <= 0.5x single in median, and
worse on no objective.

``--warm``: a source sweep of 32 trials on K tasks (composite, scores told); a new problem with the
last task removed (its score leaves the objective, its weight is 0, the other laws unchanged); a
composite optimizer on the K - 1 tasks warm-started from the source's state, 8 new trials, against a
cold start's 32 (the target: warm <= cold in median).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimizer import (  # noqa: E402  (bench/optimizer.py: the peers, the cache and the regret rule)
    TIE,
    _load_cache,
    _ratio,
    _save_cache,
    run_botorch_ucb,
    run_optuna_gp,
    simple_regret,
)

from mixopt.optimizer import MixtureOptimizer  # noqa: E402

KINDS = ("interior", "sparse", "mixed")
KS = (3, 17)
BUDGET = 32
METHODS = ("mixopt-single", "mixopt-composite", "optuna-gp", "botorch-ucb")
NOISE_FRACTION = 0.10
# SLSQP starts for f*: the centre and this many Dirichlet(0.3) draws (sparse ones, near the faces).
OPTIMUM_STARTS = 40


class CompositeProblem:
    """K per-task score laws on the simplex and their (weighted) mean, with its optimum.

    ``removed``: tasks held at weight 0 whose scores leave the objective (the warm-start case): the
    mixture is over the others, the laws of the others unchanged. ``lower``/``upper``: the weight
    bounds every method is given (the plain simplex: 0 and 1).
    """

    def __init__(self, kind: str, k: int, seed: int, removed: tuple[int, ...] = ()) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown composite objective {kind!r}; choose from {KINDS}")
        rng = np.random.default_rng([k, seed, 34, KINDS.index(kind)])
        self.kind, self.n_tasks = kind, k
        self.keep = np.array([i for i in range(k) if i not in removed])
        self.k = len(self.keep)
        self.lower, self.upper = np.zeros(self.k), np.ones(self.k)
        self.base, self.gain, self.rate, self.transfer = _laws(rng, kind, k)
        self.weights = np.full(self.k, 1.0 / self.k)
        self.f_star, self.w_star = self._optimum()
        spread = np.std([self.scores(w) for w in rng.dirichlet(np.ones(self.k), 256)], axis=0)
        self.noise_sd = NOISE_FRACTION * spread
        self.noise_rng = np.random.default_rng([k, seed, 99])

    @property
    def tasks(self) -> list[str]:
        return [f"task_{i}" for i in self.keep]

    def full(self, w: np.ndarray) -> np.ndarray:
        """The mixture over all K tasks (removed ones at 0)."""
        out = np.zeros(self.n_tasks)
        out[self.keep] = w
        return out

    def scores(self, w: np.ndarray) -> np.ndarray:
        """Noise-free scores of the kept tasks at mixture ``w`` (over the kept tasks)."""
        z = self.transfer @ self.full(np.asarray(w, dtype=float))
        s = self.base + self.gain * (1.0 - np.exp(-self.rate * z))
        return s[self.keep]

    def f(self, w: np.ndarray) -> float:
        return float(self.weights @ self.scores(w))

    def grad(self, w: np.ndarray) -> np.ndarray:
        z = self.transfer @ self.full(np.asarray(w, dtype=float))
        ds = (self.gain * self.rate * np.exp(-self.rate * z))[self.keep]  # d s_i / d z_i
        return (self.weights * ds) @ self.transfer[np.ix_(self.keep, self.keep)]

    def observe_scores(self, w: np.ndarray) -> np.ndarray:
        return self.scores(w) + self.noise_rng.normal(0.0, 1.0, self.k) * self.noise_sd

    def observe(self, w: np.ndarray) -> float:
        """The noisy objective, for methods that see only it (the same noise draws as the scores)."""
        return float(self.weights @ self.observe_scores(w))

    def bounds(self, tasks: list[str]) -> None:
        return None

    def _optimum(self) -> tuple[float, np.ndarray]:
        """Max of the (concave) mean on the simplex: SLSQP from the centre and Dirichlet starts."""
        rng = np.random.default_rng(0)
        starts = [np.full(self.k, 1.0 / self.k)] + list(rng.dirichlet(np.full(self.k, 0.3), OPTIMUM_STARTS))
        cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
        best, arg = -math.inf, starts[0]
        for w0 in starts:
            r = minimize(
                lambda w: -self.f(w),
                w0,
                jac=lambda w: -self.grad(w),
                bounds=[(0.0, 1.0)] * self.k,
                constraints=cons,
                method="SLSQP",
                options={"ftol": 1e-15, "maxiter": 1000},
            )
            w = np.clip(r.x, 0.0, 1.0)
            w /= w.sum()
            if self.f(w) > best:
                best, arg = self.f(w), w
        return best, arg


def _laws(rng: np.random.Generator, kind: str, k: int) -> tuple[np.ndarray, ...]:
    """``(base, gain, rate, M)`` with ``M = I + T`` so that ``z = M w`` (see the module docstring)."""
    off = ~np.eye(k, dtype=bool)
    t = np.zeros((k, k))
    if kind == "sparse":
        hubs = rng.choice(k, size=max(1, round(k / 6)), replace=False)
        is_hub = np.zeros(k, dtype=bool)
        is_hub[hubs] = True
        base = rng.uniform(0.1, 0.5, k)
        gain = np.where(is_hub, rng.uniform(0.2, 0.5, k), rng.uniform(0.1, 0.3, k))
        rate = np.where(is_hub, np.exp(rng.uniform(math.log(2), math.log(8), k)), rng.uniform(0.5, 1.5, k))
        interfere = (rng.random((k, k)) < 0.3) & off & ~is_hub[None, :]
        t[interfere] = rng.uniform(-0.4, -0.1, int(interfere.sum()))
        t[:, hubs] = rng.uniform(0.4, 0.9, (k, len(hubs)))
    else:
        base = rng.uniform(0.1, 0.6, k)
        if kind == "interior":
            gain = rng.uniform(0.15, 0.5, k)
            rate = np.exp(rng.uniform(math.log(2), math.log(8), k))
        else:
            gain = rng.uniform(0.05, 0.6, k)
            rate = np.exp(rng.uniform(math.log(0.5), math.log(20), k))
        u = rng.random((k, k))
        helps, hurts = (u < 0.25) & off, (u >= 0.25) & (u < 0.4) & off
        t[helps] = rng.uniform(0.1, 0.5, int(helps.sum()))
        t[hurts] = rng.uniform(-0.3, -0.05, int(hurts.sum()))
    t[np.arange(k), np.arange(k)] = 0.0
    return base, gain, rate, np.eye(k) + t


def run_mixopt(
    problem: CompositeProblem, budget: int, seed: int, surrogate: str, warm: dict | None = None
) -> tuple[list[tuple[float, float]], MixtureOptimizer]:
    """``budget`` trials of mixopt told the per-task scores; the trace is (observed objective, true f)."""
    tasks = problem.tasks
    opt = MixtureOptimizer(tasks, random_state=seed, budget=budget, surrogate=surrogate)
    if warm is not None:
        opt.warm_start(warm, name="source")
    out = []
    for _ in range(budget):
        (p,) = opt.ask(1)
        w = np.array([p[t] for t in tasks])
        s = problem.observe_scores(w)
        opt.tell(p, scores=dict(zip(tasks, map(float, s))))
        out.append((float(problem.weights @ s), problem.f(w)))
    return out, opt


RUNNERS: dict[str, Callable[[CompositeProblem, int, int], list[tuple[float, float]]]] = {
    "mixopt-single": lambda pr, b, s: run_mixopt(pr, b, s, "single")[0],
    "mixopt-composite": lambda pr, b, s: run_mixopt(pr, b, s, "composite")[0],
    "optuna-gp": run_optuna_gp,  # type: ignore[dict-item]
    "botorch-ucb": run_botorch_ucb,  # type: ignore[dict-item]
}


def _runner(method: str) -> Callable[[CompositeProblem, int, int], list[tuple[float, float]]]:
    """A method by name; a ``--label`` other than a method's name is a variant of mixopt-composite."""
    return RUNNERS.get(method, RUNNERS["mixopt-composite"])


def report(
    traces: dict[str, list[list[float]]],
    labels: list[str],
    kinds: tuple[str, ...],
    ks: tuple[int, ...],
    seeds: range,
    per_seed: bool = False,
    budget: int = BUDGET,
) -> list[float]:
    """Per objective: each label's median and worst-seed regret at ``budget``; for every label after
    the first, its median / the first label's median and the seeds it is better / worse on. Only the
    seeds every label has are used. Returns the ratios of the second label to the first."""
    print(f"\nsimple regret at {budget} trials (median, worst seed); ratio: median / {labels[0]}'s median")
    head = f"{'objective':9} {'K':>3} {'seeds':>5}" + "".join(
        f" | {lab[:20]:>20}" if i == 0 else f" | {lab[:33]:>33}" for i, lab in enumerate(labels)
    )
    print(head)
    print(
        f"{'':19}"
        + "".join(
            f" | {'median    worst':>20}" if i == 0 else f" | {'median    worst  ratio  bet/wor':>33}"
            for i in range(len(labels))
        )
    )
    ratios: list[float] = []
    for kind in kinds:
        for k in ks:
            have = [s for s in seeds if all(f"{kind}|{k}|{lab}|{s}|{budget}" in traces for lab in labels)]
            if not have:
                continue
            problems = {s: CompositeProblem(kind, k, s) for s in have}
            reg = {
                lab: [
                    simple_regret(problems[s], traces[f"{kind}|{k}|{lab}|{s}|{budget}"], budget) for s in have
                ]  # type: ignore[arg-type]
                for lab in labels
            }
            base = statistics.median(reg[labels[0]])
            line = f"{kind:9} {k:>3} {len(have):>5}"
            for i, lab in enumerate(labels):
                med, worst = statistics.median(reg[lab]), max(reg[lab])
                line += f" | {med:>9.2e} {worst:>9.2e}"
                if i:
                    r = _ratio(med, base)
                    if i == 1:
                        ratios.append(r)
                    better = sum(a < b for a, b in zip(reg[lab], reg[labels[0]]))
                    worse = sum(a > b for a, b in zip(reg[lab], reg[labels[0]]))
                    line += f" {r:>6.2f} {better:>4}/{worse:<4}"
            print(line)
            if per_seed:
                print(f"{'':4}{'seed':>20}  " + " ".join(f"{s:>8}" for s in have))
                for lab, values in reg.items():
                    print(f"{'':4}{lab[:20]:>20}  " + " ".join(f"{v:>8.1e}" for v in values))
    if ratios:
        print(
            f"{labels[1]} / {labels[0]} median-regret ratio over {len(ratios)} objectives: median "
            f"{statistics.median(ratios):.2f}, worst {max(ratios):.2f}; <= 0.5 in "
            f"{sum(r <= 0.5 for r in ratios)}, <= 1 in {sum(r <= 1 for r in ratios)}"
            + (" (target: median <= 0.5, none above 1)" if labels[0] == "mixopt-single" else "")
        )
    return ratios


def latency(surrogate: str, n_obs: int = 100, k: int = 17, repeats: int = 11) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per ``ask(1)`` (fit + acquisition) with ``n_obs`` trials' scores of a
    K-task problem. The ask runs on one thread, so its CPU time is what an unloaded core would take."""
    problem = CompositeProblem("interior", k, 0)
    tasks = problem.tasks
    opt = MixtureOptimizer(tasks, n_seeds=n_obs, random_state=0, surrogate=surrogate)

    def tell(p: dict) -> None:
        opt.tell(
            p, scores=dict(zip(tasks, map(float, problem.observe_scores(np.array([p[t] for t in tasks])))))
        )

    for p in opt.ask(n_obs):
        tell(p)
    times = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        (p,) = opt.ask(1)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
        tell(p)  # a tell invalidates the fit: every timed ask refits (101, 102, ... trials)
    return times


def _regret(problem: CompositeProblem, opt: MixtureOptimizer, answer: str) -> float:
    """Regret of a run's answer: its best observed trial (reused ones included) or its recommend()."""
    p = opt.recommend().proposal if answer == "recommend" else opt.best()[0]  # type: ignore[union-attr,index]
    regret = problem.f_star - problem.f(np.array([p[t] for t in problem.tasks]))
    return regret if regret > TIE else 0.0


def warm_bench(
    kinds: tuple[str, ...],
    k: int,
    seeds: range,
    surrogate: str = "composite",
    answer: str = "best",
    source_trials: int = BUDGET,
    new_trials: int = 8,
) -> None:
    """Warm start with the last task removed vs a cold start (see the module docstring)."""
    print(
        f"\nwarm start, task removed: {source_trials}-trial source on K={k}, {new_trials} new trials on "
        f"K={k - 1} vs cold {source_trials}; {surrogate}; answer: {answer}"
    )
    print(f"{'objective':9} {'cold':>10} {'warm':>10} {'warm/cold':>9}  (medians over {len(seeds)} seeds)")
    for kind in kinds:
        pairs = []
        for seed in seeds:
            source = CompositeProblem(kind, k, seed)
            target = CompositeProblem(kind, k, seed, removed=(k - 1,))
            _, src = run_mixopt(source, source_trials, seed + 1000, surrogate)
            _, cold = run_mixopt(target, source_trials, seed, surrogate)
            target.noise_rng = np.random.default_rng([k, seed, 99])  # the cold run's noise stream
            _, warm = run_mixopt(target, new_trials, seed, surrogate, warm=src.state_dict())
            pairs.append((_regret(target, cold, answer), _regret(target, warm, answer)))
            print(
                f"  warm {kind} seed {seed}: cold {pairs[-1][0]:.2e}, warm {pairs[-1][1]:.2e} "
                f"(reused {warm.warm_source['reused']}, dropped {warm.warm_source['dropped']})",
                file=sys.stderr,
                flush=True,
            )
        c, w = statistics.median(r for r, _ in pairs), statistics.median(r for _, r in pairs)
        lower = sum(w_ <= c_ for c_, w_ in pairs)
        print(
            f"{kind:9} {c:>10.2e} {w:>10.2e} {_ratio(w, c):>9.2f}  (warm <= cold on {lower} of {len(pairs)} seeds)"
        )


class LandscapeProblem(CompositeProblem):
    """The tiny experiment's measured landscape as a lookup table: the per-task scores of
    ``bench/landscape.py --json`` averaged over seeds per mixture; a mixture scores as the nearest
    measured one, with Gaussian noise of each task's pooled seed sd. ``f*``: the best table mean."""

    def __init__(self, results: list[dict], seed: int) -> None:
        names = list(results[0]["scores"])
        by_mix: dict[tuple[float, ...], list[list[float]]] = {}
        for r in results:
            by_mix.setdefault(tuple(r["weights"]), []).append([r["scores"][n] for n in names])
        self.kind, self.n_tasks = "landscape", len(results[0]["weights"])
        self.k = self.n_tasks
        self.keep = np.arange(self.k)
        self.lower, self.upper = np.zeros(self.k), np.ones(self.k)
        self.points = np.array(list(by_mix))
        self.table = np.array([np.mean(v, axis=0) for v in by_mix.values()])
        within = [np.var(v, axis=0, ddof=1) for v in by_mix.values() if len(v) > 1]
        if not within:
            raise SystemExit(
                "--landscape: every mixture has one seed; the replay needs the seed noise (--seeds >= 2)"
            )
        self.noise_sd = np.sqrt(np.mean(within, axis=0))
        self.weights = np.full(self.k, 1.0 / self.k)
        self.f_star = float((self.table @ self.weights).max())
        self.w_star = self.points[int(np.argmax(self.table @ self.weights))]
        self.noise_rng = np.random.default_rng([self.k, seed, 99])

    def scores(self, w: np.ndarray) -> np.ndarray:
        return self.table[int(np.argmin(((self.points - np.asarray(w)) ** 2).sum(1)))]


def landscape_bench(path: Path, seeds: range, methods: list[str]) -> None:
    """Replay ``methods`` on the measured landscape (``bench/landscape.py --json`` output)."""
    results = json.loads(path.read_text())
    regrets: dict[str, list[float]] = {m: [] for m in methods}
    for seed in seeds:
        problem = LandscapeProblem(results, seed)
        for m in methods:
            problem.noise_rng = np.random.default_rng([problem.k, seed, 99])
            regrets[m].append(simple_regret(problem, _runner(m)(problem, BUDGET, seed), BUDGET))  # type: ignore[arg-type]
    print(
        f"\nmeasured landscape ({path}, {len(problem.points)} mixtures): regret at {BUDGET} trials over {len(seeds)} seeds"
    )
    for m in methods:
        print(f"{m:>18}: median {statistics.median(regrets[m]):.2e}, worst {max(regrets[m]):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", default=None, help=f"comma-separated subset of {KINDS}")
    parser.add_argument("--k", default=None, help=f"comma-separated subset of {KS}")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {METHODS}")
    parser.add_argument(
        "--cache", type=Path, default=None, help="folder of traces (one JSON per method or label)"
    )
    parser.add_argument(
        "--label",
        default=None,
        help="with --cache: write mixopt-composite's traces under this name (a variant, paired by --compare)",
    )
    parser.add_argument(
        "--compare", default=None, metavar="BASE,NEW[,...]", help="with --cache: no runs; pair cached traces"
    )
    parser.add_argument(
        "--per-seed", action="store_true", help="with --compare: every label's regret per seed"
    )
    parser.add_argument(
        "--latency", action="store_true", help="only the ask latency at 100 trials x 17 tasks"
    )
    parser.add_argument("--warm", action="store_true", help="only the warm start with a task removed (K=17)")
    parser.add_argument(
        "--surrogate", choices=("composite", "single"), default="composite", help="--warm's model"
    )
    parser.add_argument("--answer", choices=("best", "recommend"), default="best", help="--warm's answer")
    parser.add_argument(
        "--landscape", type=Path, default=None, help="replay on bench/landscape.py --json output"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # the dev box has 2 shared cores; every method gets the same one
    kinds = tuple(o.strip() for o in (args.objectives or ",".join(KINDS)).split(",") if o.strip())
    if set(kinds) - set(KINDS):
        parser.error(f"unknown objective(s) {sorted(set(kinds) - set(KINDS))}; choose from {KINDS}")
    try:
        ks = tuple(int(x) for x in (args.k or ",".join(map(str, KS))).split(","))
    except ValueError:
        parser.error(f"--k {args.k!r}: comma-separated integers, e.g. 3,17")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    methods = [m.strip() for m in (args.methods or "mixopt-single,mixopt-composite").split(",") if m.strip()]
    if set(methods) - set(METHODS):
        parser.error(f"unknown method(s) {sorted(set(methods) - set(METHODS))}; choose from {METHODS}")

    if args.latency:
        for surrogate in ("composite", "single"):
            wall, cpu = zip(*latency(surrogate))
            print(
                f"latency ask(1) at 100 trials x 17 task scores, {surrogate}: median {statistics.median(wall):.3f} s "
                f"wall (min {min(wall):.3f}, max {max(wall):.3f}), {statistics.median(cpu):.3f} s CPU; "
                f"{len(wall)} asks; target <= 1.5 s; load average {os.getloadavg()[0]:.1f}"
            )
        return
    if args.warm:
        warm_bench(kinds, max(ks), seeds, surrogate=args.surrogate, answer=args.answer)
        return
    if args.landscape:
        landscape_bench(args.landscape, seeds, methods)
        return
    if args.compare:
        if args.cache is None:
            parser.error("--compare reads the traces in a --cache folder")
        labels = [x.strip() for x in args.compare.split(",") if x.strip()]
        missing = [lab for lab in labels if not (args.cache / f"{lab}.json").exists()]
        if len(labels) < 2 or missing:
            parser.error(
                f"--compare needs two or more labels with traces in {args.cache}; missing: {missing}"
            )
        report(_load_cache(args.cache, labels), labels, kinds, ks, seeds, per_seed=args.per_seed)
        return
    if args.per_seed:
        parser.error("--per-seed goes with --compare")
    if args.label is not None and (
        args.label in METHODS or not args.label.replace("-", "").replace("_", "").isalnum()
    ):
        parser.error(
            f"--label {args.label!r}: letters, digits, _ and - only, and not a method's name {METHODS}"
        )

    names = [args.label if (m == "mixopt-composite" and args.label) else m for m in methods]
    cache = _load_cache(args.cache, names)
    print(
        f"# composite benchmark: objectives={kinds}, K={ks}, {BUDGET} trials, {len(seeds)} seeds, torch threads=1"
    )
    seconds = dict.fromkeys(names, 0.0)
    for seed in seeds:  # seed-major: an interrupted run has covered every objective equally
        for kind in kinds:
            for k in ks:
                problem = CompositeProblem(kind, k, seed)
                for name in names:
                    key = f"{kind}|{k}|{name}|{seed}|{BUDGET}"
                    if name.startswith("mixopt") or name not in METHODS or key not in cache:
                        problem.noise_rng = np.random.default_rng([k, seed, 99])  # one noise stream for all
                        t0 = time.perf_counter()
                        cache[key] = [list(ab) for ab in _runner(name)(problem, BUDGET, seed)]
                        seconds[name] += time.perf_counter() - t0
                        _save_cache(args.cache, name, cache)
                print(f"  done seed {seed} {kind} K={k}", file=sys.stderr, flush=True)
    report(cache, names, kinds, ks, seeds)
    print(
        "wall time per method (s, this run; cached peers not counted): "
        + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items())
    )


if __name__ == "__main__":
    main()
