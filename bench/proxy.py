"""How well merged task experts rank mixtures, against trained trials of the same mixtures (issue 32, part a).

On the tiny experiment with the real trainer (``trainers.embedding:train`` called directly, as
``bench/landscape.py`` does: no Ray, no MLflow):

1. train one **expert** per task and trainer seed: the one-hot mixture, or where the YAML's
   bounds forbid it, the mixture within the bounds nearest to it (Euclidean projection of the
   one-hot onto ``{lo <= w <= hi, sum w = 1}``; printed);
2. train the 12 landscape mixtures (``bench/landscape.py``'s set) for the same seeds;
3. for each seed, score every landscape mixture ``w`` by the **merged proxy**: the task-arithmetic
   merge of that seed's experts with the coefficients ``c`` that solve ``sum_k c_k m_k = w``
   (``m_k`` the experts' mixtures; :func:`mixopt.proxy.merge.mixture_coefficients`), evaluated
   in memory with the trainer's own evaluation (:class:`trainers.merged.MergedEvaluator`).

Printed: per mixture the mean over seeds of the trained and of the proxy objective (and of each
task score); Spearman and Pearson over mixtures between the two means, for the objective and per
task. Side by side, two references measured in the same run:

- ``linear``: the experts' own trained scores interpolated, ``sum_k c_k score(expert_k)``: the
  free predictor the experts already give without merging; the proxy is worth its evaluations
  only where it ranks better than this;
- ``ceiling``: one trained seed against the mean of the other seeds (averaged over the held-out
  seed): how well a trained trial itself predicts the trained mean, given the seed noise.

``proxy 1 seed``: one seed's proxy (a sweep trains its experts once) against the trained mean of
the other seeds, averaged over the held-out seed, comparable with ``ceiling``. ``--scales``
adds the scaled merge ``theta0 + lambda * sum_k c_k (theta_k - theta0)`` (task arithmetic's
scaling coefficient: a merge with ``sum c = 1`` dilutes every task vector to its weight).

And ``anchors``: the proxy built from three of the landscape's own trained mixtures (its corners,
a user's "own anchors") instead of experts, scored on the other nine mixtures (no extra training).

Not on the analytic trainer (``trainers/analytic.py``): it has no weights to merge. Its trial
state is the per-word exposure ``x_u = T sum_j w_j [u in V_j] / |V_j|``, linear in the mixture,
so "merging" exposures would reproduce every trained score exactly (a perfect proxy by
construction), and any other rule (interference, a penalty) would be an assumption the benchmark
then measures back. The errors of merging real networks (a non-linear loss landscape, task
vectors that interfere) have no counterpart in its closed form.

    python bench/proxy.py                   # 3 experts + 12 mixtures, 3 seeds each, 2 workers
    python bench/proxy.py --seeds 4 --json /tmp/proxy.json
    python bench/proxy.py --scales 1.5,2    # also the scaled merges
    python bench/proxy.py --quick           # 4 mixtures x 2 seeds, to check it runs
    python bench/proxy.py --cache /tmp/pc   # measure once into /tmp/pc/proxy_measured.json (or
                                            # reuse it), then part (b), bench/proxy_replay.py
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import landscape  # noqa: E402  (bench/landscape.py: the mixtures, and one trial in a worker)

ANCHORS = ("corner retrieval", "corner sts", "corner classification")


def nearest_in_bounds(k: int, lo: list[float], hi: list[float]) -> tuple[float, ...]:
    """The Euclidean projection of the one-hot ``e_k`` onto ``{lo <= w <= hi, sum w = 1}``.

    ``w(tau) = clip(e_k - tau, lo, hi)`` decreases in ``tau``; the projection is ``w(tau*)`` with
    ``sum w(tau*) = 1``, found by bisection (to float precision).
    """
    e = [float(i == k) for i in range(len(lo))]

    def total(tau: float) -> float:
        return sum(min(max(x - tau, a), b) for x, a, b in zip(e, lo, hi))

    a, b = -1.0, 1.0
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if total(mid) > 1 else (a, mid)
    w = [min(max(x - b, lo_), hi_) for x, lo_, hi_ in zip(e, lo, hi)]
    s = sum(w)
    return tuple(x / s for x in w)


def _stats(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    return float(spearmanr(x, y)[0]), float(pearsonr(x, y)[0])


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main(argv: list[str] | None = None) -> int:
    from mixopt.config import parse_yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "tiny_synthetic.yaml"))
    parser.add_argument("--data", default=None, help="existing synthetic tasks (default: write them)")
    parser.add_argument("--seeds", type=int, default=3, help="trainer seeds per expert and per mixture")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 torch thread each)")
    parser.add_argument("--quick", action="store_true", help="4 mixtures x 2 seeds")
    parser.add_argument(
        "--scales",
        default="",
        metavar="L1,L2",
        help="also the scaled merge theta0 + lambda * sum_k c_k tau_k at these lambdas (a column each)",
    )
    parser.add_argument("--json", default=None, help="also write every trial's and proxy's result here")
    parser.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="the measurement's JSON lives in DIR/proxy_measured.json: written when absent, else reused "
        "(no training); then part (b), the replayed sweeps",
    )
    parser.add_argument("--sweep-seeds", type=int, default=5, help="part (b): replayed sweeps per mode")
    parser.add_argument("--budget", type=int, default=12, help="part (b): trained trials per sweep")
    parser.add_argument(
        "--no-expert-pairs", action="store_true", help="part (b): no proxy scores at the experts' mixtures"
    )
    args = parser.parse_args(argv)
    data, _ = parse_yaml(Path(args.config).read_text(), args.config)
    cached = Path(args.cache) / "proxy_measured.json" if args.cache else None
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        args.json = str(cached)
    if cached is None or not cached.exists():
        measure(args, data)
    else:
        print(f"(a) reusing the measurement in {cached} (its figures were printed when it was made)")
    if cached is not None:
        import proxy_replay

        names = [t["name"] for t in data["tasks"]]
        bounds = {
            n: (float(b.get("min", 0.0)), float(b.get("max", 1.0)))
            for n, b in data["search"]["bounds"].items()
        }
        opt = data.get("optimizer", {})
        proxy_replay.main(
            cached,
            names=names,
            seeds=args.sweep_seeds,
            budget=args.budget,
            steps=int(data["trainer"]["steps"]),
            bounds=bounds,
            optimizer={k: opt[k] for k in ("n_seeds", "dirichlet_alpha", "beta", "noise_sd") if k in opt},
            seed_mixtures=list(data["search"].get("seed_mixtures", [])),
            expert_pairs=not args.no_expert_pairs,
        )
    return 0


def measure(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Part (a): train the experts and the landscape, score the proxy, print the correlations."""

    import torch

    from mixopt.config import experiment_from_dict
    from mixopt.proxy.merge import ExpertMerge, mixture_coefficients
    from mixopt.synth import synthesize
    from trainers.merged import MergedEvaluator

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="proxy."))
    synth_dir = Path(args.data).resolve() if args.data else tmp / "synthetic"
    if not args.data:
        synthesize(synth_dir, n_tasks=len(data["tasks"]), seed=0)
    for task in data["tasks"]:
        task["path"] = str(synth_dir / task["name"])
    data["trainer"]["model"] = str(synth_dir / "model")
    data["trainer"]["cpu_threads"] = 1
    data["trainer"]["progress"] = False
    spec = {"experiment": data, "base_dir": str(tmp), "overrides": []}
    exp = experiment_from_dict(data, base_dir=tmp)
    names = exp.task_names
    bounds = exp.search.bounds
    lo = [bounds[n].min if n in bounds else 0.0 for n in names]
    hi = [bounds[n].max if n in bounds else 1.0 for n in names]
    experts = [(f"expert {n}", nearest_in_bounds(k, lo, hi)) for k, n in enumerate(names)]
    mixtures = (
        [m for m in landscape.MIXTURES if m[0] in landscape.QUICK] if args.quick else landscape.MIXTURES
    )
    seeds = list(range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds)))
    for label, w in experts:
        one_hot = max(w) == 1.0
        print(f"{label}: {tuple(round(x, 4) for x in w)}" + ("" if one_hot else " (bounds forbid one-hot)"))

    runs = [*experts, *mixtures]
    jobs = [(spec, w, s, str(tmp / "runs" / f"{i}-{s}")) for i, (_, w) in enumerate(runs) for s in seeds]
    print(
        f"training {len(experts)} experts + {len(mixtures)} mixtures x {len(seeds)} seeds, "
        f"steps {exp.trainer.steps}, {args.workers} workers",
        flush=True,
    )
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(landscape._job, jobs, chunksize=1)
    train_wall = time.perf_counter() - t0
    trained = {(tuple(r["weights"]), r["seed"]): r for r in results}
    ckpt = {(tuple(w), s): Path(out) / "model" for (_, w, s, out) in jobs}

    # ----------------------------------------------------------------- the proxy
    t1 = time.perf_counter()
    base = synth_dir / "model"
    evaluator = MergedEvaluator(base, exp.tasks, exp.trainer.options)
    expert_mix = [dict(zip(names, w)) for _, w in experts]
    anchor_ws = [w for label, w in mixtures if label in ANCHORS]
    anchor_mix = [dict(zip(names, w)) for w in anchor_ws]
    proxy: dict[tuple[tuple[float, ...], int], dict[str, Any]] = {}
    from_anchors: dict[tuple[tuple[float, ...], int], dict[str, Any]] = {}
    linear: dict[tuple[tuple[float, ...], int], dict[str, float]] = {}
    scales = [float(x) for x in args.scales.split(",") if x]
    scaled: dict[float, dict[tuple[tuple[float, ...], int], dict[str, Any]]] = {lam: {} for lam in scales}
    eval_seconds: list[float] = []
    for s in seeds:
        merge = ExpertMerge(base, [ckpt[(w, s)] for _, w in experts])
        anchor_merge = (
            ExpertMerge(base, [ckpt[(w, s)] for w in anchor_ws]) if len(anchor_ws) == len(names) else None
        )
        for _, w in mixtures:
            mix = dict(zip(names, w))
            c = mixture_coefficients(mix, expert_mix)
            r = evaluator.evaluate(merge.merge(c))
            eval_seconds.append(r.extra["eval_seconds"])
            proxy[(w, s)] = {"objective": r.objective, "scores": dict(r.task_scores), "c": c}
            for lam in scales:
                r = evaluator.evaluate(merge.merge([lam * ck for ck in c]))
                scaled[lam][(w, s)] = {"objective": r.objective, "scores": dict(r.task_scores)}
            ex = [trained[(ew, s)] for _, ew in experts]
            linear[(w, s)] = {
                "objective": sum(ck * e["objective"] for ck, e in zip(c, ex)),
                **{n: sum(ck * e["scores"][n] for ck, e in zip(c, ex)) for n in names},
            }
            if anchor_merge is not None and w not in anchor_ws:
                r = evaluator.evaluate(anchor_merge.merge(mixture_coefficients(mix, anchor_mix)))
                from_anchors[(w, s)] = {"objective": r.objective, "scores": dict(r.task_scores)}
    proxy_wall = time.perf_counter() - t1

    # ----------------------------------------------------------------- figures
    def trained_of(w: tuple[float, ...], s: int, key: str) -> float:
        r = trained[(w, s)]
        return r["objective"] if key == "objective" else r["scores"][key]

    def proxy_of(table: dict, w: tuple[float, ...], s: int, key: str) -> float:
        r = table[(w, s)]
        return r["objective"] if key == "objective" else r["scores"][key]

    ws = [w for _, w in mixtures]
    print(f"\n| mixture | {' | '.join(names)} | trained | proxy | linear | per task trained / proxy |")
    for label, w in mixtures:
        t = _mean([trained_of(w, s, "objective") for s in seeds])
        p = _mean([proxy_of(proxy, w, s, "objective") for s in seeds])
        li = _mean([linear[(w, s)]["objective"] for s in seeds])
        per = " ".join(
            f"{_mean([trained_of(w, s, n) for s in seeds]):.3f}/{_mean([proxy_of(proxy, w, s, n) for s in seeds]):.3f}"
            for n in names
        )
        print(f"| {label} | {' | '.join(f'{x:.2f}' for x in w)} | {t:.4f} | {p:.4f} | {li:.4f} | {per} |")
    print("\nexperts (trained, mean over seeds):")
    for label, w in experts:
        t = _mean([trained_of(w, s, "objective") for s in seeds])
        per = " ".join(f"{n} {_mean([trained_of(w, s, n) for s in seeds]):.3f}" for n in names)
        print(f"  {label}: objective {t:.4f}; {per}")

    print(f"\ncorrelation over {len(ws)} mixtures of the means over {len(seeds)} seeds (Spearman / Pearson)")
    heads = [
        "proxy",
        "proxy 1 seed",
        "linear",
        "anchors (9)",
        "ceiling",
        *(f"proxy x{lam:g}" for lam in scales),
    ]
    print(f"{'score':>18} " + " ".join(f"{h:>14}" for h in heads))
    for key in ["objective", *names]:
        tm = [_mean([trained_of(w, s, key) for s in seeds]) for w in ws]
        pm = [_mean([proxy_of(proxy, w, s, key) for s in seeds]) for w in ws]
        lm = [_mean([linear[(w, s)][key] for s in seeds]) for w in ws]

        def held_out(table: dict | None, s: int, key: str = key) -> tuple[float, float]:
            """Seed s's values (a proxy's, or the trained trial's) against the trained mean of the others."""
            one = [proxy_of(table, w, s, key) if table else trained_of(w, s, key) for w in ws]
            return _stats(one, [_mean([trained_of(w, o, key) for o in seeds if o != s]) for w in ws])

        one_seed = [held_out(proxy, s) for s in seeds]
        cells = [_stats(pm, tm), (_mean([c[0] for c in one_seed]), _mean([c[1] for c in one_seed]))]
        cells.append(_stats(lm, tm))
        rest = [w for w in ws if w not in anchor_ws]
        if from_anchors and len(rest) >= 3:
            am = [_mean([proxy_of(from_anchors, w, s, key) for s in seeds]) for w in rest]
            cells.append(_stats(am, [tm[ws.index(w)] for w in rest]))
        else:
            cells.append((math.nan, math.nan))
        # One trained seed against the mean of the others, averaged over the held-out seed.
        ceil = [held_out(None, s) for s in seeds]
        cells.append((_mean([c[0] for c in ceil]), _mean([c[1] for c in ceil])))
        for lam in scales:
            cells.append(_stats([_mean([proxy_of(scaled[lam], w, s, key) for s in seeds]) for w in ws], tm))
        print(f"{key:>18} " + " ".join(f"{a:6.2f} / {b:5.2f}" for a, b in cells))

    tm = [_mean([trained_of(w, s, "objective") for s in seeds]) for w in ws]
    pm = [_mean([proxy_of(proxy, w, s, "objective") for s in seeds]) for w in ws]
    pick = max(range(len(ws)), key=lambda i: pm[i])
    best = max(range(len(ws)), key=lambda i: tm[i])
    print(
        f"\nproxy's pick {mixtures[pick][0]} {ws[pick]}: trained {tm[pick]:.4f}; best trained "
        f"{mixtures[best][0]} {tm[best]:.4f}; regret {tm[best] - tm[pick]:.4f}"
    )
    bias = _mean([p - t for p, t in zip(pm, tm)])
    print(f"proxy - trained objective, mean over mixtures: {bias:+.4f}")
    trial_s = _mean([r["seconds"] for r in results])
    print(
        f"cost: trained trial {trial_s:.1f} s wall mean; proxy evaluation {_mean(eval_seconds):.2f} s "
        f"(+ merge), {len(proxy) + len(from_anchors) + sum(map(len, scaled.values()))} proxy scores in {proxy_wall:.0f} s; "
        f"training wall {train_wall:.0f} s for {len(results)} trials on {args.workers} workers"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "trained": results,
                    "proxy": [{"weights": w, "seed": s, **v} for (w, s), v in proxy.items()],
                    "anchors": [{"weights": w, "seed": s, **v} for (w, s), v in from_anchors.items()],
                    "scaled": {
                        str(lam): [{"weights": w, "seed": s, **v} for (w, s), v in t.items()]
                        for lam, t in scaled.items()
                    },
                    "experts": experts,
                    "names": names,
                    "steps": exp.trainer.steps,
                },
                indent=1,
            )
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
