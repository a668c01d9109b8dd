"""Which soup ranking gives the better soup: each trial's own objective, or the posterior?

    PYTHONPATH=$PWD .venv/bin/python bench/soup_rank.py --out /tmp/soup_rank           # 3 sweeps
    PYTHONPATH=$PWD .venv/bin/python bench/soup_rank.py --out /tmp/soup_rank --states 0 # one, quick

Runs the tiny experiment (``experiments/tiny_synthetic.yaml``, the real trainer on the synthetic
tasks and tiny encoder that ``mixopt synth`` writes) once per ``optimizer.random_state``, with
its verification stage (``--verify-seeds`` seeds, so two mixtures have several seeds), then
makes the default soup (``--runs top5``, uniform) of each sweep twice, ranked by
``--rank objective`` and ``--rank posterior``, and evaluates both with the trainer's
``evaluate_checkpoint`` on the dev tasks. Prints one row per sweep and the mean difference
``posterior - objective`` with its sd over sweeps. A sweep that is already in ``--out`` is not
run again (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def experiment_yaml(out: Path, state: int, verify_seeds: int) -> Path:
    data = yaml.safe_load((REPO / "experiments" / "tiny_synthetic.yaml").read_text())
    for t in data["tasks"]:
        t["path"] = str(out / "data" / Path(t["path"]).name)
    data["trainer"]["model"] = str(out / "data" / "model")
    data["name"] = f"soup_rank_{state}"
    data["optimizer"]["random_state"] = state
    data["tracking"] = {"uri": f"sqlite:///{out}/mlflow.db"}
    data["storage"] = str(out / "runs")
    data["verify"] = {"seeds": verify_seeds}
    path = out / f"soup_rank_{state}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (data, MLflow store, runs, soups)")
    ap.add_argument("--states", type=int, nargs="+", default=[0, 1, 2], help="optimizer.random_state values")
    ap.add_argument("--verify-seeds", type=int, default=2)
    ap.add_argument("--runs", default="top5")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data" / "synth.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mixopt.cli",
                "synth",
                "--out",
                str(out / "data"),
                "--tasks",
                "3",
                "--seed",
                "0",
            ],
            check=True,
        )

    from mixopt.config import load_experiment
    from mixopt.soup import soup_from_sweep
    from mixopt.tracking import store
    from mixopt.tracking.tags import ROLE, ROLE_SWEEP

    rows = []
    for state in args.states:
        path = experiment_yaml(out, state, args.verify_seeds)
        exp = load_experiment(path)
        client = store.connect(f"sqlite:///{out}/mlflow.db")
        known = store.experiment_by_name(client, exp.experiment_name)
        done = known is not None and any(
            r.info.status == "FINISHED"
            for r in store.search_all(client, [known.experiment_id], f"tags.`{ROLE}` = '{ROLE_SWEEP}'")
        )
        if not done:
            t0 = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "mixopt.cli", "sweep", str(path), "--quiet"], check=True, cwd=out
            )
            print(f"sweep random_state={state}: {time.monotonic() - t0:.0f}s", flush=True)
        row = {"state": state}
        for rank in ("objective", "posterior"):
            sel, res = soup_from_sweep(
                exp, runs=args.runs, rank=rank, out=out / "soups" / f"{state}-{rank}", force=True, echo=None
            )
            row[rank] = res.evaluation.objective if res.evaluation else math.nan
            row[f"{rank}_trials"] = [i.trial_id for i in sel.chosen]
            row[f"{rank}_best_single"] = max(i.value for i in sel.chosen)
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\nsoup of {args.runs} (uniform), dev objective of the soup:")
    print(f"{'random_state':>12} {'objective':>10} {'posterior':>10} {'post - obj':>10}")
    for r in rows:
        print(
            f"{r['state']:>12} {r['objective']:>10.4f} {r['posterior']:>10.4f} {r['posterior'] - r['objective']:>+10.4f}"
        )
    diffs = [r["posterior"] - r["objective"] for r in rows]
    sd = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
    print(
        f"{'mean':>12} {statistics.mean(r['objective'] for r in rows):>10.4f} "
        f"{statistics.mean(r['posterior'] for r in rows):>10.4f} {statistics.mean(diffs):>+10.4f} (sd {sd:.4f})"
    )


if __name__ == "__main__":
    main()
