"""EmbeddingGemma's training losses, on unit-norm embeddings.

References:
    - EmbeddingGemma, arXiv 2509.20354 (Section 3): NCE with a hardness weight, the spread-out
      regulariser, embedding-matching distillation, all under Matryoshka (MRL) truncation.
    - Gemini Embedding, arXiv 2503.07891: NCE with in-batch negatives, one hard negative, and a
      mask that removes false negatives.
    - Hardness weighting: LLaVE, Lan et al. 2025, arXiv 2503.04812.
    - Spread-out / global orthogonal regulariser: Zhang et al. 2017, arXiv 1708.06320.
    - Matryoshka representation learning: Kusupati et al. 2022, arXiv 2205.13147.

Notation: a batch of ``B`` examples, query ``q_i``, positive ``p_i⁺`` and optional hard negative
``p_i⁻`` embeddings of dimension ``d``, all L2-normalised, so ``sim(x, y) = xᵀy`` is the cosine.

This module imports only torch (no pydantic), so ``bench/trainer.py`` can use it on a bare GPU image.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def false_negative_mask(
    queries: Sequence[str], positives: Sequence[str], groups: Sequence[Hashable | None] | None = None
) -> Tensor:
    """Which in-batch candidates ``p_j⁺`` (``j ≠ i``) are false negatives of ``q_i``: ``[B, B]`` bool.

    ``M[i, j]`` is True (the candidate is removed from ``q_i``'s denominator) when ``j ≠ i`` and
    ``q_i = q_j`` or ``p_i⁺ = p_j⁺`` as texts (Gemini Embedding's mask), or when both examples carry
    the same non-None ``group`` (a classification label: a same-label text is not a negative). The
    diagonal (the positive itself) is never masked.
    """
    b = len(queries)
    if len(positives) != b or (groups is not None and len(groups) != b):
        raise ValueError(
            f"queries, positives and groups must have one entry per example, got "
            f"{len(queries)}, {len(positives)}, {None if groups is None else len(groups)}"
        )

    def ids(values: Sequence[Hashable]) -> Tensor:
        # Equal values get equal ids, so B² string comparisons become one tensor comparison.
        index: dict[Hashable, int] = {}
        return torch.tensor([index.setdefault(v, len(index)) for v in values])

    q, p = ids(queries), ids(positives)
    mask = (q[:, None] == q[None, :]) | (p[:, None] == p[None, :])
    if groups is not None:
        g = ids(groups)
        labelled = torch.tensor([v is not None for v in groups])
        mask |= (g[:, None] == g[None, :]) & labelled[:, None] & labelled[None, :]
    return mask & ~torch.eye(b, dtype=torch.bool)


def nce_loss(
    q: Tensor,
    p: Tensor,
    n: Tensor | None = None,
    *,
    temperature: float,
    hardness_alpha: float = 0.0,
    false_negatives: Tensor | None = None,
    has_negative: Tensor | None = None,
) -> Tensor:
    """Contrastive NCE loss with in-batch negatives, one weighted hard negative and false-negative masking.

    .. math::

        L_C = \\frac{1}{B} \\sum_{i=1}^{B} -\\log
            \\frac{e^{sim(q_i, p_i^+)/\\tau}}
                  {w_i e^{sim(q_i, p_i^-)/\\tau} + \\sum_{j=1}^{B} 1_{TN}(i, j)\\, e^{sim(q_i, p_j^+)/\\tau}},
        \\qquad w_i = \\exp(\\alpha \\cdot \\mathrm{sg}(sim(q_i, p_i^-)))

    where ``sg`` stops the gradient (the weight scales the hard negative's term but is not itself
    trained), ``1_TN(i, j) = 0`` for the false negatives of :func:`false_negative_mask` and 1
    otherwise (always 1 on the diagonal). Rows without a hard negative drop its term.

    Args:
        q, p: ``[B, d]`` unit-norm query and positive embeddings.
        n: ``[B, d]`` unit-norm hard negatives, or None (no hard-negative term).
        temperature: ``τ > 0``.
        hardness_alpha: ``α ≥ 0`` (EmbeddingGemma uses 5; 0 gives ``w_i = 1``).
        false_negatives: ``[B, B]`` bool, True where ``p_j⁺`` must leave ``q_i``'s denominator.
        has_negative: ``[B]`` bool, False for rows whose ``n`` row is a placeholder.

    Returns:
        the scalar loss (mean over the batch).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = q.shape[0]
    sim = q @ p.T  # [B, B]
    positive = sim.diagonal() / temperature
    logits = sim / temperature
    if false_negatives is not None:
        drop = false_negatives.to(device=q.device, dtype=torch.bool) & ~torch.eye(
            b, dtype=torch.bool, device=q.device
        )
        logits = logits.masked_fill(drop, float("-inf"))
    terms = [logits]
    if n is not None:
        s_neg = (q * n).sum(dim=-1)  # [B]
        # log(w_i e^{s/τ}) = α·sg(s) + s/τ
        neg_logit = s_neg / temperature + hardness_alpha * s_neg.detach()
        if has_negative is not None:
            neg_logit = neg_logit.masked_fill(
                ~has_negative.to(device=q.device, dtype=torch.bool), float("-inf")
            )
        terms.append(neg_logit.unsqueeze(1))
    log_denominator = torch.logsumexp(torch.cat(terms, dim=1), dim=1)
    return (log_denominator - positive).mean()


def spread_out_loss(q: Tensor, p: Tensor) -> Tensor:
    """Spread-out (global orthogonal) regulariser on queries and positives.

    .. math::

        L_S = \\frac{1}{B(B-1)} \\sum_{i \\ne j} (q_i^\\top q_j)^2
            + \\frac{1}{B(B-1)} \\sum_{i \\ne j} (p_i^{+\\top} p_j^+)^2

    0 for mutually orthogonal embeddings, 2 for a collapsed batch (all embeddings equal); for
    random unit vectors in ``d`` dimensions each term is about ``1/d``. A batch of one gives 0.

    Args:
        q, p: ``[B, d]`` unit-norm embeddings.
    """
    return _second_moment(q) + _second_moment(p)


def _second_moment(x: Tensor) -> Tensor:
    b = x.shape[0]
    if b < 2:
        return x.sum() * 0.0  # keeps the graph and device
    gram = x @ x.T
    off_diagonal = gram.pow(2).sum() - gram.diagonal().pow(2).sum()
    return off_diagonal / (b * (b - 1))


def distillation_loss(student: Tensor, teacher: Tensor, present: Tensor | None = None) -> Tensor:
    """Embedding matching ``mean_i ‖s_i − t_i‖²`` over the rows that have a teacher embedding.

    Both are compared as unit vectors of the same dimension (the caller truncates and re-normalises;
    see :func:`embedding_loss`). Returns 0 when no row has a teacher.

    Args:
        student: ``[B, m]`` unit-norm student embeddings.
        teacher: ``[B, m]`` unit-norm teacher embeddings (rows without a teacher are ignored).
        present: ``[B]`` bool, which rows have a teacher (all if None).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ in shape")
    per_row = (student - teacher.to(student.dtype)).pow(2).sum(dim=-1)
    if present is None:
        return per_row.mean()
    present = present.to(device=student.device, dtype=per_row.dtype)
    return (per_row * present).sum() / present.sum().clamp(min=1.0)


def matryoshka_prefix(x: Tensor, dim: int) -> Tensor:
    """The first ``dim`` coordinates of ``x`` ``[B, d]``, re-normalised to unit length: ``[B, dim]``."""
    return F.normalize(x[..., :dim], p=2, dim=-1)


@dataclass(frozen=True)
class TeacherTargets:
    """Teacher embeddings for one batch, per side: ``{"query"|"positive"|"negative": (vectors, present)}``.

    ``vectors`` is ``[B, D_T]`` (any norm; rows without a teacher may hold zeros), ``present`` is
    ``[B]`` bool.
    """

    sides: Mapping[str, tuple[Tensor, Tensor]]

    @property
    def dim(self) -> int:
        return next(iter(self.sides.values()))[0].shape[-1]


@dataclass(frozen=True)
class LossWeights:
    """Settings of :func:`embedding_loss`.

    Attributes:
        dims: Matryoshka dims, the first the full dimension (e.g. 768, 512, 256, 128).
        temperature: NCE temperature ``τ``.
        hardness_alpha: ``α`` of the hardness weight.
        spread_out: weight of ``L_S``.
        distill: weight of ``L_D``.
    """

    dims: tuple[int, ...]
    temperature: float = 0.05
    hardness_alpha: float = 5.0
    spread_out: float = 1.0
    distill: float = 1.0


def embedding_loss(
    q: Tensor,
    p: Tensor,
    n: Tensor | None,
    weights: LossWeights,
    *,
    false_negatives: Tensor | None = None,
    has_negative: Tensor | None = None,
    teacher: TeacherTargets | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The full objective: each loss on each truncated, re-normalised Matryoshka prefix, summed.

    .. math::

        L = \\sum_{m \\in dims} \\left[ L_C^{(m)} + \\lambda_S L_S^{(m)} + \\lambda_D L_D^{(m)} \\right],
        \\qquad L_D^{(m)} = L_{Q}^{(m)} + L_{P^+}^{(m)} + L_{P^-}^{(m)}

    where ``x^{(m)} = x_{1:m} / ‖x_{1:m}‖``. Distillation at dim ``m`` compares the student prefix with
    the teacher's first ``m`` coordinates, re-normalised; dims larger than the teacher's are skipped.

    Args:
        q, p, n: ``[B, d]`` unit-norm embeddings (``n`` may be None).
        weights: see :class:`LossWeights`.
        false_negatives, has_negative: see :func:`nce_loss`.
        teacher: teacher embeddings, or None.

    Returns:
        ``(loss, parts)``: the scalar loss and its unweighted parts ``nce``, ``spread_out``, ``distill``
        (each summed over dims, detached), for logging.
    """
    zero = q.new_zeros(())
    total = zero
    parts = {"nce": zero, "spread_out": zero, "distill": zero}
    students = {"query": q, "positive": p, "negative": n}
    # Masks and teacher vectors move to the device once per batch, not once per Matryoshka dim (a
    # no-op when the caller already placed them there, as the trainer does).
    if false_negatives is not None:
        false_negatives = false_negatives.to(device=q.device, dtype=torch.bool, non_blocking=True)
    if has_negative is not None:
        has_negative = has_negative.to(device=q.device, dtype=torch.bool, non_blocking=True)
    if teacher is not None:
        teacher = TeacherTargets(
            {
                side: (
                    vectors.to(q.device, q.dtype, non_blocking=True),
                    present.to(q.device, non_blocking=True),
                )
                for side, (vectors, present) in teacher.sides.items()
            }
        )
    for m in weights.dims:
        if m > q.shape[-1]:
            raise ValueError(f"Matryoshka dim {m} exceeds the embedding dimension {q.shape[-1]}")
        qm, pm = matryoshka_prefix(q, m), matryoshka_prefix(p, m)
        nm = matryoshka_prefix(n, m) if n is not None else None
        l_c = nce_loss(
            qm,
            pm,
            nm,
            temperature=weights.temperature,
            hardness_alpha=weights.hardness_alpha,
            false_negatives=false_negatives,
            has_negative=has_negative,
        )
        l_s = spread_out_loss(qm, pm) if weights.spread_out else zero
        l_d = zero
        if weights.distill and teacher is not None and m <= teacher.dim:
            for side, (vectors, present) in teacher.sides.items():
                student = students[side]
                if student is None:
                    continue
                l_d = l_d + distillation_loss(
                    matryoshka_prefix(student, m),
                    matryoshka_prefix(vectors, m),
                    present,
                )
        total = total + l_c + weights.spread_out * l_s + weights.distill * l_d
        parts = {
            "nce": parts["nce"] + l_c.detach(),
            "spread_out": parts["spread_out"] + l_s.detach(),
            "distill": parts["distill"] + l_d.detach(),
        }
    return total, parts
