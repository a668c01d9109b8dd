"""Warm start of a sweep from an earlier one: config, the MLflow lookup and the driver hook.

Real MLflow (sqlite store under tmp_path); the optimizer's carry-over itself is tested in
tests/test_optimizer.py and tests/test_space.py against hand-computed mixtures.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from mixopt import MixtureOptimizer
from mixopt.config import (
    ConfigError,
    Experiment,
    OptimizerConfig,
    TaskConfig,
    TrainerConfig,
    WarmStartConfig,
    experiment_from_dict,
)
from mixopt.sweep.common import SweepError
from mixopt.sweep.driver import warm_start
from mixopt.sweep.warm import optimizer_for
from mixopt.tracking import STATE_PATH, SweepTracker


def experiment(tasks: list[str], warm: WarmStartConfig | None) -> Experiment:
    return Experiment(
        name="new",
        tasks=[TaskConfig(name=t, kind="retrieval", path=f"/data/{t}") for t in tasks],
        optimizer=OptimizerConfig(n_seeds=2, warm_start=warm),
        trainer=TrainerConfig(target="trainers.analytic:train"),
    )


def source_state(scored: bool = False) -> dict:
    old = MixtureOptimizer(
        ["a", "b", "c"], n_seeds=3, seed_mixtures=[{"a": 0.5, "b": 0.3, "c": 0.2}, {"c": 1.0}, {"a": 1.0}]
    )
    for p, v in zip(old.ask(3), (1.0, 5.0, 2.0)):
        if scored:  # every task scored v: the mean over any of them is v
            old.tell(p, scores={"a": v, "b": v, "c": v})
        else:
            old.tell(p, v)
    return json.loads(json.dumps(old.state_dict()))


def test_warm_start_config_needs_exactly_one_source(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WarmStartConfig()
    with pytest.raises(ValueError, match="exactly one"):
        WarmStartConfig(experiment="x", state=tmp_path / "s.json")
    data = {
        "name": "n",
        "tasks": [{"name": "a", "kind": "retrieval", "path": "/d/a"}],
        "optimizer": {"warm_start": {"state": "old/state.json"}},
        "trainer": {"target": "trainers.analytic:train"},
    }
    exp = experiment_from_dict(data, base_dir=tmp_path, check_trainer=False)
    assert exp.optimizer.warm_start.state == (tmp_path / "old/state.json").resolve()
    data["optimizer"] = {"warm_start": {"experiment": "x", "max_removed": 1.5}}
    with pytest.raises(ConfigError, match="max_removed"):
        experiment_from_dict(data, check_trainer=False)


def test_warm_start_from_a_state_file(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(source_state(scored=True)))
    exp = experiment(["a", "b"], WarmStartConfig(state=path))
    opt = optimizer_for(exp)
    params = warm_start(opt, exp, "unused://")
    # c = 0.2 renormalised away; {"c": 1.0} dropped; {"a": 1.0} kept as is.
    assert params == {
        "warm_start": str(path),
        "warm_start_reused": 2,
        "warm_start_dropped": 1,
        "warm_start_scores_reused": "a,b",
        "warm_start_scores_new": "",
    }
    assert [v for _, v in opt.history] == [1.0, 2.0]
    assert opt.history[0][0] == pytest.approx({"a": 0.625, "b": 0.375}, abs=1e-12)
    # Objectives told without scores are means over other tasks: not reused where the tasks differ.
    path.write_text(json.dumps(source_state()))
    scalar = optimizer_for(exp)
    assert warm_start(scalar, exp, "unused://")["warm_start_reused"] == 0 and scalar.history == []
    assert {opt.origin(p) for p, _ in opt.history} == {"warm"}
    with pytest.raises(SweepError, match="optimizer.warm_start"):
        warm_start(
            optimizer_for(exp),
            experiment(["a", "b"], WarmStartConfig(state=tmp_path / "missing.json")),
            "unused://",
        )


def test_warm_start_from_the_newest_sweep_of_an_mlflow_experiment(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "earlier")
    run_id = tracker.start_sweep("earlier", params={}, artifacts={})
    # A finished sweep whose state file is gone: the optimizer_state.json artifact is used.
    tracker.set_tags(run_id, {STATE_PATH: str(tmp_path / "gone.json")})
    tracker.log_text(run_id, json.dumps(source_state()), "optimizer_state.json")
    tracker.end_sweep()
    exp = experiment(["a", "b", "c"], WarmStartConfig(experiment="earlier"))
    opt = optimizer_for(exp)
    params = warm_start(opt, exp, uri)
    assert params["warm_start"] == f"earlier/{run_id}"
    assert (params["warm_start_reused"], params["warm_start_dropped"]) == (3, 0)
    assert opt.best() == ({"a": 0.0, "b": 0.0, "c": 1.0}, 5.0)
    (p,) = opt.ask(1)
    assert opt.origin(p) == "bo"  # three reused trials fill the two-seed phase
    with pytest.raises(SweepError, match="no MLflow experiment 'nope'"):
        warm_start(opt, experiment(["a"], WarmStartConfig(experiment="nope")), uri)
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("nope") is None
