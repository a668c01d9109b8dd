"""bench/calibration.py on a small fixture table in bench/real.py's cache format (the real
experiment's table is one more ``--landscape``): the table is read, a replayed sweep keeps the
seeds it used apart from the truth, and the figures are the predictors' own numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import calibration  # noqa: E402  (bench/calibration.py)

NAMES = ["stsb", "news", "reviews"]
MIXTURES = [(1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.45, 0.45, 0.1)]


def _table(path: Path, seeds: int = 5) -> dict:
    rng = np.random.default_rng(0)
    trials = []
    for w in MIXTURES:
        for s in range(seeds):
            value = 0.6 + 0.1 * w[0] - 0.05 * (w[1] - 0.4) ** 2 + 0.01 * rng.normal()
            trials.append(
                {
                    "id": f"t{len(trials)}",
                    "stage": "replicate",
                    "mixture": dict(zip(NAMES, w)),
                    "seed": s,
                    "objective": value,
                }
            )
    trials.append(
        {
            "id": "lone",
            "stage": "search",
            "mixture": dict(zip(NAMES, (0.1, 0.1, 0.8))),
            "seed": 9,
            "objective": 0.5,
        }
    )
    doc = {
        "format": "mixopt.real_trials",
        "version": 1,
        "tasks": [{"name": n} for n in NAMES],
        "trials": trials,
    }
    path.write_text(json.dumps(doc))
    return doc


def test_a_real_cache_table_is_read_by_mixture_with_its_pooled_seed_sd(tmp_path: Path) -> None:
    doc = _table(tmp_path / "trials.json")
    land = calibration.table_landscape("real", tmp_path / "trials.json")
    assert land.names == NAMES and len(land.table) == len(MIXTURES)  # the lone 1-seed mixture left out
    by_mix: dict[tuple, list[float]] = {}
    for t in doc["trials"][:-1]:
        by_mix.setdefault(tuple(t["mixture"][n] for n in NAMES), []).append(t["objective"])
    pooled = math.sqrt(np.mean([np.var(v, ddof=1) for v in by_mix.values()]))
    assert land.noise_sd == pytest.approx(pooled, rel=1e-12)


def test_a_replayed_sweep_keeps_its_seeds_apart_from_the_truth(tmp_path: Path) -> None:
    _table(tmp_path / "trials.json")
    land = calibration.table_landscape("real", tmp_path / "trials.json")
    sweep = calibration.table_sweep(land, 6, seed=1)
    from mixopt.optimizer import MixtureOptimizer

    opt = MixtureOptimizer.from_state_dict(sweep["state"])
    told = [(tuple(round(p[n], 12) for n in NAMES), v) for p, v in opt.history]
    assert len(told) == 6 and all(w in land.table for w, _ in told)
    rec = tuple(round(sweep["rec"][n], 12) for n in NAMES)
    seen = [v for w, v in told if w == rec]
    rest = [v for _, v in land.table[rec] if v not in seen]
    assert len(rest) == len(land.table[rec]) - len(seen) >= 2
    assert sweep["rec_truth"] == pytest.approx(np.mean(rest), rel=1e-12)
    assert sweep["rec_se"] == pytest.approx(land.noise_sd / math.sqrt(len(rest)), rel=1e-12)
    # The recommended mixture is the measured one with the highest proposal-GP posterior mean.
    means = opt._surrogate.predict([dict(zip(NAMES, w)) for w in land.table])[0]
    assert rec == list(land.table)[int(np.argmax(means))]

    figures = calibration.evaluate(sweep, land, 1)
    mean, sd = opt.predict([sweep["rec"]])
    row = figures["predictors"]["product"]["rec"]
    assert row["z"] == pytest.approx(
        (mean[0] - sweep["rec_truth"]) / math.hypot(sd[0], sweep["rec_se"]), rel=1e-9
    )
    assert row["bias"] == pytest.approx((mean[0] - sweep["rec_truth"]) / land.noise_sd, rel=1e-9)
    held = [w for w in land.table if w not in {w for w, _ in told}]
    assert len(figures["predictors"]["map"]["held"]["z"]) == len(held)
