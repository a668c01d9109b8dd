"""The embedding trainer's memory model: its formula, the fix it names for a step that does not fit, and
the shipped GPU experiment's fit on an 80 GB H100."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from trainers.memory import (
    BF16_ACTIVATION_FACTOR,
    ENCODER_MARGIN,
    FP32_ACTIVATION_BYTES_PER_TOKEN,
    MARGIN,
    OVERHEAD_FACTOR,
    Shape,
    estimate_memory,
    fix_for,
)

REPO = Path(__file__).resolve().parents[2]
# google/embeddinggemma-300m: 307.6M parameters of which 262144 x 768 token embeddings.
GEMMA = Shape(n_params=307_581_696, n_embedding=262_144 * 768, layers=24, hidden=768)
GIB = 2**30


def test_the_memory_model_is_its_formula():
    """16 N + 4 N_E (+ 2 N in bf16) + bytes/token x tokens in the graph, x the overhead factor."""
    fixed_fp32 = 16 * GEMMA.n_params + 4 * GEMMA.n_embedding
    full = estimate_memory(
        GEMMA, batch_size=8, seq=64, mini_batch_size=None, gradient_checkpointing=False, bf16=False
    )
    assert full == pytest.approx(
        OVERHEAD_FACTOR * (fixed_fp32 + FP32_ACTIVATION_BYTES_PER_TOKEN["none"] * 3 * 8 * 64)
    )
    chunk = estimate_memory(
        GEMMA, batch_size=64, seq=64, mini_batch_size=8, gradient_checkpointing=True, bf16=True
    )
    per_token = FP32_ACTIVATION_BYTES_PER_TOKEN["checkpointing"] * BF16_ACTIVATION_FACTOR
    assert chunk == pytest.approx(OVERHEAD_FACTOR * (fixed_fp32 + 2 * GEMMA.n_params + per_token * 8 * 64))
    # Mini-batches: the batch size no longer changes the estimate.
    assert chunk == estimate_memory(
        GEMMA, batch_size=512, seq=64, mini_batch_size=8, gradient_checkpointing=True, bf16=True
    )
    # Half the layers, half the activations.
    half = Shape(GEMMA.n_params, GEMMA.n_embedding, 12, 768)
    act = full - estimate_memory(
        GEMMA, batch_size=8, seq=64, mini_batch_size=None, gradient_checkpointing=False, bf16=False, sides=0
    )
    act_half = estimate_memory(
        half, batch_size=8, seq=64, mini_batch_size=None, gradient_checkpointing=False, bf16=False
    ) - (full - act)
    assert act_half == pytest.approx(act / 2)


def test_an_encoders_activations_are_counted_from_its_config():
    """all-MiniLM-L6-v2 (6 layers, width 384, MLP 1536, 12 heads) at 128 tokens: per layer and token
    8·384 + 2·1536 + 4·12·128 = 12288 float32 values, × the margin."""
    minilm = Shape(22_713_216, 30_522 * 384, 6, 384, intermediate=1536, heads=12, family="encoder")
    per_token = ENCODER_MARGIN * 4 * 6 * 12288
    assert minilm.activation_bytes_per_token(128, False) == per_token
    assert minilm.activation_bytes_per_token(128, True) == ENCODER_MARGIN * 4 * (6 * 384 + 12288)
    full = estimate_memory(
        minilm, batch_size=16, seq=128, mini_batch_size=None, gradient_checkpointing=False, bf16=False
    )
    fixed = 16 * minilm.n_params + 4 * minilm.n_embedding
    assert full == pytest.approx(OVERHEAD_FACTOR * (fixed + per_token * 3 * 16 * 128))
    # The attention term grows with the length: a token at 512 costs more than at 128.
    assert minilm.activation_bytes_per_token(512, False) > 2 * minilm.activation_bytes_per_token(128, False)


def test_the_fix_is_the_largest_mini_batch_that_fits():
    limit = 80 * GIB
    args = dict(batch_size=128, seq=512, gradient_checkpointing=False, bf16=True)
    assert estimate_memory(GEMMA, mini_batch_size=None, **args) > limit  # full batch
    fix = fix_for(GEMMA, mini_batch_size=None, limit=limit, **args)[0]
    m = int(re.search(r"trainer.mini_batch_size: (\d+)", fix).group(1))
    assert "gradient_checkpointing" not in fix
    assert estimate_memory(GEMMA, mini_batch_size=m, **args) <= MARGIN * limit
    assert estimate_memory(GEMMA, mini_batch_size=2 * m, **args) > MARGIN * limit
    # Unexplained measured memory is added to every candidate: a smaller mini-batch is named.
    measured = estimate_memory(GEMMA, mini_batch_size=None, **args) + 30 * GIB
    smaller = int(
        re.search(
            r"mini_batch_size: (\d+)",
            fix_for(GEMMA, mini_batch_size=None, limit=limit, measured=measured, **args)[0],
        ).group(1)
    )
    assert smaller < m
    # A small device needs checkpointing too; a tiny one cannot be helped by either.
    one_text = estimate_memory(GEMMA, mini_batch_size=1, **{**args, "gradient_checkpointing": True})
    small = fix_for(GEMMA, mini_batch_size=None, limit=1.001 * one_text / MARGIN, **args)[0]
    assert small.startswith("set trainer.mini_batch_size: 1 and trainer.gradient_checkpointing: true")
    assert "lower trainer.max_seq_length" in fix_for(GEMMA, mini_batch_size=None, limit=1 * GIB, **args)[0]


def test_the_shipped_gpu_experiment_fits_an_80gb_h100_with_margin():
    raw = yaml.safe_load((REPO / "experiments" / "embeddinggemma.yaml").read_text())
    t = raw["trainer"]
    need = estimate_memory(
        GEMMA,
        batch_size=t["batch_size"],
        seq=t["max_seq_length"],
        mini_batch_size=t.get("mini_batch_size"),
        gradient_checkpointing=t.get("gradient_checkpointing", False),
        bf16=True,
    )
    assert need <= MARGIN * 80e9


def test_the_fix_shortens_the_texts_when_mini_batches_of_one_do_not_fit():
    """Mini-batches of 1 text with checkpointing over the limit at 512 tokens: the longest power of two
    that fits by the memory model is named, with the options a second measurement runs."""
    args = dict(batch_size=128, mini_batch_size=None, gradient_checkpointing=False, bf16=True)
    ckpt_one = dict(batch_size=128, mini_batch_size=1, gradient_checkpointing=True, bf16=True)
    limit = estimate_memory(GEMMA, seq=128, **ckpt_one) / MARGIN * 1.0001  # 128 tokens just fit
    text, options = fix_for(GEMMA, seq=512, limit=limit, **args)
    assert options == {"max_seq_length": 128, "mini_batch_size": 1, "gradient_checkpointing": True}
    assert text.startswith("set trainer.max_seq_length: 128 and trainer.mini_batch_size: 1")
    assert estimate_memory(GEMMA, seq=256, **ckpt_one) > MARGIN * limit
    assert fix_for(GEMMA, seq=512, limit=1 * GIB, **args)[1] is None  # the weights alone do not fit
