"""Every metric of a trial is logged to MLflow once per step the trainer reported it at.

The trainer reports its final evaluation at the last step and returns the same figures in its
result; a trial stopped early ends on a report already logged. Either way one entry per step.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.config import load_experiment
from mixopt.sweep.callback import not_yet_logged

TASKS = ["retrieval_0", "sts_1", "classification_2"]


def test_the_final_result_logs_only_what_no_report_logged_at_its_step() -> None:
    final = {"objective": 0.5, "a/ndcg_at_10/d0": 0.4, "score.a": 0.4, "train_seconds": 1.0}
    assert not_yet_logged(final, 20, (20, {"objective": 0.5, "loss": 0.3})) == {
        "a/ndcg_at_10/d0": 0.4,
        "score.a": 0.4,
        "train_seconds": 1.0,
    }
    # A value that differs from the report's (e.g. noise added to the result) is the result's to log.
    assert not_yet_logged(final, 20, (20, {"objective": 0.49}))["objective"] == 0.5
    assert not_yet_logged(final, 20, (15, {"objective": 0.5})) == final  # reported at another step
    assert not_yet_logged(final, 20, None) == final


@pytest.mark.slow
def test_a_sweep_logs_each_metric_once_per_reported_step(tmp_path: Path, data_dir: Path, ray_local) -> None:
    from mixopt.sweep import run_sweep

    exp = {
        "name": "metrics_once",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 6, "max_trials": 6, "max_concurrent": 2, "multi_fidelity": False},
        # report_every 5 over 40 steps: reports at 5, 10, ..., 40, then the final result at 40.
        "trainer": {
            "target": "trainers.analytic:train",
            "steps": 40,
            "report_every": 5,
            "seconds_per_step": 0.05,
        },
        # ASHA stops some trials early (their last report ends them) and lets others finish.
        "sweep": {"early_stopping": {"enabled": True, "grace_period": 5, "reduction_factor": 2}},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    summary = run_sweep(load_experiment(path), verbose=False)
    assert summary.finished == 6
    import ray

    assert ray.is_initialized()  # the caller's Ray (the ray_local fixture's) is left up for it

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "metrics_once"]
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=100)
        if r.data.tags.get("mixopt.role") == "trial"
    ]
    stopped = [r for r in runs if r.data.tags.get("mixopt.stopped_early") == "true"]
    assert len(runs) == 6 and stopped and len(stopped) < 6  # both endings are covered
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            repeated = {s: n for s, n in collections.Counter(steps).items() if n > 1}
            assert not repeated, (run.data.tags["mixopt.trial_id"], key, repeated)
        objective_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "objective"))
        last = objective_steps[-1]
        assert objective_steps == list(range(5, last + 1, 5))  # every report, once
        if run not in stopped:
            assert last == 40 and f"score.{TASKS[0]}" in run.data.metrics
