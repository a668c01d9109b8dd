"""The objective as weights over task scores: the YAML (`objective.weights`, errors), the weights
reaching the trainers, and each trainer's reported objective against the weighted mean by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mixopt.config import ConfigError, TaskConfig, load_experiment
from mixopt.trial import Trial

TASKS = ["retrieval_0", "sts_1", "classification_2"]


def write(tmp_path: Path, data_dir: Path, **top) -> Path:
    exp = {
        "name": "objective_test",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "trainer": {"target": "trainers.analytic:train", "steps": 20},
        **top,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    return err.value.lines()


def test_weights_are_normalised_and_the_default_is_the_plain_mean(tmp_path, data_dir):
    exp = load_experiment(write(tmp_path, data_dir, objective={"weights": {"retrieval_0": 2, "sts_1": 1}}))
    assert exp.objective_weights == pytest.approx({"retrieval_0": 2 / 3, "sts_1": 1 / 3})
    plain = load_experiment(write(tmp_path, data_dir))
    assert plain.objective is None
    assert plain.objective_weights == pytest.approx({t: 1 / 3 for t in TASKS})


def test_the_removed_surrogate_key_loads_as_single_and_is_refused_as_composite(tmp_path, data_dir):
    """``optimizer.surrogate`` is no longer an option: ``single`` (what every recorded config.yaml
    names, and the model that remains) is dropped; anything else is one line naming file:line."""
    single = load_experiment(write(tmp_path, data_dir, optimizer={"surrogate": "single", "beta": 1.5}))
    assert single.optimizer.beta == 1.5 and "surrogate" not in single.optimizer.model_dump()
    path = write(tmp_path, data_dir, optimizer={"surrogate": "composite"})
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "surrogate:" in t)
    assert problems(path) == [
        f"{path}:{line}: optimizer.surrogate: 'composite' is no longer an option: one GP on the objective "
        "is the only model (the per-task composite GP lost on its benchmark: bench/JOURNAL.md, "
        "2026-12-07); delete the key"
    ]


def test_mean_kind_is_translated_to_the_equivalent_weights(tmp_path, data_dir):
    # Two retrieval tasks, one STS, one classification: mean over kinds of the per-kind means is
    # (r0 + r3) / 6 + s / 3 + c / 3.
    path = write(tmp_path, data_dir)
    data = yaml.safe_load(path.read_text())
    data["tasks"].append({"name": "retrieval_3", "kind": "retrieval", "path": str(data_dir / "retrieval_0")})
    data["trainer"] = {"target": "trainers.embedding:train", "objective": "mean_kind"}
    path.write_text(yaml.safe_dump(data))
    exp = load_experiment(path)
    assert exp.objective_weights == pytest.approx(
        {"retrieval_0": 1 / 6, "retrieval_3": 1 / 6, "sts_1": 1 / 3, "classification_2": 1 / 3}
    )


@pytest.mark.parametrize(
    ("objective", "where", "says"),
    [
        ({"weights": {"retrieval_0": 1, "nope": 1}}, "objective.weights.nope", "unknown score 'nope'"),
        ({"weights": {"retrieval_0": -1, "sts_1": 2}}, "objective.weights", "finite and >= 0"),
        ({"weights": {"retrieval_0": 0, "sts_1": 0}}, "objective.weights", "sum to 0"),
        ({"weights": {}}, "objective.weights", "at least 1"),
        ({"weight": {"retrieval_0": 1}}, "objective.weight", "unknown key"),
    ],
)
def test_bad_weights_are_one_line_naming_the_yaml_path(tmp_path, data_dir, objective, where, says):
    lines = problems(write(tmp_path, data_dir, objective=objective))
    hits = [line for line in lines if f": {where}" in line and says in line]
    assert len(hits) == 1, lines
    assert hits[0].startswith(f"{tmp_path / 'exp.yaml'}:")  # file:line
    if "unknown score" in says:
        assert str(TASKS) in hits[0]  # the known names


def test_weights_beside_a_non_default_trainer_objective_is_one_error(tmp_path, data_dir):
    path = write(tmp_path, data_dir, objective={"weights": {"retrieval_0": 1}})
    data = yaml.safe_load(path.read_text())
    data["trainer"] = {"target": "trainers.embedding:train", "objective": "mean_kind"}
    path.write_text(yaml.safe_dump(data))
    lines = problems(path)
    assert len(lines) == 1 and "trainer.objective" in lines[0] and "objective.weights" in lines[0]
    # The default trainer objective written out is no conflict.
    data["trainer"]["objective"] = "mean_task"
    path.write_text(yaml.safe_dump(data))
    assert load_experiment(path).objective_weights == {"retrieval_0": 1.0}


def test_analytic_trial_reports_the_weighted_mean_of_its_logged_scores(tmp_path, data_dir):
    from trainers.analytic import train

    exp = load_experiment(
        write(tmp_path, data_dir, objective={"weights": {"retrieval_0": 3, "classification_2": 1}})
    )
    reports = []
    trial = Trial(
        mixture={"retrieval_0": 0.2, "sts_1": 0.5, "classification_2": 0.3},
        hyperparameters={},
        seed=1,
        steps=20,
        output_dir=tmp_path / "t",
        tasks=tuple(exp.tasks),
        options={"noise": 0.05},
        objective_weights=exp.objective_weights,
    )
    result = train(trial, lambda step, m: reports.append(dict(m)))
    # The logged per-task scores (metric keys and task_scores), weighted by hand.
    r, c = (
        result.task_metrics["retrieval_0/ndcg_at_10/d0"],
        result.task_metrics["classification_2/accuracy/d0"],
    )
    assert result.objective == pytest.approx((3 * r + c) / 4, abs=1e-12)
    assert result.task_scores["retrieval_0"] == r and result.task_scores["classification_2"] == c
    assert result.objective != pytest.approx(sum(result.task_scores.values()) / 3)  # not the mean
    for m in reports:
        r, c = m["retrieval_0/ndcg_at_10/d0"], m["classification_2/accuracy/d0"]
        assert m["objective"] == pytest.approx((3 * r + c) / 4, abs=1e-12)


def _rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluate_tasks_composes_the_given_weights(tmp_path):
    from trainers.evaluation import evaluate_tasks

    # Concept embeddings (one-hot per word c<k>): retrieval scores 1; the STS task's gold scores
    # run against the cosine, so its Spearman is -1: equal and 2:1 weights give different numbers.
    _rows(tmp_path / "ret" / "dev.jsonl", [{"query": "c0", "positive": "c0", "negatives": ["c1"]}] * 2)
    _rows(tmp_path / "ret" / "train.jsonl", [{"query": "c0", "positive": "c0"}])
    sts = [
        {"text1": "c0", "text2": "c0", "score": 0.0},
        {"text1": "c0", "text2": "c0 c1", "score": 3.0},
        {"text1": "c0", "text2": "c1", "score": 5.0},
    ]
    _rows(tmp_path / "sts" / "dev.jsonl", sts)
    _rows(tmp_path / "sts" / "train.jsonl", sts)
    tasks = (
        TaskConfig(name="ret", kind="retrieval", path=tmp_path / "ret"),
        TaskConfig(name="sts", kind="sts", path=tmp_path / "sts"),
    )

    def embed(texts):
        out = torch.zeros(len(texts), 4, dtype=torch.float64)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, int(w[1:])] += 1.0
        return F.normalize(out + 1e-6, dim=-1)

    result = evaluate_tasks(tasks, embed, dims=(4,), weights={"ret": 2.0, "sts": 1.0})
    ret, rho = result.task_metrics["ret/ndcg_at_10/d4"], result.task_metrics["sts/spearman/d4"]
    assert (ret, rho) == (pytest.approx(1.0), pytest.approx(-1.0))
    assert result.objective == pytest.approx((2 * ret + rho) / 3)


def test_the_scores_told_are_the_full_dimension_metrics_of_a_report():
    from mixopt.sweep.scores import final_scores, report_scores
    from mixopt.sweep.searcher import _metrics

    # As Tune hands a searcher a report: flattened under mixopt/, the smaller dim first.
    result = {
        "objective": 0.5,
        "mixopt/r/ndcg_at_10/d32": 0.1,
        "mixopt/r/ndcg_at_10/d64": 0.4,
        "mixopt/r/mrr_at_10/d64": 0.9,
        "mixopt/s/spearman/d64": 0.6,
        "mixopt/s/spearman/d32": 0.2,
    }
    metrics = _metrics(result)
    assert report_scores(metrics, {"r": "ndcg@10", "s": "spearman"}) == {"r": 0.4, "s": 0.6}
    assert report_scores({"loss": 1.0}, {"r": "ndcg@10"}) is None  # a loss-only report
    final = _metrics({"mixopt": {"score.r": 0.4, "score.s": 0.6, "objective": 0.5}})
    assert final_scores(final, ["r", "s"]) == {"r": 0.4, "s": 0.6}
    assert final_scores({"score.r": 0.4, "score.s": float("nan")}, ["r", "s"]) is None


def test_resume_tells_a_trial_the_scores_mlflow_logged(tmp_path):
    """A trial finished in MLflow but not told before the driver died: on resume the optimizer is
    told its logged per-task scores, and composes its objective under its own weights."""
    from mixopt import MixtureOptimizer
    from mixopt.sweep.resume import reconcile
    from mixopt.tracking import SweepTracker

    tasks = ["a", "b"]
    opt = MixtureOptimizer(tasks, n_seeds=4, random_state=0, objective={"a": 3, "b": 1})
    (p,) = opt.ask(1)
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "resume_scores")
    parent = tracker.start_sweep("s", {}, {})
    run = tracker.start_trial("trial-000", p, tasks, "seed", 0)
    tracker.log_metrics(run, {"objective": 0.55, "score.a": 0.6, "score.b": 0.4}, 10)
    tracker.finish_trial(run, "FINISHED")
    restored = MixtureOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())))
    assert reconcile(restored, tracker, parent, 10, tmp_path, tasks)[0] == 1
    assert restored.score_history[0][1] == {"a": 0.6, "b": 0.4}
    assert restored.history[0][1] == pytest.approx((3 * 0.6 + 0.4) / 4)


def test_resume_refuses_another_objective_and_takes_an_old_sweep_as_it_was(tmp_path, data_dir):
    from mixopt.config import dump_experiment
    from mixopt.sweep.common import SweepError
    from mixopt.sweep.resume import find_resumable
    from mixopt.tracking import STATE_PATH, SweepTracker

    exp = load_experiment(write(tmp_path, data_dir, tracking={"uri": f"sqlite:///{tmp_path}/m.db"}))
    # A sweep recorded while optimizer.surrogate was an option (its config names the default),
    # left unfinished: it resumes with no change; one that ran the removed composite model is refused.
    recorded = yaml.safe_load(dump_experiment(exp))
    recorded["optimizer"]["surrogate"] = "single"
    tracker = SweepTracker(exp.tracking.resolved_uri(), exp.experiment_name)
    parent = tracker.start_sweep(exp.name, {}, {"config.yaml": yaml.safe_dump(recorded, sort_keys=False)})
    (tmp_path / "state.json").write_text("{}")
    tracker.set_tags(parent, {STATE_PATH: str(tmp_path / "state.json")})
    assert find_resumable(exp, tracker, allow_config_change=False).changed == []
    from mixopt.config import ObjectiveConfig

    weighted = exp.model_copy(
        update={"objective": ObjectiveConfig(weights={"retrieval_0": 2.0, "sts_1": 1.0})}
    )
    with pytest.raises(SweepError) as err:
        find_resumable(weighted, tracker, allow_config_change=True)
    assert str(err.value) == (
        f"cannot resume sweep run {parent}: the YAML changes its objective (objective) "
        "against its recorded config.yaml; undo the change to resume it, or resume it as it was and "
        "then see `mixopt recommend --objective` for other weights"
    )
    other = load_experiment(write(tmp_path, data_dir, tracking={"uri": f"sqlite:///{tmp_path}/c.db"}))
    recorded["optimizer"]["surrogate"] = "composite"
    tracker = SweepTracker(other.tracking.resolved_uri(), other.experiment_name)
    parent = tracker.start_sweep(other.name, {}, {"config.yaml": yaml.safe_dump(recorded, sort_keys=False)})
    tracker.set_tags(parent, {STATE_PATH: str(tmp_path / "state.json")})
    with pytest.raises(SweepError) as err:
        find_resumable(other, tracker, allow_config_change=True)
    assert str(err.value).startswith(
        f"cannot resume sweep run {parent}: it ran with optimizer.surrogate: 'composite', no longer an "
        "option (one GP on the objective is the only model"
    ) and str(err.value).endswith("start a new sweep, with optimizer.warm_start to reuse its trials")


def _scores_file_evaluate(checkpoint, tasks, options):
    """A trainer's evaluate_checkpoint that reads a checkpoint's scores from its scores.json."""
    from mixopt.trial import TrialResult

    scores = json.loads((Path(checkpoint) / "scores.json").read_text())
    return TrialResult(objective=sum(scores.values()) / len(scores), task_metrics={}, task_scores=scores)


def test_the_soup_scores_a_checkpoint_with_the_experiment_weights(tmp_path, data_dir):
    from mixopt.soup.evaluate import TrainerEvaluate

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "scores.json").write_text(json.dumps({t: s for t, s in zip(TASKS, (0.2, 0.5, 0.8))}))
    weighted = load_experiment(
        write(tmp_path, data_dir, objective={"weights": {"retrieval_0": 3, "sts_1": 1}})
    )
    result = TrainerEvaluate(_scores_file_evaluate, weighted)(tmp_path / "ckpt")
    assert result.objective == pytest.approx((3 * 0.2 + 0.5) / 4)
    plain = load_experiment(write(tmp_path, data_dir))
    assert TrainerEvaluate(_scores_file_evaluate, plain)(tmp_path / "ckpt").objective == pytest.approx(0.5)
