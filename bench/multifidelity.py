"""Multi-fidelity (issue 13 part 2): regret at equal total training steps, with and without.

    .venv/bin/python bench/multifidelity.py                # K=3 (mixopt synth), 5 seeds, budget 16 (~10 min, shared box)
    .venv/bin/python bench/multifidelity.py --k 17 --budget 24  # K=17, 5 seeds (~30 min, shared box)
    # 20 seeds at the sweep's default grace (T/2); split it with --first-seed/--seeds over
    # processes, each with its own --json file, and pool those
    .venv/bin/python bench/multifidelity.py --k 17 --budget 24 --grace 40 --seeds 20 --json mf.json
    # the same final scores on curves that do not cross
    .venv/bin/python bench/multifidelity.py --k 17 --budget 24 --grace 20 --curves separable --seeds 10 \
        --policies full asha-mf gp-stop
    # the multi-fidelity policies with optimizer.fidelity_scale: true, on both kinds of curves
    .venv/bin/python bench/multifidelity.py --k 17 --budget 24 --grace 20 --curves separable --seeds 10 \
        --policies full asha-mf gp-stop --fidelity-scale on

The trials' learning curves are the analytic trainer's closed form (trainers/analytic.py),

    x_u(t) = t * sum_j w_j [u in V_j] / |V_j|,   s_k(t) = mean_{u in V_k} (1 - exp(-rate x_u(t))),
    f(w, t) = mean_k s_k(t),

computed in-process (no Ray), so a whole sweep is simulated in seconds of model time:

- ``K=3``: the vocabularies of ``mixopt synth``'s three tasks, read by the analytic trainer's own
  code (the curves are checked against ``trainers.analytic.scores`` at the start of the run).
- ``K=17``: 17 synthetic vocabularies of 40-600 words drawn from a shared Zipf-weighted pool of
  3,000 words (tasks overlap, as real tasks share words), one draw per seed.

``--curves separable`` keeps each mixture's final score ``f(w, T)`` and replaces the curve by one
shape shared by every mixture, ``f(w, T) g(t)``, so that a report ranks mixtures as their final
scores do (up to the report noise): what ASHA and multi-fidelity models assume, and what the
analytic curves (and the real trainer's, bench/RESULTS.md) do not give.

Every report (every ``T/8`` of the ``T = 80`` steps, ``rate`` 10 as the trainer's default) is
``f(w, t)`` plus Gaussian noise of sd 5% of ``f(., T)``'s spread over Dirichlet(1) mixtures (seed
noise of a dev evaluation). Two workers run trials asynchronously (a simulated clock in steps); a
worker that frees up asks the optimizer for the next mixture until the step budget
``B = budget x T`` (all steps of all trials, stopped ones counted up to where they stopped) is spent.

Policies, the same optimizer defaults (7 Dirichlet seeds, `--n-seeds`; GP-UCB beta=2) and seeds:

- ``full``: every trial runs its ``T`` steps; single-fidelity GP (the sweep without early stopping).
- ``asha``: ASHA as the sweep configures Ray's (grace ``T/4``, reduction factor 2, rungs at
  20/40 steps: a trial below the rung's 50th percentile of the values recorded there so far
  stops); a stopped trial's last value is told as its result (the single-fidelity sweep with
  ``sweep.early_stopping``). With grace ``T/8`` the first rung ranks mixtures by curves that
  cross later; in a 1-2 seed look on mixopt synth's tasks both ASHA policies did worse with it.
  (The sweep's own default grace is now ``T/2``, from the real trainer's curves; ``--grace``.)
- ``asha-mf``: the same ASHA, ``multi_fidelity=True``: every report is a partial result, a
  stopped trial a partial result at its fraction (a sweep's default with early stopping on).
- ``full-mf``: no early stopping, ``multi_fidelity=True`` (running trials' reports inform the
  next proposals).
- ``gp-stop``: ``multi_fidelity=True``, and model-based early stopping instead of ASHA: from the
  grace period on, after each report the trial stops when
  ``MixtureOptimizer.should_stop`` says its UCB at full fidelity is below the best finished
  trial's posterior mean (the GP judges a curve by what it predicts at the end, not by its rank).

Regret: ``f* - f(w_rec, T)`` (noiseless), ``w_rec = recommend()`` (the posterior-mean maximiser at
full fidelity; the sweep's answer), ``f*`` by SLSQP on the polytope (``f`` is concave in ``w``),
measured when ``fraction x B`` steps have been spent, for the fractions printed, and the ratios
to ``full`` at the whole budget (of the medians, and per seed). The ``steps-ratio`` column: the
smallest fraction of the budget at which a policy's median regret is at most the ``full``
policy's at the whole budget (the issue's target: <= 0.7 for multi-fidelity).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.optimizer import MixtureOptimizer  # noqa: E402

T = 80
REPORT = T // 8
RATE = 10.0
GRACE = T // 4
# --n-seeds: the optimizer's seed phase (None: MixtureOptimizer's default).
N_SEEDS: int | None = None
# --fidelity-scale: the multi-fidelity policies' optimizer.fidelity_scale (None: the default).
FIDELITY_SCALE: bool | None = None
ETA = 2
FRACTIONS = (0.4, 0.55, 0.7, 0.85, 1.0)
POLICIES = ("full", "asha", "asha-mf", "full-mf", "gp-stop")


class Curves:
    """``f(w, t)`` of the analytic trainer for vocabularies given as a (words x K) 0/1 matrix."""

    def __init__(self, member: np.ndarray, rate: float = RATE) -> None:
        self.member = member.astype(float)
        self.size = self.member.sum(axis=0)
        self.share = self.member / self.size  # (U, K): a step on task j is shared by its words
        self.rate = rate

    def scores(self, w: np.ndarray, t: float) -> np.ndarray:
        learnt = 1.0 - np.exp(-self.rate * t * (self.share @ w))
        return (self.member.T @ learnt) / self.size

    def __call__(self, w: np.ndarray, t: float) -> float:
        return float(self.scores(w, t).mean())

    def optimum(self) -> float:
        k = self.member.shape[1]
        best = -np.inf
        rng = np.random.default_rng(0)
        for x0 in [np.full(k, 1.0 / k), *rng.dirichlet(np.ones(k), 4)]:
            r = minimize(
                lambda w: -self(np.clip(w, 0, None), T),
                x0,
                method="SLSQP",
                bounds=[(0.0, 1.0)] * k,
                constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                options={"maxiter": 500, "ftol": 1e-12},
            )
            best = max(best, -float(r.fun))
        return best


class SeparableCurves(Curves):
    """The same final scores on curves that do not cross: ``f_sep(w, t) = f(w, T) g(t)``,
    ``g(t) = (1 - exp(-3 t / T)) / (1 - exp(-3))`` (a third of the final score at an eighth of the
    steps, four fifths at half). Every report ranks mixtures as their final scores do, up to the
    report noise: the case multi-fidelity methods assume (``--curves separable``)."""

    def __call__(self, w: np.ndarray, t: float) -> float:
        return super().__call__(w, T) * float((1.0 - np.exp(-3.0 * t / T)) / (1.0 - np.exp(-3.0)))


def synth_curves(root: Path) -> tuple[list[str], Curves]:
    """K=3: ``mixopt synth``'s tasks, vocabularies read by the analytic trainer; cross-checked."""
    from mixopt.config import TaskConfig
    from mixopt.synth import synthesize
    from trainers.analytic import Options, _vocabulary, scores

    data = root / "synth"
    synthesize(data, n_tasks=3, seed=0, with_model=False)
    names = ["retrieval_0", "sts_1", "classification_2"]
    tasks = [TaskConfig(name=n, kind=n.rsplit("_", 1)[0], path=str(data / n)) for n in names]
    opts = Options()
    vocab = [_vocabulary(t.train_file, t.kind.value, opts.max_rows) for t in tasks]
    words = sorted(set().union(*vocab))
    member = np.array([[u in v for v in vocab] for u in words])
    curves = Curves(member, opts.rate)
    rng = np.random.default_rng(1)
    for w in rng.dirichlet(np.ones(3), 5):
        for t in (10, 40, 80):
            ref = scores(dict(zip(names, w.tolist())), tasks, t, opts)
            assert np.allclose(curves.scores(w, t), ref, atol=1e-12), "curves differ from the trainer's"
    return names, curves


def zipf_curves(k: int, seed: int, pool: int = 3000) -> tuple[list[str], Curves]:
    """K synthetic vocabularies of 40-600 words from a shared Zipf-weighted pool."""
    rng = np.random.default_rng([seed, k])
    p = 1.0 / (np.arange(pool) + 10.0)
    p /= p.sum()
    member = np.zeros((pool, k), dtype=bool)
    for j in range(k):
        n = int(round(np.exp(rng.uniform(np.log(40), np.log(600)))))
        member[rng.choice(pool, size=n, replace=False, p=p), j] = True
    member = member[member.any(axis=1)]
    return [f"task_{j:02d}" for j in range(k)], Curves(member)


@dataclass
class Worker:
    proposal: dict | None = None
    w: np.ndarray | None = None
    step: int = 0


@dataclass
class Run:
    regrets: dict[float, float] = field(default_factory=dict)
    trials: int = 0
    stopped: int = 0
    seconds: float = 0.0


def simulate(
    policy: str, names: list[str], curves: Curves, f_star: float, sd: float, budget: int, seed: int
) -> Run:
    """One sweep of ``policy`` on two asynchronous workers until ``budget * T`` steps are spent."""
    t0 = time.perf_counter()
    mf = policy.endswith("-mf") or policy == "gp-stop"
    asha = policy.startswith("asha")
    gp_stop = policy == "gp-stop"
    opt = MixtureOptimizer(
        names,
        random_state=seed,
        multi_fidelity=mf,
        **({} if not mf or FIDELITY_SCALE is None else {"fidelity_scale": FIDELITY_SCALE}),
        **({} if N_SEEDS is None else {"n_seeds": N_SEEDS}),
    )
    rng = np.random.default_rng([seed, 7])
    total = budget * T
    spent = 0
    marks = sorted(int(round(f * total)) for f in FRACTIONS)
    out = Run()
    rungs: dict[int, list[float]] = {}
    workers = [Worker(), Worker()]

    def start(wk: Worker) -> None:
        wk.proposal = opt.ask(1)[0]
        wk.w = np.array([wk.proposal[n] for n in names])
        wk.step = 0
        out.trials += 1

    def regret() -> float:
        rec = opt.recommend()
        if rec is None:
            return float("nan")
        return f_star - curves(np.array([rec.proposal[n] for n in names]), T)

    for wk in workers:
        start(wk)
    # Both workers advance REPORT steps between reports, in lock step (trials of equal speed).
    while workers:
        for wk in list(workers):
            assert wk.proposal is not None and wk.w is not None
            wk.step += REPORT
            spent += REPORT
            value = curves(wk.w, wk.step) + float(rng.normal(0.0, sd))
            ended = False
            if wk.step >= T:
                opt.tell(wk.proposal, value)
                ended = True
            else:
                if mf:
                    opt.tell_partial(wk.proposal, value, wk.step / T)
                if gp_stop and wk.step >= GRACE and opt.should_stop(wk.proposal):
                    opt.tell(wk.proposal, value, fraction=wk.step / T)
                    out.stopped += 1
                    ended = True
                elif asha and wk.step in rungs_at():
                    recorded = rungs.setdefault(wk.step, [])
                    cutoff = np.percentile(recorded, (1 - 1 / ETA) * 100) if recorded else None
                    recorded.append(value)
                    if cutoff is not None and value < cutoff:
                        if mf:
                            opt.tell(wk.proposal, value, fraction=wk.step / T)
                        else:
                            opt.tell(wk.proposal, value)
                        out.stopped += 1
                        ended = True
            while marks and spent >= marks[0]:
                out.regrets[marks.pop(0) / total] = regret()
            if ended:
                if spent < total:
                    start(wk)
                else:
                    workers.remove(wk)
        if not marks and spent >= total:
            break
    out.seconds = time.perf_counter() - t0
    return out


def rungs_at() -> tuple[int, ...]:
    """ASHA's milestones below the budget: grace * eta^i (Ray's ASHAScheduler with max_t = T)."""
    out, m = [], GRACE
    while m < T:
        out.append(m)
        m *= ETA
    return tuple(out)


def main() -> None:
    global GRACE, N_SEEDS, FIDELITY_SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[3])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1"
    )
    ap.add_argument("--budget", type=int, default=16, help="step budget in full trials (x T steps)")
    ap.add_argument("--grace", type=int, default=GRACE, help="ASHA grace period (steps)")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument(
        "--curves",
        choices=("analytic", "separable"),
        default="analytic",
        help="analytic: the trainer's closed form (curves cross); separable: the same final scores "
        "reached along one shared curve shape (reports rank mixtures as their ends do)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        help="also write every run's regret at every fraction here (to pool runs of other seeds)",
    )
    ap.add_argument(
        "--n-seeds",
        type=int,
        default=None,
        help="the optimizer's Dirichlet seed trials (default: MixtureOptimizer's; the tables of "
        "some tables of bench/RESULTS.md name theirs)",
    )
    ap.add_argument(
        "--fidelity-scale",
        choices=("off", "on"),
        help="the multi-fidelity policies (asha-mf, full-mf, gp-stop) with optimizer.fidelity_scale "
        "false ('off') or true ('on') (default: MixtureOptimizer's, false); with the option "
        "their --json keys end in |off or |scale",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    GRACE, N_SEEDS = args.grace, args.n_seeds
    FIDELITY_SCALE = {None: None, "off": False, "on": True}[args.fidelity_scale]
    print(f"T={T} steps, reports every {REPORT}, ASHA rungs {rungs_at()} (eta={ETA}), budget {args.budget}xT")
    with tempfile.TemporaryDirectory() as tmp:
        synth = synth_curves(Path(tmp)) if 3 in args.k else None
    for k in args.k:
        runs: dict[str, list[Run]] = {p: [] for p in args.policies}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            names, curves = synth if k == 3 and synth else zipf_curves(k, seed)
            if args.curves == "separable":
                curves = SeparableCurves(curves.member, curves.rate)
            f_star = curves.optimum()
            draws = np.random.default_rng([seed, 3]).dirichlet(np.ones(k), 256)
            spread = float(np.std([curves(w, T) for w in draws]))
            sd = 0.05 * spread
            for policy in args.policies:
                r = simulate(policy, names, curves, f_star, sd, args.budget, seed)
                runs[policy].append(r)
                if args.json:
                    rows = json.loads(args.json.read_text()) if args.json.exists() else {}
                    key = f"{k}|{args.grace}|{policy}|{seed}|{args.budget}"
                    key += "|separable" if args.curves == "separable" else ""
                    if args.fidelity_scale and (policy.endswith("-mf") or policy == "gp-stop"):
                        key += {"off": "|off", "on": "|scale"}[args.fidelity_scale]
                    rows[key] = {
                        "regrets": {str(f): v for f, v in r.regrets.items()},
                        "trials": r.trials,
                        "stopped": r.stopped,
                    }
                    args.json.write_text(json.dumps(rows, indent=1, sort_keys=True))
                print(
                    f"K={k} seed={seed} {policy:8s} trials={r.trials:3d} stopped={r.stopped:3d} "
                    f"regret@1.0={r.regrets[1.0]:.5f} ({r.seconds:.0f} s; spread {spread:.4f})",
                    flush=True,
                )
        print(f"\nK={k}: median simple regret of recommend() (f* - f) at a fraction of {args.budget}xT steps")
        print(f"{'policy':8s} " + " ".join(f"{f:>9.2f}" for f in FRACTIONS) + "  trials  steps-ratio")
        ref = statistics.median(r.regrets[1.0] for r in runs.get("full", []) or runs[args.policies[0]])
        for policy, rs in runs.items():
            med = [statistics.median(r.regrets[f] for r in rs) for f in FRACTIONS]
            ratio = next((f for f, m in zip(FRACTIONS, med) if m <= ref), None)
            trials = statistics.median(r.trials for r in rs)
            print(
                f"{policy:8s} "
                + " ".join(f"{m:9.5f}" for m in med)
                + f"  {trials:6.0f}  {'>1.0' if ratio is None else f'{ratio:.2f}':>11}"
            )
        print(
            f"{'':8s} regret at the whole budget vs full (median ÷ median): "
            + ", ".join(
                f"{p} {statistics.median(r.regrets[1.0] for r in rs) / max(ref, 1e-12):.2f}x"
                for p, rs in runs.items()
                if p != "full"
            )
        )
        if "full" in runs:
            for p, rs in runs.items():
                if p == "full":
                    continue
                per = [r.regrets[1.0] / max(f.regrets[1.0], 1e-12) for r, f in zip(rs, runs["full"])]
                print(
                    f"{'':8s} {p} ÷ full per seed: "
                    + " ".join(f"{x:.2f}" for x in per)
                    + f" (median {statistics.median(per):.2f}, lower on {sum(x < 1 for x in per)} of {len(per)})"
                )


if __name__ == "__main__":
    main()
