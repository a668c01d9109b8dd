"""Part (b) of bench/proxy.py: regret of the recommendation against trainer steps spent, with and
without the merged-experts proxy, replayed from a table measured with the real trainer.

Running real sweeps (tens of 80-step finetunes per sweep seed, twice) is too costly on a shared
2-core box, so the sweeps are *replayed* from part (a)'s measurement (``--cache``): the experts
and the 12 landscape mixtures, each trained with 3 trainer seeds, and the merged proxy of each
seed's experts at every landscape mixture. A replayed sweep runs the real
:class:`~mixopt.optimizer.MixtureOptimizer` (the experiment's bounds, ``random_state`` = the sweep
seed); a trained trial at a proposed mixture is answered by the measured trial of the **nearest
measured mixture** (Euclidean), with a trainer seed drawn at random among the measured ones, so
the trainer's seed noise is in the replay; a proxy score is the measured proxy (of the sweep's
expert seed) at the nearest measured mixture. The landscape is therefore the 15 measured points:
the regret of a recommendation is ``max_m T(m) - T(nearest(rec))``, ``T`` the trained mean over
seeds, and its resolution is the table's.

- ``trained only``: the optimizer's defaults (7 Dirichlet seeds, then UCB), ``--budget`` trials.
- ``proxy``: the sweep trains the 3 experts first (seed mixtures; their steps are counted), scores
  the proxy at every measured landscape mixture (cheap: the space filled) and at each proposal
  before it is trained, tells every proxy score with ``tell_proxy``, and has no other seeds. The
  experts' own mixtures are scored too (there the merge *is* the expert: proxy = trained), as the
  sweep does; ``--no-expert-pairs`` leaves them out, the variant that pairs at the corners mislead
  the GP about the proxy's bias elsewhere.

Printed: the median (and quartiles) over sweep seeds of the regret after n trained trials, as a
function of trainer steps (n x the experiment's steps), the two side by side; then the target
check: the steps the proxy sweeps need for the median regret the trained-only sweeps reach with
their whole budget, as a ratio (the issue's target is <= 0.5).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

Table = dict[str, Any]


def load(path: Path, names: list[str]) -> Table:
    raw = json.loads(path.read_text())
    trained: dict[tuple[float, ...], list[dict[str, Any]]] = {}
    for r in raw["trained"]:
        trained.setdefault(tuple(r["weights"]), []).append(r)
    proxy: dict[tuple[tuple[float, ...], int], dict[str, float]] = {}
    for r in raw["proxy"]:
        proxy[(tuple(r["weights"]), int(r["seed"]))] = dict(r["scores"])
    experts = [tuple(w) for _, w in raw["experts"]]
    for w in experts:  # a merge of one seed's experts at an expert's own mixture is that expert
        for r in trained[w]:
            proxy[(w, int(r["seed"]))] = dict(r["scores"])
    return {"trained": trained, "proxy": proxy, "experts": experts, "names": names}


def replay(
    table: Table,
    *,
    with_proxy: bool,
    sweep_seed: int,
    budget: int,
    bounds: dict[str, tuple[float, float]],
    checkpoints: list[int],
    optimizer: dict[str, Any],
    seed_mixtures: list[dict[str, float]],
    expert_pairs: bool = True,
) -> dict[int, float]:
    """One replayed sweep; regret of ``recommend()`` after each of ``checkpoints`` trained trials."""
    from mixopt.optimizer import MixtureOptimizer

    names: list[str] = table["names"]
    points = np.array(list(table["trained"]))
    truth = {w: float(np.mean([r["objective"] for r in rs])) for w, rs in table["trained"].items()}
    best = max(truth.values())
    rng = np.random.default_rng(10_000 + sweep_seed)
    # A seed with experts (drawn even when the table has none, so that the trained seeds drawn
    # below are the same with and without the proxy).
    expert_seed = int(rng.choice(sorted({seed for _, seed in table["proxy"]}) or [0]))

    def nearest(p: dict[str, Any]) -> tuple[float, ...]:
        x = np.array([p[n] for n in names])
        return tuple(points[int(np.argmin(((points - x) ** 2).sum(1)))].tolist())

    experts = [dict(zip(names, w)) for w in table["experts"]]
    opt = MixtureOptimizer(
        names,
        bounds=bounds,
        random_state=sweep_seed,
        budget=budget + (len(experts) if with_proxy else 0),
        **(
            optimizer
            | (
                {"seed_mixtures": experts, "n_seeds": len(experts)}
                if with_proxy
                else {"seed_mixtures": seed_mixtures}
            )
        ),
    )
    proxied: set[tuple[float, ...]] = set()

    def score_proxy(p: dict[str, Any]) -> None:
        opt.tell_proxy(p, scores=table["proxy"][(nearest(p), expert_seed)])

    n_trials = 0
    out: dict[int, float] = {}
    if with_proxy:
        for p in opt.ask(len(experts)):  # the experts: ordinary trials (trainer seed as measured)
            opt.tell(p, scores=table["proxy"][(nearest(p), expert_seed)])
        for w in points:  # fill the space: the proxy at every measured mixture but the experts'
            if tuple(w.tolist()) in table["experts"] and not expert_pairs:
                proxied.add(tuple(w.tolist()))
                continue
            p = opt.space.check_proposal(dict(zip(names, w.tolist())), "replay")
            score_proxy(p)
            proxied.add(tuple(w.tolist()))
    while n_trials < budget:
        (p,) = opt.ask(1)
        if with_proxy and nearest(p) not in proxied:
            score_proxy(p)  # before it is trained
            proxied.add(nearest(p))
        rs = table["trained"][nearest(p)]
        opt.tell(p, scores=rs[int(rng.integers(len(rs)))]["scores"])
        n_trials += 1
        if n_trials in checkpoints:
            rec = opt.recommend()
            out[n_trials] = best - truth[nearest(rec.proposal)] if rec is not None else float("nan")
    return out


def main(
    cache: Path,
    *,
    names: list[str],
    seeds: int,
    budget: int,
    steps: int,
    bounds: dict[str, tuple[float, float]],
    optimizer: dict[str, Any],
    seed_mixtures: list[dict[str, float]],
    expert_pairs: bool = True,
) -> None:
    """Part (b): ``seeds`` replayed sweeps per mode (``optimizer``: the experiment's optimizer
    settings; the proxy sweeps' seed mixtures are the experts instead of ``seed_mixtures``)."""
    table = load(cache, names)
    n_experts = len(table["experts"])
    checkpoints = sorted({n for n in (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24) if n <= budget} | {budget})
    t0 = time.perf_counter()
    runs = {
        mode: [
            replay(
                table,
                with_proxy=mode,
                sweep_seed=s,
                budget=budget,
                bounds=bounds,
                checkpoints=checkpoints,
                optimizer=optimizer,
                seed_mixtures=seed_mixtures,
                expert_pairs=expert_pairs,
            )
            for s in range(seeds)
        ]
        for mode in (False, True)
    }
    wall = time.perf_counter() - t0
    print(f"\n(b) regret of recommend() vs trainer steps, {seeds} sweep seeds (median [q25, q75])")
    print(f"{'trials':>6} {'steps':>6} {'trained only':>24} | {'steps':>6} {'with proxy':>24}")
    med: dict[bool, dict[int, float]] = {False: {}, True: {}}
    for n in checkpoints:
        cells = []
        for mode in (False, True):
            r = np.array([run[n] for run in runs[mode]])
            med[mode][n] = float(np.median(r))
            q = np.quantile(r, [0.25, 0.75])
            spent = (n + (n_experts if mode else 0)) * steps
            cells.append(f"{spent:>6} {med[mode][n]:10.4f} [{q[0]:.4f}, {q[1]:.4f}]")
        print(f"{n:>6} {cells[0]} | {cells[1]}")
    goal = med[False][budget]
    reach = [n for n in checkpoints if med[True][n] <= goal + 1e-12]
    full = budget * steps
    if reach:
        spent = (reach[0] + n_experts) * steps
        print(
            f"target: trained-only median regret {goal:.4f} after {full} steps; the proxy sweeps reach it "
            f"after {spent} steps ({reach[0]} trials + {n_experts} experts): {spent / full:.2f}x (target <= 0.5x)"
        )
    else:
        print(
            f"target: trained-only median regret {goal:.4f} after {full} steps; the proxy sweeps never reach it"
        )
    print(f"replay wall {wall:.0f} s ({2 * seeds} sweeps)")
