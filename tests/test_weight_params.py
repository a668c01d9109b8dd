"""Mixture weights as MLflow params: rounded for the runs table, exact in the trial's proposal tag."""

from __future__ import annotations

import json
from pathlib import Path

from mixopt.tracking import PROPOSAL, SweepTracker, mixture_params


def test_weights_are_rounded_to_four_decimals_and_exact_zeros_read_0() -> None:
    proposal = {"a": 1.3790403873629585e-18, "b": 0.0, "c": 0.123456789, "d": 0.876543211, "lr": 3e-4}
    params = mixture_params(proposal, ["a", "b", "c", "d"])
    # Independent reference: the runs table shows at most ~10 characters; these fit and read right.
    assert params == {"w.a": "0.0000", "w.b": "0", "w.c": "0.1235", "w.d": "0.8765", "hp.lr": "0.0003"}
    assert all(len(v) <= 6 for k, v in params.items() if k.startswith("w."))


def test_trial_run_logs_rounded_params_and_keeps_exact_weights_in_its_tag(tmp_path: Path) -> None:
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "weights")
    tracker.start_sweep("s", {}, {})
    proposal = {"a": 1.3790403873629585e-18, "b": 0.3333333333333333, "c": 0.6666666666666667}
    run_id = tracker.start_trial("trial-000", proposal, ["a", "b", "c"], "seed", 0)
    run = tracker.client.get_run(run_id)
    assert {k: v for k, v in run.data.params.items() if k.startswith("w.")} == {
        "w.a": "0.0000",
        "w.b": "0.3333",
        "w.c": "0.6667",
    }
    assert json.loads(run.data.tags[PROPOSAL]) == proposal  # bit-exact floats survive JSON
