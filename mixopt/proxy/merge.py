"""Task-arithmetic merge of expert checkpoints, streamed from safetensors into memory.

A mixture's finetuned model is approximately a weighted merge of task experts (task arithmetic,
Ilharco et al., arXiv:2212.04089; used as a data-mixture proxy by arXiv:2505.16066 and
arXiv:2602.04937). With ``theta0`` the model every expert started from and ``theta_k`` the
experts, for every float tensor ``p``:

    theta(c)[p] = cast_{dtype(p)}( theta0[p] + sum_k c_k * (theta_k[p] - theta0[p]) )

accumulated in float64, so that a coefficient vector that picks one expert (``c = e_j``)
reproduces ``theta_j`` bit for bit and a bf16 model loses nothing to the sum. When ``sum_k c_k =
1`` the base cancels and the merge is the weighted average ``sum_k c_k theta_k``; it matters for
any other total (a scaled task vector). Non-float tensors must be equal everywhere and are copied.

The experts must share ``theta0`` *including* any layer the trainer initialises at random (the
Dense projections of a base without them are drawn from the trial seed): experts of different
seeds on such a base do not share a starting point, and merging them mixes unrelated random
layers. A base in the sentence-transformers layout with its Dense layers (EmbeddingGemma, the
synthetic model) is one starting point for every seed.

Coefficients from a mixture: an expert trained on mixture ``m_k`` (a one-hot, or the bounds'
corner nearest it, or a user's own trained mixture) stands for ``m_k``, so the mixture ``w`` is
merged with the coefficients ``c`` that solve ``sum_k c_k m_k = w`` (:func:`mixture_coefficients`).
For one-hot experts ``c = w``.

Reading: one tensor at a time, each file opened for that tensor and closed again (as
:mod:`mixopt.soup.average` does, so no file's mapped pages pile up in resident memory). The
merged model is held in memory, once, in the checkpoints' dtypes; nothing is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from mixopt.soup.checkpoints import (
    DTYPES,
    FLOAT_CODES,
    CheckpointError,
    WeightFile,
    check_compatible,
    read_header,
    refuse_pickles,
    verify_checksums,
    weight_files,
)

# Merged weights: relative safetensors path (``model.safetensors``, ``2_Dense/model.safetensors``)
# -> tensor name -> tensor, as the checkpoints store them.
MergedWeights = dict[str, dict[str, torch.Tensor]]


def _read(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name)


class ExpertMerge:
    """The experts of one base, checked once; :meth:`merge` then builds ``theta(c)`` for any ``c``.

    Args:
        base: the sentence-transformers checkpoint every expert started from (``theta0``).
        experts: the experts' checkpoints (``theta_1..theta_K``), one architecture with the base.
        labels: how errors name the experts (run ids); their paths by default.

    Raises :class:`CheckpointError` (one line naming the checkpoint and file) when a checkpoint
    fails its recorded checksums, holds pickle weights, or differs from the base in its weight
    files or any tensor's name, shape or dtype.
    """

    def __init__(self, base: Path, experts: Sequence[Path], labels: Sequence[str] | None = None):
        self.base = Path(base)
        self.experts = [Path(e) for e in experts]
        self.labels = list(labels) if labels is not None else [str(e) for e in self.experts]
        if not self.experts:
            raise CheckpointError("no expert checkpoints to merge; train one expert per task first")
        if len(self.labels) != len(self.experts):
            raise ValueError(f"{len(self.labels)} labels for {len(self.experts)} experts")
        base_label = f"base model {self.base}"
        if not self.base.is_dir():
            raise CheckpointError(f"{base_label} is not a directory")
        refuse_pickles(self.base, base_label)
        unverified = verify_checksums([self.base, *self.experts], [base_label, *self.labels])
        if unverified:
            warnings.warn(
                f"warning: {', '.join(unverified)} record no checksums; merged unverified", stacklevel=2
            )
        # Experts: the soup's full check (weights, architecture files, tokenizer). The base may
        # carry other prompts or version stamps; only its tensors have to agree.
        headers = check_compatible(self.experts, self.labels)
        base_files = weight_files(self.base)
        if sorted(headers) != base_files:
            raise CheckpointError(
                f"{base_label}: weight files {base_files} differ from the experts' {sorted(headers)}; "
                "the base must be the model the experts were finetuned from"
            )
        for file, header in headers.items():
            _same_tensors(read_header(self.base / file), header, f"{base_label}: {file}")
        self.headers: dict[str, WeightFile] = headers

    def merge(self, coefficients: Sequence[float]) -> MergedWeights:
        """``theta0 + sum_k c_k (theta_k - theta0)`` for every tensor (see the module docstring)."""
        c = [float(x) for x in coefficients]
        if len(c) != len(self.experts):
            raise ValueError(f"{len(c)} coefficients for {len(self.experts)} experts")
        if not all(np.isfinite(c)):
            raise ValueError(f"coefficients must be finite, got {c}")
        out: MergedWeights = {}
        for file, header in self.headers.items():
            tensors: dict[str, torch.Tensor] = {}
            for name, info in header.tensors.items():
                base = _read(self.base / file, name)
                if info.dtype not in FLOAT_CODES:
                    for expert, label in zip(self.experts, self.labels, strict=True):
                        if not torch.equal(base, _read(expert / file, name)):
                            raise CheckpointError(
                                f"{label}: non-float tensor {name!r} in {file} differs from the base's; "
                                "integer buffers cannot be merged"
                            )
                    tensors[name] = base
                    continue
                theta0 = base.to(torch.float64)
                acc = theta0.clone()
                for expert, ck in zip(self.experts, c, strict=True):
                    if ck != 0.0:
                        acc.add_(_read(expert / file, name).to(torch.float64).sub_(theta0), alpha=ck)
                merged = acc.to(DTYPES[info.dtype])
                if not bool(torch.isfinite(merged).all()):
                    raise CheckpointError(
                        f"merged tensor {name!r} in {file} is not finite for coefficients {c}; "
                        "an expert diverged or the coefficients are too large"
                    )
                tensors[name] = merged
            out[file] = tensors
        return out


def _same_tensors(base: WeightFile, expert: WeightFile, where: str) -> None:
    # A base saved by an older library may hold integer buffers that today's transformers builds
    # instead of saving (BERT's position_ids): not weights, never merged, so not compared.
    base_only = {n for n in set(base.tensors) - set(expert.tensors) if base.tensors[n].dtype in FLOAT_CODES}
    diff = sorted(base_only | (set(expert.tensors) - set(base.tensors)))
    if diff:
        raise CheckpointError(f"{where}: tensors {diff[:5]} are in only one of the base and the experts")
    for name, info in expert.tensors.items():
        if base.tensors[name] != info:
            raise CheckpointError(
                f"{where}: tensor {name!r} is {base.tensors[name]} in the base, {info} in the experts"
            )


def mixture_coefficients(
    mixture: Mapping[str, float], anchors: Sequence[Mapping[str, float]], tol: float = 1e-9
) -> list[float]:
    """The merge coefficients ``c`` of a mixture ``w`` given the experts' own mixtures ``m_k``.

    Solves ``sum_k c_k m_k = w`` (``M^T c = w`` with ``M[k, t] = m_k[t]``): for one-hot experts
    ``c = w``; for experts trained on other mixtures (the bounds' corners, a user's anchors) the
    barycentric coordinates of ``w`` in the simplex they span — negative outside it, where the
    merge extrapolates. ``M`` must have full row rank (no anchor a combination of the others);
    with fewer anchors than tasks ``w`` must lie in their span (within ``tol``).
    """
    tasks = list(mixture)
    if not anchors:
        raise ValueError("no expert mixtures given")
    for i, m in enumerate(anchors):
        unknown = sorted(set(m) - set(tasks))
        if unknown:
            raise ValueError(f"expert mixture {i} names tasks {unknown} that the mixture does not have")
    m = np.array([[float(a.get(t, 0.0)) for t in tasks] for a in anchors])  # [K, T]
    w = np.array([float(mixture[t]) for t in tasks])
    if np.linalg.matrix_rank(m) < len(anchors):
        raise ValueError(
            f"the {len(anchors)} expert mixtures are linearly dependent; each expert must add a direction"
        )
    c, *_ = np.linalg.lstsq(m.T, w, rcond=None)
    residual = float(np.abs(m.T @ c - w).max())
    if residual > tol:
        raise ValueError(
            f"mixture {dict(mixture)} is not a combination of the experts' mixtures (residual {residual:.2g}); "
            "train an expert for every task"
        )
    return [float(x) for x in c]
