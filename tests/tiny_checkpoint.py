"""A tiny bidirectional Gemma3 encoder saved as a sentence-transformers folder, for tests that need
a model which loads (``mixopt eval`` and its path checks)."""

from __future__ import annotations

from pathlib import Path


def tiny_st_checkpoint(root: Path, words: list[str], *, seed: int, prompts: dict[str, str]) -> Path:
    """``root/base`` (the transformers model) and ``root/ckpt`` (its sentence-transformers folder)."""
    from trainers.model import load_encoder, save_sentence_transformer
    from trainers.tiny_model import build_tokenizer, write_tiny_model

    base = write_tiny_model(
        root / "base",
        build_tokenizer(words),
        seed=seed,
        hidden_size=32,
        intermediate_size=64,
        head_dim=16,
        query_pre_attn_scalar=16,
    )
    loaded = load_encoder(base, seed=0)
    return save_sentence_transformer(
        loaded.encoder, loaded.tokenizer, root / "ckpt", prompts=prompts, max_seq_length=16
    )
