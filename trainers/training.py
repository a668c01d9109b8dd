"""One optimisation step of the encoder, shared by the trial trainer and ``bench/trainer.py``.

AdamW (fused on CUDA) with decoupled weight decay on matrices only, linear warmup then linear or
cosine decay, gradient clipping by global norm, bf16 autocast on CUDA (never fp16: Gemma's
activations overflow it), float32 on CPU. The loss itself is computed in float32 outside autocast:
logits are similarities divided by a small temperature, where bf16's 8 bits of mantissa would show.

Imports only torch and transformers-free modules of this package (no pydantic), so the benchmark
runs on a bare GPU image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import LossWeights, TeacherTargets, embedding_loss
from .model import Encoder, tokenize


def resolve_device(device: str) -> torch.device:
    """``"auto"``: the first CUDA device if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
    return resolved


def autocast_dtype(device: torch.device, dtype: str) -> torch.dtype | None:
    """The autocast dtype for ``dtype`` (``auto``: bf16 on CUDA, none = float32 elsewhere)."""
    if dtype in ("float16", "fp16", "half"):
        raise ValueError(
            "float16 is not supported for Gemma (its activations overflow fp16); use bfloat16 or float32"
        )
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    if dtype in ("float32", "fp32"):
        return None
    raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16' or 'float32'")


def compile_encoder(encoder: Encoder) -> None:
    """``torch.compile`` the transformer in place, with dynamic shapes (batches vary in length).

    Gemma3 runs many small element-wise ops per layer (four RMSNorms, q/k norms, rotary, GELU,
    residuals) that are memory-bound at d_M = 768; compilation fuses them. The first steps pay the
    compile time (about a minute on a GPU, minutes on a CPU), so it pays off in long trials.
    """
    encoder.transformer.compile(dynamic=True)


def build_optimizer(
    encoder: Encoder, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices (incl. the token embeddings), none on norms and biases."""
    decay = [p for p in encoder.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in encoder.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # The fused kernel updates every parameter in one launch: the 200M-entry embedding table of
    # EmbeddingGemma makes the optimizer step memory-bound, and fusing saves a pass over it.
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=device.type == "cuda")


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str = "linear") -> float:
    """Learning-rate factor at 0-based ``step``: linear warmup to 1, then linear or cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / remaining, 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; use 'linear' or 'cosine'")


def _pad_to(batch: dict[str, Tensor], length: int, pad_id: int) -> dict[str, Tensor]:
    extra = length - batch["input_ids"].shape[1]
    if extra == 0:
        return batch
    return {
        "input_ids": F.pad(batch["input_ids"], (0, extra), value=pad_id),
        "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0),
    }


@dataclass
class Tokenized:
    """The token tensors of the sides of one batch (queries, positives, negatives...)."""

    sides: list[dict[str, Tensor]]
    n_tokens: int  # non-padding tokens
    joint: bool  # one forward over all sides (same padded length) instead of one per side


def tokenize_sides(tokenizer: Any, sides: Sequence[Sequence[str]], max_seq_length: int) -> Tokenized:
    """Tokenize each side; run them as one forward when that wastes no more padding than separate ones.

    One forward over ``N`` texts padded to the longest side costs ``N·max_s L_s`` token slots, one
    forward per side ``Σ_s n_s L_s``; equal lengths (e.g. fixed-length benchmark batches) favour the
    single, larger forward, which keeps the GPU busier.
    """
    encoded = [tokenize(tokenizer, side, max_seq_length) for side in sides if len(side)]
    n_tokens = int(sum(int(e["attention_mask"].sum()) for e in encoded))
    lengths = [e["input_ids"].shape[1] for e in encoded]
    counts = [e["input_ids"].shape[0] for e in encoded]
    joint_cost = sum(counts) * max(lengths)
    separate_cost = sum(n * length for n, length in zip(counts, lengths))
    joint = len(encoded) > 1 and joint_cost <= separate_cost
    return Tokenized(encoded, n_tokens, joint)


def forward_sides(
    encoder: Encoder, tokens: Tokenized, device: torch.device, amp: torch.dtype | None, pad_id: int
) -> list[Tensor]:
    """Embeddings ``[n_s, d]`` (float32, unit norm) of each side."""
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        if tokens.joint:
            length = max(s["input_ids"].shape[1] for s in tokens.sides)
            padded = [_pad_to(s, length, pad_id) for s in tokens.sides]
            ids = torch.cat([s["input_ids"] for s in padded]).to(device, non_blocking=True)
            mask = torch.cat([s["attention_mask"] for s in padded]).to(device, non_blocking=True)
            return list(encoder(ids, mask).split([s["input_ids"].shape[0] for s in padded]))
        return [
            encoder(
                s["input_ids"].to(device, non_blocking=True),
                s["attention_mask"].to(device, non_blocking=True),
            )
            for s in tokens.sides
        ]


@dataclass
class StepOutput:
    loss: Tensor  # detached scalar (on the device: reading it synchronises)
    parts: dict[str, Tensor]
    n_tokens: int
    # Global L2 norm of the gradient before clipping, ``sqrt(Σ_p ‖∇p‖²)`` (scalar on the device).
    # A finite loss can still have an infinite/NaN gradient (overflow in backward); the caller must
    # fail the trial on it, since clipping by a NaN norm writes NaN into every weight.
    grad_norm: Tensor


class Stepper:
    """Runs optimisation steps of ``encoder`` on (query, positive, optional negative) batches.

    Args:
        encoder: the model (already on ``device``, in train mode).
        tokenizer: its tokenizer.
        weights: loss settings (:class:`trainers.losses.LossWeights`).
        lr, weight_decay, warmup_steps, total_steps, schedule: optimiser and schedule.
        grad_clip: max global gradient norm (0 disables clipping).
        max_seq_length: truncation length.
        device, amp: device and autocast dtype (None: float32).
    """

    def __init__(
        self,
        encoder: Encoder,
        tokenizer: Any,
        weights: LossWeights,
        *,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        schedule: str = "linear",
        grad_clip: float = 1.0,
        max_seq_length: int = 256,
        device: torch.device,
        amp: torch.dtype | None,
    ):
        self.encoder, self.tokenizer, self.weights = encoder, tokenizer, weights
        self.device, self.amp = device, amp
        self.grad_clip, self.max_seq_length = grad_clip, max_seq_length
        self.pad_id = int(tokenizer.pad_token_id)
        self.optimizer = build_optimizer(encoder, lr, weight_decay, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, total_steps, warmup_steps, schedule)
        )
        self.params = [p for p in encoder.parameters() if p.requires_grad]

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(
        self,
        queries: Sequence[str],
        positives: Sequence[str],
        negatives: Sequence[str | None] | None = None,
        *,
        false_negatives: Tensor | None = None,
        teacher: TeacherTargets | None = None,
        tokens: Tokenized | None = None,
    ) -> StepOutput:
        """One optimisation step. Texts carry their prompts already; ``None`` negatives are absent.

        ``tokens`` may be passed pre-tokenized (``tokenize_sides(queries, positives, present negatives)``).
        """
        b = len(queries)
        neg_rows = [i for i, n in enumerate(negatives or []) if n is not None]
        neg_texts = [negatives[i] for i in neg_rows] if negatives else []
        if tokens is None:
            tokens = tokenize_sides(self.tokenizer, [queries, positives, neg_texts], self.max_seq_length)
        self.encoder.train()
        self.optimizer.zero_grad(set_to_none=True)
        embeddings = forward_sides(self.encoder, tokens, self.device, self.amp, self.pad_id)
        q, p = embeddings[0], embeddings[1]
        n = has_negative = None
        if neg_rows:
            if len(neg_rows) == b:
                n = embeddings[2]
            else:  # placeholders for rows without a hard negative; the loss masks them out
                n = q.new_zeros(q.shape).index_copy(0, torch.tensor(neg_rows, device=q.device), embeddings[2])
                has_negative = torch.zeros(b, dtype=torch.bool, device=q.device)
                has_negative[neg_rows] = True
        loss, parts = embedding_loss(
            q, p, n, self.weights, false_negatives=false_negatives, has_negative=has_negative, teacher=teacher
        )
        loss.backward()
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:  # no clipping, but the norm is still watched
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        return StepOutput(loss.detach(), parts, tokens.n_tokens, grad_norm.detach())
