"""The built-in trainer on a BERT: a trial, its checkpoint, the soup, the merged-experts scorer, preflight.

The model is a tiny random-init BERT (``BertConfig``) with a WordPiece tokenizer over the synthetic
tasks' words (``synth_bert_dir``); the references are sentence-transformers (encode), a hand mean of
the safetensors (soup) and the expert's own evaluation (a one-hot merge is that expert).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from mixopt.soup.average import average_into
from mixopt.trial import Trial
from trainers.embedding import evaluate_checkpoint, preflight, train
from trainers.model import embed, load_encoder

TINY = {
    "matryoshka_dims": [64, 32],
    "batch_size": 16,
    "max_seq_length": 32,
    "learning_rate": 1e-3,
    "eval_batch_size": 64,
    "cpu_threads": 1,
}


def run(model: Path, tasks, out: Path, steps: int, seed: int = 0, mixture=None):
    trial = Trial(
        mixture=mixture or {t.name: 1 / len(tasks) for t in tasks},
        hyperparameters={},
        seed=seed,
        steps=steps,
        output_dir=out,
        tasks=tasks,
        options={"model": str(model), **TINY},
        trial_id="bert",
    )
    return trial, train(trial, lambda step, metrics: None)


@pytest.fixture(scope="module")
def experts(synth_bert_dir, synth_tasks, tmp_path_factory):
    """Two short trials of the tiny BERT: a retrieval expert and an STS expert."""
    root = tmp_path_factory.mktemp("bert-experts")
    out = []
    for i, task in enumerate(synth_tasks[:2]):
        mixture = {t.name: float(t.name == task.name) for t in synth_tasks}
        out.append(run(synth_bert_dir, synth_tasks, root / task.name, steps=8, seed=i, mixture=mixture)[1])
    return out


def test_a_bert_trial_learns_and_its_checkpoint_is_a_sentence_transformer(
    synth_bert_dir, synth_tasks, tmp_path
):
    _, untrained = run(synth_bert_dir, synth_tasks, tmp_path / "t0", steps=0)
    trial, result = run(synth_bert_dir, synth_tasks, tmp_path / "t1", steps=40)
    assert result.objective > untrained.objective + 0.05, (untrained.task_scores, result.task_scores)
    assert math.isfinite(result.extra["final_loss"])

    ckpt = result.checkpoint
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((ckpt / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "bert"
    st = SentenceTransformer(str(ckpt), device="cpu")
    prompt = synth_tasks[0].prompt.query
    assert st.prompts["retrieval_0/query"] == prompt and st.prompts["query"] == prompt
    texts = ["zuba kela", "mota"]
    loaded = load_encoder(ckpt)
    ours = embed(loaded.encoder, loaded.tokenizer, [prompt + t for t in texts], max_seq_length=32)
    theirs = st.encode(texts, prompt_name="retrieval_0/query", convert_to_tensor=True).cpu()
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    again = evaluate_checkpoint(ckpt, synth_tasks, trial.options)
    assert again.task_metrics == pytest.approx(dict(result.task_metrics), abs=1e-6)


def test_a_soup_of_bert_checkpoints_is_their_tensor_mean(experts, synth_tasks, tmp_path):
    paths = [e.checkpoint for e in experts]
    soup = tmp_path / "soup"
    soup.mkdir()
    average_into(paths, soup)
    weights = [load_file(p / "model.safetensors") for p in paths]
    got = load_file(soup / "model.safetensors")
    assert set(got) == set(weights[0]) and any(k.startswith("encoder.layer.1.") for k in got)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2, rtol=0, atol=1e-7)
    for name in ("1_Pooling/config.json", "2_Normalize/config.json", "modules.json", "tokenizer.json"):
        assert (soup / name).read_bytes() == (paths[0] / name).read_bytes()
    assert SentenceTransformer(str(soup), device="cpu").get_embedding_dimension() == 64
    scored = evaluate_checkpoint(soup, synth_tasks, TINY)
    assert all(math.isfinite(v) for v in scored.task_scores.values())


def test_preflight_measures_a_bert_trial_with_its_shape(synth_bert_dir, synth_tasks):
    figures = preflight(
        {"model": str(synth_bert_dir), **TINY}, steps=1, seed=0, memory_limit=None, tasks=synth_tasks
    )
    cfg = json.loads((synth_bert_dir / "config.json").read_text())
    n_params = sum(
        t.numel() for t in load_file(synth_bert_dir / "model.safetensors").values() if t.is_floating_point()
    )
    assert figures["shape"] == {
        "n_params": n_params,
        "n_embedding": cfg["vocab_size"] * cfg["hidden_size"],
        "layers": cfg["num_hidden_layers"],
        "hidden": cfg["hidden_size"],
        "intermediate": cfg["intermediate_size"],
        "heads": cfg["num_attention_heads"],
        "family": "encoder",
    }
    assert not figures["oom"] and figures["peak_memory"] > 0 and math.isfinite(figures["step_seconds"])
    assert math.isfinite(figures["eval_seconds"]) and figures["checkpoint_bytes"] > 0
