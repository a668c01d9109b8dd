"""Idle time of trial slots during a sweep: how long a slot waits between one trial and the next.

A worker that frees up must get its next proposal at once (GP fit + acquisition run in the driver
while the other trials keep going). This runs real sweeps (local Ray, sqlite MLflow) of the
analytic trainer with trials made to last ``--trial-seconds`` each, and reports the share of slot
time, between the first trial's start and the last one's end, in which no trial ran. The slot
overhead per trial (Ray actor start, suggestion, MLflow writes) is the same on a GPU cluster; only
the trial length differs, so the fraction shrinks as trials grow (minutes on GPUs).

    python bench/sweep.py                         # trials of 5 s and 20 s, 2 slots, 8 trials each
    python bench/sweep.py --trial-seconds 60 --trials 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run(trial_seconds: float, trials: int, slots: int, root: Path) -> dict[str, float]:
    from mixopt.config import experiment_from_dict
    from mixopt.sweep import run_sweep
    from mixopt.synth import SynthSpec, synthesize

    data = root / "data"
    if not data.exists():
        synthesize(data, n_tasks=4, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    steps = 20
    exp = experiment_from_dict(
        {
            "name": f"bench_sweep_{int(trial_seconds)}s",
            "tasks": [
                {"name": n, "kind": n.rsplit("_", 1)[0], "path": str(data / n)}
                for n in ("retrieval_0", "sts_1", "classification_2", "retrieval_3")
            ],
            "optimizer": {"n_seeds": slots, "max_trials": trials, "max_concurrent": slots},
            "trainer": {
                "target": "trainers.analytic:train",
                "steps": steps,
                "seconds_per_step": trial_seconds / steps,
            },
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
            "resources": {"cpus": 2 / slots},
            "storage": str(root / "runs"),
        }
    )
    t0 = time.monotonic()
    summary = run_sweep(exp, verbose=False)
    return {
        "trial_seconds": trial_seconds,
        "trials": trials,
        "slots": slots,
        "idle_fraction": summary.idle_fraction or 0.0,
        "wall": time.monotonic() - t0,
        "ideal_wall": trial_seconds * trials / slots,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trial-seconds", type=float, nargs="+", default=[5.0, 20.0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--slots", type=int, default=2)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.trial_seconds:
            rows.append(run(s, args.trials, args.slots, Path(tmp)))
    ray.shutdown()
    print(
        f"\n{'trial s':>8} {'trials':>6} {'slots':>5} {'idle %':>7} {'wall s':>7} {'ideal s':>8} {'wall/ideal':>10}"
    )
    for r in rows:
        print(
            f"{r['trial_seconds']:>8.1f} {r['trials']:>6} {r['slots']:>5} {100 * r['idle_fraction']:>7.2f} "
            f"{r['wall']:>7.1f} {r['ideal_wall']:>8.1f} {r['wall'] / r['ideal_wall']:>10.2f}"
        )


if __name__ == "__main__":
    main()
