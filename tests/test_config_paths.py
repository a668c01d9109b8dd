"""Relative paths in an experiment YAML mean the YAML's folder, wherever the command runs."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mixopt.config import ConfigError, load_experiment

ROOT = Path(__file__).resolve().parents[1]

YAML = textwrap.dedent(
    """\
    name: rel
    tasks:
      - {name: a, kind: retrieval, path: data/a}
      - {name: b, kind: sts, train: ../shared/b/train.jsonl, dev: ../shared/b/dev.jsonl}
      - {name: c, kind: classification, dataset: data/c.parquet, dev_fraction: 0.1}
    trainer:
      target: trainers.embedding:train
      model: models/enc
    tracking: {uri: "sqlite:///store/mlflow.db"}
    storage: ckpts
    optimizer:
      warm_start: {state: old/optimizer_state.json}
    """
)


def test_relative_paths_resolve_against_the_yaml_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "project" / "conf"
    (conf / "models" / "enc").mkdir(parents=True)
    (conf / "exp.yaml").write_text(YAML)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = load_experiment(Path("..") / "project" / "conf" / "exp.yaml")
    assert exp.task("a").path == conf / "data" / "a"
    assert exp.task("b").train == tmp_path / "project" / "shared" / "b" / "train.jsonl"
    assert exp.task("c").dataset == str(conf / "data" / "c.parquet")
    assert exp.trainer.options["model"] == str(conf / "models" / "enc")
    assert exp.tracking.uri == f"sqlite:///{conf}/store/mlflow.db"
    assert exp.storage == str(conf / "ckpts")
    assert exp.optimizer.warm_start.state == conf / "old" / "optimizer_state.json"


def test_defaults_not_in_the_yaml_stay_in_the_working_directory_and_hub_ids_stay_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    text = "name: d\ntasks: [{name: a, kind: retrieval, path: /data/a}]\n"
    text += "trainer: {target: 'trainers.embedding:train', model: google/embeddinggemma-300m}\n"
    (conf / "exp.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    exp = load_experiment("conf/exp.yaml")
    assert exp.storage == str(tmp_path / "runs")
    assert exp.tracking.uri is None and exp.tracking.resolved_uri() in (
        "sqlite:///mlflow.db",
        os.environ.get("MLFLOW_TRACKING_URI"),
    )
    assert exp.trainer.options["model"] == "google/embeddinggemma-300m"


def test_validate_prints_every_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertConfig
    from typer.testing import CliRunner

    from mixopt.cli import app

    conf = tmp_path / "conf"
    # A model folder validate takes: a BERT config (768 wide, as the default matryoshka_dims), no weights.
    BertConfig().save_pretrained(conf / "models" / "enc")
    (conf / "exp.yaml").write_text(YAML)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["validate", "conf/exp.yaml"])
    assert r.exit_code == 0, r.output
    printed = yaml.safe_load(r.stdout)
    assert Path(printed["storage"]).is_absolute()
    assert Path(printed["trainer"]["model"]).is_absolute()
    assert printed["tracking"]["uri"].startswith("sqlite:////")
    assert all(Path(t.get("path") or t.get("train") or t["dataset"]).is_absolute() for t in printed["tasks"])


def test_the_shipped_tiny_experiment_finds_its_data_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(ROOT / "experiments" / "tiny_synthetic.yaml")
    assert exp.task("retrieval_0").path == ROOT / "data" / "synthetic" / "retrieval_0"
    assert exp.trainer.options["model"] == str(ROOT / "data" / "synthetic" / "model")
    assert exp.storage == str(ROOT / "runs") and exp.tracking.uri == f"sqlite:///{ROOT}/mlflow.db"


@pytest.mark.parametrize("name", ["team/exp", 'say "hi"', "it's", "tab\there", "line\nbreak", "..", " pad"])
def test_tracking_experiment_must_be_a_safe_name(tmp_path: Path, name: str) -> None:
    text = "name: t\ntasks: [{name: a, kind: retrieval, path: /d/a}]\n"
    text += "trainer: {target: 'trainers.analytic:train'}\n"
    text += "tracking: {experiment: " + yaml.safe_dump(name, default_style='"').strip() + "}\n"
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:4: tracking.experiment: experiment name")


def test_tracking_experiment_accepts_an_ordinary_name(tmp_path: Path) -> None:
    text = "name: t\ntasks: [{name: a, kind: retrieval, path: /d/a}]\n"
    text += "trainer: {target: 'trainers.analytic:train'}\ntracking: {experiment: My sweep v2.1_b-3}\n"
    (tmp_path / "exp.yaml").write_text(text)
    assert load_experiment(tmp_path / "exp.yaml").experiment_name == "My sweep v2.1_b-3"


@pytest.mark.slow
def test_eval_imports_a_task_module_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mixopt eval --mteb-tasks my_tasks:Task`` as the console script runs it: no cwd on sys.path."""
    pytest.importorskip("mteb")
    from tiny_checkpoint import tiny_st_checkpoint
    from typer.testing import CliRunner

    from mixopt.cli import app

    # A model that loads: eval checks the model before it imports the tasks.
    model = tiny_st_checkpoint(tmp_path, ["alpha", "beta"], seed=0, prompts={})
    work = tmp_path / "work"
    work.mkdir()
    # Not an AbsTask: the command gets past the import to the type check (an independent marker).
    (work / "my_tasks_w29.py").write_text("class Task:\n    pass\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(work))])
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb_cache"))
    r = CliRunner().invoke(
        app,
        [
            "eval",
            str(model),
            "--mteb-tasks",
            "my_tasks_w29:Task",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
    )
    assert r.exit_code == 1
    assert "mteb task 'my_tasks_w29:Task' is not an mteb AbsTask subclass" in r.output, r.output
    sys.modules.pop("my_tasks_w29", None)
