"""Commands given something they cannot use refuse it in one line, no traceback, before any work:
``mixopt eval`` on a model whose ``modules.json`` is broken or whose weights are cut off,
``mixopt soup --metric`` naming a metric the soup's evaluation cannot give (before the soup is
written), ``mixopt preflight --memory-limit-gb 0``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mixopt.checksums import CHECKSUMS_FILE
from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize
from tests.test_soup import build_checkpoint, log_sweep


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_line(code: int, err: str, expected_code: int, pattern: str) -> str:
    lines = err.strip().splitlines()
    assert code == expected_code and len(lines) == 1, (code, err)
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refuse") / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=32, n_dev=16))
    return out


# --------------------------------------------------------------------------- mixopt eval


def broken_models(synth: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Copies of the synthetic model (written with its checksums) broken four ways, with what the
    one line must say."""
    out = {}
    for checked in (True, False):
        for what in ("modules.json", "model.safetensors"):
            model = shutil.copytree(synth / "model", root / f"{what}-{'checked' if checked else 'bare'}")
            if not checked:
                (model / CHECKSUMS_FILE).unlink()
            target = model / what
            if what == "modules.json":
                target.write_text(target.read_text()[:-20])  # a cut-off JSON list
            else:
                target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
            if checked:
                expected = rf"{re.escape(str(target))} has SHA-256 \w+…, but \w+… was recorded"
            elif what == "modules.json":
                expected = rf"{re.escape(str(model))}: does not load as a sentence-transformers model \(JSONDecodeError"
            else:
                expected = rf"{re.escape(str(model))}: does not load as a sentence-transformers model \(\w+"
            out[f"{what}, {'with' if checked else 'without'} checksums"] = (model, expected)
    return out


def test_eval_on_a_broken_model_is_one_line_before_any_task(synth, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for what, (model, expected) in broken_models(synth, tmp_path).items():
        code, _, err = invoke(
            "eval",
            str(model),
            "--mteb-tasks",
            "STSBenchmark",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/none.db",
        )
        one_line(code, err, 2, expected)
        assert "Traceback" not in err, what
        assert not (model / "mteb_results.json").exists() and not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- mixopt soup --metric


def test_soup_metric_the_evaluation_lacks_is_refused_before_the_soup_is_written(
    synth, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    checkpoints = [build_checkpoint(tmp_path / "ckpts" / f"trial{s}", seed=s) for s in range(2)]
    trials = [
        {"id": f"t{i}", "checkpoint": c, "objective": 0.5 + i / 10, "scores": {"retrieval_0": 0.4 + i / 10}}
        for i, c in enumerate(checkpoints)
    ]
    ids = log_sweep(uri, "metric", trials)
    client = MlflowClient(uri)
    for i, run_id in enumerate(ids.values()):  # a training metric every trial has, which a soup lacks
        client.log_metric(run_id, "tokens_per_s", 1000.0 + i)
        client.log_metric(run_id, "loss.retrieval_0", 0.5 - i / 10)
    exp = {
        "name": "metric",
        "tasks": [
            {"name": t, "kind": t.rsplit("_", 1)[0], "path": str(synth / t)} for t in ("retrieval_0", "sts_1")
        ],
        "trainer": {
            "target": "trainers.embedding:train",
            "model": str(synth / "model"),
            "matryoshka_dims": [64],
        },
        "tracking": {"uri": uri},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    for metric in ("tokens_per_s", "loss.retrieval_0", "score.nope"):
        code, _, err = invoke("soup", str(tmp_path / "exp.yaml"), "--metric", metric, "--runs", "top2")
        one_line(
            code,
            err,
            2,
            rf"^--metric '{re.escape(metric)}': the soup's evaluation gives objective, score.<task> and the "
            r"tasks' dev metrics .* \(e\.g\. --metric score\.retrieval_0\)$",
        )
        assert not (tmp_path / "soups").exists()


def test_the_metrics_a_soup_is_scored_by() -> None:
    from mixopt.config import TaskConfig
    from mixopt.soup.evaluate import metric_problem

    tasks = [
        TaskConfig(name="a", kind="sts", path=Path("/d/a")),
        TaskConfig(name="b.c", kind="retrieval", path=Path("/d/b")),
    ]
    for metric in ("objective", "score.a", "score.b.c", "a/spearman/d64", "b.c/ndcg_at_10/d32"):
        assert metric_problem(metric, tasks) is None, metric
    for metric in ("loss", "tokens_per_s", "score.d", "d/spearman/d64", "a", "final_loss"):
        assert metric_problem(metric, tasks) is not None, metric


# --------------------------------------------------------------------------- mixopt preflight


@pytest.mark.parametrize("limit", ["0", "-4", "nan"])
def test_preflight_refuses_a_memory_limit_of_zero(synth, tmp_path, limit) -> None:
    exp = {
        "name": "pre",
        "tasks": [
            {"name": t, "kind": t.rsplit("_", 1)[0], "path": str(synth / t)} for t in ("retrieval_0", "sts_1")
        ],
        "trainer": {
            "target": "trainers.embedding:train",
            "model": str(synth / "model"),
            "matryoshka_dims": [64],
        },
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    code, out, err = invoke("preflight", str(tmp_path / "exp.yaml"), "--memory-limit-gb", limit)
    one_line(code, err, 2, rf"--memory-limit-gb {limit}: a trial cannot fit in no memory")
    assert out == ""  # nothing measured
