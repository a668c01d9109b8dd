"""Warm start per task score (issue 34): what a new sweep reuses from an earlier one when the tasks
changed, the console line that says so, and the recomposed objectives against hand-computed means.

Real MLflow (sqlite under tmp_path), the real optimizer; the two-sweep test runs real Ray sweeps
of the analytic trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mixopt import MixtureOptimizer
from mixopt.config import (
    Experiment,
    OptimizerConfig,
    TaskConfig,
    TrainerConfig,
    WarmStartConfig,
    load_experiment,
)
from mixopt.sweep.warm import optimizer_for, warm_line, warm_start

TASKS = ["retrieval_0", "sts_1", "classification_2"]


def experiment(tasks: list[str], warm: WarmStartConfig | None) -> Experiment:
    return Experiment(
        name="new",
        tasks=[TaskConfig(name=t, kind="retrieval", path=f"/data/{t}") for t in tasks],
        optimizer=OptimizerConfig(n_seeds=2, warm_start=warm),
        trainer=TrainerConfig(target="trainers.analytic:train"),
    )


def test_a_task_removed_and_one_added_are_counted_and_said(tmp_path) -> None:
    old = MixtureOptimizer(["a", "b", "c"], n_seeds=3, random_state=1)
    told = []
    for p in old.ask(3):
        scores = {"a": 0.1 + p["a"], "b": 0.2 * p["b"], "c": 0.7}
        old.tell(p, scores=scores)
        told.append((p, scores))
    path = tmp_path / "state.json"
    path.write_text(json.dumps(old.state_dict()))
    exp = experiment(["a", "b", "d"], WarmStartConfig(state=path, max_removed=0.99))
    opt = optimizer_for(exp)
    params = warm_start(opt, exp, "unused://")
    assert params["warm_start_reused"] == 3 and params["warm_start_dropped"] == 0
    assert params["warm_start_scores_reused"] == "a,b" and params["warm_start_scores_new"] == "d"
    assert warm_line(params, exp) == (
        f"warm start: 3 trials from state file {path}, scores for 2 of 3 tasks reused, 1 task new (d)"
    )
    # d was never scored: the reused trials' objective (the mean over a, b, d) is unknown, and their
    # a and b scores are the source's, unchanged.
    assert [v for _, v in opt.history] == [None, None, None]
    for (_, scores), (_, old_scores) in zip(opt.score_history, told):
        assert {k: scores[k] for k in ("a", "b")} == {k: old_scores[k] for k in ("a", "b")}
        assert "d" not in scores
    assert opt.best() is None


def write(tmp_path: Path, data_dir: Path, name: str, tasks: list[str], **optimizer) -> Path:
    exp = {
        "name": name,
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in tasks],
        "optimizer": {"n_seeds": 4, "max_concurrent": 2, "random_state": 0, **optimizer},
        "trainer": {"target": "trainers.analytic:train", "steps": 20},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.mark.slow
def test_two_sweeps_with_a_task_removed_reuse_the_scores_of_the_tasks_kept(
    tmp_path: Path, data_dir: Path, ray_local, capsys
) -> None:
    from mixopt.sweep import run_sweep

    first = load_experiment(write(tmp_path, data_dir, "first", TASKS, max_trials=6))
    run_sweep(first, verbose=False)
    client = MlflowClient(first.tracking.resolved_uri())
    eid = client.get_experiment_by_name("first").experiment_id
    runs = client.search_runs([eid], "tags.`mixopt.role` = 'trial'")
    (parent,) = client.search_runs([eid], "tags.`mixopt.role` = 'sweep'")
    assert len(runs) == 6

    kept = TASKS[:2]
    second = load_experiment(
        write(
            tmp_path,
            data_dir,
            "second",
            kept,
            max_trials=1,
            warm_start={"experiment": "first", "max_removed": 0.99},
        )
    )
    capsys.readouterr()
    run_sweep(second, verbose=True)
    out = capsys.readouterr().out
    # Every trial of the first sweep whose classification weight is below max_removed is reused.
    n = sum(json.loads(r.data.tags["mixopt.proposal"])["classification_2"] <= 0.99 for r in runs)
    line = (
        f"warm start: {n} trials from sweep {parent.info.run_id}, scores for 2 of 2 tasks reused, 0 tasks new"
    )
    assert line in out
    state = json.loads(
        (Path(second.storage) / "second").glob("sweep-*/optimizer_state.json").__next__().read_text()
    )
    opt = MixtureOptimizer.from_state_dict(state)
    reused = [(p, v) for p, v in opt.history if opt.origin(p) == "warm"]
    assert len(reused) == n
    # The reference: each first-sweep trial's logged scores of the tasks kept, their plain mean
    # (the second sweep's objective), at its mixture renormalised onto those tasks.
    expected = []
    for r in runs:
        w = json.loads(r.data.tags["mixopt.proposal"])
        kept_weight = sum(w[t] for t in kept)
        mixture = {t: w[t] / kept_weight for t in kept}
        mean = sum(r.data.metrics[f"score.{t}"] for t in kept) / len(kept)
        expected.append((mixture, mean))
    for p, v in reused:
        match = [m for mix, m in expected if all(abs(mix[t] - p[t]) < 1e-9 for t in kept)]
        assert match and v == pytest.approx(match[0], abs=1e-12)
    # Not the first sweep's objectives (means over three tasks, one of them now gone).
    old = {round(r.data.metrics["objective"], 12) for r in runs}
    assert all(round(v, 12) not in old for _, v in reused)
    # The parent run counts what was reused.
    (new_parent,) = client.search_runs(
        [client.get_experiment_by_name("second").experiment_id], "tags.`mixopt.role` = 'sweep'"
    )
    params = new_parent.data.params
    assert params["warm_start_reused"] == str(n) and params["warm_start_scores_reused"] == "retrieval_0,sts_1"
