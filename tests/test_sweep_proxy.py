"""The merged-experts proxy in a sweep (``optimizer.proxy``): config, refusals, and a real tiny
sweep (Ray local, MLflow sqlite, the tiny Gemma3 encoder of ``mixopt synth``) that trains the
experts first and records the proxy evaluations as runs of their own kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mixopt.config import load_experiment

TASKS = ["retrieval_0", "sts_1", "classification_2"]


@pytest.fixture(scope="module")
def model_data(tmp_path_factory) -> Path:
    """mixopt synth's three tasks and its tiny encoder."""
    from mixopt.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    return out


def write(tmp_path: Path, data: Path, trainer: dict, **optimizer) -> Path:
    exp = {
        "name": "proxy_sweep",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "search": {
            "bounds": {"retrieval_0": {"min": 0.05}},
            "seed_mixtures": [{"retrieval_0": 0.4, "sts_1": 0.3, "classification_2": 0.3}],
        },
        "optimizer": {"n_seeds": 4, "max_trials": 10, "max_concurrent": 2, "random_state": 0, **optimizer},
        "trainer": trainer,
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def embedding(data: Path) -> dict:
    return {
        "target": "trainers.embedding:train",
        "steps": 4,
        "model": str(data / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "max_seq_length": 24,
        "learning_rate": 3e-3,
        "eval_batch_size": 64,
        "classifier_train_rows": 48,
        "cpu_threads": 1,
        "progress": False,
    }


def test_the_proxy_is_off_by_default_and_its_kind_is_checked(tmp_path: Path, model_data: Path) -> None:
    from mixopt.config import ConfigError

    exp = load_experiment(write(tmp_path, model_data, embedding(model_data)))
    assert exp.optimizer.proxy is None
    with pytest.raises(ConfigError, match="optimizer.proxy.kind"):
        load_experiment(write(tmp_path, model_data, embedding(model_data), proxy={"kind": "soup"}))


def test_a_trainer_without_merged_scorer_is_refused_before_anything_is_written(
    tmp_path: Path, model_data: Path
) -> None:
    from mixopt.sweep import run_sweep
    from mixopt.trial import TrainerError

    analytic = {"target": "trainers.analytic:train", "steps": 20}
    exp = load_experiment(write(tmp_path, model_data, analytic, proxy={"kind": "merged_experts"}))
    with pytest.raises(TrainerError, match="trainers.analytic:train.*merged_scorer.*remove optimizer.proxy"):
        run_sweep(exp, verbose=False)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_the_proxy_with_the_multi_fidelity_gp_is_refused_before_anything_is_written(
    tmp_path: Path, model_data: Path
) -> None:
    from mixopt.sweep import run_sweep

    path = write(
        tmp_path, model_data, embedding(model_data), proxy={"kind": "merged_experts"}, multi_fidelity=True
    )
    with pytest.raises(ValueError, match="optimizer.proxy needs the single-fidelity GP"):
        run_sweep(load_experiment(path), verbose=False)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_the_experts_are_the_bounds_nearest_corners(tmp_path: Path, model_data: Path) -> None:
    """Projection onto {w_retrieval >= 0.05, sum 1} of each one-hot, by hand: (1, 0, 0),
    (0.05, 0.95, 0), (0.05, 0, 0.95); they follow the user's seed mixture."""
    from mixopt.sweep.warm import optimizer_for

    exp = load_experiment(
        write(tmp_path, model_data, embedding(model_data), proxy={"kind": "merged_experts"})
    )
    seeds = optimizer_for(exp).ask(4)
    assert seeds[0] == {"retrieval_0": 0.4, "sts_1": 0.3, "classification_2": 0.3}
    want = [(1.0, 0.0, 0.0), (0.05, 0.95, 0.0), (0.05, 0.0, 0.95)]
    for got, w in zip(seeds[1:], want):
        assert [got[t] for t in TASKS] == pytest.approx(w, abs=1e-12)


@pytest.mark.slow
def test_a_tiny_sweep_with_the_proxy_trains_experts_then_scores_proposals(
    tmp_path: Path, model_data: Path, ray_local, capsys
) -> None:
    from mixopt.sweep import run_sweep

    path = write(
        tmp_path, model_data, embedding(model_data), proxy={"kind": "merged_experts", "min_correlation": -1.0}
    )
    exp = load_experiment(path)
    summary = run_sweep(exp, verbose=True)
    out = capsys.readouterr().out
    client = MlflowClient(exp.tracking.resolved_uri())
    e = client.get_experiment_by_name("proxy_sweep")
    runs = client.search_runs([e.experiment_id], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("mixopt.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    proxies = [r for r in runs if r.data.tags.get("mixopt.kind") == "proxy"]
    assert parent.info.status == "FINISHED" and summary.finished == 10 == len(trials)
    experts = sorted(
        (r for r in trials if r.data.tags.get("mixopt.stage") == "expert"),
        key=lambda r: r.data.tags["mixopt.trial_id"],
    )
    assert len(experts) == 3
    # The experts are trials 1-3 (after the user's seed mixture); every later trial started after
    # the last expert ended (the proxy exists before any GP proposal is trained).
    assert [r.data.tags["mixopt.trial_id"] for r in experts] == ["trial-001", "trial-002", "trial-003"]
    last_expert_end = max(r.info.end_time for r in experts)
    later = [r for r in trials if r.data.tags["mixopt.trial_id"] > "trial-003"]
    assert len(later) == 6 and all(r.info.start_time >= last_expert_end for r in later)
    # A proxy run per proposal trained after the experts, for the user's seed mixture and for each
    # expert: nested under the sweep, no checkpoint, its own scores and cost.
    assert len(proxies) == 10
    for r in proxies:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "mixopt.checkpoint" not in r.data.tags and r.info.status == "FINISHED"
        assert set(r.data.metrics) >= {"objective", "proxy_seconds", *(f"score.{t}" for t in TASKS)}
    proxied = {r.data.tags["mixopt.proposal"] for r in proxies}
    for r in later:
        assert r.data.tags["mixopt.proposal"] in proxied
    assert parent.data.metrics["proxy_evaluations"] == 10
    state = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "optimizer_state.json")).read_text()
    )
    assert len(state["proxy"]) == 10
    assert "proxy: Spearman" in out and "proxy: 10 evaluations in" in out
    # At an expert the merge is the expert: the proxy's scores are the trial's own.
    for r in experts:
        twin = next(p for p in proxies if p.data.tags["mixopt.proposal"] == r.data.tags["mixopt.proposal"])
        for t in TASKS:
            assert twin.data.metrics[f"score.{t}"] == pytest.approx(r.data.metrics[f"score.{t}"], abs=1e-6)
