"""Pooling token states into one sentence embedding, as sentence-transformers' ``Pooling`` module does.

With hidden states ``H ∈ R^{B×L×d}`` and the attention mask ``m ∈ {0,1}^{B×L}``, each mode gives
one ``[B, d]`` vector (several modes are concatenated in the order given, ``[B, k·d]``):

- ``mean``: ``Σ_t m_t H_t / max(Σ_t m_t, 1e-9)``
- ``mean_sqrt_len_tokens``: ``Σ_t m_t H_t / sqrt(Σ_t m_t)``
- ``max``: ``max_t H_t`` over the unmasked tokens
- ``cls``: the first unmasked token's state
- ``lasttoken``: the last unmasked token's state (the pooling of decoder-style embedders)
- ``weightedmean``: ``Σ_t w_t m_t H_t / Σ_t w_t m_t`` with ``w_t`` the token's 1-based position
  counted from the first unmasked token (SGPT, arXiv 2202.08904)

The formulas are sentence-transformers' (``sentence_transformers.sentence_transformer.modules.
pooling``), so a checkpoint written with :func:`pooling_config` embeds under ``SentenceTransformer``
as here; sums run in float32. ``include_prompt: false`` (pooling without the prompt's tokens,
INSTRUCTOR-style) is refused: the trainer prepends a prompt to the text and does not track its length.

Imports only torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' older boolean keys, in the order it concatenates them.
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class PoolingError(ValueError):
    """A pooling configuration this trainer cannot reproduce; the message says why."""


class Pooling(nn.Module):
    """Token states ``[B, L, d]`` and mask ``[B, L]`` → sentence embedding ``[B, len(modes)·d]`` (float32).

    Args:
        modes: pooling modes (module docstring), concatenated in this order.
    """

    def __init__(self, modes: Sequence[str] = ("mean",)):
        super().__init__()
        modes = tuple(modes)
        bad = [m for m in modes if m not in MODES]
        if not modes or bad:
            raise PoolingError(f"pooling modes {list(modes)}: each must be one of {list(MODES)}")
        self.modes = modes

    def extra_repr(self) -> str:
        return f"modes={self.modes}"

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        h = hidden.float()
        mask = attention_mask.to(torch.float32).unsqueeze(-1)  # [B, L, 1]
        b, length, d = h.shape
        out = []
        for mode in self.modes:
            if mode in ("mean", "mean_sqrt_len_tokens"):
                total = (h * mask).sum(dim=1)
                count = mask.sum(dim=1).clamp(min=1e-9)
                out.append(total / (count if mode == "mean" else count.sqrt()))
            elif mode == "max":
                out.append(h.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
            elif mode == "cls":
                first = attention_mask.to(torch.int).argmax(dim=1)
                out.append(h[torch.arange(b, device=h.device), first])
            elif mode == "lasttoken":
                values, from_end = attention_mask.flip(1).max(dim=1)
                from_end = torch.where(values == 0, length - 1, from_end)
                out.append((h * mask)[torch.arange(b, device=h.device), length - 1 - from_end])
            else:  # weightedmean
                lead = attention_mask.to(torch.int32).argmax(dim=1)  # padding before the text
                positions = torch.arange(1, length + 1, device=h.device, dtype=torch.float32)
                weights = mask * (positions.view(1, -1, 1) - lead.view(-1, 1, 1))
                out.append((h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9))
        return torch.cat(out, dim=-1)

    def output_dim(self, hidden_size: int) -> int:
        return len(self.modes) * hidden_size

    def config(self, hidden_size: int) -> dict[str, Any]:
        """The ``1_Pooling/config.json`` sentence-transformers reads back as this pooling."""
        mode: str | list[str] = self.modes[0] if len(self.modes) == 1 else list(self.modes)
        return {"embedding_dimension": hidden_size, "pooling_mode": mode, "include_prompt": True}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: object) -> Pooling:
        """The pooling of a sentence-transformers ``Pooling`` config (its current keys or the older
        ``pooling_mode_*_tokens`` booleans, which default to mean when none is set); ``where`` names
        the file in errors."""
        if config.get("include_prompt", True) is not True:
            raise PoolingError(
                f"{where}: include_prompt false (pooling without the prompt's tokens) is not supported "
                "by trainers.embedding, which prepends prompts to the texts; trainers.sentence_transformers "
                "supports it"
            )
        mode = config.get("pooling_mode")
        if mode is None:
            modes = [m for key, m in _LEGACY_KEYS.items() if config.get(key)] or ["mean"]
        else:
            modes = [mode] if isinstance(mode, str) else list(mode)
        try:
            return cls(modes)
        except PoolingError as e:
            raise PoolingError(f"{where}: {e}") from None
