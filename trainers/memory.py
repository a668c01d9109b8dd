"""The embedding trainer's memory model: the bytes one training step needs, and the smallest change
of options that makes a step fit.

:func:`estimate_memory`'s activations come from two families' measurements on CPU in float32 by
``bench/memory.py`` (bench/RESULTS.md, "Trainer memory"): a Gemma3's per token, measured at
EmbeddingGemma-300m's shape and scaled by layers × width; an encoder's (BERT-family) counted from
its config, the count checked against all-MiniLM-L6-v2. bf16 activations are taken as
:data:`BF16_ACTIVATION_FACTOR` of float32 ones until a GPU run measures them.

Two callers: the trainer's preflight measurement (:mod:`trainers.preflight`), which does not run a
CPU step the model projects beyond the machine (:func:`project`), and ``mixopt preflight``, which
asks the trainer's ``memory_fix`` hook (:func:`memory_fix`) for the change that makes a trial that
did not fit fit: ``set trainer.mini_batch_size: 16``, then with
``trainer.gradient_checkpointing: true``, then a shorter ``max_seq_length``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mixopt.preflight import machine_memory

# bench/memory.py at EmbeddingGemma-300m's shape (24 layers, d 768), float32, CPU, seq 32: activation
# bytes per token of a training step, the largest of the measured estimates rounded up, since the
# runs are small and RSS-noisy (bench/RESULTS.md, "Trainer memory"). The preflight on a GPU
# measures instead of estimating.
FP32_ACTIVATION_BYTES_PER_TOKEN = {"none": 1.5 * 2**20, "checkpointing": 0.7 * 2**20}
REFERENCE_LAYERS_X_HIDDEN = 24 * 768
# An encoder layer's float32 values kept per token for backward (BERT under training): about 8
# of width d (q, k, v, context, attention output, its dropout, LayerNorm in and out), 2 of the MLP
# width (its input and GELU output) and 4 per head of the sequence length (scores, probabilities,
# their dropout mask, the dropped probabilities). all-MiniLM-L6-v2 at 128 tokens counts 0.28 MiB a
# token against 0.27 measured (bench/RESULTS.md, "Trainer memory"); ENCODER_MARGIN covers kernels
# that keep more until a GPU run measures them.
ENCODER_VALUES_PER_TOKEN = {"hidden": 8, "intermediate": 2, "heads_x_seq": 4}
ENCODER_MARGIN = 1.5
# bf16 autocast stores matmul outputs in bf16 but Gemma's RMSNorms and the softmax inputs in float32:
# half of float32 would be the floor; 0.75 is a conservative guess until a GPU run measures it.
BF16_ACTIVATION_FACTOR = 0.75
# Allocator fragmentation and workspace (cuBLAS, attention kernels).
OVERHEAD_FACTOR = 1.15
# A trial must fit in this fraction of the device's memory to be called a fit with margin.
MARGIN = 0.85


@dataclass(frozen=True)
class Shape:
    """What the memory model needs of the encoder (from its config and parameters)."""

    n_params: int  # all trainable parameters
    n_embedding: int  # the token-embedding table's
    layers: int
    hidden: int
    intermediate: int = 0  # the MLP's width (encoders)
    heads: int = 0  # attention heads (encoders)
    family: str = "gemma3"  # "gemma3" (measured per token) or "encoder" (counted from the config)

    def activation_bytes_per_token(self, seq: int, gradient_checkpointing: bool) -> float:
        """Float32 activation bytes per token of a training step (see :func:`estimate_memory`)."""
        if self.family == "gemma3":
            per_token = FP32_ACTIVATION_BYTES_PER_TOKEN["checkpointing" if gradient_checkpointing else "none"]
            return per_token * self.layers * self.hidden / REFERENCE_LAYERS_X_HIDDEN
        v = ENCODER_VALUES_PER_TOKEN
        layer = (
            v["hidden"] * self.hidden
            + v["intermediate"] * self.intermediate
            + v["heads_x_seq"] * self.heads * seq
        )
        # Checkpointing keeps each layer's input, and recomputes one layer at a time in backward.
        values = self.layers * self.hidden + layer if gradient_checkpointing else self.layers * layer
        return ENCODER_MARGIN * 4 * values

    @property
    def n_matmul(self) -> int:
        """Non-embedding parameters: the ``N`` of ``6·N`` FLOPs per token."""
        return self.n_params - self.n_embedding


def estimate_memory(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    sides: int = 3,
) -> float:
    """Bytes a training step needs at peak: fixed state + activations of the texts in the graph at once.

    .. math::

        M = 1.15 \\left[ 16 N + 4 N_E + (2 N \\text{ if bf16}) + a \\cdot T \\right], \\qquad
            T = \\begin{cases} s B \\ell & \\text{full batch} \\\\
            m \\ell & \\text{mini-batches of } m \\text{ texts} \\end{cases}

    ``16 N``: float32 weights, gradients, AdamW's two moments; ``4 N_E``: the dense gradient of the
    token embeddings is built once more before it is accumulated (measured); ``2 N``: autocast's
    bf16 weight copies; ``s`` sides of ``B`` texts of ``ℓ`` tokens; ``a``: activation bytes per
    token (× :data:`BF16_ACTIVATION_FACTOR` in bf16), for a Gemma3 of ``L`` layers of width ``d``
    :data:`FP32_ACTIVATION_BYTES_PER_TOKEN` × ``L d / (24 · 768)``, for an encoder with MLP width
    ``i`` and ``h`` heads ``1.5 · 4 · L (8 d + 2 i + 4 h ℓ)`` (with checkpointing
    ``1.5 · 4 · (L d + 8 d + 2 i + 4 h ℓ)``: the layers' inputs and one layer recomputed).
    """
    fixed = 16 * shape.n_params + 4 * shape.n_embedding + (2 * shape.n_params if bf16 else 0)
    per_token = shape.activation_bytes_per_token(seq, gradient_checkpointing)
    per_token *= BF16_ACTIVATION_FACTOR if bf16 else 1.0
    live_tokens = (min(mini_batch_size, batch_size) if mini_batch_size else sides * batch_size) * seq
    return OVERHEAD_FACTOR * (fixed + per_token * live_tokens)


def fix_for(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    limit: float,
    measured: float | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """The smallest change that brings the step under ``MARGIN × limit`` bytes: its words, and the
    trainer options it sets (None when no setting fits).

    When a peak was measured, what the model does not explain (``measured − estimate(current)``, if
    positive: the process, the allocator, a model error) is added to every candidate's estimate as a
    constant, which errs on the side of not fitting. Tries, in order: mini-batches (the largest power
    of two that fits, below the current one), then the same with gradient checkpointing, then the
    longest power-of-two ``max_seq_length`` below the current one at which mini-batches of 1 text with
    checkpointing fit; else says that nothing does.
    """
    current = estimate_memory(
        shape,
        batch_size=batch_size,
        seq=seq,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
    )
    unexplained = max(measured - current, 0.0) if measured else 0.0
    upper = min(mini_batch_size or batch_size, batch_size)
    sizes = [2**k for k in range(int(math.log2(upper)), -1, -1) if 2**k < upper or mini_batch_size is None]
    for checkpointing in sorted({gradient_checkpointing, True}):
        for m in sizes:
            need = unexplained + estimate_memory(
                shape,
                batch_size=batch_size,
                seq=seq,
                mini_batch_size=m,
                gradient_checkpointing=checkpointing,
                bf16=bf16,
            )
            if need <= MARGIN * limit:
                changes: dict[str, Any] = {"mini_batch_size": m}
                if checkpointing and not gradient_checkpointing:
                    changes["gradient_checkpointing"] = True
                return _set(changes, need), changes
    for shorter in (2**k for k in range(int(math.log2(seq - 1)), -1, -1)) if seq > 1 else ():
        need = unexplained + estimate_memory(
            shape,
            batch_size=batch_size,
            seq=shorter,
            mini_batch_size=1,
            gradient_checkpointing=True,
            bf16=bf16,
        )
        if need <= MARGIN * limit:
            changes = {"max_seq_length": shorter, "mini_batch_size": 1, "gradient_checkpointing": True}
            return _set(changes, need), changes
    return (
        "even mini-batches of 1 text with gradient checkpointing do not fit: lower "
        f"trainer.max_seq_length (now {seq}) or use a device with more memory"
    ), None


def _set(changes: Mapping[str, Any], need: float) -> str:
    parts = [f"trainer.{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in changes.items()]
    return f"set {' and '.join(parts)} (estimated peak {need / 2**30:.1f} GiB)"


def memory_fix(figures: Mapping[str, Any], *, limit: float) -> tuple[str, dict[str, Any] | None]:
    """The trainer's ``memory_fix`` hook: :func:`fix_for` of the trial :func:`trainers.preflight.preflight`
    measured (``figures``), calibrated by its measured peak unless it ran out of memory."""
    return fix_for(
        Shape(**figures["shape"]),
        batch_size=figures["batch_size"],
        seq=figures["max_seq_length"],
        mini_batch_size=figures["mini_batch_size"],
        gradient_checkpointing=figures["gradient_checkpointing"],
        bf16=figures["bf16"],
        limit=limit,
        measured=None if figures["oom"] else figures["peak_memory"],
    )


def project(
    shape: Shape,
    *,
    batch_size: int,
    seq: int,
    mini_batch_size: int | None,
    gradient_checkpointing: bool,
    bf16: bool,
    cuda: bool,
    memory_limit: float | None,
) -> tuple[float, bool]:
    """The step's projected peak (:func:`estimate_memory`), and whether the steps must not run.

    A CPU has no out-of-memory error (the kernel kills the process), so a CPU step projected beyond
    ``memory_limit`` bytes (default: the machine's memory) is not run; on CUDA the step always runs
    and an out-of-memory error is the figure.
    """
    projected = estimate_memory(
        shape,
        batch_size=batch_size,
        seq=seq,
        mini_batch_size=mini_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
    )
    return projected, not cuda and projected > (memory_limit or machine_memory())
