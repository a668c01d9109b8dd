"""Trainer versus model, before compute: ``mixopt validate`` and the sweep read the model's config
(never its weights) and say in one line which shipped trainer can take a model the chosen one cannot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from transformers import BertConfig, GPT2Config, LlamaConfig
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize

TASKS = ["retrieval_0", "sts_1", "classification_2"]
EMBEDDING = "trainers.embedding:train"
ST = "trainers.sentence_transformers:train"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check") / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=32, n_dev=12), with_model=False)
    return out


def experiment(tmp_path: Path, data_dir: Path, target: str, model: Path, **options) -> Path:
    exp = {
        "name": "check",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 2, "max_trials": 2, "max_concurrent": 1},
        "trainer": {"target": target, "steps": 2, "model": str(model), **options},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def config_only(folder: Path, config) -> Path:
    """A model folder holding only its config.json: what validate reads (no weights, no tokenizer)."""
    config.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    return folder


def refused(code: int, err: str, pattern: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "config, model_type", [(GPT2Config(n_layer=1, n_embd=8, n_head=2), "gpt2"), (LlamaConfig(), "llama")]
)
def test_a_causal_decoder_under_the_builtin_trainer_names_the_trainer_that_takes_it(
    tmp_path, data_dir, config, model_type
):
    model = config_only(tmp_path / model_type, config)
    code, err = cli("validate", str(experiment(tmp_path, data_dir, EMBEDDING, model)))
    line = refused(
        code,
        err,
        rf"^trainer\.model: {re.escape(str(model / 'config.json'))}: model_type '{model_type}' is a "
        r"decoder-only causal language model; trainers\.embedding takes a Gemma3 text model .*BERT.*; "
        rf"set trainer\.target: {re.escape(ST)} \(it can take this model\)$",
    )
    # The sweep refuses it the same way, before anything is written.
    code, err = cli("sweep", str(experiment(tmp_path, data_dir, EMBEDDING, model)))
    assert refused(code, err, "trainer.model").endswith(line)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    # The sentence-transformers trainer takes it: validate passes.
    code, err = cli("validate", str(experiment(tmp_path, data_dir, ST, model)))
    assert code == 0, err


def test_a_bert_config_passes_under_both_trainers(tmp_path, data_dir):
    model = config_only(
        tmp_path / "bert", BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    )
    for target in (EMBEDDING, ST):
        code, err = cli(
            "validate", str(experiment(tmp_path, data_dir, target, model, matryoshka_dims=[32, 16]))
        )
        assert code == 0, err


def test_matryoshka_dims_are_checked_against_an_encoders_width(tmp_path, data_dir):
    model = config_only(
        tmp_path / "bert", BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    )
    code, err = cli("validate", str(experiment(tmp_path, data_dir, EMBEDDING, model)))  # default [768, ...]
    refused(
        code,
        err,
        r"trainer\.matryoshka_dims: \[768, 512, 256, 128\] \(the trainer's default\): the model .* embeds in "
        r"32 dimensions .* e\.g\. \[32\]$",
    )
    code, err = cli(
        "validate", str(experiment(tmp_path, data_dir, EMBEDDING, model, matryoshka_dims=[64, 32]))
    )
    refused(code, err, r"trainer\.matryoshka_dims: \[64, 32\]: the model .* embeds in 32 dimensions")
    code, err = cli("validate", str(experiment(tmp_path, data_dir, ST, model)))  # its default: the full dim
    assert code == 0, err


def test_models_no_shipped_trainer_takes_are_said_so(tmp_path, data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "model.safetensors").write_bytes(b"")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "my_remote_model", "auto_map": {}}))
    for model, why in [
        (empty, rf"{re.escape(str(empty / 'config.json'))}: missing"),
        (
            remote,
            r"model_type 'my_remote_model' is not one transformers [\d.]+ knows \(remote code is not run\)",
        ),
    ]:
        for target in (EMBEDDING, ST):
            code, err = cli("validate", str(experiment(tmp_path, data_dir, target, model)))
            refused(code, err, rf"^trainer\.model: .*{why}.*; no shipped trainer can take this model$")


def test_a_sentence_transformers_folder_of_other_modules_is_sent_to_the_st_trainer(tmp_path, data_dir):
    model = tmp_path / "static"
    model.mkdir()
    (model / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "0_StaticEmbedding",
                    "type": "sentence_transformers.models.StaticEmbedding",
                }
            ]
        )
    )
    code, err = cli("validate", str(experiment(tmp_path, data_dir, EMBEDDING, model)))
    refused(
        code,
        err,
        r"modules\.json: modules \['StaticEmbedding'\]; trainers\.embedding reproduces Transformer, Pooling, "
        rf"Dense\.\.\., Normalize .*; set trainer\.target: {re.escape(ST)} \(it can take this model\)$",
    )
