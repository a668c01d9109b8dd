"""Benchmark the mixture optimizer against random Dirichlet search, Optuna and plain BoTorch, in one run.

    .venv/bin/python bench/optimizer.py            # full: K in {4, 8, 17}, 10 seeds, budgets 16/32/64
    .venv/bin/python bench/optimizer.py --quick    # a smoke run: K in {4, 17}, 3 seeds, budgets 16/32
    .venv/bin/python bench/optimizer.py --suite boundary --cache /tmp/peers   # sparse/capped optima, K=17
    .venv/bin/python bench/optimizer.py --suite k17 --cache /tmp/peers        # every objective at K=17, GP peers
    .venv/bin/python bench/optimizer.py --warm --objectives lawA,lawB --seeds 3  # warm vs cold start
    # two versions of the optimizer paired seed by seed on the same peer traces: each run with its
    # own --label (the second from a checkout of the variant; bench/ imports its own checkout's mixopt)
    .venv/bin/python bench/optimizer.py --suite k17 --budgets 32 --no-latency --cache /tmp/peers --label base
    (cd ../variant && .venv/bin/python bench/optimizer.py --suite k17 --budgets 32 --no-latency \
        --cache /tmp/peers --label variant --methods mixopt)
    .venv/bin/python bench/optimizer.py --suite k17 --budgets 32 --cache /tmp/peers --compare base,variant
    # ... and every seed's regret, '*' above the better peer's median (the worst-seed target)
    .venv/bin/python bench/optimizer.py --suite k17 --budgets 32 --cache /tmp/peers --compare base,variant --per-seed

Objectives live on the probability simplex of K task weights; all are maximised.

- ``interior``: ``f(w) = -(w - c)^T A (w - c)`` with ``c ~ Dirichlet(3)`` inside the simplex and
  ``A = Q diag(lam) Q^T``, ``lam`` log-uniform in [1, 10] (tasks interact; the bowl is tilted).
  The optimum is ``c``.
- ``face``: the same bowl with its centre pushed outside the simplex: a quarter of the tasks
  (at least one) are harmful, ``c_k = -0.1``, which puts the optimum on a face of the simplex
  (some weights exactly 0) in most instances (8 of the first 9 checked by projected gradient).
- ``noisy``: ``interior`` observed with Gaussian noise of sd 10% of f's spread over random
  mixtures; regret is measured on the noiseless f.

The ``boundary`` suite (K = 17, budgets 16/32) has its optima on the boundary of the polytope:

- ``sparse1`` / ``sparse2``: the bowl with centre ``0.9 e_a + 0.1 e_b`` / ``0.5 e_a + 0.4 e_b +
  0.1 e_c`` and every other task at -0.05 (mildly harmful): one or two dominant tasks, most
  weights exactly 0 at the optimum.
- ``capped``: a concentrated bowl (centre ~ Dirichlet(0.5)) under per-task caps drawn in
  [0.05, 0.6], the three largest centre weights capped below themselves: weights at their maximum.
- ``lawA`` / ``lawB``: data-mixing laws (Ye et al., arXiv:2403.16952), per-domain losses
  ``L_i(w) = c_i + k_i exp(sum_j t_ij w_j)``; target A maximises ``-L_0`` (caps in [0.05, 0.6],
  0.9 for domain 0: the optimum is a vertex of the capped polytope, domain 0 at 0.9), target B
  ``-mean_i L_i`` under caps in [0.05, 0.6].

Every method is given the bounds: mixopt and plain BoTorch search the capped polytope directly;
Optuna's samplers reach it through :func:`mixopt.space.share_capped` (the map mixopt's own seeds use).

The ``k17`` suite is every objective above at K = 17 (budgets 16/32) against both GP peers: the
setting of the issue's target (median regret at 32 trials <= 0.5x the better GP peer, worst seed
no worse than that peer's median).

Simple regret after n trials: ``f* - f(w_rec)`` with ``w_rec`` the trial with the best *observed*
value (the same rule for every method), ``f*`` found by SLSQP on the (convex) problem. Regrets
below ``TIE`` (1e-9: ``f*`` itself is only that exact) count as 0, so two methods that both hit
the optimum tie (ratio 1) instead of dividing rounding errors.

Methods, each given the same trial budget, sequentially (ask one, tell one):

- ``mixopt``: ``MixtureOptimizer(tasks, random_state=seed, budget=n)`` with its defaults (7
  Dirichlet seeds, ``--n-seeds``; then GP-UCB with beta=2, the last 2 of the ``n`` trials
  maximising the posterior mean), as a sweep of ``max_trials: n`` runs it: one run per budget
  ``n`` (the peers, which do not use their budget, are run once, at the largest, and scored on
  its prefixes).
- ``random``: uniform Dirichlet(1) mixtures.
- ``tpe`` / ``optuna-gp``: Optuna's TPESampler / GPSampler (defaults, 10 startup trials) on
  ``u_k in (0, 1)``, mapped to the simplex by normalised exponentials ``w_k = -log u_k / sum_j -log u_j``
  (uniform ``u`` gives a uniform Dirichlet(1) mixture), then onto the caps by ``share_capped``.
- ``botorch-ucb``: plain BoTorch, ``SingleTaskGP`` defaults + ``UpperConfidenceBound`` maximised
  by ``optimize_acqf`` on the bounded simplex (see :func:`run_botorch_ucb`).

``--cache DIR`` keeps the peers' traces (one JSON per method), so a rerun after a change to
mixopt only reruns mixopt on the same seeds. mixopt's traces go to ``DIR/LABEL.json``
(``--label``, default ``mixopt``); ``--compare BASE,NEW`` pairs two labels seed by seed without
running anything (the way an optimizer change is judged before it is kept, bench/JOURNAL.md: a
change must win on paired seeds, and a 10-seed median moves by chance, see ``--acq-stream``).

It also measures suggestion latency (GP fit + acquisition for one ``ask``) at 100 observations
and 17 tasks, the issue's target being a median <= 1.5 s on the 2-core dev box.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.optimizer import MixtureOptimizer  # noqa: E402
from mixopt.optimizer.seeding import RandomStreams  # noqa: E402
from mixopt.space import bounded_dirichlet, project_capped_simplex, share_capped  # noqa: E402

OBJECTIVES = ("interior", "face", "noisy")
# Optima on the boundary of the (capped) simplex, K = 17 only (see the module docstring).
BOUNDARY = ("sparse1", "sparse2", "capped", "lawA", "lawB")
ALL_OBJECTIVES = OBJECTIVES + BOUNDARY
METHODS = ("mixopt", "random", "tpe", "optuna-gp", "botorch-ucb")
NOISE_FRACTION = 0.10
# Per-task caps of the capped objectives: between 5 % and 60 % of the data, as the issue asks.
CAP_RANGE = (0.05, 0.6)
# Plain BoTorch UCB's acquisition search: random starts, SLSQP restarts from the best of them.
RAW_SAMPLES = 512
NUM_RESTARTS = 5
# --acq-stream: 0 is mixopt itself; n > 0 draws its acquisition candidates from another stream.
ACQ_STREAM = 0
# The random choices an acquisition stream redraws: UCB's random starts and the posterior-mean search's.
ACQUISITION_TAGS = ("acq", "recommend")
# --n-seeds: mixopt's seed phase (None: MixtureOptimizer's default); earlier tables name theirs.
N_SEEDS: int | None = None
# Regrets below this are rounding (f* by SLSQP at ftol 1e-15, f evaluated in float64): counted as 0.
TIE = 1e-9


class Problem:
    """One synthetic objective on the (capped) K-simplex, with its optimum.

    ``lower``/``upper``: the weight bounds every method is given (0 and 1 unless capped).
    """

    def __init__(self, kind: str, k: int, seed: int) -> None:
        rng = np.random.default_rng([k, seed, ALL_OBJECTIVES.index(kind)])
        self.kind, self.k = kind, k
        self.lower, self.upper = np.zeros(k), np.ones(k)
        self.law: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        q, _ = np.linalg.qr(rng.normal(size=(k, k)))
        lam = np.exp(rng.uniform(0.0, math.log(10.0), size=k))
        self.a = (q * lam) @ q.T
        self.c = rng.dirichlet(np.full(k, 3.0))
        if kind == "face":
            harmful = rng.choice(k, size=max(1, k // 4), replace=False)
            self.c[harmful] = -0.1
        elif kind in ("sparse1", "sparse2"):
            # Every other task is mildly harmful, so the optimum has most weights exactly 0.
            top = rng.choice(k, size=3, replace=False)
            self.c = np.full(k, -0.05)
            self.c[top] = (0.9, 0.1, -0.05) if kind == "sparse1" else (0.5, 0.4, 0.1)
        elif kind == "capped":
            # A concentrated centre whose three largest weights exceed their caps, so the optimum
            # has weights at their upper bounds.
            self.c = rng.dirichlet(np.full(k, 0.5))
            self.upper = rng.uniform(*CAP_RANGE, size=k)
            top = np.argsort(-self.c)[:3]
            self.upper[top] = np.maximum(CAP_RANGE[0], 0.6 * self.c[top])
        elif kind in ("lawA", "lawB"):
            self.law = self._mixing_law(rng, k)
            self.upper = rng.uniform(*CAP_RANGE, size=k)
            if kind == "lawA":
                # The target domain may take most of the data (as in the target A).
                self.upper[0] = 0.9
        self.f_star = self._optimum()
        spread = np.std([self.f(w) for w in rng.dirichlet(np.ones(k), 256)])
        self.noise_sd = NOISE_FRACTION * float(spread) if kind == "noisy" else 0.0
        self.noise_rng = np.random.default_rng([k, seed, 99])

    @staticmethod
    def _mixing_law(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-domain losses ``L_i(w) = c_i + k_i exp(sum_j t_ij w_j)`` (Ye et al., arXiv:2403.16952).

        A domain's own data helps most (``t_ii`` in [-3, -1]); a fifth of the other pairs help
        (``t_ij`` in [-1.5, -0.3]), the rest barely interact (``t_ij`` in [-0.2, 0.2]).
        """
        c = rng.uniform(1.0, 3.0, size=k)
        scale = rng.uniform(0.5, 1.5, size=k)
        t = rng.uniform(-0.2, 0.2, size=(k, k))
        helps = rng.random((k, k)) < 0.2
        t[helps] = rng.uniform(-1.5, -0.3, size=int(helps.sum()))
        t[np.arange(k), np.arange(k)] = rng.uniform(-3.0, -1.0, size=k)
        return c, scale, t

    def losses(self, w: np.ndarray) -> np.ndarray:
        c, scale, t = self.law  # type: ignore[misc]
        return c + scale * np.exp(t @ w)

    def f(self, w: np.ndarray) -> float:
        w = np.asarray(w)
        if self.law is not None:
            # Target A: minus the first domain's loss; target B: minus the mean loss.
            return -float(self.losses(w)[0] if self.kind == "lawA" else self.losses(w).mean())
        d = w - self.c
        return -float(d @ self.a @ d)

    def grad(self, w: np.ndarray) -> np.ndarray:
        if self.law is not None:
            _, scale, t = self.law
            e = scale * np.exp(t @ w)
            return -(e[0] * t[0] if self.kind == "lawA" else (e[:, None] * t).mean(0))
        return -2.0 * self.a @ (np.asarray(w) - self.c)

    def observe(self, w: np.ndarray) -> float:
        return self.f(w) + (self.noise_rng.normal(0.0, self.noise_sd) if self.noise_sd else 0.0)

    def _optimum(self) -> float:
        """Max of f on the bounded simplex by SLSQP (every objective here is concave)."""
        best = -math.inf
        lo, hi = self.lower, self.upper
        cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
        rng = np.random.default_rng(0)
        starts = [project_capped_simplex(np.full(self.k, 1.0 / self.k), lo, hi)] + [
            bounded_dirichlet(rng, np.ones(self.k), lo, hi) for _ in range(4)
        ]
        for w0 in starts:
            r = minimize(
                lambda w: -self.f(w),
                w0,
                jac=lambda w: -self.grad(w),
                bounds=list(zip(lo, hi)),
                constraints=cons,
                method="SLSQP",
                options={"ftol": 1e-15, "maxiter": 1000},
            )
            best = max(best, self.f(project_capped_simplex(r.x, lo, hi)))
        return best

    def bounds(self, tasks: list[str]) -> dict[str, tuple[float, float]] | None:
        capped = {t: (float(a), float(b)) for t, a, b in zip(tasks, self.lower, self.upper) if b < 1.0}
        return capped or None


class AcquisitionStream(RandomStreams):
    """mixopt's random streams with the acquisition's choices (:data:`ACQUISITION_TAGS`) drawn from
    stream ``n`` (``n`` appended to their key): the same seeds, GP and tells, other draws."""

    def __init__(self, random_state: int, n: int) -> None:
        if n < 1:
            raise ValueError(f"an acquisition stream is n >= 1 (0: mixopt's own streams), got {n}")
        super().__init__(random_state)
        self.n = n

    def key(self, tag: str, index: int) -> list[int]:
        return super().key(tag, index) + ([self.n] if tag in ACQUISITION_TAGS else [])


def _options(random_state: int) -> dict[str, Any]:
    """mixopt's options beyond its defaults: ``--n-seeds``, and ``--acq-stream`` (its acquisition
    candidates, the random starts of UCB and of the posterior-mean search, drawn from another
    stream: :class:`AcquisitionStream`; how far a 10-seed median moves between streams is the noise
    floor of any comparison between two versions of the optimizer)."""
    streams = {"streams": AcquisitionStream(random_state, ACQ_STREAM)} if ACQ_STREAM else {}
    return ({} if N_SEEDS is None else {"n_seeds": N_SEEDS}) | streams


def run_mixopt(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    tasks = [f"task_{i}" for i in range(problem.k)]
    opt = MixtureOptimizer(
        tasks, random_state=seed, bounds=problem.bounds(tasks), budget=budget, **_options(seed)
    )
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
        w = bounded_dirichlet(rng, np.ones(problem.k), problem.lower, problem.upper)
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
        # Onto the capped polytope by the map mixopt's own seeds use (uniform u -> the same
        # bounded-Dirichlet(1) law), so both search the same space with the same prior.
        w = share_capped(e / e.sum(), problem.lower, problem.upper)
        y = problem.observe(w)
        study.tell(trial, y)
        out.append((y, problem.f(w)))
    return out


def run_tpe(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    return _run_optuna(optuna.samplers.TPESampler(seed=seed), problem, budget)


def run_optuna_gp(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    return _run_optuna(optuna.samplers.GPSampler(seed=seed), problem, budget)


def run_botorch_ucb(problem: Problem, budget: int, seed: int) -> list[tuple[float, float]]:
    """Plain BoTorch: ``SingleTaskGP`` with its defaults on the raw weights, ``UpperConfidenceBound``
    with the same effective beta as mixopt (botorch beta = 2**2), ``optimize_acqf`` over the
    bounded simplex (box bounds + the equality ``sum w = 1``; 5 SLSQP restarts from the best of 512
    bounded-Dirichlet(1) samples), after 10 bounded-Dirichlet(1) seeds."""
    rng = np.random.default_rng([seed, 777])
    k, lo, hi = problem.k, problem.lower, problem.upper
    bounds = torch.tensor(np.stack([lo, hi]), dtype=torch.float64)
    equality = [(torch.arange(k), torch.ones(k, dtype=torch.float64), 1.0)]
    xs: list[np.ndarray] = []
    out: list[tuple[float, float]] = []
    for n in range(budget):
        if n < 10:
            w = bounded_dirichlet(rng, np.ones(k), lo, hi)
        else:
            x = torch.tensor(np.array(xs), dtype=torch.float64)
            y = torch.tensor([[v] for v, _ in out], dtype=torch.float64)
            with botorch_quiet(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + n)
                gp = SingleTaskGP(x, y)
                fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
                acq = UpperConfidenceBound(gp, beta=4.0)
                # Raw samples from the bounded-Dirichlet(1) law (botorch's own hit-and-run
                # polytope sampler took ~13 s per ask here), the best few start SLSQP.
                raw = torch.tensor(
                    np.array([bounded_dirichlet(rng, np.ones(k), lo, hi) for _ in range(RAW_SAMPLES)])
                ).unsqueeze(1)
                with torch.no_grad():
                    top = acq(raw).argsort(descending=True)[:NUM_RESTARTS]
                cand, _ = optimize_acqf(
                    acq,
                    bounds=bounds,
                    q=1,
                    num_restarts=NUM_RESTARTS,
                    batch_initial_conditions=raw[top],
                    equality_constraints=equality,
                )
            w = project_capped_simplex(cand[0].detach().numpy(), lo, hi)
        xs.append(w)
        out.append((problem.observe(w), problem.f(w)))
    return out


@contextlib.contextmanager
def botorch_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


RUNNERS: dict[str, Callable[[Problem, int, int], list[tuple[float, float]]]] = {
    "mixopt": run_mixopt,
    "random": run_random,
    "tpe": run_tpe,
    "optuna-gp": run_optuna_gp,
    "botorch-ucb": run_botorch_ucb,
}


def _mixopt_run(
    problem: Problem, tasks: list[str], budget: int, random_state: int, warm: dict | None = None
) -> MixtureOptimizer:
    """A mixopt run over ``tasks`` (a subset of the problem's, the others held at weight 0)."""
    bounds = {
        t: b for t, b in (problem.bounds([f"task_{i}" for i in range(problem.k)]) or {}).items() if t in tasks
    }
    opt = MixtureOptimizer(
        tasks, random_state=random_state, bounds=bounds or None, budget=budget, **_options(random_state)
    )
    if warm is not None:
        opt.warm_start(warm, name="source")
    for _ in range(budget):
        (p,) = opt.ask(1)
        w = np.array([p.get(f"task_{i}", 0.0) for i in range(problem.k)])
        opt.tell(p, problem.observe(w))
    return opt


def _regret_of(problem: Problem, opt: MixtureOptimizer, answer: str = "best") -> float:
    """Regret of the run's answer: its best observed trial (reused ones included), or with
    ``answer="recommend"`` the maximiser of its GP posterior mean (:meth:`MixtureOptimizer.recommend`)."""
    if answer == "recommend":
        p = opt.recommend().proposal  # type: ignore[union-attr]
    else:
        p, _ = opt.best()  # type: ignore[misc]
    regret = problem.f_star - problem.f(np.array([p.get(f"task_{i}", 0.0) for i in range(problem.k)]))
    return regret if regret > TIE else 0.0  # as simple_regret: below TIE is the optimum


def warm_bench(
    kinds: tuple[str, ...],
    seeds: range,
    source_trials: int = 32,
    new_trials: int = 8,
    answer: str = "best",
) -> None:
    """Warm start vs cold start: regret after ``new_trials`` trials warm-started from an independent
    ``source_trials``-trial run, vs a cold run of ``source_trials`` trials (K = 17).

    ``same``: the source ran on the same 17 tasks. ``added``: the source ran before the last task
    existed (16 tasks, so every reused point has that task at weight 0). ``answer``: each run is
    scored by its best observed trial (``best``) or by its ``recommend()`` (see :func:`_regret_of`)."""
    print(
        f"\nwarm start: {source_trials}-trial source, {new_trials} new trials vs cold {source_trials}; K=17; "
        f"answer: {answer}"
    )
    print(
        f"{'objective':9} {'case':6} {'cold':>10} {'warm':>10} {'warm/cold':>9}  (medians over {len(seeds)} seeds)"
    )
    for kind in kinds:
        rows: dict[str, list[tuple[float, float]]] = {"same": [], "added": []}
        for seed in seeds:
            problem = Problem(kind, 17, seed)
            tasks = [f"task_{i}" for i in range(17)]
            cold = _regret_of(problem, _mixopt_run(problem, tasks, source_trials, seed), answer)
            for case, src_tasks in (("same", tasks), ("added", tasks[:16])):
                src = _mixopt_run(problem, src_tasks, source_trials, seed + 1000)
                warm = _mixopt_run(problem, tasks, new_trials, seed, warm=src.state_dict())
                rows[case].append((cold, _regret_of(problem, warm, answer)))
            print(
                f"  warm {kind} seed {seed}: cold {cold:.2e}, warm "
                + ", ".join(f"{case} {pairs[-1][1]:.2e}" for case, pairs in rows.items()),
                file=sys.stderr,
                flush=True,
            )
        for case, pairs in rows.items():
            c = statistics.median(r for r, _ in pairs)
            w = statistics.median(r for _, r in pairs)
            lower = sum(w_ <= c_ for c_, w_ in pairs)
            print(
                f"{kind:9} {case:6} {c:>10.2e} {w:>10.2e} {_ratio(w, c):>9.2f}  "
                f"(warm <= cold on {lower} of {len(pairs)} seeds)"
            )


def simple_regret(problem: Problem, trace: list[tuple[float, float]], n: int) -> float:
    """``f* - f(w)`` at the first n trials' best observed value."""
    observed, true = zip(*trace[:n])
    if not all(map(math.isfinite, observed + true)):
        raise RuntimeError("a method produced a non-finite objective value; the comparison would be void")
    regret = problem.f_star - true[int(np.argmax(observed))]
    return regret if regret > TIE else 0.0


def _ratio(a: float, b: float) -> float:
    """``a / b`` for regrets: both at the optimum is a tie (1), only ``b`` there is inf."""
    if b > 0:
        return a / b
    return 1.0 if a == 0 else math.inf


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


def _load_cache(folder: Path | None, methods: list[str]) -> dict[str, list[list[float]]]:
    """Peer traces from earlier runs: one JSON file per method in ``folder``."""
    out: dict[str, list[list[float]]] = {}
    for m in methods:
        if folder is not None and (folder / f"{m}.json").exists():
            out.update(json.loads((folder / f"{m}.json").read_text()))
    return out


def _save_cache(folder: Path | None, method: str, cache: dict[str, list[list[float]]]) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}.json"
    # Merge with what is on disk, so that two runs split by --objectives or --first-seed can share
    # a folder (each rewrite keeps the other's traces; the window for a lost write is one file write).
    own = json.loads(path.read_text()) if path.exists() else {}
    own.update({key: v for key, v in cache.items() if key.split("|")[2] == method})
    tmp = folder / f"{method}.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(own))
    tmp.replace(path)


def _cell(values: list[float], peer: float | None) -> str:
    """A label's median and worst seed: ratios to ``peer`` (the better GP peer's median), or regrets."""
    med, worst = statistics.median(values), max(values)
    if peer is None:
        return f"{med:>8.2e} {worst:>8.2e}"
    return f"{_ratio(med, peer):>8.2f} {_ratio(worst, peer):>8.2f}"


def compare(
    folder: Path,
    labels: list[str],
    kinds: tuple[str, ...],
    ks: tuple[int, ...],
    budgets: tuple[int, ...],
    seeds: range,
    per_seed: bool = False,
) -> None:
    """Pair the mixopt traces of ``labels`` (``--label`` runs in ``folder``) seed by seed.

    Per objective and budget: each label's median regret and worst seed, as ratios to the better GP
    peer's median when ``folder`` has both peers' traces for every seed (else in objective units),
    and for every label after the first how many seeds it is better / worse than the first on.
    Only the seeds every label has are used; a label with none is an error. ``per_seed``: under each
    objective's line, every label's (and each peer's) regret per seed, ``*`` marking a regret above
    the better peer's median (the worst-seed target).
    """
    traces = _load_cache(folder, labels + ["optuna-gp", "botorch-ucb"])
    missing = [lab for lab in labels if not (folder / f"{lab}.json").exists()]
    if missing:
        raise SystemExit(
            f"--compare: no traces for {missing} in {folder} (expected {folder / (missing[0] + '.json')}, "
            "written by a run with --cache and --label)"
        )
    # The peers are run once, at their run's largest budget, and scored on prefixes.
    longest: dict[tuple[str, ...], list[list[float]]] = {}
    for key, trace in traces.items():
        kind_, k_, m_, s_, _ = key.split("|")
        if m_ in ("optuna-gp", "botorch-ucb") and len(trace) > len(longest.get((kind_, k_, m_, s_), [])):
            longest[(kind_, k_, m_, s_)] = trace
    print(f"# paired: {', '.join(labels)} (base {labels[0]}), traces in {folder}")
    head = f"{'objective':9} {'K':>3} {'n':>3} {'seeds':>5} {'peer':>9}"
    for i, label in enumerate(labels):
        head += f" | {label[:22]:>22}" if i == 0 else f" | {label[:29]:>29}"
    print(head)
    print(
        f"{'':31}"
        + " | "
        + f"{'median  worst':>22}"
        + "".join(f" | {'median  worst  better/worse':>29}" for _ in labels[1:])
    )
    for kind in kinds:
        for k in ks:
            for b in budgets:
                have = [s for s in seeds if all(f"{kind}|{k}|{lab}|{s}|{b}" in traces for lab in labels)]
                if not have:
                    continue
                problems = {s: Problem(kind, k, s) for s in have}
                reg = {
                    lab: [simple_regret(problems[s], traces[f"{kind}|{k}|{lab}|{s}|{b}"], b) for s in have]
                    for lab in labels
                }
                # The peers' per-seed regrets at b, where both have a trace of that length for every seed.
                peer_reg = {
                    m: [simple_regret(problems[s], trace, b) for s, trace in zip(have, runs)]
                    for m in ("optuna-gp", "botorch-ucb")
                    for runs in [[longest.get((kind, str(k), m, str(s)), []) for s in have]]
                    if all(len(trace) >= b for trace in runs)
                }
                peer = min(statistics.median(r) for r in peer_reg.values()) if len(peer_reg) == 2 else None

                line = f"{kind:9} {k:>3} {b:>3} {len(have):>5} " + (
                    f"{peer:>9.2e}" if peer is not None else f"{'-':>9}"
                )
                for i, lab in enumerate(labels):
                    if i == 0:
                        line += f" | {_cell(reg[lab], peer):>22}"
                        continue
                    better = sum(a < c for a, c in zip(reg[lab], reg[labels[0]]))
                    worse = sum(a > c for a, c in zip(reg[lab], reg[labels[0]]))
                    line += f" | {_cell(reg[lab], peer):>17} {better:>5}/{worse:<5}"
                print(line)
                if per_seed:
                    rows = {**reg, **peer_reg}
                    print(f"{'':4}{'seed':>22}  " + " ".join(f"{s:>8}" for s in have))
                    for lab, values in rows.items():
                        cells = [f"{v:.1e}" + ("*" if peer is not None and v > peer else " ") for v in values]
                        print(f"{'':4}{lab[:22]:>22}  " + " ".join(cells))
    print(
        "(median, worst: ratios to the better GP peer's median, or regrets where the peers' traces are missing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K in {4, 17}, 3 seeds, budgets 16/32")
    parser.add_argument(
        "--suite",
        choices=("classic", "boundary", "k17"),
        default="classic",
        help="classic: interior/face/noisy at K in {4, 8, 17}; boundary: sparse and capped optima at K=17; "
        "k17: all of them at K=17 against both GP peers",
    )
    parser.add_argument("--objectives", default=None, help="comma-separated subset of the suite's objectives")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10, quick 3)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder of traces (one JSON per method), the peers' reused across runs of the same seeds",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="only the warm-start comparison (8 new trials from a 32-trial source vs cold 32)",
    )
    parser.add_argument(
        "--answer",
        choices=("best", "recommend"),
        default="best",
        help="--warm: score each run by its best observed trial (default) or by its recommend()",
    )
    parser.add_argument(
        "--acq-stream",
        type=int,
        default=0,
        help="mixopt's acquisition candidates from random stream N (0: mixopt itself); rerun with a few "
        "streams to see how far a median moves by chance alone",
    )
    parser.add_argument(
        "--n-seeds",
        type=int,
        default=None,
        help="mixopt's Dirichlet seed trials (default: MixtureOptimizer's; bench/JOURNAL.md says which "
        "older tables used 10)",
    )
    parser.add_argument(
        "--budgets",
        default=None,
        help="comma-separated subset of the suite's budgets (e.g. 32: mixopt runs once per budget, so "
        "this halves its time on the k17 suite)",
    )
    parser.add_argument(
        "--label",
        default="mixopt",
        help="with --cache: the file name (LABEL.json) mixopt's traces are written to, so that runs of "
        "two versions or streams can share one folder of peer traces and be paired by --compare",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="BASE,NEW[,NEW...]",
        help="with --cache: no runs; pair mixopt traces written earlier with --label, seed by seed "
        "(BASE's median and worst seed, each NEW's, and how many seeds NEW is better / worse on), as "
        "ratios to the better GP peer's median where the folder has the peers' traces",
    )
    parser.add_argument(
        "--per-seed",
        action="store_true",
        help="with --compare: also print every label's and peer's regret per seed, '*' marking one above "
        "the better peer's median",
    )
    args = parser.parse_args()
    global ACQ_STREAM, N_SEEDS
    ACQ_STREAM, N_SEEDS = args.acq_stream, args.n_seeds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # the dev box has 2 shared cores; every method gets the same one
    if args.warm:
        kinds = tuple(o.strip() for o in (args.objectives or "interior,lawA").split(",") if o.strip())
        warm_bench(kinds, range(args.first_seed, args.first_seed + (args.seeds or 5)), answer=args.answer)
        return

    if args.suite in ("boundary", "k17"):
        kinds: tuple[str, ...] = BOUNDARY if args.suite == "boundary" else ALL_OBJECTIVES
        ks: tuple[int, ...] = (17,)
        budgets: tuple[int, ...] = (16, 32)
        default_methods = ("mixopt", "random", "optuna-gp", "botorch-ucb")
    else:
        kinds = OBJECTIVES
        ks = (4, 17) if args.quick else (4, 8, 17)
        budgets = (16, 32) if args.quick else (16, 32, 64)
        default_methods = ("mixopt", "random", "tpe", "optuna-gp")
    if args.label != "mixopt" and (args.label in METHODS or not re.fullmatch(r"[A-Za-z0-9_-]+", args.label)):
        parser.error(
            f"--label {args.label!r}: letters, digits, _ and - only, and not a peer's name {METHODS}"
        )
    if args.budgets:
        try:
            wanted = tuple(int(b) for b in args.budgets.split(",") if b.strip())
        except ValueError:
            wanted = ()
        if not wanted or set(wanted) - set(budgets):
            parser.error(f"--budgets {args.budgets!r}: choose from the suite's budgets {budgets}")
        budgets = wanted
    if args.objectives:
        kinds = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
        bad = set(kinds) - set(ALL_OBJECTIVES)
        if bad:
            parser.error(f"unknown objective(s) {sorted(bad)}; choose from {ALL_OBJECTIVES}")
    n_seeds = args.seeds or (3 if args.quick else 10)
    seeds = range(args.first_seed, args.first_seed + n_seeds)
    if args.per_seed and not args.compare:
        parser.error("--per-seed goes with --compare")
    if args.compare:
        if args.cache is None:
            parser.error("--compare reads the traces in a --cache folder")
        labels = [x.strip() for x in args.compare.split(",") if x.strip()]
        if len(labels) < 2:
            parser.error("--compare needs a base label and at least one other, e.g. --compare mixopt,variant")
        compare(args.cache, labels, kinds, ks, budgets, seeds, per_seed=args.per_seed)
        return
    methods = [m.strip() for m in (args.methods or ",".join(default_methods)).split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    cache = _load_cache(args.cache, methods)

    print(
        f"# mixture optimizer benchmark ({args.suite}): objectives={kinds}, K={ks}, budgets={budgets}, "
        f"{n_seeds} seeds, torch threads=1"
    )
    if not args.no_latency:
        t = latency()
        print(
            f"latency ask(1) at 100 obs x 17 tasks: median {statistics.median(t):.3f} s "
            f"(min {min(t):.3f}, max {max(t):.3f}, {len(t)} asks; target <= 1.5 s)"
        )
    regrets: dict[tuple[str, int, str, int], list[float]] = {}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    # Seed-major, so that an interrupted run has covered every objective equally.
    for seed in seeds:
        for kind in kinds:
            for k in ks:
                problem = Problem(kind, k, seed)
                for m in methods:
                    # mixopt is told its budget (its last proposals exploit), so each budget is a
                    # run of its own; the peers' regret at a budget is their longest run's prefix.
                    for run_budget in budgets if m == "mixopt" else [max(budgets)]:
                        name = args.label if m == "mixopt" else m
                        key = f"{kind}|{k}|{name}|{seed}|{run_budget}"
                        problem.noise_rng = np.random.default_rng(
                            [k, seed, 99]
                        )  # same noise stream per method
                        if m != "mixopt" and key in cache:
                            trace = [(a, b) for a, b in cache[key]]
                        else:
                            t0 = time.perf_counter()
                            trace = RUNNERS[m](problem, run_budget, seed)
                            seconds[m] += time.perf_counter() - t0
                            # mixopt's traces are written too (for inspection) but never reused.
                            cache[key] = [list(ab) for ab in trace]
                            _save_cache(args.cache, name, cache)
                        for b in budgets if m != "mixopt" else [run_budget]:
                            regrets.setdefault((kind, k, m, b), []).append(simple_regret(problem, trace, b))
                print(f"  done seed {seed} {kind} K={k}", file=sys.stderr, flush=True)

    gps = [m for m in ("optuna-gp", "botorch-ucb") if m in methods]
    optunas = [m for m in ("tpe", "optuna-gp") if m in methods]
    peers = optunas if args.suite == "classic" else gps
    peer_name = "/optuna" if args.suite == "classic" else "/best GP"
    print(
        f"\nmedian simple regret (lower is better); ratios: mixopt / random, mixopt / better of {peers}; "
        "worst: mixopt's worst seed / the better peer's median"
    )
    head = f"{'objective':9} {'K':>3} {'n':>3} " + " ".join(f"{m:>11}" for m in methods)
    has_ratio = "mixopt" in methods and "random" in methods
    has_peer = "mixopt" in methods and bool(peers)
    if has_ratio:
        head += f" {'/random':>8}"
    if has_peer:
        head += f" {peer_name:>8} {'worst':>6}"
    print(head)
    summary: dict[int, list[tuple[float, float, float]]] = {}
    for kind in kinds:
        for k in ks:
            for b in budgets:
                med = {m: statistics.median(regrets[(kind, k, m, b)]) for m in methods}
                line = f"{kind:9} {k:>3} {b:>3} " + " ".join(f"{med[m]:>11.2e}" for m in methods)
                r_rand = r_peer = r_worst = math.nan
                if has_ratio:
                    r_rand = med["mixopt"] / med["random"] if med["random"] > 0 else math.nan
                    line += f" {r_rand:>8.2f}"
                if has_peer:
                    best_peer = min(med[m] for m in peers)
                    r_peer = _ratio(med["mixopt"], best_peer)
                    r_worst = _ratio(max(regrets[(kind, k, "mixopt", b)]), best_peer)
                    line += f" {r_peer:>8.2f} {r_worst:>6.2f}"
                summary.setdefault(b, []).append((r_rand, r_peer, r_worst))
                print(line)
    print()
    for b, rows in summary.items():
        rr = [r for r, _, _ in rows if not math.isnan(r)]
        ro = [o for _, o, _ in rows if not math.isnan(o)]
        rw = [w for _, _, w in rows if not math.isnan(w)]
        if rr:
            print(
                f"budget {b}: mixopt/random median regret ratio: median {statistics.median(rr):.2f}, "
                f"worst {max(rr):.2f} over {len(rr)} settings"
                + (
                    f"; mixopt/{peer_name[1:]}: median {statistics.median(ro):.2f}, worst {max(ro):.2f}, "
                    f"<= 1 in {sum(o <= 1 for o in ro)}/{len(ro)}, <= 0.5 in {sum(o <= 0.5 for o in ro)}/{len(ro)}; "
                    f"worst seed / peer median <= 1 in {sum(w <= 1 for w in rw)}/{len(rw)}"
                    if ro
                    else ""
                )
            )
    print(
        "wall time per method (s, this run; cached peers not counted): "
        + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items())
    )


if __name__ == "__main__":
    main()
