"""Calibration: do the optimizer's predicted intervals hold where the truth is known?

Many sweeps (``--seeds``, one ``random_state`` each) of the real :class:`~mixopt.optimizer.MixtureOptimizer`
(its defaults: 7 Dirichlet seeds, then GP-UCB, the budget's last step exploiting) at 6, 12 and 24
trials, one trial at a time, on landscapes whose truth is known or measured:

- ``analytic``: the analytic trainer's closed form (``trainers/analytic.py``, ``mixopt synth``'s
  tasks, 80 steps) plus Gaussian trial noise of sd ``--noise``: truth = the closed form.
- ``landscape``: a table of the real trainer on the tiny experiment (``bench/landscape.py --json``,
  12 mixtures x several trainer seeds), ``proxy``: the trained
  trials of a ``proxy_measured.json`` (15 mixtures x 3 seeds; written by ``bench/proxy.py``, which
  left with the merged-experts proxy and is in git history), ``real``: the real-data experiment's table
  (``bench/real.py``'s cached per-trial table). A table sweep is *replayed*: each proposal is
  snapped to the nearest measured mixture that still has two seeds the sweep has not used, and
  answered by one of its unused seeds' measured objective, so the seed noise is the trainer's.
  The GP sees the measured mixture (the sweep is warm-started anew after each trial from the
  snapped observations, with ``random_state`` varied per step). Truth at a measured mixture =
  the mean over the seeds the sweep did not use there (independent of what it saw), with its
  standard error ``sd / sqrt(seeds)`` added to the interval in quadrature.

For each sweep and each *predictor* on the same data:

- at the **recommended mixture** (``recommend()``'s location; on a table, the measured mixture
  with the highest posterior mean of the proposal GP): ``z = (predicted - truth) / sqrt(sd^2 + se^2)``;
  coverage at 68 % (``|z| <= 1``) and 95 % (``|z| <= 1.96``), and the bias ``(predicted - truth) /
  noise sd`` (the landscape's true seed sd: ``--noise``, or the table's pooled seed sd);
- at **held-out mixtures** (``predict()``): 16 Dirichlet draws per sweep (analytic) or every
  measured mixture the sweep never trained (tables), the same figures.

Predictors, each on the same sweeps: ``product`` (what the checkout reports: ``recommend()`` and
``predict()``; run the script against another checkout with ``PYTHONPATH`` to measure it), ``map``
(the proposal GP, hyperparameters at their MAP: what mixopt reported before the integrated
posterior), and the integrated posterior with one cause switched: ``l at MAP`` (the weights'
lengthscale held at the proposal GP's instead of integrated), ``noise known`` (the true seed sd
given as evidence: what is left when the noise is not the cause) and ``+ verification sd`` (the
pooled sd of a simulated verification, 6 seeds per arm, fed back as the sweep's last lines do).
Besides coverage it prints the noise sd each model believes (median over sweeps, as a ratio to
the true one) and the median predicted sd in noise-sd units. The winner's curse shows as the
bias at the recommended mixture against the held-out one.

    python bench/calibration.py --landscape analytic --seeds 20              # K = 3, noise 0.014
    python bench/calibration.py --landscape analytic --tasks 4 --noise 0.02 --seeds 20
    python bench/calibration.py --landscape landscape --table bench/tables/landscape_tiny.json --seeds 20
    python bench/calibration.py --landscape analytic --seeds 2 --trials 6    # a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = 16  # held-out Dirichlet mixtures per analytic sweep
VERIFY_SEEDS = 6  # seeds per arm of the simulated verification (the tiny experiment's verify.seeds)
ORACLE_DOF = 100_000  # "noise known": the true seed sd as evidence this strong
Z68, Z95 = 1.0, 1.959964


# --------------------------------------------------------------------------- landscapes


@dataclass
class Landscape:
    """A landscape: task names, its true seed sd, and (for tables) the measured mixtures."""

    name: str
    key: str  # names the cached sweeps (--cache)
    names: list[str]
    noise_sd: float
    # analytic: the closed form of a mixture (a weight vector in ``names`` order)
    truth_fn: Callable[[np.ndarray], float] | None = None
    # tables: mixture -> list of (seed, objective)
    table: dict[tuple[float, ...], list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def points(self) -> np.ndarray:
        return np.array(list(self.table))


def analytic_landscape(k: int, noise: float, tmp: Path) -> Landscape:
    from mixopt.config import experiment_from_dict
    from mixopt.synth import synthesize
    from trainers.analytic import Options, scores

    meta = synthesize(tmp / "analytic", n_tasks=k, seed=0, with_model=False)
    names = [t["name"] for t in meta["tasks"]]
    exp = experiment_from_dict(
        {
            "name": "calibration",
            "tasks": [
                {"name": n, "kind": n.rsplit("_", 1)[0], "path": str(tmp / "analytic" / n)} for n in names
            ],
            "trainer": {"target": "trainers.analytic:train"},
        }
    )
    opts = Options()

    def truth(w: np.ndarray) -> float:
        return float(scores(dict(zip(names, map(float, w))), exp.tasks, 80, opts).mean())

    return Landscape(
        f"analytic K={k}, noise {noise:g}", f"analytic-k{k}-noise{noise:g}", names, noise, truth_fn=truth
    )


def table_landscape(name: str, path: Path) -> Landscape:
    """A measured table of trials, each with its mixture, trainer seed and objective: bench/landscape.py's
    ``--json`` (a list; or, as in bench/tables/, an object with ``names`` and ``trials``), a
    ``proxy_measured.json`` of the removed bench/proxy.py (its ``trained`` trials, ``weights`` in the tiny experiment's task order)
    or bench/real.py's cache (``format`` ``mixopt.real_trials``: ``tasks`` [{name}...], ``trials``
    with a ``mixture`` mapping). Mixtures measured with fewer than 3 seeds are left out (their
    truth needs seeds the sweep did not use)."""
    raw = json.loads(Path(path).read_text())
    trials = raw if isinstance(raw, list) else raw.get("trained") or raw.get("trials")
    if not trials:
        raise SystemExit(f"{path}: no trials found (expected a list, or a 'trained' or 'trials' key)")
    names: list[str] | None = None
    if isinstance(raw, dict) and raw.get("names"):
        names = list(raw["names"])
    elif isinstance(raw, dict) and raw.get("tasks"):
        names = [t["name"] if isinstance(t, dict) else str(t) for t in raw["tasks"]]
    elif "mixture" in trials[0]:
        names = list(trials[0]["mixture"])
    else:  # a list of weights in the tiny experiment's task order
        names = ["retrieval_0", "sts_1", "classification_2"][: len(trials[0]["weights"])]
    table: dict[tuple[float, ...], list[tuple[int, float]]] = {}
    for t in trials:
        if t.get("objective") is None or not math.isfinite(float(t["objective"])):
            continue
        raw_w = t["weights"] if "weights" in t else [t["mixture"].get(n, 0.0) for n in names]
        total = sum(float(x) for x in raw_w)
        w = tuple(round(float(x) / total, 12) for x in raw_w)
        table.setdefault(w, []).append((int(t["seed"]), float(t["objective"])))
    table = {w: rs for w, rs in table.items() if len(rs) >= 3}
    if len(table) < 2:
        raise SystemExit(f"{path}: fewer than 2 mixtures measured with 3 seeds or more; nothing to replay")
    variances = [np.var([v for _, v in rs], ddof=1) for rs in table.values()]
    pooled = math.sqrt(float(np.mean(variances)))
    seeds = sorted({len(rs) for rs in table.values()})
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]
    label = f"{name} ({len(table)} mixtures x {'/'.join(map(str, seeds))} seeds)"
    return Landscape(label, f"{name}-{digest}", list(names), pooled, table=table)


# --------------------------------------------------------------------------- predictors


def variant(opt: Any, *, fixed_length: bool = False, evidence: tuple[tuple[float, int], ...] = ()) -> Any:
    """The reported posterior of ``opt`` with one cause switched: the weights' lengthscale held at
    the proposal GP's MAP (``fixed_length``) or independent measurements of the noise added
    (``evidence``: ``(sd, degrees of freedom)`` each). None for a checkout without it."""
    try:
        from mixopt.optimizer import calibrated
    except ImportError:
        return None
    ours = opt._surrogate.integrated()
    lengthscales = calibrated.LENGTHSCALES
    if fixed_length:
        fitted = opt._surrogate.fitted()
        lengthscales = np.array(
            [calibrated.kernel_lengthscales(fitted.model, opt.space.n_tasks, opt.space.dim)[0]]
        )
    return calibrated.IntegratedGP(
        ours.x,
        ours.y,
        n_weights=opt.space.n_tasks,
        length_prior=ours.length_prior,
        h_lengthscales=ours.h_lengthscales,
        noise=calibrated.NoisePrior(ours.noise.sd, tuple(evidence)),
        lengthscales=lengthscales,
    )


def predictors(
    opt: Any, noise_sd: float, verified_sd: float
) -> dict[str, Callable[[list[dict[str, Any]]], tuple[np.ndarray, np.ndarray]]]:
    """name -> predict(proposals), every one on the same sweep (see the module docstring)."""
    out: dict[str, Callable] = {"product": opt.predict, "map": opt._surrogate.predict}
    variants = {
        "integrated, l at MAP": {"fixed_length": True},
        "integrated, noise known": {"evidence": ((noise_sd, ORACLE_DOF),)},
        "integrated + verification sd": {"evidence": ((verified_sd, 2 * (VERIFY_SEEDS - 1)),)},
    }
    for name, kwargs in variants.items():
        model = variant(opt, **kwargs)
        if model is not None:
            out[name] = lambda ps, model=model: model.predict(np.array([opt.space.encode(p) for p in ps]))
    return out


def noise_beliefs(opt: Any) -> dict[str, float | None]:
    """The noise sd each model believes: the proposal GP's MAP and the reported posterior's median."""
    out: dict[str, float | None] = {"map": opt._surrogate.noise_sd_fitted(), "integrated": None}
    if hasattr(opt._surrogate, "integrated"):
        out["integrated"] = opt._surrogate.integrated().noise_sd()[0]
    return out


def verification_sd(land: Landscape, sweep: dict[str, Any], seed: int) -> float:
    """A verification's pooled seed sd, as the sweep would measure it: ``VERIFY_SEEDS`` trials of
    the recommended mixture and of a baseline each (analytic: noise draws; a table: measured seeds
    of the recommended mixture and of the first measured mixture, drawn at random)."""
    rng = np.random.default_rng([seed, 5])
    if land.truth_fn is not None:
        arms = rng.normal(0.0, land.noise_sd, (2, VERIFY_SEEDS))
    else:
        rec = tuple(weights_of(land.names, sweep["rec"]))
        key = min(land.table, key=lambda w: float(np.sum((np.array(w) - np.array(rec)) ** 2)))
        values = [[v for _, v in land.table[w]] for w in (key, next(iter(land.table)))]
        arms = np.array([rng.choice(v, VERIFY_SEEDS, replace=len(v) < VERIFY_SEEDS) for v in values])
    return math.sqrt(float(np.mean(np.var(arms, axis=1, ddof=1))))


# --------------------------------------------------------------------------- sweeps


def proposal_of(names: list[str], w: np.ndarray) -> dict[str, float]:
    return {n: float(x) for n, x in zip(names, w)}


def weights_of(names: list[str], p: dict[str, Any]) -> np.ndarray:
    return np.array([float(p[n]) for n in names])


def analytic_sweep(land: Landscape, n: int, seed: int) -> dict[str, Any]:
    """One sweep of ``n`` trials on the analytic landscape: the optimizer's state, the recommended
    mixture and the held-out ones, with their truths."""
    from mixopt.optimizer import MixtureOptimizer

    assert land.truth_fn is not None
    rng = np.random.default_rng([seed, n, 7])
    opt = MixtureOptimizer(land.names, budget=n, random_state=seed)
    for _ in range(n):
        (p,) = opt.ask(1)
        opt.tell(p, land.truth_fn(weights_of(land.names, p)) + float(rng.normal(0.0, land.noise_sd)))
    rec = opt.recommend()
    draws = np.random.default_rng([seed, 99]).dirichlet(np.ones(len(land.names)), HELD_OUT)
    held = [proposal_of(land.names, w) for w in draws]
    return {
        "state": opt.state_dict(),
        "rec": rec.proposal,
        "rec_truth": land.truth_fn(weights_of(land.names, rec.proposal)),
        "rec_se": 0.0,
        "held": held,
        "held_truth": [land.truth_fn(weights_of(land.names, p)) for p in held],
        "held_se": [0.0] * len(held),
    }


def table_sweep(land: Landscape, n: int, seed: int) -> dict[str, Any]:
    """One replayed sweep of ``n`` trials on a measured table (see the module docstring)."""
    from mixopt.optimizer import MixtureOptimizer

    points = land.points
    keys = list(land.table)
    rng = np.random.default_rng([seed, n, 11])
    used: dict[int, list[int]] = {}  # mixture index -> positions of the seeds used there
    told: list[tuple[dict[str, float], float]] = []
    for step in range(n):
        opt = MixtureOptimizer(land.names, budget=n - step, random_state=seed * 1000 + step)
        if told:
            opt.warm_start(told)
        (p,) = opt.ask(1)
        order = np.argsort(((points - weights_of(land.names, p)) ** 2).sum(axis=1))
        m = next(int(i) for i in order if len(land.table[keys[i]]) - len(used.get(int(i), [])) > 2)
        free = [j for j in range(len(land.table[keys[m]])) if j not in used.get(m, [])]
        j = int(rng.choice(free))
        used.setdefault(m, []).append(j)
        told.append((proposal_of(land.names, points[m]), land.table[keys[m]][j][1]))
    opt = MixtureOptimizer(land.names, budget=n, random_state=seed)
    opt.warm_start(told)

    def truth_of(m: int) -> tuple[float, float]:
        rest = [v for j, (_, v) in enumerate(land.table[keys[m]]) if j not in used.get(m, [])]
        return float(np.mean(rest)), land.noise_sd / math.sqrt(len(rest))

    cands = [proposal_of(land.names, w) for w in points]
    mean, _ = opt._surrogate.predict(cands)  # the proposal GP's posterior mean picks, as recommend()
    best = int(np.argmax(mean))
    held_idx = [m for m in range(len(keys)) if m not in used]
    return {
        "state": opt.state_dict(),
        "rec": cands[best],
        "rec_truth": truth_of(best)[0],
        "rec_se": truth_of(best)[1],
        "held": [cands[m] for m in held_idx],
        "held_truth": [truth_of(m)[0] for m in held_idx],
        "held_se": [truth_of(m)[1] for m in held_idx],
    }


def evaluate(sweep: dict[str, Any], land: Landscape, seed: int) -> dict[str, Any]:
    """Every predictor's figures on one recorded sweep (its optimizer rebuilt from the state)."""
    from mixopt.optimizer import MixtureOptimizer

    noise_sd = land.noise_sd
    opt = MixtureOptimizer.from_state_dict(sweep["state"])
    rec = opt.recommend()
    out: dict[str, Any] = {"noise": noise_beliefs(opt), "predictors": {}}
    held, truth_held, se_held = sweep["held"], np.array(sweep["held_truth"]), np.array(sweep["held_se"])
    same = opt.space.distance(rec.proposal, sweep["rec"]) < 1e-9
    for name, predict in predictors(opt, noise_sd, verification_sd(land, sweep, seed)).items():
        if name == "product" and same and rec.sd is not None:
            m_rec, s_rec = rec.mean, rec.sd  # what recommend() itself reports
        else:
            m, s = predict([sweep["rec"]])
            m_rec, s_rec = float(m[0]), float(s[0])
        err = m_rec - sweep["rec_truth"]
        rows = {
            "rec": {
                "z": err / math.hypot(s_rec, sweep["rec_se"]),
                "bias": err / noise_sd,
                "sd": s_rec / noise_sd,
            }
        }
        if held:
            m, s = predict(held)
            rows["held"] = {
                "z": ((m - truth_held) / np.hypot(s, se_held)).tolist(),
                "bias": ((m - truth_held) / noise_sd).tolist(),
                "sd": (s / noise_sd).tolist(),
            }
        out["predictors"][name] = rows
    return out


# --------------------------------------------------------------------------- the table


def summary(records: list[dict[str, Any]], predictor: str, where: str) -> dict[str, float] | None:
    z, bias, sd = [], [], []
    for r in records:
        row = r["predictors"].get(predictor, {}).get(where)
        if row is None:
            continue
        z += np.atleast_1d(row["z"]).tolist()
        bias += np.atleast_1d(row["bias"]).tolist()
        sd += np.atleast_1d(row["sd"]).tolist()
    if not z:
        return None
    z_ = np.abs(np.array(z))
    return {
        "n": len(z),
        "cov68": float((z_ <= Z68).mean()),
        "cov95": float((z_ <= Z95).mean()),
        "bias": float(np.mean(bias)),
        "bias_se": float(np.std(bias, ddof=1) / math.sqrt(len(bias))) if len(bias) > 1 else float("nan"),
        "sd": float(np.median(sd)),
    }


def print_table(land: Landscape, results: dict[int, list[dict[str, Any]]]) -> None:
    print(f"\n{land.name}; noise sd {land.noise_sd:.4f}")
    print(
        "| trials | predictor | where | n | cover 68 % | cover 95 % | bias (noise sd) | median sd (noise sd) |"
        "\n|---:|---|---|---:|---:|---:|---:|---:|"
    )
    for n, records in results.items():
        names = list(records[0]["predictors"])
        for predictor in names:
            for where, label in (("rec", "recommended"), ("held", "held-out")):
                s = summary(records, predictor, where)
                if s is None:
                    continue
                print(
                    f"| {n} | {predictor} | {label} | {s['n']} | {100 * s['cov68']:.0f} % | "
                    f"{100 * s['cov95']:.0f} % | {s['bias']:+.2f} ± {s['bias_se']:.2f} | {s['sd']:.2f} |"
                )
    print("\nnoise sd believed ÷ true (median over sweeps [10 %, 90 %])")
    for n, records in results.items():
        parts = []
        for model in ("map", "integrated"):
            vals = [r["noise"][model] for r in records if r["noise"].get(model) is not None]
            if vals:
                q = np.percentile(np.array(vals) / land.noise_sd, [50, 10, 90])
                parts.append(f"{model} {q[0]:.2f} [{q[1]:.2f}, {q[2]:.2f}]")
        print(f"  {n} trials: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--landscape", choices=["analytic", "landscape", "proxy", "real"], default="analytic")
    parser.add_argument("--table", default=None, help="the measured table's JSON (table landscapes)")
    parser.add_argument("--tasks", type=int, default=3, help="analytic: number of tasks")
    parser.add_argument("--noise", type=float, default=0.014, help="analytic: trial noise sd")
    parser.add_argument("--seeds", type=int, default=20, help="sweeps per trial count")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", default="6,12,24", help="trial counts, comma-separated")
    parser.add_argument("--json", default=None, help="also write every sweep's figures here")
    parser.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep each sweep (optimizer state, mixtures, truths) in DIR and reuse it: predictors are "
        "then re-evaluated on the same sweeps without running them again",
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="calibration."))
    if args.landscape == "analytic":
        land = analytic_landscape(args.tasks, args.noise, tmp)
        sweep = analytic_sweep
    else:
        if args.table is None:
            raise SystemExit(f"--landscape {args.landscape} needs --table PATH (the measured table's JSON)")
        land = table_landscape(args.landscape, Path(args.table))
        sweep = table_sweep
    counts = [int(x) for x in args.trials.split(",")]
    if land.table:
        capacity = sum(len(rs) - 2 for rs in land.table.values())  # each mixture keeps 2 seeds for its truth
        if any(n > capacity for n in counts):
            print(
                f"{land.name}: room for {capacity} replayed trials only; skipping {[n for n in counts if n > capacity]}"
            )
            counts = [n for n in counts if n <= capacity]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    print(f"{land.name}: {len(seeds)} sweeps x trials {counts}", flush=True)
    t0 = time.perf_counter()
    results: dict[int, list[dict[str, Any]]] = {}
    for n in counts:
        results[n] = []
        for s in seeds:
            path = cache / f"{land.key}-n{n}-s{s}.json" if cache is not None else None
            if path is not None and path.exists():
                recorded = json.loads(path.read_text())
            else:
                recorded = sweep(land, n, s)
                if path is not None:
                    path.write_text(json.dumps(recorded))
            results[n].append(evaluate(recorded, land, s))
        print(f"  {n} trials: {len(seeds)} sweeps done, {time.perf_counter() - t0:.0f} s", flush=True)
    print_table(land, results)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"landscape": land.name, "noise_sd": land.noise_sd, "results": results})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
