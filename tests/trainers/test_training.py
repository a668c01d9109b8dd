"""The optimisation step: learning-rate schedule (closed forms), autocast dtype, side tokenization."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.losses import LossWeights
from trainers.model import load_encoder
from trainers.tiny_model import build_tokenizer
from trainers.training import Stepper, autocast_dtype, lr_multiplier, tokenize_sides

WORDS = ["a", "b", "c", "d", "task", "query", "title", "text", ":", "|", "none", "search", "result"]


def closed_form_lr(step: int, total: int, warmup: int, schedule: str) -> float:
    """Factor at 0-based ``step``: (s+1)/w during warmup, then 1-t (linear) or (1+cos πt)/2, t=(s-w)/(T-w)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min((step - warmup) / (total - warmup), 1.0)
    return 1 - t if schedule == "linear" else (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_multiplier_warms_up_then_decays_as_the_closed_form(schedule):
    total, warmup = 12, 4
    got = [lr_multiplier(s, total, warmup, schedule) for s in range(total)]
    want = [closed_form_lr(s, total, warmup, schedule) for s in range(total)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and got[4] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(5, total, warmup, "step")


def test_the_stepper_applies_the_schedule_and_reports_the_pre_clip_grad_norm(tiny_model_dir):
    loaded = load_encoder(tiny_model_dir, seed=0)
    lr, total, warmup = 1e-3, 6, 2
    stepper = Stepper(
        loaded.encoder.train(),
        loaded.tokenizer,
        LossWeights(dims=(32, 16), temperature=0.1),
        lr=lr,
        weight_decay=0.0,
        warmup_steps=warmup,
        total_steps=total,
        grad_clip=1e9,  # never binds: the gradients after the step are the unclipped ones
        max_seq_length=16,
        device=torch.device("cpu"),
        amp=None,
    )
    queries, positives = ["w1 w2", "w3", "w4 w5 w6", "w7"], ["w1", "w3 w8", "w5", "w9 w7"]
    used = []
    for _ in range(total):
        used.append(stepper.lr)  # the rate the coming step uses
        out = stepper.step(queries, positives, ["w10", None, "w11", None])
        naive = math.sqrt(
            sum(float((p.grad.double() ** 2).sum()) for p in stepper.params if p.grad is not None)
        )
        assert float(out.grad_norm) == pytest.approx(naive, rel=1e-5)
        assert math.isfinite(float(out.loss))
    assert used == pytest.approx([lr * closed_form_lr(s, total, warmup, "linear") for s in range(total)])


def test_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "float32") is None
    assert autocast_dtype(cuda, "auto") is torch.bfloat16 and autocast_dtype(cuda, "float32") is None
    assert (
        autocast_dtype(cpu, "bfloat16") is torch.bfloat16 and autocast_dtype(cuda, "bf16") is torch.bfloat16
    )
    for fp16 in ("float16", "fp16", "half"):
        with pytest.raises(ValueError, match="float16 is not supported"):
            autocast_dtype(cuda, fp16)
    with pytest.raises(ValueError, match="unknown dtype"):
        autocast_dtype(cpu, "int8")


def test_tokenize_sides_keeps_each_sides_prompt_and_truncates():
    tok = build_tokenizer(WORDS)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    prompt = {"query": "task: search result | query: ", "document": "title: none | text: "}
    queries = [prompt["query"] + q for q in ("a b", "c")]
    positives = [prompt["document"] + p for p in ("d", "a b c d a b c d a b c d")]

    def ids(text: str, max_len: int) -> list[int]:
        """[bos] + one id per whitespace/punctuation token + [eos], content cut to fit ``max_len``."""
        words = text.replace(":", " : ").replace("|", " | ").split()
        body = [tok.convert_tokens_to_ids(w) for w in words][: max_len - 2]
        return [bos, *body, eos]

    max_len = 12
    out = tokenize_sides(tok, [queries, positives, []], max_len)
    assert len(out.sides) == 2  # the empty negative side is dropped
    for side, texts in zip(out.sides, (queries, positives)):
        for row, text in zip(range(len(texts)), texts):
            n = int(side["attention_mask"][row].sum())
            assert side["input_ids"][row, :n].tolist() == ids(text, max_len)
            assert set(side["input_ids"][row, n:].tolist()) <= {pad}
    # The query prompt "task: search result | query: " is 7 tokens, the document one 6: each side has its own.
    assert out.sides[0]["input_ids"][0, 1:8].tolist() == ids(prompt["query"], 99)[1:-1]
    assert out.sides[1]["input_ids"][0, 1:7].tolist() == ids(prompt["document"], 99)[1:-1]
    # The long positive was truncated to 12 tokens, then padded to a multiple of 8; the queries
    # (at most 11 tokens) are padded to their own length, not to the documents'.
    assert out.sides[1]["input_ids"].shape[1] == 16 and out.sides[0]["input_ids"].shape[1] == 16
    assert int(out.sides[1]["attention_mask"].sum(dim=1).max()) == max_len
    unpadded = tokenize_sides(tok, [queries, positives, []], max_len, pad_to_multiple_of=None)
    assert [s["input_ids"].shape[1] for s in unpadded.sides] == [
        max(len(ids(q, max_len)) for q in queries),
        max_len,
    ]
    assert out.n_tokens == sum(len(ids(t, max_len)) for t in queries + positives)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_stepper_from_options_maps_every_option_as_the_constructor_takes_it(tiny_model_dir, schedule):
    from trainers.options import Options

    opts = Options(
        model=str(tiny_model_dir),
        matryoshka_dims=[32, 8],
        temperature=0.07,
        hardness_alpha=3.0,
        spread_out_weight=0.5,
        distill_weight=0.25,
        learning_rate=3e-4,
        weight_decay=0.02,
        lr_schedule=schedule,
        grad_clip=2.0,
        max_seq_length=24,
        mini_batch_size=3,
        gradient_checkpointing=True,
    )
    loaded = load_encoder(tiny_model_dir, seed=0)
    got = Stepper.from_options(
        loaded.encoder.train(),
        loaded.tokenizer,
        opts,
        warmup_steps=2,
        total_steps=7,
        device=torch.device("cpu"),
        amp=None,
    )
    assert got.weights == LossWeights(
        dims=(32, 8), temperature=0.07, hardness_alpha=3.0, spread_out=0.5, distill=0.25
    )
    assert (got.grad_clip, got.max_seq_length, got.mini_batch_size) == (2.0, 24, 3)
    transformer = loaded.encoder.transformer  # transformers 5 renamed gradient_ to activation_checkpointing
    assert getattr(transformer, "is_activation_checkpointing", None) or transformer.is_gradient_checkpointing
    group = got.optimizer.param_groups[0]
    assert group["initial_lr"] == 3e-4 and group["weight_decay"] == 0.02
    rates = []
    for _ in range(7):
        rates.append(got.lr)
        got.optimizer.step()
        got.scheduler.step()
    assert rates == pytest.approx([3e-4 * closed_form_lr(s, 7, 2, schedule) for s in range(7)], abs=1e-15)
