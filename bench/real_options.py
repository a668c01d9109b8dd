"""The research options of the optimizer and the soup against the real-data experiment's trials.

Reads the per-trial cache that ``bench/real.py table`` writes (its docstring gives the format)
and compares, on **dev scores only** (nothing here reads a test score to decide):

1. ``optimizer.surrogate``: ``single`` vs ``composite``, and
2. ``optimizer.proxy`` (merged experts) off vs on: sweeps *replayed* on the cache as
   bench/proxy_replay.py replays bench/proxy.py's table: the real :class:`MixtureOptimizer` with
   the experiment's optimizer settings, a trial at a proposed mixture answered by the measured
   trial of the nearest measured mixture (Euclidean; a seed drawn at random among its measured
   ones), a proxy score by the merged experts of the sweep's expert seed at the nearest mixture.
   Regret of ``recommend()`` after n trained trials: ``max_m T(m) - T(nearest(rec))``, ``T`` the
   mean dev objective of a measured mixture over its seeds; its resolution is the table's.
   The proxy's scores are measured first (``--measure-proxy``: every measured mixture merged
   from each expert seed's three experts, bench/real_jobs.py's ``proxy`` job) into the cache's
   ``proxy`` list (``{"mixture", "expert_seed", "dev", "objective", "seconds"}``).
3. ``--rank posterior`` vs ``objective`` for the soup: the two real top-5 soups of the sweep
   (``bench/real.py table`` makes both), their dev objective (and, reported only, their test
   mean), beside the spread of the objective-ranked soup over its seed replicates.
4. ``optimizer.multi_fidelity`` (and ``fidelity_scale``): bench/multifidelity.py's simulated
   sweeps (two asynchronous workers, a budget of trainer steps) on the real learning curves:
   the trials with an intermediate dev evaluation, ``f(w, t)`` the mean over seeds at the nearest
   such mixture, reports with Gaussian noise of the pooled seed sd of the final objective.

    python bench/real_options.py --cache runs/real-st/trials.json --measure-proxy   # once: the proxy
    python bench/real_options.py --cache runs/real-st/trials.json --sweeps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import multifidelity  # noqa: E402  (bench/multifidelity.py: the simulated sweep)
import proxy_replay  # noqa: E402  (bench/proxy_replay.py: the replayed sweep)
from real_jobs import run_jobs  # noqa: E402

CHECKPOINTS = (2, 4, 6, 8, 10, 12, 16, 20)


def _key(mixture: dict[str, float], names: list[str]) -> tuple[float, ...]:
    return tuple(round(float(mixture[n]), 12) for n in names)


def replay_table(cache: dict[str, Any], with_proxy: bool) -> dict[str, Any]:
    """The cache's dev trials (and proxy scores) as bench/proxy_replay.py's table."""
    names = [t["name"] for t in cache["tasks"]]
    trained: dict[tuple[float, ...], list[dict[str, Any]]] = {}
    for t in cache["trials"]:
        trained.setdefault(_key(t["mixture"], names), []).append(
            {"seed": t["seed"], "scores": t["dev"], "objective": t["objective"]}
        )
    experts = [_key({n: float(n == task) for n in names}, names) for task in names]
    proxy: dict[tuple[tuple[float, ...], int], dict[str, float]] = {}
    if with_proxy:
        for p in cache.get("proxy", []):
            proxy[(_key(p["mixture"], names), int(p["expert_seed"]))] = dict(p["dev"])
        measured = {int(p["expert_seed"]) for p in cache.get("proxy", [])}
        for t in cache["trials"]:  # a merge of one seed's experts at an expert's own mixture is that expert
            if t["stage"] == "expert" and int(t["seed"]) in measured:
                proxy[(_key(t["mixture"], names), int(t["seed"]))] = dict(t["dev"])
    return {"trained": trained, "proxy": proxy, "experts": experts, "names": names}


def optimizer_settings(cache: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    opt = dict(cache["config"].get("optimizer", {}))
    keep = ("n_seeds", "dirichlet_alpha", "beta", "noise_sd", "exploit_last")
    return {k: opt[k] for k in keep if k in opt} | overrides


def _summary(runs: list[dict[int, float]], n: int) -> str:
    r = np.array([run[n] for run in runs])
    q = np.quantile(r, [0.25, 0.75])
    return f"{np.median(r):.4f} [{q[0]:.4f}, {q[1]:.4f}]"


def compare(
    label: str, a: list[dict[int, float]], b: list[dict[int, float]], names: tuple[str, str], n: int
) -> str:
    """Per sweep seed at ``n`` trials: how often b is below / above a, and the median difference."""
    d = np.array([y[n] - x[n] for x, y in zip(a, b)])
    return (
        f"{label} at {n} trials: {names[1]} − {names[0]} median {np.median(d):+.4f} "
        f"(mean {d.mean():+.4f}, sd {d.std(ddof=1):.4f} over {len(d)} sweeps); lower on {int((d < -1e-12).sum())}, "
        f"higher on {int((d > 1e-12).sum())}, tied on {int((np.abs(d) <= 1e-12).sum())}"
    )


_REPLAYS: dict[tuple[bool, str, int], list[dict[int, float]]] = {}


def _replays(cache: dict[str, Any], sweeps: int, with_proxy: bool, surrogate: str) -> list[dict[int, float]]:
    """``sweeps`` replayed sweeps (sweep seeds 0..sweeps-1): regret at each checkpoint. The proxy's
    "off" arm and the surrogate's "single" arm are the same sweeps, replayed once."""
    key = (with_proxy, surrogate, sweeps)
    if key not in _REPLAYS:
        budget = int(cache["config"]["optimizer"]["max_trials"])
        table = replay_table(cache, with_proxy=with_proxy)
        t0 = time.perf_counter()
        _REPLAYS[key] = [
            proxy_replay.replay(
                table,
                with_proxy=with_proxy,
                sweep_seed=s,
                budget=budget,
                bounds={},
                checkpoints=_checkpoints(budget),
                optimizer=optimizer_settings(cache, surrogate=surrogate),
                seed_mixtures=cache["config"].get("search", {}).get("seed_mixtures", []),
            )
            for s in range(sweeps)
        ]
        print(
            f"  surrogate {surrogate}, proxy {'on' if with_proxy else 'off'}: {sweeps} replayed sweeps "
            f"in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return _REPLAYS[key]


def _checkpoints(budget: int) -> list[int]:
    return sorted({n for n in CHECKPOINTS if n <= budget} | {budget})


def surrogate(cache: dict[str, Any], sweeps: int) -> dict[str, Any]:
    budget = int(cache["config"]["optimizer"]["max_trials"])
    runs = {mode: _replays(cache, sweeps, False, mode) for mode in ("single", "composite")}
    print(f"\n(1) optimizer.surrogate, regret of recommend() on dev, median [q25, q75] over {sweeps} sweeps")
    print(f"{'trials':>6} {'single':>26} {'composite':>26}")
    for n in _checkpoints(budget):
        print(f"{n:>6} {_summary(runs['single'], n):>26} {_summary(runs['composite'], n):>26}")
    print(compare("surrogate", runs["single"], runs["composite"], ("single", "composite"), budget))
    return runs


def proxy(cache: dict[str, Any], sweeps: int) -> dict[str, Any]:
    seeds = sorted({int(p["expert_seed"]) for p in cache.get("proxy", [])})
    if not seeds:
        print("\n(2) optimizer.proxy: no proxy scores in the cache; run with --measure-proxy first")
        return {}
    steps = int(cache["steps"])
    budget = int(cache["config"]["optimizer"]["max_trials"])
    checkpoints = _checkpoints(budget)
    default = str(cache["config"]["optimizer"].get("surrogate", "single"))
    runs = {mode: _replays(cache, sweeps, mode, default) for mode in (False, True)}
    k = len(cache["tasks"])
    per = statistics.median(p["seconds"] for p in cache["proxy"])
    print(
        f"\n(2) optimizer.proxy (expert seeds {seeds}; a proxy score costs {per:.0f} s, about one dev "
        f"evaluation), regret of recommend() on dev vs trainer steps, median [q25, q75] over {sweeps} sweeps"
    )
    print(f"{'trials':>6} {'steps':>6} {'trained only':>26} | {'steps':>6} {'with proxy':>26}")
    for n in checkpoints:
        print(
            f"{n:>6} {n * steps:>6} {_summary(runs[False], n):>26} | {(n + k) * steps:>6} {_summary(runs[True], n):>26}"
        )
    goal = float(np.median([r[budget] for r in runs[False]]))
    reach = [n for n in checkpoints if np.median([r[n] for r in runs[True]]) <= goal + 1e-12]
    full = budget * steps
    if reach:
        spent = (reach[0] + k) * steps
        print(
            f"the proxy sweeps reach the trained-only median regret {goal:.4f} ({full} steps) after {spent} steps: {spent / full:.2f}x"
        )
    else:
        print(f"the proxy sweeps never reach the trained-only median regret {goal:.4f} ({full} steps)")
    print(compare("proxy", runs[False], runs[True], ("off", "on"), budget))
    return runs


def soup_rank(cache: dict[str, Any]) -> None:
    soups = cache.get("soups", {})
    post = next((s for s in soups.values() if s["rank"] == "posterior"), None)
    obj = [s for s in soups.values() if s["method"] == "uniform" and s["rank"] == "objective"]
    if post is None or not obj:
        print("\n(3) soup ranking: the cache has no posterior-ranked soup (bench/real.py table makes it)")
        return
    first = next(s for s in obj if s["replicate"] == 0)
    devs = [s["objective"] for s in obj]
    sd = statistics.stdev(devs) if len(devs) > 1 else float("nan")
    print(
        "\n(3) soup ranking, the sweep's top 5 souped uniform (dev objective on every dev row; test mean reported only)"
    )
    for label, s in (("--rank objective", first), ("--rank posterior", post)):
        test = s.get("test") or {}
        print(
            f"  {label:17s} dev {s['objective']:.4f}  test {test.get('mean', float('nan')):.4f}  ingredients {s['ingredients']}"
        )
    print(
        f"  posterior − objective: dev {post['objective'] - first['objective']:+.4f}; the objective-ranked soup's "
        f"sd over its {len(devs)} seed replicates: dev {sd:.4f}"
    )


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
        print("\n(4) multi-fidelity: no trial of the cache has an intermediate evaluation")
        return
    curves = MeasuredCurves(with_curve, names, steps)
    report = min(int(s) for t in with_curve for s, _, _ in t["curve"])
    multifidelity.T, multifidelity.REPORT, multifidelity.GRACE = steps, report, report
    multifidelity.N_SEEDS = cache["config"]["optimizer"].get("n_seeds")
    f_star = curves.optimum()
    print(
        f"\n(4) multi-fidelity on the real learning curves: {len(curves.points)} mixtures with a curve "
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


def measure_proxy(cache_path: Path, workers: int, expert_seeds: int | None) -> None:
    """Merged-expert proxy scores at every measured mixture, per expert seed (the first
    ``expert_seeds`` of them, or all), into the cache."""
    cache = json.loads(cache_path.read_text())
    names = [t["name"] for t in cache["tasks"]]
    experts: dict[int, dict[str, str]] = {}
    for t in cache["trials"]:
        if t["stage"] == "expert":
            task = next(n for n in names if t["mixture"][n] == 1.0)
            experts.setdefault(int(t["seed"]), {})[task] = t["checkpoint"]
    mixtures = {_key(t["mixture"], names): t["mixture"] for t in cache["trials"] if t["stage"] != "expert"}
    done = {(_key(p["mixture"], names), p["expert_seed"]) for p in cache.get("proxy", [])}
    jobs = []
    for i, (seed, by_task) in enumerate(sorted(experts.items())[:expert_seeds]):
        todo = [m for k, m in mixtures.items() if (k, seed) not in done]
        if i == 0 and todo:  # a check: the merge at an expert's own mixture must score as that expert
            todo.append({n: float(n == names[0]) for n in names})
        if len(by_task) == len(names) and todo:
            jobs.append(
                {"kind": "proxy", "key": str(seed), "experts": [by_task[n] for n in names], "mixtures": todo}
            )
    config = Path(cache["config_path"])

    def done_one(res: dict[str, Any]) -> None:
        seed = int(res["key"])
        for p in res["proxy"]:
            if p["mixture"][names[0]] == 1.0:
                own = next(
                    t
                    for t in cache["trials"]
                    if t["stage"] == "expert" and t["seed"] == seed and t["mixture"][names[0]] == 1.0
                )
                gap = max(abs(p["dev"][n] - own["dev"][n]) for n in names)
                print(
                    f"[real_options] check: the merge at the {names[0]} expert's mixture scores within {gap:.2g} of the expert"
                )
        cache.setdefault("proxy", []).extend(
            dict(p, expert_seed=seed) for p in res["proxy"] if p["mixture"][names[0]] != 1.0
        )
        from mixopt import atomic

        atomic.write_text(cache_path, json.dumps(cache, indent=1) + "\n", fsync=False)
        print(
            f"[real_options] proxy of expert seed {res['key']}: {len(res['proxy'])} mixtures in {res['wall_s']:.0f} s",
            flush=True,
        )

    run_jobs(config, jobs, workers, done_one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True, help="bench/real.py's per-trial cache")
    ap.add_argument("--sweeps", type=int, default=20, help="replayed sweeps per option")
    ap.add_argument(
        "--measure-proxy", action="store_true", help="score the merged experts first (trains nothing)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--proxy-seeds", type=int, default=None, help="measure the proxy of the first N expert seeds only"
    )
    ap.add_argument(
        "--mf-budget",
        type=int,
        default=None,
        help="multi-fidelity budget in full trials (default max_trials)",
    )
    ap.add_argument("--only", nargs="*", default=["surrogate", "proxy", "soup", "fidelity"])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.measure_proxy:
        measure_proxy(args.cache, args.workers, args.proxy_seeds)
    cache = json.loads(args.cache.read_text())
    print(
        f"cache {args.cache}: {len(cache['trials'])} trials, {len({_key(t['mixture'], [x['name'] for x in cache['tasks']]) for t in cache['trials']})} mixtures"
    )
    if "surrogate" in args.only:
        surrogate(cache, args.sweeps)
    if "proxy" in args.only:
        proxy(cache, args.sweeps)
    if "soup" in args.only:
        soup_rank(cache)
    if "fidelity" in args.only:
        fidelity(cache, args.sweeps, args.mf_budget or int(cache["config"]["optimizer"]["max_trials"]))


if __name__ == "__main__":
    main()
