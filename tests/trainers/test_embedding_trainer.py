"""The trial trainer end to end on synthetic tasks: learning, reporting, checkpoint, NaN, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

import trainers.embedding
import trainers.training
from mixopt.config import ConfigError, experiment_from_dict
from mixopt.trial import Trial, TrialFailed
from trainers.batching import BatchError
from trainers.embedding import Options, _check_due, evaluate_checkpoint, resolve_options, train
from trainers.model import embed, load_encoder, save_sentence_transformer

TINY = {
    "matryoshka_dims": [64, 32],
    "batch_size": 16,
    "max_seq_length": 32,
    "learning_rate": 1e-3,
    "eval_batch_size": 64,
    "cpu_threads": 1,
}


def make_trial(
    synth_root, synth_tasks, out: Path, steps: int, seed: int = 0, mixture=None, hp=None, **options
):
    mixture = mixture or {t.name: 1 / 3 for t in synth_tasks}
    return Trial(
        mixture=mixture,
        hyperparameters=hp or {},
        seed=seed,
        steps=steps,
        output_dir=out,
        tasks=synth_tasks,
        options={"model": str(synth_root / "model"), **TINY, **options},
        trial_id="t",
    )


def test_options_validate_and_speak_to_the_user():
    assert Options().model == "google/embeddinggemma-300m" and Options().hardness_alpha == 5.0
    with pytest.raises(ValueError, match="float16 is not supported"):
        Options(dtype="float16")
    with pytest.raises(ValueError, match="strictly decreasing"):
        Options(matryoshka_dims=[64, 128])
    with pytest.raises(ValueError, match="Extra inputs"):
        Options.model_validate({"learning_rte": 1e-3})
    opts = resolve_options(
        {"learning_rate": 1e-4, "batch_size": 8}, {"learning_rate": 3e-3, "temperature": 0.1}
    )
    assert (opts.learning_rate, opts.temperature, opts.batch_size) == (3e-3, 0.1, 8)
    with pytest.raises(ValueError, match="not options of trainers.embedding"):
        resolve_options({}, {"dropout": 0.1})


def test_the_config_loader_checks_trainer_options_against_options():
    data = {
        "name": "x",
        "tasks": [{"name": "a", "kind": "sts", "path": "data/a"}],
        "trainer": {"target": "trainers.embedding:train", "batch_sise": 8, "dtype": "fp16"},
    }
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(data)
    text = str(err.value)
    assert "unknown trainer option 'batch_sise'" in text and "float16 is not supported" in text


def test_a_tiny_trial_learns_reports_and_saves_a_sentence_transformer(synth_root, synth_tasks, tmp_path):
    untrained = train(make_trial(synth_root, synth_tasks, tmp_path / "t0", steps=0), lambda s, m: None)

    reports: list[tuple[int, dict]] = []
    trial = make_trial(synth_root, synth_tasks, tmp_path / "t1", steps=40, eval_every=20, log_every=10)
    result = train(trial, lambda step, metrics: reports.append((step, dict(metrics))))

    # Learning: the mean dev score rises clearly over the untrained model's.
    assert result.objective > untrained.objective + 0.08, (untrained.task_scores, result.task_scores)

    # Reports: loss / tokens/s / lr every 10 steps; the objective and every metric at 20 and at 40.
    progress = [(s, m) for s, m in reports if "loss" in m]
    assert [s for s, _ in progress] == [10, 20, 30, 40]
    assert all(math.isfinite(m["loss"]) and m["tokens_per_s"] > 0 and m["lr"] >= 0 for _, m in progress)
    evals = [(s, m) for s, m in reports if "objective" in m]
    assert [s for s, _ in evals] == [20, 40]
    keys = {
        f"{t.name}/{metric}/d{d}"
        for t, metrics in zip(
            synth_tasks, (("ndcg_at_10", "mrr_at_10", "recall_at_1"), ("spearman",), ("accuracy",))
        )
        for metric in metrics
        for d in (64, 32)
    }
    scores = {f"score.{t.name}" for t in synth_tasks}
    assert set(result.task_metrics) == keys and set(evals[-1][1]) == keys | scores | {"objective"}
    assert evals[-1][1]["objective"] == result.objective
    # Each task's dev score at each evaluation, and each task's training loss at each log, its own metric.
    assert {k: v for k, v in evals[-1][1].items() if k in scores} == {
        f"score.{t}": v for t, v in result.task_scores.items()
    }
    task_losses = [{k: v for k, v in m.items() if k.startswith("loss.")} for _, m in progress]
    assert set().union(*task_losses) == {f"loss.{t.name}" for t in synth_tasks}
    assert all(math.isfinite(v) and v > 0 for losses in task_losses for v in losses.values())
    assert result.task_scores == {
        "retrieval_0": result.task_metrics["retrieval_0/ndcg_at_10/d64"],
        "sts_1": result.task_metrics["sts_1/spearman/d64"],
        "classification_2": result.task_metrics["classification_2/accuracy/d64"],
    }
    assert result.extra["tokens_per_s"] > 0 and math.isfinite(result.extra["final_loss"])

    # The checkpoint: a sentence-transformers directory whose encode() is the trainer's embedding.
    assert result.checkpoint == (tmp_path / "t1" / "model").resolve()
    st = SentenceTransformer(str(result.checkpoint), device="cpu")
    texts = ["zuba kela", "task: search result | query: mota"]
    prompt = synth_tasks[0].prompt.query
    assert st.prompts["retrieval_0/query"] == prompt
    loaded = load_encoder(result.checkpoint)
    ours = embed(loaded.encoder, loaded.tokenizer, [prompt + t for t in texts], max_seq_length=32)
    theirs = st.encode(texts, prompt_name="retrieval_0/query", convert_to_tensor=True)
    torch.testing.assert_close(theirs.cpu(), ours, rtol=0, atol=1e-5)

    # The soup's evaluator reproduces the trial's own final metrics from the saved checkpoint.
    again = evaluate_checkpoint(result.checkpoint, synth_tasks, trial.options)
    assert again.task_metrics == pytest.approx(dict(result.task_metrics), abs=1e-6)


def test_same_seed_same_result_on_cpu(synth_root, synth_tasks, tmp_path):
    a = train(make_trial(synth_root, synth_tasks, tmp_path / "a", steps=6, seed=5), lambda s, m: None)
    b = train(make_trial(synth_root, synth_tasks, tmp_path / "b", steps=6, seed=5), lambda s, m: None)
    c = train(make_trial(synth_root, synth_tasks, tmp_path / "c", steps=6, seed=6), lambda s, m: None)
    assert a.objective == b.objective and dict(a.task_metrics) == dict(b.task_metrics)
    wa, wb = load_file(a.checkpoint / "model.safetensors"), load_file(b.checkpoint / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    wc = load_file(c.checkpoint / "model.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_a_nan_loss_fails_the_trial_cleanly(synth_root, synth_tasks, tmp_path, monkeypatch):
    real = trainers.training.embedding_loss
    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            loss = loss * float("nan")
        return loss, parts

    monkeypatch.setattr(trainers.training, "embedding_loss", nan_at_step_3)
    out = tmp_path / "nan"
    with pytest.raises(
        TrialFailed,
        match=r"trial t: the loss became non-finite at step 3 \(loss=nan.*nce=.*spread_out=.*distill=",
    ) as err:
        train(make_trial(synth_root, synth_tasks, out, steps=5), lambda s, m: None)
    assert "no checkpoint" in str(err.value)
    assert not (out / "model").exists()


def test_mismatched_matryoshka_dims_are_a_clear_error(synth_root, synth_tasks, tmp_path):
    with pytest.raises(ValueError, match="must be the full dimension"):
        train(
            make_trial(synth_root, synth_tasks, tmp_path, steps=1, matryoshka_dims=[768, 128]),
            lambda s, m: None,
        )


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_a_non_finite_gradient_with_a_finite_loss_fails_the_trial(
    synth_root, synth_tasks, tmp_path, monkeypatch, grad_clip
):
    """A backward overflow leaves the loss finite; the gradient norm must catch it at its own step
    (unchecked, clipping by a NaN norm poisons every weight and only step 4's loss would show it)."""
    real = trainers.training.embedding_loss
    calls = {"n": 0}

    def inf_gradient_at_step_3(q, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            q.register_hook(lambda g: g * float("inf"))  # the loss value is untouched
        return real(q, *args, **kwargs)

    monkeypatch.setattr(trainers.training, "embedding_loss", inf_gradient_at_step_3)
    out = tmp_path / "inf"
    with pytest.raises(
        TrialFailed, match=r"trial t: the gradient norm became non-finite at step 3 \(loss="
    ) as err:
        train(make_trial(synth_root, synth_tasks, out, steps=5, grad_clip=grad_clip), lambda s, m: None)
    assert "grad norm=" in str(err.value) and "no checkpoint" in str(err.value)
    assert not (out / "model").exists()


def test_the_watch_is_checked_before_every_intermediate_evaluation():
    # On CUDA the loss is read only when logging (every 10), at the end, and before each evaluation (every 4).
    due = [s for s in range(1, 21) if _check_due(s, 20, on_cuda=True, log_every=10, eval_every=4)]
    assert due == [4, 8, 10, 12, 16, 20]
    assert [s for s in range(1, 8) if _check_due(s, 7, on_cuda=True, log_every=10, eval_every=0)] == [7]
    assert all(_check_due(s, 20, on_cuda=False, log_every=10, eval_every=4) for s in range(1, 21))


def test_non_finite_embeddings_at_evaluation_fail_the_trial(synth_root, synth_tasks, tmp_path, monkeypatch):
    real = trainers.embedding.embed

    def diverged(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr(trainers.embedding, "embed", diverged)
    out = tmp_path / "nan-eval"
    with pytest.raises(
        TrialFailed, match=r"trial t: evaluation at step 2 failed: task 'retrieval_0': .*non-finite"
    ):
        train(make_trial(synth_root, synth_tasks, out, steps=2), lambda s, m: None)
    assert not (out / "model").exists()


def test_a_batch_error_from_teacher_targets_fails_the_trial(synth_root, synth_tasks, tmp_path, monkeypatch):
    real = trainers.embedding.teacher_targets
    calls = {"n": 0}

    def bad_teacher_at_step_2(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BatchError(
                f"task {batch.task!r}: teacher embeddings of different lengths [4, 5] in one batch"
            )
        return real(batch)

    monkeypatch.setattr(trainers.embedding, "teacher_targets", bad_teacher_at_step_2)
    with pytest.raises(TrialFailed, match=r"trial t: step 2: task '.*': teacher embeddings of different"):
        train(make_trial(synth_root, synth_tasks, tmp_path / "b", steps=3), lambda s, m: None)


def test_evaluate_checkpoint_proves_attention_is_bidirectional(
    synth_root, synth_tasks, tmp_path, monkeypatch
):
    loaded = load_encoder(synth_root / "model")
    checkpoint = save_sentence_transformer(
        loaded.encoder, loaded.tokenizer, tmp_path / "ckpt", prompts={}, max_seq_length=32
    )
    real = trainers.embedding.load_encoder

    def load_causal(*args, **kwargs):
        # As a transformers that ignored use_bidirectional_attention would run it: causal mask and SDPA.
        out = real(*args, **kwargs)
        out.encoder.transformer.config.use_bidirectional_attention = False
        for module in out.encoder.transformer.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = True
        return out

    monkeypatch.setattr(trainers.embedding, "load_encoder", load_causal)
    with pytest.raises(RuntimeError, match="attention is causal"):
        evaluate_checkpoint(checkpoint, synth_tasks, TINY)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_tiny_cuda_trial_trains_in_bf16_and_its_checkpoint_round_trips(
    synth_root, synth_tasks, tmp_path, monkeypatch
):
    chosen = []
    real_autocast_dtype = trainers.embedding.autocast_dtype

    def recording_autocast_dtype(device, dtype):
        chosen.append(real_autocast_dtype(device, dtype))
        return chosen[-1]

    monkeypatch.setattr(trainers.embedding, "autocast_dtype", recording_autocast_dtype)
    reports: list[dict] = []
    trial = make_trial(
        synth_root, synth_tasks, tmp_path / "gpu", steps=6, device="auto", dtype="auto", log_every=2
    )
    result = train(trial, lambda step, metrics: reports.append(dict(metrics)))

    assert chosen == [torch.bfloat16]
    losses = [m["loss"] for m in reports if "loss" in m]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.objective)

    # Round trip: sentence-transformers (float32) reproduces our float32 embedding of the checkpoint
    # closely, and our bf16 embedding up to bf16's ~3 significant digits (cosine, not exact equality).
    st = SentenceTransformer(str(result.checkpoint), device="cuda")
    texts = ["zuba kela", "mota"]
    prompt = synth_tasks[0].prompt.query
    theirs = st.encode(texts, prompt_name="retrieval_0/query", convert_to_tensor=True).float().cpu()
    loaded = load_encoder(result.checkpoint)
    loaded.encoder.to("cuda")
    prompted = [prompt + t for t in texts]
    fp32 = embed(loaded.encoder, loaded.tokenizer, prompted, max_seq_length=32)
    bf16 = embed(loaded.encoder, loaded.tokenizer, prompted, max_seq_length=32, autocast_dtype=torch.bfloat16)
    torch.testing.assert_close(theirs, fp32, rtol=0, atol=1e-4)
    assert torch.nn.functional.cosine_similarity(theirs, bf16, dim=-1).min().item() > 0.99
