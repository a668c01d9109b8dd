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
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import get_device_states, set_device_states

from .losses import LossWeights, TeacherTargets, embedding_loss
from .model import Encoder, set_gradient_checkpointing, tokenize


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


# Tensor cores work on tiles of 8 (bf16); a padded length that is a multiple of 8 avoids ragged tiles
# and lets the compiled graph reuse shapes. The cost is at most 7 pad tokens per text.
PAD_TO_MULTIPLE_OF = 8


@dataclass
class Tokenized:
    """The token tensors of the sides of one batch (queries, positives, negatives...)."""

    sides: list[dict[str, Tensor]]
    n_tokens: int  # non-padding tokens
    joint: bool  # one forward over all sides (same padded length) instead of one per side

    def pin_memory(self) -> Tokenized:
        """Page-locked copies, so the host-to-device copies can be asynchronous (``non_blocking``)."""
        return Tokenized(
            [{k: v.pin_memory() for k, v in s.items()} for s in self.sides], self.n_tokens, self.joint
        )


def tokenize_sides(
    tokenizer: Any,
    sides: Sequence[Sequence[str]],
    max_seq_length: int,
    pad_to_multiple_of: int | None = PAD_TO_MULTIPLE_OF,
) -> Tokenized:
    """Tokenize each side, each padded to its own longest text (rounded up to ``pad_to_multiple_of``).

    Queries are not padded to document length: each side is its own tensor. They run as one forward
    when that wastes no more padding than separate ones: one forward over ``N`` texts padded to the
    longest side costs ``N·max_s L_s`` token slots, one forward per side ``Σ_s n_s L_s``; equal
    lengths (e.g. fixed-length benchmark batches) favour the single, larger forward, which keeps the
    GPU busier.
    """
    encoded = [tokenize(tokenizer, side, max_seq_length, pad_to_multiple_of) for side in sides if len(side)]
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


class RandContext:
    """Captures the RNG state (CPU and the CUDA devices of ``tensors``) now; ``with`` replays it.

    GradCache runs each chunk twice (without, then with a graph); dropout must draw the same masks
    both times or the recomputed chunk is not the one the loss saw. As sentence-transformers'
    ``CachedMultipleNegativesRankingLoss`` does; the surrounding RNG state is restored on exit.
    """

    def __init__(self, *tensors: Tensor):
        self.cpu_state = torch.get_rng_state()
        self.devices, self.states = get_device_states(*tensors)

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=self.devices, enabled=True)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        set_device_states(self.devices, self.states)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)
        del self._fork


@dataclass
class StepInputs:
    """Everything a step needs, built on the host once per batch (by the loader thread, ahead of time).

    Attributes:
        tokens: the sides (queries, positives, present hard negatives), pinned when CUDA is used.
        batch_size: ``B``.
        neg_index: ``[n⁻]`` int64, the rows that have a hard negative, or None when all or none do.
        has_negative: ``[B]`` bool (None when all or none rows have one).
        false_negatives: ``[B, B]`` bool (:func:`trainers.losses.false_negative_mask`) or None.
        teacher: teacher targets or None.
    """

    tokens: Tokenized
    batch_size: int
    neg_index: Tensor | None = None
    has_negative: Tensor | None = None
    false_negatives: Tensor | None = None
    teacher: TeacherTargets | None = None
    task: str | None = None

    @property
    def n_negatives(self) -> int:
        return self.tokens.sides[2]["input_ids"].shape[0] if len(self.tokens.sides) > 2 else 0

    def pin_memory(self) -> StepInputs:
        teacher = None
        if self.teacher is not None:
            teacher = TeacherTargets(
                {k: (v.pin_memory(), m.pin_memory()) for k, (v, m) in self.teacher.sides.items()}
            )
        return StepInputs(
            self.tokens.pin_memory(),
            self.batch_size,
            None if self.neg_index is None else self.neg_index.pin_memory(),
            None if self.has_negative is None else self.has_negative.pin_memory(),
            None if self.false_negatives is None else self.false_negatives.pin_memory(),
            teacher,
            self.task,
        )


def prepare_inputs(
    tokenizer: Any,
    queries: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[str | None] | None = None,
    *,
    max_seq_length: int,
    false_negatives: Tensor | None = None,
    teacher: TeacherTargets | None = None,
    tokens: Tokenized | None = None,
    pin: bool = False,
    task: str | None = None,
) -> StepInputs:
    """Tokenize a batch and build its masks and indices on the host (``pin``: page-locked, for CUDA)."""
    b = len(queries)
    neg_rows = [i for i, n in enumerate(negatives or []) if n is not None]
    if tokens is None:
        neg_texts = [negatives[i] for i in neg_rows] if negatives else []
        tokens = tokenize_sides(tokenizer, [queries, positives, neg_texts], max_seq_length)
    neg_index = has_negative = None
    if neg_rows and len(neg_rows) < b:
        neg_index = torch.tensor(neg_rows, dtype=torch.long)
        has_negative = torch.zeros(b, dtype=torch.bool)
        has_negative[neg_index] = True
    inputs = StepInputs(tokens, b, neg_index, has_negative, false_negatives, teacher, task)
    return inputs.pin_memory() if pin else inputs


@dataclass
class StepOutput:
    loss: Tensor  # detached scalar (on the device: reading it synchronises)
    parts: dict[str, Tensor]
    n_tokens: int
    # Global L2 norm of the gradient before clipping, ``sqrt(Σ_p ‖∇p‖²)`` (scalar on the device).
    # A finite loss can still have an infinite/NaN gradient (overflow in backward); the caller must
    # fail the trial on it, since clipping by a NaN norm writes NaN into every weight.
    grad_norm: Tensor


class StepOptions(Protocol):
    """The options a :class:`Stepper` is built from, by the trainer's option names.

    :class:`trainers.embedding.Options` has them all, validated; a benchmark that must not import
    pydantic may pass any object with these attributes.
    """

    matryoshka_dims: Sequence[int]
    temperature: float
    hardness_alpha: float
    spread_out_weight: float
    distill_weight: float
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    grad_clip: float
    max_seq_length: int
    mini_batch_size: int | None
    gradient_checkpointing: bool


class Stepper:
    """Runs optimisation steps of ``encoder`` on (query, positive, optional negative) batches.

    Memory. Without options, a step keeps the activations of every token of the batch for the
    backward pass, so memory grows with ``batch_size × length``. Two options bound it:

    - ``gradient_checkpointing``: the transformer keeps only each layer's input and recomputes the
      layer in backward (one more forward, ≈ +33 % compute);
    - ``mini_batch_size``: GradCache (Gao et al. 2021, arXiv 2101.06983): embed the batch in chunks
      of ``mini_batch_size`` texts without a graph, compute the full-batch loss on the cached
      embeddings ``E`` (leaves with ``requires_grad``) and backward it to get ``∂L/∂E``; then re-run
      each chunk with a graph and backpropagate ``∂L/∂E_chunk`` through it. The loss and the
      parameter gradients are those of the full batch (up to float rounding); activation memory is
      that of one chunk, so the batch size, which sets the number of in-batch negatives, is no
      longer bounded by memory. Cost: one more forward per step.

    Args:
        encoder: the model (already on ``device``, in train mode).
        tokenizer: its tokenizer.
        weights: loss settings (:class:`trainers.losses.LossWeights`).
        lr, weight_decay, warmup_steps, total_steps, schedule: optimiser and schedule.
        grad_clip: max global gradient norm (0 disables clipping).
        max_seq_length: truncation length.
        device, amp: device and autocast dtype (None: float32).
        mini_batch_size: texts per chunk of the cached loss; None: the whole batch at once.
        gradient_checkpointing: the transformer's own activation checkpointing (non-reentrant).
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
        mini_batch_size: int | None = None,
        gradient_checkpointing: bool = False,
    ):
        if mini_batch_size is not None and mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.encoder, self.tokenizer, self.weights = encoder, tokenizer, weights
        self.device, self.amp = device, amp
        self.grad_clip, self.max_seq_length = grad_clip, max_seq_length
        self.mini_batch_size = mini_batch_size
        set_gradient_checkpointing(encoder, gradient_checkpointing)
        self.pad_id = int(tokenizer.pad_token_id)
        self.optimizer = build_optimizer(encoder, lr, weight_decay, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, total_steps, warmup_steps, schedule)
        )
        self.params = [p for p in encoder.parameters() if p.requires_grad]

    @classmethod
    def from_options(
        cls,
        encoder: Encoder,
        tokenizer: Any,
        options: StepOptions,
        *,
        warmup_steps: int,
        total_steps: int,
        device: torch.device,
        amp: torch.dtype | None,
    ) -> Stepper:
        """The stepper of a trial with these options; the run's length and device are the caller's."""
        return cls(
            encoder,
            tokenizer,
            LossWeights(
                tuple(options.matryoshka_dims),
                options.temperature,
                options.hardness_alpha,
                options.spread_out_weight,
                options.distill_weight,
            ),
            lr=options.learning_rate,
            weight_decay=options.weight_decay,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            schedule=options.lr_schedule,
            grad_clip=options.grad_clip,
            max_seq_length=options.max_seq_length,
            device=device,
            amp=amp,
            mini_batch_size=options.mini_batch_size,
            gradient_checkpointing=options.gradient_checkpointing,
        )

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
        inputs = prepare_inputs(
            self.tokenizer,
            queries,
            positives,
            negatives,
            max_seq_length=self.max_seq_length,
            false_negatives=false_negatives,
            teacher=teacher,
            tokens=tokens,
        )
        return self.run(inputs)

    def run(self, inputs: StepInputs) -> StepOutput:
        """One optimisation step on host-prepared inputs (see :func:`prepare_inputs`).

        Nothing here reads a device value on the host: loss and gradient norm stay on the device
        until the caller reads them (at log steps), so CUDA runs ahead of Python.
        """
        loss, parts = self.backward(inputs)
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:  # no clipping, but the norm is still watched
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        return StepOutput(loss.detach(), parts, inputs.tokens.n_tokens, grad_norm.detach())

    def backward(self, inputs: StepInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Zero the gradients, compute the loss and leave ``∂L/∂θ`` in the parameters' ``.grad``.

        Returns ``(loss, parts)`` as :func:`trainers.losses.embedding_loss` (the loss with its graph
        freed). The optimiser does not step.
        """
        self.encoder.train()
        self.optimizer.zero_grad(set_to_none=True)
        masks = self._masks_on_device(inputs)
        if self.mini_batch_size is None:
            embeddings = forward_sides(self.encoder, inputs.tokens, self.device, self.amp, self.pad_id)
            loss, parts = self._loss(embeddings, inputs, masks)
            loss.backward()
            return loss, parts
        return self._cached_backward(inputs, masks)

    def _masks_on_device(self, inputs: StepInputs) -> dict[str, Any]:
        """One (asynchronous, from pinned memory) copy per batch of each host-built mask and index."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(self.device, non_blocking=True)

        teacher = None
        if inputs.teacher is not None:
            teacher = TeacherTargets(
                {k: (move(v), move(m)) for k, (v, m) in inputs.teacher.sides.items()}  # type: ignore[misc]
            )
        return {
            "neg_index": move(inputs.neg_index),
            "has_negative": move(inputs.has_negative),
            "false_negatives": move(inputs.false_negatives),
            "teacher": teacher,
        }

    def _loss(
        self, embeddings: Sequence[Tensor], inputs: StepInputs, masks: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The full-batch objective on side embeddings ``[q, p, (present negatives)]``, in float32."""
        q, p = embeddings[0].float(), embeddings[1].float()
        n = None
        if inputs.n_negatives:
            n = embeddings[2].float()
            if masks["neg_index"] is not None:  # placeholders for rows without one; the loss masks them
                n = q.new_zeros(q.shape).index_copy(0, masks["neg_index"], n)
        return embedding_loss(
            q,
            p,
            n,
            self.weights,
            false_negatives=masks["false_negatives"],
            has_negative=masks["has_negative"],
            teacher=masks["teacher"],
        )

    def _chunks(self, tokens: Tokenized) -> list[list[tuple[Tensor, Tensor]]]:
        """Per side, chunks of ``mini_batch_size`` texts on the device, each trimmed to its own longest
        text (rounded up to a multiple of 8). Lengths are read from the host tensors: no device sync."""
        mb = self.mini_batch_size
        assert mb is not None
        out = []
        for side in tokens.sides:
            ids, mask = side["input_ids"], side["attention_mask"]
            lengths = mask.sum(dim=1)
            chunks = []
            for start in range(0, ids.shape[0], mb):
                longest = int(lengths[start : start + mb].max())
                length = min(-(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF, ids.shape[1])
                chunks.append(
                    (
                        ids[start : start + mb, :length].to(self.device, non_blocking=True),
                        mask[start : start + mb, :length].to(self.device, non_blocking=True),
                    )
                )
            out.append(chunks)
        return out

    def _cached_backward(self, inputs: StepInputs, masks: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """GradCache (arXiv 2101.06983): the full-batch loss, gradients accumulated chunk by chunk.

        1. ``E_c = f(x_c)`` for every chunk ``c``, without a graph (RNG state saved per chunk);
        2. ``L(E)`` on the cached ``E`` (leaf tensors), ``L.backward()`` gives ``G = ∂L/∂E``;
        3. per chunk, with the RNG state replayed: ``f(x_c).backward(G_c)``, which accumulates
           ``Σ_c (∂E_c/∂θ)ᵀ G_c = ∂L/∂θ`` into the parameters' ``.grad``.
        """
        chunks = self._chunks(inputs.tokens)
        autocast = torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)
        states: list[list[RandContext]] = []
        cached: list[Tensor] = []
        with torch.no_grad():
            for side in chunks:
                side_states, side_embeddings = [], []
                for ids, mask in side:
                    side_states.append(RandContext(ids))
                    with autocast:
                        side_embeddings.append(self.encoder(ids, mask))
                states.append(side_states)
                cached.append(torch.cat(side_embeddings).float().requires_grad_())
        loss, parts = self._loss(cached, inputs, masks)
        loss.backward()
        for side, side_states, leaf in zip(chunks, states, cached):
            grads = leaf.grad.split([ids.shape[0] for ids, _ in side])
            for (ids, mask), state, grad in zip(side, side_states, grads):
                with state, autocast:
                    embedding = self.encoder(ids, mask)
                embedding.float().backward(grad)
        return loss, parts
