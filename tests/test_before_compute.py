"""What `mixopt validate` refuses before any compute, each as one line naming the YAML path, exit 2, no
traceback, nothing written: a loss that does not fit its task's kind or names no task, a sweep with
nothing to optimise, a tracking URI no MLflow store serves, YAML tags; and objective weights at the
float limits, which are valid (a weighted mean is scale-free) and must not overflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize

TASKS = ["retrieval_0", "sts_1", "classification_2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The synthetic tasks and tiny model, and a pair-classification task made from the STS rows."""
    out = tmp_path_factory.mktemp("data")
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=32, n_dev=16))
    (out / "pair_3").mkdir()
    for split in ("train", "dev"):
        rows = [json.loads(line) for line in (out / "sts_1" / f"{split}.jsonl").read_text().splitlines()]
        (out / "pair_3" / f"{split}.jsonl").write_text(
            "".join(
                json.dumps({"text1": r["text1"], "text2": r["text2"], "label": int(r["score"] >= 2.5)}) + "\n"
                for r in rows
            )
        )
    return out


def experiment(tmp_path: Path, data: Path, **over) -> dict:
    exp = {
        "name": "before",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    exp.update(over)
    return exp


def st_experiment(tmp_path: Path, data: Path, losses: dict) -> dict:
    exp = experiment(tmp_path, data)
    exp["tasks"].append({"name": "pair_3", "kind": "pair_classification", "path": str(data / "pair_3")})
    exp["trainer"] = {
        "target": "trainers.sentence_transformers:train",
        "steps": 4,
        "model": str(data / "model"),
        "batch_size": 8,
        "losses": losses,
    }
    return exp


def validate(tmp_path: Path, config: dict | str, *args: str) -> tuple[int, str, str]:
    """``mixopt validate`` on ``config`` (a dict, or the YAML text): the exit code, stdout, stderr."""
    path = tmp_path / "exp.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def refused(tmp_path: Path, config: dict | str, pattern: str, *args: str) -> str:
    """Exit 2, one line on stderr that names the YAML file and matches ``pattern``, nothing written."""
    code, _, err = validate(tmp_path, config, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(str(tmp_path / "exp.yaml") + ":"), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    return lines[0]


# --------------------------------------------------------------------------- losses


def test_a_loss_that_does_not_fit_its_task_kind_is_one_line_naming_task_loss_and_the_fitting_ones(
    tmp_path, data
) -> None:
    config = st_experiment(tmp_path, data, {"pair_3": {"name": "CosineSimilarityLoss"}})
    line = refused(
        tmp_path,
        config,
        r":\d+: trainer\.losses\.pair_3: CosineSimilarityLoss reads \(sentence1, sentence2, score\), "
        r"which task pair_3 \(pair_classification\) cannot give; losses that fit pair_classification: ",
    )
    fit = line.split("losses that fit pair_classification: ")[1]
    assert "ContrastiveLoss" in fit and "OnlineContrastiveLoss" in fit and "CoSENTLoss" not in fit
    # The line number is the loss's key in the YAML.
    text = (tmp_path / "exp.yaml").read_text().splitlines()
    number = int(re.match(r".*?exp\.yaml:(\d+):", line).group(1))
    assert text[number - 1].strip().startswith("pair_3:")


def test_a_loss_keyed_by_a_misspelt_task_name_is_refused_with_the_closest_name(tmp_path, data) -> None:
    config = st_experiment(tmp_path, data, {"retreival_0": {"name": "MultipleNegativesRankingLoss"}})
    refused(
        tmp_path,
        config,
        r"trainer\.losses\.retreival_0: 'retreival_0' is neither a task nor a task kind "
        r"\(did you mean 'retrieval_0'\?\)",
    )


def test_the_losses_of_labelled_pairs_are_accepted(tmp_path, data) -> None:
    losses = {"pair_3": {"name": "OnlineContrastiveLoss", "margin": 0.4}, "sts": {"name": "AnglELoss"}}
    code, out, err = validate(tmp_path, st_experiment(tmp_path, data, losses))
    assert code == 0, err
    assert yaml.safe_load(out)["trainer"]["losses"]["pair_3"] == {
        "name": "OnlineContrastiveLoss",
        "margin": 0.4,
    }


# --------------------------------------------------------------------------- nothing to optimise


def test_one_task_only_has_nothing_to_optimise(tmp_path, data) -> None:
    config = experiment(tmp_path, data)
    config["tasks"] = config["tasks"][:1]
    refused(tmp_path, config, r": tasks: one task only \(retrieval_0\) and no hyperparameter searched")
    # With a hyperparameter searched, one task is a search of that hyperparameter.
    config["search"] = {"hyperparameters": {"rate": {"type": "float", "low": 1.0, "high": 20.0}}}
    assert validate(tmp_path, config)[0] == 0


@pytest.mark.parametrize(
    "bounds, mixture",
    [
        ({"retrieval_0": {"min": 0.2, "max": 0.2}, "sts_1": {"min": 0.3, "max": 0.3}}, "0.2, 0.3, 0.5"),
        (
            {"retrieval_0": {"min": 0.5}, "sts_1": {"min": 0.25}, "classification_2": {"min": 0.25}},
            "0.5, 0.25, 0.25",
        ),
        (
            {"retrieval_0": {"max": 0.5}, "sts_1": {"max": 0.25}, "classification_2": {"max": 0.25}},
            "0.5, 0.25, 0.25",
        ),
    ],
)
def test_bounds_that_pin_every_weight_have_nothing_to_optimise(tmp_path, data, bounds, mixture) -> None:
    config = experiment(tmp_path, data, search={"bounds": bounds})
    w = mixture.split(", ")
    fixed = f"retrieval_0={w[0]}, sts_1={w[1]}, classification_2={w[2]}"
    refused(tmp_path, config, rf": search\.bounds: the bounds leave one mixture only \({re.escape(fixed)}\)")
    # One weight more that may vary is a search again.
    loose = {t: b for t, b in bounds.items() if t != "retrieval_0"}
    assert validate(tmp_path, experiment(tmp_path, data, search={"bounds": loose}))[0] == 0


# --------------------------------------------------------------------------- tracking URI, YAML tags


def test_the_tracking_schemes_are_mlflows() -> None:
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from mixopt.config.models import TRACKING_SCHEMES

    assert TRACKING_SCHEMES == set(_tracking_store_registry._registry)


def test_a_tracking_uri_no_mlflow_store_serves_is_refused(tmp_path, data) -> None:
    config = experiment(tmp_path, data, tracking={"uri": "mlfow://tracking.example:5000"})
    refused(tmp_path, config, r":\d+: tracking\.uri: MLflow has no tracking store for the scheme 'mlfow'")
    for good in ("http://127.0.0.1:5000", "postgresql+psycopg2://u@db/mlflow", str(tmp_path / "mlruns")):
        config = experiment(tmp_path, data, tracking={"uri": good})
        assert validate(tmp_path, config)[0] == 0, good


@pytest.mark.parametrize(
    "old, new, tag",
    [
        ("name: before", "name: !!python/name:os.system before", "!!python/name:os.system"),
        ("  steps: 10", "  steps: !mine 10", "!mine"),
        ("  target: trainers.analytic:train", "  target: !!python/object:x {}", "!!python/object:x"),
    ],
)
def test_a_yaml_tag_is_one_line_at_its_line(tmp_path, data, old, new, tag) -> None:
    text = yaml.safe_dump(experiment(tmp_path, data), sort_keys=False)
    assert old in text.splitlines()
    text = text.replace(old, new)
    number = text.splitlines().index(new) + 1
    refused(tmp_path, text, rf"exp\.yaml:{number}: .*the YAML tag {re.escape(repr(tag))} is not allowed")


# --------------------------------------------------------------------------- objective weights


def test_objective_weights_summing_to_zero_are_refused(tmp_path, data) -> None:
    config = experiment(tmp_path, data, objective={"weights": {"retrieval_0": 0.0, "sts_1": 0.0}})
    refused(tmp_path, config, r"objective\.weights: the weights sum to 0")


def test_objective_weights_near_the_float_limit_are_the_weighted_mean_they_say(tmp_path, data) -> None:
    """1e308 and 1e308 are 1:1; 1e308 and 5e307 are 2:1 (their sum overflows a float)."""
    from mixopt.config import load_experiment

    for weights, expected in [
        ({"retrieval_0": 1e308, "sts_1": 1e308}, {"retrieval_0": 0.5, "sts_1": 0.5}),
        (
            {"retrieval_0": 1e308, "sts_1": 5e307, "classification_2": 0.0},
            {"retrieval_0": 2 / 3, "sts_1": 1 / 3},
        ),
    ]:
        config = experiment(tmp_path, data, objective={"weights": weights})
        assert validate(tmp_path, config)[0] == 0
        got = load_experiment(tmp_path / "exp.yaml").objective_weights
        assert {k: v for k, v in got.items() if v} == pytest.approx(expected, rel=1e-15)
