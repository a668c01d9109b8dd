"""``mixopt recommend``: the recommended mixture under a new composition of the task scores.

The sweep is recorded as a real one is (real MLflow sqlite store, the optimizer state and config
artifacts on a sweep parent run) with its trials scored by the analytic trainer's closed form,
whose optimum under any composition a naive grid over the simplex finds: the reference.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.cli.recommend import RecommendError, parse_objective
from mixopt.config import dump_experiment, load_experiment
from mixopt.sweep.warm import optimizer_for
from mixopt.tracking import STATE_PATH, SweepTracker

TASKS = ["retrieval_0", "sts_1", "classification_2"]
FAVOURED = "classification_2"
NEW = f"{FAVOURED}=4,retrieval_0=1,sts_1=1"
NEW_WEIGHTS = {"retrieval_0": 1 / 6, "sts_1": 1 / 6, FAVOURED: 4 / 6}


def law(exp, mixture: dict[str, float]) -> dict[str, float]:
    """The analytic trainer's per-task scores at ``mixture`` (its closed form, no noise)."""
    from trainers.analytic import Options, scores

    s = scores(mixture, exp.tasks, exp.trainer.steps, Options())
    return dict(zip(exp.task_names, map(float, s)))


def grid_optimum(exp, weights: dict[str, float], step: float = 0.05) -> dict[str, float]:
    """The best mixture on a grid of the simplex for the composition ``weights`` (naive loop)."""
    n = round(1 / step)
    best, best_value = None, -np.inf
    for i, j in itertools.product(range(n + 1), repeat=2):
        if i + j > n:
            continue
        mixture = dict(zip(TASKS, (i * step, j * step, (n - i - j) * step)))
        s = law(exp, mixture)
        value = sum(w * s[t] for t, w in weights.items())
        if value > best_value:
            best, best_value = mixture, value
    return best


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, data_dir):
    """A finished sweep of 21 trials in MLflow: the experiment, its tracking URI, its parent run."""
    tmp = tmp_path_factory.mktemp("recommend")
    spec = {
        "name": "rec_test",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 6, "max_trials": 16, "random_state": 0, "exploit_last": 0},
        "trainer": {"target": "trainers.analytic:train", "steps": 20},
        "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"},
        "storage": str(tmp / "runs"),
        "verify": {"seeds": 2},
    }
    (tmp / "exp.yaml").write_text(yaml.safe_dump(spec))
    exp = load_experiment(tmp / "exp.yaml")
    # The trials: a lattice of the simplex (step 0.2, 21 mixtures), scored by the law; told as an
    # earlier sweep's (proposal, value, scores) so that no GP is fitted to build the fixture.
    opt = optimizer_for(exp)
    lattice = [
        dict(zip(TASKS, (i / 5, j / 5, (5 - i - j) / 5)))
        for i, j in itertools.product(range(6), repeat=2)
        if i + j <= 5
    ]
    opt.warm_start([(p, None, law(exp, p)) for p in lattice], name="lattice")
    uri = exp.tracking.resolved_uri()
    tracker = SweepTracker(uri, exp.experiment_name)
    parent = tracker.start_sweep(exp.name, params={}, artifacts={"config.yaml": dump_experiment(exp)})
    state = tmp / "optimizer_state.json"
    state.write_text(json.dumps(opt.state_dict()))
    tracker.set_tags(parent, {STATE_PATH: str(state)})
    tracker.end_sweep("FINISHED")
    return exp, uri, parent


def recommended(output: str) -> tuple[dict[str, float], float, float]:
    """The mixture, predicted mean and sd of the ``recommended:`` line."""
    line = next(ln for ln in output.splitlines() if ln.startswith("recommended:"))
    mixture = {t: float(v) for t, v in re.findall(r"(\w+)=([0-9.]+)", line.split(";")[0])}
    mean, sd = map(float, re.search(r"predicted ([0-9.]+) ± ([0-9.]+)", line).groups())
    return mixture, mean, sd


def test_a_composition_favouring_one_task_moves_the_recommendation_towards_it(recorded) -> None:
    exp, uri, parent = recorded
    default = CliRunner().invoke(app, ["recommend", "--tracking-uri", uri])
    assert default.exit_code == 0, default.output
    assert parent in default.output
    new = CliRunner().invoke(app, ["recommend", "--tracking-uri", uri, "--objective", NEW])
    assert new.exit_code == 0, new.output
    mix_default, _, _ = recommended(default.output)
    mix_new, mean_new, sd_new = recommended(new.output)
    # The reference law: the favoured task's optimal weight grows under the new composition...
    equal = {t: 1 / 3 for t in TASKS}
    assert grid_optimum(exp, NEW_WEIGHTS)[FAVOURED] > grid_optimum(exp, equal)[FAVOURED]
    # ...and so does the recommended one.
    assert mix_new[FAVOURED] > mix_default[FAVOURED] + 0.05

    # Under the new composition, by the law, the new recommendation beats the default's, and
    # comes within 0.01 of the grid's optimum.
    def composed(mixture):
        s = law(exp, mixture)
        return sum(w * s[t] for t, w in NEW_WEIGHTS.items())

    assert composed(mix_new) > composed(mix_default)
    assert composed(mix_new) >= composed(grid_optimum(exp, NEW_WEIGHTS)) - 0.01
    # The prediction is the composed posterior's mean: near the law's value at that mixture.
    assert abs(mean_new - composed(mix_new)) < 0.01 + 3 * sd_new


@pytest.mark.parametrize(
    ("objective", "says"),
    [
        (
            "retrieval_0=2,nope=1",
            "unknown score 'nope'; the sweep's scores are ['retrieval_0', 'sts_1', 'classification_2']",
        ),
        ("retrieval_0=-1", "'retrieval_0=-1' is not NAME=WEIGHT with a weight >= 0"),
        ("retrieval_0", "'retrieval_0' is not NAME=WEIGHT"),
        ("retrieval_0=0,sts_1=0", "give at least one score a positive weight"),
        ("sts_1=1,sts_1=2", "'sts_1' is given twice"),
    ],
)
def test_a_bad_objective_is_one_line_and_writes_nothing(recorded, objective, says) -> None:
    _, uri, _ = recorded
    client = MlflowClient(uri)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    r = CliRunner().invoke(app, ["recommend", "--tracking-uri", uri, "--objective", objective, "--verify"])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.output
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert after == before


def test_parse_objective_reads_name_weight_pairs() -> None:
    assert parse_objective(" a=2, b=0.5 ", ["a", "b", "c"]) == {"a": 2.0, "b": 0.5}
    with pytest.raises(RecommendError, match="not NAME=WEIGHT"):
        parse_objective("a=inf", ["a"])


def test_no_store_is_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/none.db"
    r = CliRunner().invoke(app, ["recommend", "--tracking-uri", uri])
    assert (
        r.exit_code == 2
        and r.output.strip() == f"no MLflow store at {uri}: run `mixopt sweep` first, or give --tracking-uri"
    )
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_verify_runs_the_stage_under_the_new_composition(recorded, ray_local) -> None:
    exp, uri, parent = recorded
    r = CliRunner().invoke(app, ["recommend", "--tracking-uri", uri, "--objective", NEW, "--verify"])
    assert r.exit_code == 0, r.output
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name(exp.experiment_name).experiment_id
    (run,) = client.search_runs([eid], "tags.`mixopt.role` = 'recommend'")
    assert run.data.tags["mixopt.sweep_run"] == parent and run.info.status == "FINISHED"
    trials = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(trials) == 2 * exp.verify.seeds
    for t in trials:
        # Each verification trial reports the new composition of its own logged scores.
        m = t.data.metrics
        assert m["objective"] == pytest.approx(
            sum(w * m[f"score.{k}"] for k, w in NEW_WEIGHTS.items()), abs=1e-12
        )
    assert "verify.diff" in run.data.metrics
    # The sweep itself is untouched and still the newest sweep (soup, resume and warm start find it).
    from mixopt.tracking.store import connect, newest_sweep

    assert newest_sweep(connect(uri), [eid]).info.run_id == parent
